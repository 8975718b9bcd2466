"""Edges of the map API against the fake kernel: sums that must not wrap, records that must not alias,
sparse maps with huge max_entries, numbers numpy would wrap, CPUs that are not possible, arrays that cannot
delete, and the one-slot BPF_F_CPU path of Linux 7.0."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest

import percpu
from percpu import _libbpf
from percpu.cpus import Topology

from .fake_kernel import FakeKernel

Fake = tuple[FakeKernel, Topology]

NARROW = np.dtype([("a", "<u4"), ("b", "<u2", (4,))])  # 12 bytes, stride 16


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


@pytest.fixture
def wide() -> Iterator[tuple[FakeKernel, Topology]]:
    kernel = FakeKernel(256, online=(0, 1, 2, 3))
    with _libbpf.use_backend(kernel):
        yield kernel, Topology(kernel.cpu_root)


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "key-walk"])
def test_sparse_map_with_huge_max_entries_is_read_without_allocating_for_all(wide: Fake, batch: bool) -> None:
    """32 KiB values on 256 possible CPUs are 8 MiB an element: allocating for 2**20 entries up front
    would need 8 TiB. Three elements must cost about three elements."""
    kernel, _ = wide
    kernel.bucket = 1
    with percpu.PerCpuHash.create(np.uint32, np.dtype((np.void, 32768)), 2**20) as m:
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


def test_cpu_that_is_not_possible(fake: Fake) -> None:
    _, topo = fake
    missing = topo.possible[-1] + 1
    with percpu.PerCpuArray.create(np.uint64, 2) as m:
        for call in (lambda: m.lookup_cpu(0, missing), lambda: m.update_cpu(0, missing, 1)):
            with pytest.raises(percpu.CpuNotPossible) as e:
                call()
            assert e.value.cpu == missing and e.value.possible == str(topo.possible)
        with pytest.raises(percpu.CpuNotPossible):
            m.snapshot().cpu(missing)
        with pytest.raises(IndexError):  # still what a Sequence says
            m[0][missing]


def test_arrays_cannot_delete_and_say_so(fake: Fake) -> None:
    kernel, _ = fake
    with percpu.PerCpuArray.create(np.uint64, 4) as m:
        for call in (lambda: m.delete(0), lambda: m.lookup_and_delete(0), m.lookup_and_delete_batch):
            with pytest.raises(percpu.MapTypeError, match="cannot be deleted"):
                call()
        kernel.calls.clear()
        assert len(m.snapshot()) == 4
        assert "map_lookup_batch" in kernel.calls  # batch reads still on
        with pytest.raises(percpu.BpfError, match="out of range"):
            m.update_all(4, 1)


def test_one_cpu_slot_with_bpf_f_cpu(fake: Fake) -> None:
    """Where the kernel has BPF_F_CPU (Linux 7.0), one CPU's value is read and written alone: one call,
    one value_size buffer, no read-modify-write of the other CPUs' slots."""
    _, topo = fake
    kernel = FakeKernel(len(topo.possible), cpu_ids=topo.possible.ids, cpu_flag=True)
    last = topo.possible[-1]
    with _libbpf.use_backend(kernel), percpu.PerCpuHash.create(np.uint32, np.uint16, 4) as m:
        m.update_all(1, 5)
        assert percpu.maps.cpu_flag_supported()  # probed on this backend, not cached from another
        kernel.calls.clear()
        m.update_cpu(1, last, 9)
        assert kernel.calls.count("map_update") == 1 and "map_lookup" not in kernel.calls
        kernel.calls.clear()
        assert m.lookup_cpu(1, last) == 9
        assert kernel.calls == ["map_lookup"]
        assert m[1].to_dict() == {c: (9 if c == last else 5) for c in topo.possible}
        m.update_cpu(2, topo.possible[0], 3)  # a new key: zeros on the other CPUs
        assert m[2].to_dict() == {c: (3 if c == topo.possible[0] else 0) for c in topo.possible}


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
