"""maps/_encoding.py: keys and values to and from layout-sized buffers; records that must not wrap or
alias."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import percpu
from percpu.cpus import CpuLists

from .fake_kernel import FakeKernel

Fake = tuple[FakeKernel, CpuLists]
NARROW = np.dtype([("a", "<u4"), ("b", "<u2", (4,))])  # 12 bytes, stride 16


def test_wrong_size_fails_before_any_syscall(fake: Fake) -> None:
    kernel, topo = fake
    with percpu.PerCpuArray.create(np.uint64, 4) as m:
        kernel.calls.clear()
        with pytest.raises(percpu.SizeMismatch) as e:
            percpu.PerCpuArray.from_id(m.info.id, value=ctypes.c_uint32)
        assert (e.value.expected, e.value.actual, e.value.what) == (8, 4, "value")
        assert "map_lookup" not in kernel.calls
        kernel.calls.clear()
        with pytest.raises(percpu.SizeMismatch, match="values given for"):
            m.update(0, [1, 2])  # one per online CPU: the classic mistake
        with pytest.raises(percpu.SizeMismatch, match="no value for CPU"):
            m.update(0, {topo.possible[0]: 1})
        with pytest.raises(TypeError, match="update_all"):
            m.update(0, 5)
        assert not any(c.startswith("map_update") for c in kernel.calls)


def test_struct_values_and_reductions(fake: Fake) -> None:
    _, topo = fake
    dt = np.dtype([("a", "<u4"), ("b", "<i2")])  # 6 bytes: stride 8
    with percpu.PerCpuArray.create(dt, 1) as m:
        m.update(0, [(i, -i) for i in range(len(topo.possible))])
        v = m[0]
        total = v.sum()
        assert total["a"] == sum(range(len(topo.possible))) and total["b"] == -sum(range(len(topo.possible)))
        assert v.to_numpy().shape == (len(topo.possible),)


@pytest.mark.usefixtures("fake")
def test_records_read_one_after_another_do_not_alias() -> None:
    dt = np.dtype([("a", "u1"), ("b", "<u4")])
    with percpu.Hash.create(np.uint32, dt, 8) as h:
        for k in range(3):
            h[k] = (10 * k, k)
        got = {k: (int(v["a"]), int(v["b"])) for k, v in h.items()}
        assert got == {k: (10 * k, k) for k in range(3)}
    with percpu.Array.create(dt, 3) as a:
        for k in range(3):
            a[k] = (10 * k, k)
        assert [(int(v["a"]), int(v["b"])) for v in a.values()] == [(0, 0), (10, 1), (20, 2)]


def test_sums_of_narrow_record_fields_do_not_wrap(fake: Fake) -> None:
    _, topo = fake
    ncpu = len(topo.possible)
    with percpu.PerCpuHash.create(np.uint32, NARROW, 4) as m:
        m.update_all(7, {"a": 4_000_000_000, "b": [60000, 1, 0, 0]})
        total = m[7].sum()
        assert int(total["a"]) == 4_000_000_000 * ncpu
        assert [int(x) for x in total["b"]] == [60000 * ncpu, ncpu, 0, 0]
        snap = m.snapshot()
        s = snap.sum()
        assert s.shape == (1,)
        assert int(s["a"][0]) == 4_000_000_000 * ncpu and int(s["b"][0][0]) == 60000 * ncpu
        assert m[7].max()["a"] == 4_000_000_000  # max keeps the field's own type
