"""maps/_open.py: opening and creating maps, and what is refused before any syscall."""

from __future__ import annotations

import numpy as np
import pytest

import percpu
from percpu.cpus import Topology

from .fake_kernel import FakeKernel

Fake = tuple[FakeKernel, Topology]


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


def test_ids_fds_and_names_that_would_change_on_the_way_in_are_refused(fake: Fake) -> None:
    """open_map(2**32 + id) opened map id (ctypes kept the low 32 bits); an fd past 32 bits was read as
    another fd; a NUL in a name made the kernel's name end there. Refused before any syscall."""
    kernel, _ = fake
    with percpu.PerCpuArray.create(np.uint64, 4, name="counts") as m:
        kernel.calls.clear()
        for spec in (2**32 + m.info.id, str(2**32 + m.info.id), -1, np.int64(-5)):
            with pytest.raises(percpu.InvalidArgument, match="map id"):
                percpu.open_map(spec)  # type: ignore[arg-type]
        for fd in (2**32 + m.fd, -1):
            with pytest.raises(percpu.InvalidArgument, match=f"fd {fd} "):
                percpu.Map.from_fd(fd)
        with pytest.raises(percpu.InvalidArgument, match=r"map name 'a\\x00b'"):
            percpu.PerCpuArray.create(np.uint64, 4, name="a\0b")
        with pytest.raises(percpu.InvalidArgument, match="map flags 4294967296"):
            percpu.PerCpuArray.create(np.uint64, 4, flags=2**32)
        with pytest.raises(percpu.InvalidArgument, match=r"pin path '/sys/fs/bpf/a\\x00b'"):
            m.pin("/sys/fs/bpf/a\0b")
        with pytest.raises(percpu.InvalidArgument, match=r"pin path '/sys/fs/bpf/a\\x00b'"):
            percpu.open_map("/sys/fs/bpf/a\0b")
        assert kernel.calls == []  # nothing reached the kernel
        with percpu.open_map(str(m.info.id)) as same:  # what is in range still opens
            assert same.info.id == m.info.id
