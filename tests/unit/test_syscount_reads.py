"""The counter's per-CPU arrays read at what the online CPUs cost (syscount/_reads.py), against the fake
kernel: a VM of 32 possible CPUs with 2 online, BPF_F_CPU as Linux 7.0 has it. Counts and bytes only."""

from __future__ import annotations

import numpy as np

import percpu
from percpu.cpus import CpuList
from percpu.syscount import _reads
from percpu.syscount._reads import CpuReads

from .fake_kernel import FakeKernel, installed

N = 32
SLOTS = 2048


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_online_cpus_each_read_an_offline_one_once_after_it_went_offline() -> None:
    """Every read of the counts copied 32 CPUs' values, 30 of them of CPUs that run nothing. Now the 2
    online CPUs' values (a 16th of the bytes); CPU 1 taken offline is read once more, for the calls it
    made before it went, then no more while it is offline; back online it is read again. Every read's
    values are the whole map's."""
    kernel = FakeKernel(N, online=(0, 1), cpu_flag=True)
    online = CpuList([0, 1])
    clock = Clock()
    with installed(kernel), percpu.PerCpuArray.create(np.uint64, SLOTS, name="counts") as m:
        reads = CpuReads(m.cpus, clock=clock)
        assert reads.one_cpu  # probed here (the probe's own read is not counted below)
        value = np.zeros((SLOTS, N), np.uint64)

        def count(cpu: int, slot: int, n: int) -> None:
            value[slot, cpu] += n
            m.update_cpu(slot, cpu, int(value[slot, cpu]))

        def read() -> tuple[np.ndarray, int]:
            before = kernel.bytes_out
            reads.begin(online)
            keys, values = reads.read("counts", m)
            assert list(keys) == list(range(SLOTS))
            return values, kernel.bytes_out - before

        whole = SLOTS * 8 * N
        assert read()[1] == whole, "the first read is whole"
        count(1, 110, 7)
        values, copied = read()
        assert copied == 2 * SLOTS * 8 and (values == value).all()
        count(1, 110, 3)  # its last calls
        online = CpuList([0])
        values, copied = read()
        assert copied == 2 * SLOTS * 8 and int(values[110, 1]) == 10, "read once after it went offline"
        count(0, 0, 1)
        values, copied = read()
        assert copied == SLOTS * 8 and (values == value).all(), "then no more"
        online = CpuList([0, 1])
        count(1, 110, 5)
        values, copied = read()
        assert copied == 2 * SLOTS * 8 and int(values[110, 1]) == 15
        count(5, 7, 9)  # CPU 5 came online, made calls and went offline between two reads: unseen
        values, copied = read()
        assert int(values[7, 5]) == 0
        clock.now += _reads.FULL_READ_EVERY
        assert read()[1] == whole, "a whole read now and then, for a CPU that came and went unseen"
        count(1, 3, 2)
        count(0, 2047, 4)
        values, copied = read()
        assert copied == 2 * SLOTS * 8 and (values == value).all(), "one CPU at a time again, CPU 5's kept"
        online = CpuList([0])
        count(1, 3, 1)
        for _ in range(2):
            values, copied = read()
            assert (values == value).all(), "the CPU gone offline read once more, then kept"
        assert copied == SLOTS * 8


def test_whole_reads_after_the_first_go_into_kept_buffers_and_read_the_map_as_it_is() -> None:
    """Whole reads after a map's first reuse its buffers (a snapshot zeroed 512 KiB at every read of the
    counts): each read's values are the map's at that read, for a map read whole because one CPU's reads
    would cost more (a 1-key map, 2 CPUs online) and for a counter told to read whole."""
    kernel = FakeKernel(N, online=(0, 1), cpu_flag=True)
    with (
        installed(kernel),
        percpu.PerCpuArray.create(np.uint64, 1, name="dropped") as small,
        percpu.PerCpuArray.create(np.uint64, SLOTS, name="counts") as big,
    ):
        for one_cpu, m in ((True, small), (False, big), (False, small)):
            reads = CpuReads(m.cpus, one_cpu=one_cpu)
            n = m.info.max_entries
            value = np.array(m.snapshot().values)  # what the cases before left in it
            for i in range(4):
                m.update_cpu(n - 1, i % 2, i + 1)
                value[n - 1, i % 2] = i + 1
                before = kernel.bytes_out
                reads.begin(CpuList([0, 1]))
                keys, values = reads.read(m.name, m)
                assert kernel.bytes_out - before == n * 8 * N
                assert list(keys) == list(range(n)) and (values == value).all(), (one_cpu, m.name, i)


def test_without_bpf_f_cpu_or_when_told_every_read_is_whole() -> None:
    for kernel, one_cpu in (
        (FakeKernel(N, online=(0, 1)), True),
        (FakeKernel(N, online=(0, 1), cpu_flag=True), False),
    ):
        with installed(kernel), percpu.PerCpuArray.create(np.uint64, SLOTS, name="counts") as m:
            reads = CpuReads(m.cpus, one_cpu=one_cpu)
            assert not reads.one_cpu
            for _ in range(3):
                before = kernel.bytes_out
                reads.begin(CpuList([0, 1]))
                reads.read("counts", m)
                assert kernel.bytes_out - before == SLOTS * 8 * N


def test_unknown_online_cpus_mean_whole_reads_and_nothing_taken_as_final() -> None:
    """Online CPUs unknown (sysfs unreadable): whole reads, and no CPU counted as read after it went
    offline, so the next read with the CPUs known reads the 30 offline ones again (whole: cheaper here)."""
    kernel = FakeKernel(N, online=(0, 1), cpu_flag=True)
    with installed(kernel), percpu.PerCpuArray.create(np.uint64, SLOTS, name="counts") as m:
        reads = CpuReads(m.cpus)
        assert reads.one_cpu
        copied = []
        for online in (CpuList([0, 1]), None, None, CpuList([0, 1]), CpuList([0, 1])):
            before = kernel.bytes_out
            reads.begin(online)
            reads.read("counts", m)
            copied.append((kernel.bytes_out - before) // (SLOTS * 8))
        assert copied == [N, N, N, N, 2]


def test_one_cpu_at_a_time_only_where_it_copies_less() -> None:
    """A batch lookup per CPU costs a syscall each: the counter's 3-slot lost map is read whole (one
    lookup of 768 bytes rather than two of 24), and so is any map when most possible CPUs are online."""
    kernel = FakeKernel(N, online=tuple(range(28)), cpu_flag=True)
    with (
        installed(kernel),
        percpu.PerCpuArray.create(np.uint64, 3, name="lost") as small,
        percpu.PerCpuArray.create(np.uint64, SLOTS, name="counts") as big,
    ):
        reads = CpuReads(small.cpus)
        for online, m, cpus in (
            (CpuList([0, 1]), small, N),
            (CpuList([0, 1]), big, 2),
            (CpuList(range(28)), big, N),
        ):
            n = m.info.max_entries
            for _ in range(2):  # the first read of each is whole
                before = kernel.bytes_out
                reads.begin(online)
                reads.read(m.name, m)
            assert kernel.bytes_out - before == n * 8 * cpus, (m.name, online)
