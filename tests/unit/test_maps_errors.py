"""maps/_errors.py and errors.from_errno: what an element operation's errno means for a map."""

from __future__ import annotations

import errno

import numpy as np
import pytest

import percpu
from percpu.cpus import CpuLists

from .fake_kernel import FakeKernel

Fake = tuple[FakeKernel, CpuLists]


@pytest.mark.parametrize(
    ("err", "cls", "text"),
    [
        (errno.EPERM, percpu.PermissionDenied, "CAP_BPF"),
        (errno.EACCES, percpu.PermissionDenied, "root"),
        (errno.EINVAL, percpu.BpfError, "Invalid argument"),
        (errno.ENOMEM, percpu.BpfError, "errno 12"),
        (errno.EOPNOTSUPP, percpu.NotSupported, "not supported"),
    ],
)
def test_errors_are_translated(fake: Fake, err: int, cls: type[Exception], text: str) -> None:
    kernel, _ = fake
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 4) as m:
        for op, call in [
            ("map_lookup", lambda: m.lookup(1)),
            ("map_update", lambda: m.update_all(1, 1)),
            ("map_get_next_key", lambda: list(m.keys())),
        ]:
            kernel.fail_next[op] = err
            with pytest.raises(cls, match=text) as e:
                call()
            assert e.value.errno == err and e.value.map_name == m.name
            assert isinstance(e.value.__cause__, OSError) and e.value.__cause__.errno == err


def test_key_not_found_is_a_key_error(fake: Fake) -> None:
    _ = fake
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 4) as m:
        with pytest.raises(KeyError):
            m[7]
        assert m.get(7) is None and 7 not in m
        with pytest.raises(percpu.KeyNotFound):
            m.delete(7)
        with pytest.raises(percpu.KeyNotFound):
            m.update_all(7, 1, flags=percpu.BPF_EXIST)


def test_full_hash(fake: Fake) -> None:
    _ = fake
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 2) as m:
        m.update_all(1, 1)
        m.update_all(2, 2)
        with pytest.raises(percpu.BpfError, match="is full"):
            m.update_all(3, 3)


def test_permission_denied_on_create(fake: Fake) -> None:
    kernel, _ = fake
    kernel.deny = True
    with pytest.raises(percpu.PermissionDenied, match="CAP_BPF and CAP_PERFMON"):
        percpu.PerCpuArray.create(np.uint64, 1)
