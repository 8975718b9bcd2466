"""Who disturbs a CPU, from synthetic deltas: every source by kind, counts that add up per column, the
views by CPU selection and topology group, and the caveats."""

from __future__ import annotations

import numpy as np
import pytest

from percpu.cpulist import CpuList
from percpu.disturb import DisturbDelta, Handlers, Lost, Tasks, Untimed
from percpu.disturb import _contract as contract
from percpu.disturb._who import SyscallRows, caveats, group, restrict, who_disturbs
from percpu.errors import PercpuError
from percpu.topo import CpuTopology

CPUS = CpuList([0, 1, 2, 3])


def u(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.uint64)


def z() -> np.ndarray:
    return u(0, 0, 0, 0)


def tasks() -> Tasks:
    """Rows: an app thread (expected), a kworker, a user task, CPU 1's idle task, a task outside the pid
    namespace."""
    keys = np.zeros(5, contract.TASK_KEY)
    keys["pid"] = [100, 7, 200, 0, 0]
    keys["tgid"] = [100, 7, 200, 0, 0]
    keys["comm"] = [b"app", b"kworker/1:1", b"cron", b"swapper/1", b"host-thing"]
    sw = np.array([[0, 3, 0, 0], [0, 2, 0, 1], [1, 1, 0, 0], [0, 6, 0, 0], [0, 0, 0, 2]], np.uint64)
    ns = np.array([[0, 900, 0, 0], [0, 20, 0, 5], [3, 7, 0, 0], [0, 0, 0, 0], [0, 0, 0, 9]], np.uint64)
    un = np.zeros_like(sw)
    un[2, 0] = 1
    return Tasks(
        keys,
        kthread=np.array([False, True, False, True, False]),
        idle=np.array([False, False, False, True, False]),
        switches=sw,
        ns=ns,
        untimed=un,
        expected=np.array([True, False, False, False, False]),
        outside=np.array([False, False, False, False, True]),
    )


def delta() -> DisturbDelta:
    irqs = Handlers(
        np.array([24, 9]),
        ("virtio0-input", "acpi"),
        np.array([[5, 1, 0, 0], [0, 0, 0, 2]], np.uint64),
        np.array([[500, 100, 0, 0], [0, 0, 0, 40]], np.uint64),
    )
    softirqs = Handlers(
        np.array([1]), ("TIMER",), np.array([[4, 4, 0, 0]], np.uint64), np.array([[8, 8, 0, 0]], np.uint64)
    )
    vectors = Handlers(
        np.array([0, 5]),
        ("local_timer", "tlb_shootdown"),
        np.array([[9, 9, 0, 0], [0, 3, 0, 0]], np.uint64),
        np.array([[90, 90, 0, 0], [0, 0, 0, 0]], np.uint64),
    )
    t = tasks()
    lost_tasks = u(0, 1, 0, 0)
    switches = t.switches.sum(axis=0) + lost_tasks  # every switch-in: rows plus lost
    return DisturbDelta(
        seconds=2.0,
        cpus=CPUS,
        switches=switches - u(0, 1, 0, 0),
        gaps=u(0, 1, 0, 0),
        irqs=irqs,
        softirqs=softirqs,
        vectors=vectors,
        tasks=t,
        lost=Lost(u(0, 0, 0, 3), z(), lost_tasks, skipped=0),
        untimed=Untimed(u(1, 0, 0, 0), z(), z(), z()),
    )


def syscalls() -> SyscallRows:
    return SyscallRows(
        totals=u(10, 50, 0, 0),
        tgids=np.array([100, 200]),
        comms=("app", "cron"),
        counts=np.array([[0, 40, 0, 0], [10, 6, 0, 0]], np.uint64),
        expected=np.array([True, False]),
    )


