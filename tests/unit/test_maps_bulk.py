"""maps/_bulk.py: whole-map reads (batches, their growth policy, the key-walk fallback) and the bounded
key walk."""

from __future__ import annotations

import errno
import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest

import percpu
from percpu.cpus import CpuLists

from .fake_kernel import FakeKernel, installed

Fake = tuple[FakeKernel, CpuLists]


def test_iteration_is_bounded_and_never_repeats_under_deletes(fake: Fake) -> None:
    kernel, _ = fake
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 50) as m:
        for k in range(50):
            m.update_all(k, k)
        victims = iter(range(10, 50, 3))

        def delete_one() -> None:  # another program deletes keys while we walk
            v = next(victims, None)
            if v is not None:
                m.delete(v)

        kernel.on_next_key = delete_one
        seen = list(m.keys())
        kernel.on_next_key = None
        assert len(seen) == len(set(seen)) <= 50
        assert set(seen) >= {k for k in range(10)}
        assert all(isinstance(k, int) for k in seen)


@pytest.mark.parametrize("cls", [percpu.PerCpuArray, percpu.Array])
def test_an_array_without_batch_reads_is_read_by_index_not_walked(
    fake: Fake, cls: type[percpu.Array]
) -> None:
    """Per-CPU arrays have batch reads only since Linux 5.13: before, a snapshot looks each index up once
    (an array's keys are 0 to max_entries - 1), with no get_next_key walk doubling the system calls."""
    kernel, topo = fake
    kernel.batch = False
    n = 37
    want = np.arange(n, dtype=np.uint32) * 10
    with cls.create(np.uint32, n) as m:
        m.update_batch(np.arange(n), want)  # one update each (one value on every CPU of a per-CPU array)
        kernel.calls.clear()
        snap = m.snapshot()
        assert kernel.calls.count("map_lookup") == n and "map_get_next_key" not in kernel.calls
        assert (snap.keys == np.arange(n)).all()
        if cls is percpu.PerCpuArray:
            assert snap.values.shape == (n, len(topo.possible)) and (snap.values == want[:, None]).all()
        else:
            assert (snap.values == want).all()


def test_snapshot_batches_retry_enospc_and_fall_back(fake: Fake) -> None:
    kernel, topo = fake
    n = 37
    with percpu.PerCpuHash.create(np.uint32, np.uint32, n) as m:
        keys = np.arange(n, dtype=np.uint32)
        vals = (keys[:, None] * 1000 + np.arange(len(topo.possible))).astype(np.uint32)
        m.update_batch(keys, vals)
        kernel.bucket = 64  # a bucket larger than the map: the first call gets ENOSPC
        snap = m.snapshot()
        assert kernel.calls.count("map_lookup_batch") >= 2
        order = np.argsort(snap.keys)
        assert (snap.keys[order] == keys).all() and (snap.values[order] == vals).all()
        assert snap.values.shape == (n, len(topo.possible))
        assert (snap.cpu(topo.possible[-1])[order] == vals[:, -1]).all()
        assert not snap.values.flags.writeable
    kernel.batch = False
    with percpu.PerCpuHash.create(np.uint32, np.uint32, n) as m:
        m.update_batch(keys, vals)  # falls back to one update each
        snap = m.snapshot()  # falls back to a key walk
        order = np.argsort(snap.keys)
        assert (snap.values[order] == vals).all()
        with pytest.raises(percpu.NotSupported):
            m.snapshot(batch=True)
        m.delete_batch(keys[:5])
        assert len(m.snapshot()) == n - 5


def test_batch_einval_means_no_batch_support(fake: Fake) -> None:
    kernel, _ = fake
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 4) as m:
        kernel.fail_next["map_lookup_batch"] = errno.EINVAL
        with pytest.raises(percpu.NotSupported, match="no batch operations for PERCPU_HASH") as e:
            m.snapshot(batch=True)
        assert e.value.min_kernel == "5.6"
        kernel.fail_next["map_lookup_batch"] = errno.EFAULT
        with pytest.raises(percpu.BpfError, match="Bad address"):
            m.snapshot(batch=True)


@pytest.fixture
def wide() -> Iterator[tuple[FakeKernel, CpuLists]]:
    kernel = FakeKernel(256, online=(0, 1, 2, 3))
    with installed(kernel):
        yield kernel, CpuLists(kernel.machine.cpu_root)


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "key-walk"])
def test_sparse_map_with_huge_max_entries_is_read_without_allocating_for_all(wide: Fake, batch: bool) -> None:
    """32 KiB values on 256 possible CPUs are 8 MiB an element: allocating for 2**20 entries up front
    would need 8 TiB. Three elements must cost about three elements. (BPF_F_NO_PREALLOC: preallocated, the
    kernel would need those 8 TiB at creation, and create() refuses that.)"""
    kernel, _ = wide
    kernel.bucket = 1
    with percpu.PerCpuHash.create(np.uint32, np.dtype((np.void, 32768)), 2**20, flags=1) as m:
        for k in range(3):
            m.update_all(k, bytes([k]) * 32768)
        tracemalloc.start()
        try:
            snap = m.snapshot(batch=batch)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(snap) == 3
        assert snap.values.shape == (3, 256)
        assert sorted(bytes(snap.values[i, 255])[:1] for i in range(3)) == [b"\0", b"\1", b"\2"]
        assert peak < 200 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_a_read_that_outgrows_its_first_buffer_is_exact(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    """Room for 3 elements up front: the reader grows by doubling over several batch calls, passing the
    kernel's position token from one call to the next, and loses or repeats nothing."""
    kernel, topo = fake
    ncpu = len(topo.possible)
    kernel.bucket = 1
    per = 4 + 8 * ncpu
    monkeypatch.setattr(percpu.maps._bulk, "SNAPSHOT_PREALLOC", 3 * per)
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 50) as m:
        keys = np.arange(50, dtype=np.uint32)
        vals = keys[:, None].astype(np.uint64) * 1000 + np.arange(ncpu, dtype=np.uint64)
        m.update_batch(keys, vals)
        kernel.calls.clear()
        snap = m.snapshot()
        assert kernel.calls.count("map_lookup_batch") >= 3
        order = np.argsort(snap.keys)
        assert (snap.keys[order] == keys).all() and (snap.values[order] == vals).all()
