"""maps/_percpu.py: one CPU's value (BPF_F_CPU where the kernel has it, read-modify-write elsewhere)."""

from __future__ import annotations

import errno

import numpy as np
import pytest

import percpu
from percpu.cpus import CpuLists

from .fake_kernel import FakeKernel, installed

Fake = tuple[FakeKernel, CpuLists]


def test_update_cpu_read_modify_write(fake: Fake) -> None:
    _, topo = fake
    last = topo.possible[-1]
    with percpu.PerCpuArray.create(np.int32, 2) as m:
        m.update_all(0, -1)
        m.update_cpu(0, last, 7)
        assert m[0][last] == 7 and all(m[0][c] == -1 for c in topo.possible if c != last)
        assert m.lookup_cpu(0, last) == 7
        with pytest.raises(ValueError, match="not a possible CPU"):
            m.update_cpu(0, last + 1, 1)


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


def test_one_cpu_slot_with_bpf_f_cpu(fake: Fake) -> None:
    """Where the kernel has BPF_F_CPU (Linux 7.0), one CPU's value is read and written alone: one call,
    one value_size buffer, no read-modify-write of the other CPUs' slots."""
    _, topo = fake
    kernel = FakeKernel(len(topo.possible), cpu_ids=topo.possible.ids, cpu_flag=True)
    last = topo.possible[-1]
    with installed(kernel), percpu.PerCpuHash.create(np.uint32, np.uint16, 4) as m:
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


def test_a_one_cpu_batch_failure_leaves_whole_map_batches_on(fake: Fake) -> None:
    """A kernel that refuses BPF_F_CPU in a batch read's elem_flags says nothing about plain batch reads:
    the one-CPU snapshot falls back to the whole map, and later whole-map snapshots still batch."""
    _, topo = fake
    kernel = FakeKernel(len(topo.possible), cpu_ids=topo.possible.ids, cpu_flag=True)
    last = topo.possible[-1]
    with installed(kernel), percpu.PerCpuHash.create(np.uint32, np.uint16, 4) as m:
        m.update_all(1, 5)
        m.update_cpu(1, last, 9)
        kernel.fail_next["map_lookup_batch"] = errno.EINVAL
        snap = m.snapshot(cpu=last)
        assert snap.values.tolist() == [9] and snap.cpus == (last,)
        assert percpu.features.known(percpu.features.BATCH_OPS, m.info.type) is not False
        kernel.calls.clear()
        assert m.snapshot().values.tolist() == [[9 if c == last else 5 for c in topo.possible]]
        assert kernel.calls.count("map_lookup_batch") >= 1 and "map_get_next_key" not in kernel.calls


@pytest.mark.parametrize("cpu_flag", [False, True], ids=["read-modify-write", "BPF_F_CPU"])
def test_cpu_ids_and_flags_are_taken_exactly(fake: Fake, cpu_flag: bool) -> None:
    """With BPF_F_CPU the CPU id travels in flags bits 63..32: a numpy uint32 CPU id shifted by 32 in its
    own type became 0, so lookup_cpu(k, np.uint32(3)) read CPU 0's value and update_cpu wrote CPU 0's.
    True and 1.0 were taken as CPU 1. update(flags=2**64) was update(flags=0) on the real kernel."""
    _, topo = fake
    kernel = FakeKernel(len(topo.possible), cpu_ids=topo.possible.ids, cpu_flag=cpu_flag)
    last = topo.possible[-1]
    with installed(kernel), percpu.PerCpuHash.create(np.uint32, np.uint64, 4, name="cpus") as m:
        m.update(1, {c: c + 100 for c in topo.possible})
        for cpu in (np.uint32(last), np.int16(last), np.uint64(last)):
            assert m.lookup_cpu(1, cpu) == last + 100  # type: ignore[arg-type]
        m.update_cpu(1, np.uint32(last), 7)  # type: ignore[arg-type]
        assert m[1].to_dict() == {c: 7 if c == last else c + 100 for c in topo.possible}
        for bad in (True, 1.0, "1"):
            with pytest.raises(percpu.CpuNotPossible):
                m.lookup_cpu(1, bad)  # type: ignore[arg-type]
            with pytest.raises(percpu.CpuNotPossible):
                m.update_cpu(1, bad, 5)  # type: ignore[arg-type]
        kernel.calls.clear()
        for flags in (2**64, -1, 2**64 + 2):
            for call in (
                lambda f=flags: m.update(1, [0] * len(topo.possible), f),
                lambda f=flags: m.update_all(1, 0, f),
                lambda f=flags: m.update_cpu(1, last, 0, f),
                lambda f=flags: m.update_batch(np.arange(2), np.zeros(2, np.uint64), f),
            ):
                with pytest.raises(percpu.InvalidArgument, match=rf"map 'cpus': flags {flags} "):
                    call()
        assert kernel.calls == []


def test_an_array_reader_reads_into_the_buffers_it_keeps_and_again_at_each_call(fake: Fake) -> None:
    """PerCpuArray.reader: buffers sized from the map's info, kept from one read to the next; each read is
    one batch lookup, whole elements or one CPU's values (BPF_F_CPU), of the map as it is then; what it
    returns is read-only; a closed map's reader says so."""
    _, topo = fake
    kernel = FakeKernel(len(topo.possible), cpu_ids=topo.possible.ids, cpu_flag=True)
    last = topo.possible[-1]
    with installed(kernel), percpu.PerCpuArray.create(np.uint64, 3) as m:
        whole, one = m.reader(), m.reader(cpu=last)
        assert whole.keys.tolist() == one.keys.tolist() == [0, 1, 2]
        for n in (7, 8):
            m.update_cpu(2, last, n)
            kernel.calls.clear()
            values, mine = whole.read(), one.read()
            assert kernel.calls == ["map_lookup_batch", "map_lookup_batch"]
            assert mine.tolist() == [0, 0, n] and values.shape == (3, len(topo.possible))
            assert (values == m.snapshot().values).all() and int(values[2, -1]) == n
            with pytest.raises(ValueError, match="read-only"):
                mine[0] = 1
        assert whole.read() is not None and one.read().base is not None  # the reader's own memory
    with pytest.raises(percpu.PercpuError):
        whole.read()