def test_every_source_is_a_row_of_its_kind_and_the_counts_add_up() -> None:
    v = who_disturbs(
        delta(), syscalls=syscalls(), unsupported={"tlb_shootdown": "no hook"}, expected="pid 100"
    )
    assert {(s.kind, s.label()) for s in v.sources} >= {
        ("irq", "virtio0-input (irq 24)"),
        ("vector", "local_timer (LOC)"),
        ("vector", "tlb_shootdown (TLB)"),
        ("softirq", "TIMER"),
        ("expected", "app (pid 100)"),
        ("kthread", "kworker/1:1 (pid 7)"),
        ("task", "cron (pid 200)"),
        ("idle", "swapper/1"),
        ("task", "host-thing"),  # outside percpu's pid namespace: no pid
        ("syscall", "app [expected] (pid 100)"),
        ("syscall", "cron (pid 200)"),
    }
    # switch-ins: every task-like row plus the lost ones equal the switches (gaps included), per CPU
    rows = sum(v.totals(k)[0] for k in ("task", "kthread", "expected", "idle"))
    assert (rows + v.lost["task"] == v.switch_ins()).all() and (v.switch_ins() == v.switches).all()
    # system calls: the per-process table's rows; the per-CPU totals (another map) are 4 more on CPU 1
    calls, _ = v.totals("syscall")
    assert calls.tolist() == [10, 46, 0, 0]
    assert v.syscalls_apart is not None and v.syscalls_apart.tolist() == [0, 4, 0, 0]
    # times: measured where they were, never for the TLB row, the idle task or the calls
    assert not v.timed[[s.row == "TLB" or s.kind in ("idle", "syscall") for s in v.sources]].any()
    assert v.totals("expected")[1].tolist() == [0, 900, 0, 0]
    assert v.untimed_runs["irq"].tolist() == [1, 0, 0, 0] and int(v.untimed.sum()) == 1
    assert v.counted == ("irq", "vector", "softirq", "task", "syscall")
    order = [v.sources[i].label() for i in v.order()]
    assert (
        order[0] == "virtio0-input (irq 24)" and "app (pid 100)" not in order
    )  # expected: not a disturbance


def test_cpus_restrict_and_groups_sum_every_per_cpu_part(topology: CpuTopology) -> None:
    v = who_disturbs(delta(), syscalls=syscalls())
    one = restrict(v, CpuList([1]), "isolated")
    assert one.labels == ("cpu1",) and one.selected == "isolated"
    assert all(one.counts[i].any() or one.untimed[i].any() for i in range(len(one.sources)))
    assert "cron (pid 200)" in {s.label() for s in one.sources} and "host-thing" not in {
        s.label() for s in one.sources
    }
    assert one.switches.tolist() == [v.switches[1]] and one.lost["task"].tolist() == [1]
    g = group(v, topology, "core")  # the fake machine's cores: {0, 2} and {1, 3}
    assert g.labels == ("core0.0", "core0.1") and g.by == "core"
    assert g.switches.sum() == v.switches.sum() and (g.counts.sum(axis=1) == v.counts.sum(axis=1)).all()
    assert g.width().tolist() == [2, 2]
    with pytest.raises(PercpuError, match="restrict CPUs before grouping"):
        restrict(g, CpuList([1]))
    with pytest.raises(PercpuError, match="none of the CPUs 7"):
        restrict(v, CpuList([7]))


def test_caveats_name_what_the_numbers_leave_out() -> None:
    v = who_disturbs(delta(), unsupported={"tlb_shootdown": "no hook worked"})
    codes = [c.code for c in caveats(v)]
    assert codes == [
        "disturb.unsupported.tlb_shootdown",
        "disturb.lost.irq",
        "disturb.lost.task",
        "disturb.gaps",
        "disturb.untimed",
        "disturb.times-overlap",
    ]
    by = {c.code: c for c in caveats(v)}
    assert by["disturb.lost.irq"].count == 3 and by["disturb.untimed"].count == 2
    assert "TLB shootdowns not counted here: no hook worked" in by["disturb.unsupported.tlb_shootdown"].text


def test_syscall_totals_and_per_process_rows_read_apart_are_said_either_way() -> None:
    """The per-CPU system-call totals are read a moment before the per-process table while counting: a
    delta's totals can be above the rows on one CPU and below them on another (seen here: -4,865 on
    cpu0 in one window, +1,929 on an isolated CPU in the guest's docs). Before, the difference became a
    row "not in the per-process table", as if the table had been full, and one below 0 was clipped to 0
    without a word. Now the rows are the table's, and the difference, either way, is a caveat with each
    CPU's number; the calls the full table could not take have their own."""
    rows = syscalls()._replace(totals=u(12, 40, 0, 0))  # rows: 10 and 46
    v = who_disturbs(delta(), syscalls=rows)
    assert [s.name for s in v.sources if s.kind == "syscall"] == ["app [expected]", "cron"]
    assert v.totals("syscall")[0].tolist() == [10, 46, 0, 0]
    assert v.syscalls_apart is not None and v.syscalls_apart.tolist() == [2, -6, 0, 0]
    (apart,) = [c for c in caveats(v) if c.code == "disturb.syscalls-apart"]
    assert "cpu0 +2, cpu1 -6" in apart.text and apart.count == -4
    assert not [c for c in caveats(v) if c.code == "disturb.lost.syscall"]
    full = who_disturbs(delta(), syscalls=rows._replace(lost=7))
    (lost,) = [c for c in caveats(full) if c.code == "disturb.lost.syscall"]
    (apart,) = [c for c in caveats(full) if c.code == "disturb.syscalls-apart"]
    assert lost.count == 7 and "(the 7 not in the table among them)" in apart.text
    only = restrict(v, CpuList([1]))
    assert only.syscalls_apart is not None and only.syscalls_apart.tolist() == [-6]
