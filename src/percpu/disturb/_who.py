"""Who disturbs a CPU: one view of everything that took each CPU (or group of CPUs) away from its work.

:func:`who_disturbs` turns a :class:`~percpu.disturb.DisturbDelta` (and, when counted, the system calls
per CPU) into a :class:`Disturbance`: one row per source, each with its count and time per column:

=========== ============================================ ============================== ===================
kind        a row is                                     count                          time
=========== ============================================ ============================== ===================
irq         an IRQ line, by number and actions' names    flow-handler runs              in its handlers
vector      an x86 vector (local_timer, ..., TLB)        runs (as /proc/interrupts)     in its handler
softirq     a softirq vector (TIMER, NET_RX, ...)        runs (as /proc/softirqs)       in its handler
task        a user task switched in (pid, comm)          switch-ins                     on the CPU
kthread     a kernel thread switched in                  switch-ins                     on the CPU
syscall     the system calls of a process (with -P), or  calls                          (not measured)
            of every task
expected    a task of the expected workload              switch-ins                     on the CPU
idle        the CPU's idle task                          switch-ins                     (not kept)
=========== ============================================ ============================== ===================

The first six kinds are the disturbance; ``expected`` and ``idle`` are the CPU's own time. Without an
expected workload every task is a disturbance. Counts add up per column: the task, kthread, expected and
idle rows plus ``lost["task"]`` are the switch-ins (:meth:`Disturbance.switch_ins`), which equal the
kernel's count of switches (``switches``, the unseen ones of gaps included) once counting has stopped;
an IRQ or softirq beyond its table is in ``lost`` and in no row. With per-process counts the syscall rows
are the per-process table's, and add up to its calls on that CPU; the per-CPU totals, a map read a moment
before that table while counting (and which also hold the calls the full table could not take), differ
from them by :attr:`Disturbance.syscalls_apart`, either way, said in a caveat and never clipped.

Times of different kinds overlap and must not be added: a task's time is its ``sum_exec_runtime``, which
includes the interrupts and softirqs that ran while it was on the CPU (the kernel charges them to it
without IRQ_TIME_ACCOUNTING, which Debian's kernels do not build).

Pure data: numpy, the CPU lists and the topology's groups; no kernel access.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..cpulist import CpuList
from ..errors import PercpuError
from ..topo import CpuGroups, CpuTopology, group_rows
from ._data import VECTOR_ROWS, DisturbDelta, Handlers

__all__ = [
    "DISTURBANCE_KINDS",
    "KINDS",
    "Caveat",
    "Disturbance",
    "Source",
    "SyscallRows",
    "caveats",
    "group",
    "restrict",
    "view",
    "who_disturbs",
]

DISTURBANCE_KINDS = ("irq", "vector", "softirq", "task", "kthread", "syscall")
KINDS = (*DISTURBANCE_KINDS, "expected", "idle")
# What a row's count counts, by kind (table headers and JSON field docs).
COUNT_OF = {
    "irq": "runs",
    "vector": "runs",
    "softirq": "runs",
    "task": "switch-ins",
    "kthread": "switch-ins",
    "syscall": "calls",
    "expected": "switch-ins",
    "idle": "switch-ins",
}
# The tables the kernel side can run out of, by the kind whose rows they hold, and the option that sizes them.
LOST_OF = {"irq": "--irq-entries", "softirq": "", "task": "--task-entries"}


class Source(NamedTuple):
    """What a row is: its ``kind`` (:data:`KINDS`), ``name`` (an IRQ's actions, a vector's or softirq's
    name, a task's comm, a process's comm for its calls), ``number`` (the IRQ, softirq vector or vector
    slot), ``pid`` and ``tgid`` (tasks; ``tgid`` alone for a process's calls; None for rows that sum
    exited tasks by name, tasks outside percpu's pid namespace, and the calls of every task), ``row``
    (a vector's /proc/interrupts row: LOC, RES, CAL, IWI, TLB)."""

    kind: str
    name: str
    number: int | None = None
    pid: int | None = None
    tgid: int | None = None
    row: str | None = None

    def label(self) -> str:
        """How tables and pictures name it: ``virtio0-input (irq 24)``, ``local_timer (LOC)``, ``TIMER``,
        ``kworker/1:1 (pid 55)``, ``app (pid 1234)``."""
        if self.kind == "irq":
            return f"{self.name} (irq {self.number})"
        if self.kind == "vector":
            return f"{self.name} ({self.row})" if self.row else self.name
        if self.kind in ("task", "kthread", "expected", "idle") and self.pid is not None:
            return f"{self.name} (pid {self.pid})"
        if self.kind == "syscall" and self.tgid is not None:
            return f"{self.name} (pid {self.tgid})"
        return self.name


class SyscallRows(NamedTuple):
    """The system calls counted per column (``totals``), and, with per-process counts, per process:
    ``tgids`` (n,) (-1: a row that sums exited processes), ``comms`` their names, ``counts`` (n,
    columns), ``expected`` (n,) whether a process is the expected workload's. ``label`` names what the
    calls are when they are not all calls (a filter). ``lost``: calls the full per-process table could not
    take (all CPUs: the syscall counter keeps no count per CPU of them)."""

    totals: np.ndarray
    tgids: np.ndarray | None = None
    comms: tuple[str, ...] = ()
    counts: np.ndarray | None = None
    expected: np.ndarray | None = None
    label: str = "system calls"
    lost: int = 0


@dataclass(frozen=True)
class Caveat:
    """What the numbers leave out: ``code`` (stable), ``text`` (for people), ``count`` or None."""

    code: str
    text: str
    count: int | None = None


@dataclass(frozen=True)
class Disturbance:
    """Who disturbed each column (a CPU, or a ``--by`` group) over ``seconds``.

    ``sources`` (n,) name the rows of ``counts``, ``ns`` and ``untimed`` (n, columns uint64: a task's stints
    without a time); ``timed`` (n,) says whether a row's time was measured (``ns`` is 0 where not).
    ``switches`` (columns,) are the switch-ins counted (each gap, a switch the kernel did not report, counts
    one), ``lost`` per kind what a table could not take, ``untimed_runs`` per handler kind the runs without a
    time (the kernel keeps those per CPU, not per source), ``counted`` the kinds counted here and
    ``unsupported`` what this kernel could not count, and why. ``cpus`` are the CPUs counted; ``groups`` the
    grouping, if any (then column i is ``groups.labels[i]``); ``selected`` how ``--cpus`` chose them.
    ``syscalls_apart`` (columns,) int64, with per-process counts: the per-CPU system-call totals less the
    per-process rows (the calls the full table could not take, ``syscalls_lost`` of them on all CPUs, plus
    or minus the calls made between the two tables' reads); None without per-process counts."""

    seconds: float
    cpus: CpuList
    sources: tuple[Source, ...]
    counts: np.ndarray
    ns: np.ndarray
    timed: np.ndarray
    untimed: np.ndarray
    switches: np.ndarray
    gaps: np.ndarray
    lost: dict[str, np.ndarray]
    untimed_runs: dict[str, np.ndarray]
    counted: tuple[str, ...]
    unsupported: dict[str, str] = dataclasses.field(default_factory=dict)
    timed_kinds: tuple[str, ...] = ()
    skipped: int = 0
    expected: str | None = None
    groups: CpuGroups | None = None
    selected: str | None = None
    syscalls_apart: np.ndarray | None = None
    syscalls_lost: int = 0

    def __post_init__(self) -> None:
        n, cols = len(self.sources), len(self.labels)
        for what, a in (("counts", self.counts), ("ns", self.ns), ("untimed", self.untimed)):
            if a.shape != (n, cols):
                raise PercpuError(f"disturbance {what} shaped {a.shape}, expected ({n}, {cols})")

    @property
    def labels(self) -> tuple[str, ...]:
        """Column labels: ``cpu3``, or a group's (``node1``)."""
        if self.groups is not None:
            return self.groups.labels
        return tuple(f"cpu{c}" for c in self.cpus)

    @property
    def by(self) -> str:
        return "cpu" if self.groups is None else self.groups.by

    def width(self) -> np.ndarray:
        """CPUs in each column: a group of four CPUs has four times the wall time to give away."""
        if self.groups is None:
            return np.ones(len(self.cpus), np.int64)
        return np.array([len(m) for m in self.groups.members], np.int64)

    def of(self, kind: str) -> np.ndarray:
        """The rows of one kind."""
        out: np.ndarray = np.array([s.kind == kind for s in self.sources], dtype=bool)
        return out

    def totals(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """(count, ns) per column of every row of ``kind``."""
        rows = self.of(kind)
        cols = len(self.labels)
        if not rows.any():
            return np.zeros(cols, np.uint64), np.zeros(cols, np.uint64)
        return self.counts[rows].sum(axis=0, dtype=np.uint64), self.ns[rows].sum(axis=0, dtype=np.uint64)

    def switch_ins(self) -> np.ndarray:
        """Per column, the switch-ins in the task rows (every kind) plus those lost: what the task rows add
        up to. ``switches`` is the kernel's own count, read from another map a moment apart while
        counting: the two are equal once counting has stopped."""
        rows = self.of("task") | self.of("kthread") | self.of("expected") | self.of("idle")
        out: np.ndarray = self.counts[rows].sum(axis=0, dtype=np.uint64) + self.lost.get(
            "task", np.zeros(len(self.labels), np.uint64)
        )
        return out

    def timed_kind(self, kind: str) -> bool:
        """Whether the time of ``kind`` was measured (a kind with no row in this view included)."""
        return kind in self.timed_kinds

    def order(self, kinds: Sequence[str] = DISTURBANCE_KINDS) -> list[int]:
        """Rows of ``kinds`` with something counted, the most time first, then the most counted."""
        rows = [i for i, s in enumerate(self.sources) if s.kind in kinds and self.counts[i].any()]
        ns = self.ns.sum(axis=1, dtype=np.uint64)
        n = self.counts.sum(axis=1, dtype=np.uint64)
        return sorted(rows, key=lambda i: (-int(ns[i]), -int(n[i]), self.sources[i].label()))


def _pid(v: int) -> int | None:
    return None if v == 0xFFFFFFFF else v


def _handler_sources(kind: str, h: Handlers) -> tuple[list[Source], list[bool]]:
    """Rows of one handler kind, and whether each has a time (a TLB shootdown runs inside the
    call-function vector that carried it: counted only)."""
    srcs = []
    for ident, name in zip(h.ids.tolist(), h.names, strict=True):
        row = VECTOR_ROWS[ident] if kind == "vector" and ident < len(VECTOR_ROWS) else None
        srcs.append(Source(kind, name, number=ident, row=row))
    return srcs, [h.ns is not None and s.row != "TLB" for s in srcs]


def who_disturbs(
    d: DisturbDelta,
    *,
    syscalls: SyscallRows | None = None,
    unsupported: dict[str, str] | None = None,
    expected: str | None = None,
) -> Disturbance:
    """Every source of ``d`` (and the system calls, when given) as one :class:`Disturbance` per CPU."""
    ncpu = len(d.cpus)
    srcs: list[Source] = []
    counts: list[np.ndarray] = []
    ns: list[np.ndarray] = []
    timed: list[bool] = []
    untimed: list[np.ndarray] = []
    counted: list[str] = []
    timed_kinds: list[str] = []
    lost: dict[str, np.ndarray] = {}
    untimed_runs: dict[str, np.ndarray] = {}
    un = d.untimed
    for kind, h, lost_runs, un_runs in (
        ("irq", d.irqs, d.lost.irqs, None if un is None else un.irqs),
        ("vector", d.vectors, None, None if un is None else un.vectors),
        ("softirq", d.softirqs, d.lost.softirqs, None if un is None else un.softirqs),
    ):
        if h is None:
            continue
        counted.append(kind)
        timed_kinds += [kind] if h.ns is not None else []
        s, f = _handler_sources(kind, h)
        srcs += s
        timed += f
        counts += list(h.counts)
        ns += list(h.ns if h.ns is not None else np.zeros_like(h.counts))
        untimed += [np.zeros(ncpu, np.uint64)] * len(s)
        if lost_runs is not None:
            lost[kind] = lost_runs.astype(np.uint64)
        if un_runs is not None:  # kept per CPU by the kernel, not per source
            untimed_runs[kind] = un_runs.astype(np.uint64)
    if d.tasks is not None:
        counted.append("task")
        t = d.tasks
        timed_kinds += ["task", "kthread", "expected"] if t.ns is not None else []
        lost["task"] = d.lost.tasks.astype(np.uint64)
        for i in range(len(t.keys)):
            expected_row = t.expected is not None and bool(t.expected[i])
            kind = (
                "idle" if t.idle[i] else "expected" if expected_row else "kthread" if t.kthread[i] else "task"
            )
            tgid = int(t.keys[i]["tgid"])
            pid = None if t.idle[i] else t.pid(i)
            srcs.append(Source(kind, t.comm(i), pid=pid, tgid=None if pid is None else _pid(tgid)))
            counts.append(t.switches[i])
            ns.append(t.ns[i] if t.ns is not None else np.zeros(ncpu, np.uint64))
            timed.append(t.ns is not None and not t.idle[i])
            untimed.append(t.untimed[i] if t.untimed is not None else np.zeros(ncpu, np.uint64))
    counted += ["syscall"] if syscalls is not None else []
    apart = None if syscalls is None else _add_syscalls(syscalls, ncpu, srcs, counts, ns, timed, untimed)
    n = len(srcs)
    stack = functools.partial(_stack, shape=(n, ncpu))
    return Disturbance(
        seconds=d.seconds,
        cpus=d.cpus,
        sources=tuple(srcs),
        counts=stack(counts),
        ns=stack(ns),
        timed=np.array(timed, dtype=bool).reshape(n),
        untimed=stack(untimed),
        switches=(d.switches + d.gaps).astype(np.uint64),
        gaps=d.gaps.astype(np.uint64),
        lost=lost,
        untimed_runs=untimed_runs,
        counted=tuple(counted),
        unsupported=dict(unsupported or {}),
        timed_kinds=tuple(timed_kinds),
        skipped=d.lost.skipped,
        expected=expected,
        syscalls_apart=apart,
        syscalls_lost=0 if syscalls is None or apart is None else syscalls.lost,
    )


def _stack(rows: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    return np.array(rows, dtype=np.uint64).reshape(shape)


def _add_syscalls(
    s: SyscallRows,
    ncpu: int,
    srcs: list[Source],
    counts: list[np.ndarray],
    ns: list[np.ndarray],
    timed: list[bool],
    untimed: list[np.ndarray],
) -> np.ndarray | None:
    """The system calls' rows: one per process with per-process counts (returns the per-CPU totals less
    them, see :attr:`Disturbance.syscalls_apart`), else one of every call (returns None)."""
    zero = np.zeros(ncpu, np.uint64)

    def add(src: Source, row: np.ndarray) -> None:
        srcs.append(src)
        counts.append(row.astype(np.uint64))
        ns.append(zero)
        timed.append(False)
        untimed.append(zero)

    if s.counts is None or s.tgids is None:
        add(Source("syscall", s.label), s.totals)
        return None
    expected = s.expected if s.expected is not None else np.zeros(len(s.tgids), bool)
    for tgid, comm, row, exp in zip(s.tgids.tolist(), s.comms, s.counts, expected.tolist(), strict=True):
        name = comm if not exp else f"{comm} [expected]"
        add(Source("syscall", name, tgid=None if tgid < 0 else tgid), row)
    # Not a row: the totals are another map, read before the per-process table (and its caches' flush),
    # so besides the calls the full table could not take, the difference holds those made between the two
    # reads, of either sign (a row of it was clipped at 0, and named as if the table had been full).
    apart: np.ndarray = s.totals.astype(np.int64) - s.counts.sum(axis=0, dtype=np.int64)
    return apart


# --- views: some CPUs, or CPUs summed into groups (as percpu.views does for the syscall counts) -----------


def _keep_rows(v: Disturbance, keep: np.ndarray, **changes: object) -> Disturbance:
    return dataclasses.replace(
        v,
        sources=tuple(s for s, k in zip(v.sources, keep.tolist(), strict=True) if k),
        timed=v.timed[keep],
        **changes,  # type: ignore[arg-type]
    )


def restrict(v: Disturbance, cpus: CpuList, selected: str | None = None) -> Disturbance:
    """Only the CPUs in ``cpus`` (those of them counted); rows with nothing there are dropped."""
    if v.groups is not None:
        raise PercpuError("restrict CPUs before grouping them")
    mask = np.isin(np.asarray(v.cpus.ids), np.asarray(cpus.ids))
    if not mask.any():
        raise PercpuError(f"none of the CPUs {cpus} is among the counted CPUs {v.cpus}")
    counts, ns, untimed = v.counts[:, mask], v.ns[:, mask], v.untimed[:, mask]
    keep = np.asarray(counts.any(axis=1) | ns.any(axis=1) | untimed.any(axis=1), dtype=bool)
    return _keep_rows(
        v,
        keep,
        cpus=CpuList(c for c, m in zip(v.cpus, mask, strict=True) if m),
        counts=counts[keep],
        ns=ns[keep],
        untimed=untimed[keep],
        switches=v.switches[mask],
        gaps=v.gaps[mask],
        lost={k: a[mask] for k, a in v.lost.items()},
        untimed_runs={k: a[mask] for k, a in v.untimed_runs.items()},
        syscalls_apart=None if v.syscalls_apart is None else v.syscalls_apart[mask],
        selected=selected if selected is not None else str(cpus),
    )


def group(v: Disturbance, topology: CpuTopology, by: str) -> Disturbance:
    """Sum the columns into groups ``by`` core, package or node (``cpu`` returns ``v`` unchanged)."""
    if by == "cpu" or v.groups is not None:
        return v
    groups = topology.groups(by, v.cpus)

    def cols(a: np.ndarray) -> np.ndarray:
        out: np.ndarray = group_rows(a.T, groups).T.copy()
        return out

    return dataclasses.replace(
        v,
        counts=cols(v.counts),
        ns=cols(v.ns),
        untimed=cols(v.untimed),
        switches=group_rows(v.switches, groups),
        gaps=group_rows(v.gaps, groups),
        lost={k: group_rows(a, groups) for k, a in v.lost.items()},
        untimed_runs={k: group_rows(a, groups) for k, a in v.untimed_runs.items()},
        syscalls_apart=None if v.syscalls_apart is None else group_rows(v.syscalls_apart, groups),
        groups=groups,
    )


def view(
    v: Disturbance,
    topology: CpuTopology,
    *,
    by: str = "cpu",
    cpus: CpuList | None = None,
    selected: str | None = None,
) -> Disturbance:
    """``v`` restricted to ``cpus`` (None: all), then grouped ``by`` cpu|core|package|node."""
    if cpus is not None:
        v = restrict(v, cpus, selected)
    return group(v, topology, by)


# --- what the numbers leave out --------------------------------------------------------------------------


_UNSUPPORTED = {
    "all": "disturbances",
    "vectors": "x86 interrupt vectors",
    "tlb_shootdown": "TLB shootdowns",
}


def caveats(v: Disturbance) -> list[Caveat]:
    """Every caveat on ``v``'s numbers, in the order a table prints them."""
    out: list[Caveat] = []
    for dim, why in v.unsupported.items():
        out.append(
            Caveat(f"disturb.unsupported.{dim}", f"{_UNSUPPORTED.get(dim, dim)} not counted here: {why}")
        )
    for kind, a in v.lost.items():
        n = int(a.sum())
        if not n:
            continue
        if kind == "task":
            text = f"{n:,} switch-ins not in the task table: it was full (see --task-entries); not named"
        elif kind == "irq":
            text = f"{n:,} hard interrupts had numbers beyond the IRQ table (see --irq-entries): not named"
        else:
            text = f"{n:,} softirqs had vector numbers beyond the softirq table: not named"
        out.append(Caveat(f"disturb.lost.{kind}", text, n))
    out += _syscall_caveats(v)
    gaps = int(v.gaps.sum())
    if gaps:
        out.append(
            Caveat(
                "disturb.gaps",
                f"{gaps:,} task switches made without the kernel reporting them (sched_switch): each "
                "hides at least one switch-in, counted once, and the switched-in task's stint has no time",
                gaps,
            )
        )
    untimed = int(v.untimed.sum()) + sum(int(a.sum()) for a in v.untimed_runs.values())
    if untimed:
        out.append(
            Caveat(
                "disturb.untimed",
                f"{untimed:,} handler runs or task stints without a time (begun before counting, or switched "
                "in unseen): the times are short by those",
                untimed,
            )
        )
    if v.skipped:
        out.append(
            Caveat(
                "disturb.skipped",
                f"{v.skipped:,} program runs skipped by the kernel (recursion): counts are short by up to "
                "that many",
                v.skipped,
            )
        )
    handler_ns = sum(int(v.totals(k)[1].sum()) for k in ("irq", "vector", "softirq"))
    task_ns = sum(int(v.totals(k)[1].sum()) for k in ("task", "kthread", "expected"))
    if handler_ns and task_ns:
        out.append(
            Caveat(
                "disturb.times-overlap",
                "time in interrupt and softirq handlers is also inside the time of the task they interrupted "
                "(the kernel charges it there): do not add times of different kinds",
            )
        )
    return out


def _syscall_caveats(v: Disturbance) -> list[Caveat]:
    """What the per-process syscall rows leave out: the calls the full table could not take, and how far
    the per-CPU totals are from the rows (either way: the two are read a moment apart while counting)."""
    out = []
    if v.syscalls_lost:
        out.append(
            Caveat(
                "disturb.lost.syscall",
                f"{v.syscalls_lost:,} system calls not in the per-process table: it was full (see "
                "--proc-entries); in no row, and not placed on a CPU",
                v.syscalls_lost,
            )
        )
    apart = v.syscalls_apart
    if apart is not None and apart.any():
        cells = ", ".join(f"{lab} {int(n):+,}" for lab, n in zip(v.labels, apart.tolist(), strict=True) if n)
        lost = f" (the {v.syscalls_lost:,} not in the table among them)" if v.syscalls_lost else ""
        out.append(
            Caveat(
                "disturb.syscalls-apart",
                f"the system-call totals per {v.by} less the per-process rows: {cells}{lost}; the two are "
                "read a moment apart while counting (the totals first), so they hold calls of slightly "
                "different windows: the rows are the per-process table's",
                int(apart.sum()),
            )
        )
    return out
