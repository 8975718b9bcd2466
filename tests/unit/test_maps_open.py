"""maps/_open.py: opening and creating maps, and what is refused before any syscall."""

from __future__ import annotations

import numpy as np
import pytest

import percpu
from percpu.cpus import CpuLists

from .fake_kernel import FakeKernel

Fake = tuple[FakeKernel, CpuLists]


def test_wrong_class_is_a_map_type_error(fake: Fake) -> None:
    _ = fake
    with percpu.PerCpuArray.create(np.uint64, 4) as m:
        with pytest.raises(percpu.MapTypeError, match="PERCPU_ARRAY map, not PERCPU_HASH") as e:
            percpu.PerCpuHash.from_id(m.info.id)
        assert isinstance(e.value, TypeError)
        with percpu.open_map(m.info.id, value=np.uint64) as any_map:
            assert isinstance(any_map, percpu.PerCpuArray)
    with (
        percpu.Array.create(np.uint64, 2) as plain,
        pytest.raises(percpu.MapTypeError, match="not a per-CPU map"),
    ):
        percpu.PerCpuMap.from_id(plain.info.id)


def test_too_big_value(fake: Fake) -> None:
    _ = fake
    with pytest.raises(percpu.SizeMismatch, match="32768"):
        percpu.PerCpuArray.create(np.dtype((np.void, 32769)), 1)


def test_max_entries_out_of_range_fails_before_any_syscall(fake: Fake) -> None:
    kernel, _ = fake
    kernel.calls.clear()
    for n in (-1, 2**32 + 3):
        with pytest.raises(percpu.PercpuError, match="out of range"):
            percpu.PerCpuArray.create(np.uint64, n)
    assert "map_create" not in kernel.calls


@pytest.mark.usefixtures("fake")
def test_bad_fd_is_a_percpu_error() -> None:
    with pytest.raises(percpu.BpfError, match="not an open file descriptor"):
        percpu.Map.from_fd(9999)
