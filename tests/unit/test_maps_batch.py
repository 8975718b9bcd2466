"""maps/_batch.py: batch writes, their input checks and the one-element fallback."""

from __future__ import annotations

import numpy as np
import pytest

import percpu
from percpu.cpus import CpuLists

from .fake_kernel import FakeKernel

Fake = tuple[FakeKernel, CpuLists]


def test_numbers_numpy_would_wrap_or_truncate_are_refused(fake: Fake) -> None:
    _, topo = fake
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 8) as m:
        for bad in ([-1], [2**64], np.array([-1], np.int64)):
            with pytest.raises(percpu.PercpuError, match="does not fit"):
                m.update_batch([1], bad)
        with pytest.raises(percpu.PercpuError, match="does not fit"):
            m.update_batch(np.array([-1], np.int64), [1])  # key -1 would be 4294967295
        with pytest.raises(percpu.PercpuError, match="not an integer"):
            m.update_all(1, 1.7)
        with pytest.raises(percpu.PercpuError, match="not an integer"):
            m[2.5]
        with pytest.raises(percpu.PercpuError, match="does not fit"):
            m.update_all(np.int64(-1), 1)
        with pytest.raises(percpu.PercpuError, match="non-integral"):
            m.update_batch([1], [0.5])
        m.update_all(3, 2.0)  # integral floats are exact
        assert m[3].sum() == 2 * len(topo.possible)
        assert len(m.snapshot()) == 1


def test_values_per_cpu_or_one_for_every_cpu(fake: Fake) -> None:
    kernel, topo = fake
    ncpu = len(topo.possible)
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 8) as m:
        kernel.calls.clear()
        m.update_batch([1, 2], [5, 6])  # (n,): each key's one value on every CPU
        assert kernel.calls == ["map_update_batch"]
        assert m[1].to_dict() == dict.fromkeys(topo.possible, 5) and m[2].sum() == 6 * ncpu
        per_cpu = np.arange(2 * ncpu, dtype=np.uint64).reshape(2, ncpu)
        m.update_batch([3, 4], per_cpu)
        assert [m[4][c] for c in topo.possible] == list(per_cpu[1])
        with pytest.raises(
            percpu.SizeMismatch, match=rf"shape \(2, 1\), expected \(2, {ncpu}\) or \(2,\)"
        ) as e:
            m.update_batch([3, 4], np.zeros((2, 1), np.uint64))
        assert (e.value.expected, e.value.actual) == (2 * ncpu, 2)
        with pytest.raises(percpu.PercpuError, match="keys must be one-dimensional"):
            m.update_batch([[1, 2]], [1])
        kernel.calls.clear()
        m.update_batch([], [])
        m.delete_batch([])
        assert kernel.calls == []  # nothing to write: no syscall


def test_delete_batch_names_the_missing_key(fake: Fake) -> None:
    _ = fake
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 8) as m:
        m.update_batch([1, 2, 3], [1, 1, 1])
        with pytest.raises(percpu.KeyNotFound) as e:
            m.delete_batch([1, 7, 3])
        assert str(e.value) == (
            f"map id {m.info.id}: key 7 is not in the map (delete_batch deleted the 1 key before it, not the "
            "1 after it)"
        )
        assert e.value.map_name == m.name
        m.delete_batch([3])
        assert 3 not in m


def test_without_batch_support_one_call_per_element_and_the_kernel_is_asked_once(fake: Fake) -> None:
    kernel, topo = fake
    kernel.batch = False
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 8) as m:
        kernel.calls.clear()
        m.update_batch([1, 2, 3], [4, 5, 6])
        assert kernel.calls == ["map_update_batch"] + ["map_update"] * 3
        assert m[3].to_dict() == dict.fromkeys(topo.possible, 6)
        kernel.calls.clear()
        m.update_batch([4], [7])
        m.delete_batch([1, 2])
        assert kernel.calls == ["map_update", "map_delete", "map_delete"]  # the refusal was remembered
        assert sorted(m.keys()) == [3, 4]
        with pytest.raises(percpu.KeyNotFound):
            m.delete_batch([9])


def test_lists_of_large_64_bit_integers_are_written_exactly(fake: Fake) -> None:
    """numpy reads a list holding an int of 2**63 or more as float64: [2**64 - 1, 1] became [0, 1] and
    2**53 + 1 became 2**53, written as keys and values without a word."""
    _, topo = fake
    n = len(topo.possible)
    with percpu.PerCpuHash.create(np.uint64, np.uint64, 8) as m:
        m.update_batch([2**64 - 1, 1], [2**53 + 1, 2**64 - 1])
        assert m[2**64 - 1].to_dict() == {c: 2**53 + 1 for c in topo.possible}
        assert m[1].to_dict() == {c: 2**64 - 1 for c in topo.possible}
        assert sorted(m.keys()) == [1, 2**64 - 1]
        m.update(3, [2**64 - 1] * (n - 1) + [2**63 + 1])
        assert m[3][topo.possible[-1]] == 2**63 + 1
        with pytest.raises(percpu.PercpuError, match="not an integer"):
            m.update_batch([2**64 - 1, 2], [1.5, 2])
