"""What the disturbance counter measured: snapshots and deltas, as numpy arrays. No kernel access here.

Every per-CPU array has one entry (or column) per *possible* CPU, in the order of ``cpus`` (entry i is CPU
``cpus[i]``), like the syscall counter's. Counters are never reset: a :class:`DisturbSnapshot` holds the
totals since counting began, and :meth:`DisturbSnapshot.delta` turns two into an interval.

Counts add up per CPU: ``tasks.switches[:, i].sum() + lost.tasks[i] == switches[i] + gaps[i]`` (every
switch-in is in the table or counted as lost; a gap is a switch the kernel made without reporting it, whose
switched-in task is counted when it leaves the CPU), and an IRQ number beyond the table is in
``lost.irqs``. Times are
measured where both ends of a handler run (or a task's stint on the CPU) fell inside the counting window;
``untimed`` counts the runs whose time is missing, so a time is never silently short.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from ..cpus import CpuList
from ..errors import PercpuError
from ._contract import TASK_EXPECTED, TASK_IDLE, TASK_KTHREAD, TASK_OUTSIDE
from ._tasks import FOLDED_PID, folded_keys

__all__ = [
    "FOLDED_PID",
    "SOFTIRQ_NAMES",
    "VECTOR_NAMES",
    "VECTOR_ROWS",
    "DisturbDelta",
    "DisturbSnapshot",
    "DisturbSource",
    "Handlers",
    "Lost",
    "Stints",
    "Tasks",
    "Untimed",
]

# The softirq vectors in the order of enum softirq_action's numbers (as /proc/softirqs lists them).
SOFTIRQ_NAMES = ("HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU")
# The x86 vector slots (enum disturb_vector of bpf/disturb.bpf.c), by their tracepoint's name.
VECTOR_NAMES = (
    "local_timer",
    "reschedule",
    "call_function",
    "call_function_single",
    "irq_work",
    "tlb_shootdown",
)
# The /proc/interrupts row each slot is counted in: CAL is both function-call vectors.
VECTOR_ROWS = ("LOC", "RES", "CAL", "CAL", "IWI", "TLB")


def _per_cpu(a: np.ndarray, ncpu: int, what: str) -> None:
    if a.ndim != 2 or a.shape[1] != ncpu:
        raise PercpuError(f"{what}: expected (rows, {ncpu} CPUs), got shape {a.shape}")


@dataclass(frozen=True)
class Handlers:
    """Handler runs of one kind (hard IRQs, softirqs or x86 vectors), one row per source.

    ``ids`` (n,) are the IRQ numbers, softirq vector numbers or vector slots; ``names`` their names (an
    IRQ's actions as /sys/kernel/irq/N/actions lists them, a softirq's as /proc/softirqs does);
    ``counts`` (n, possible CPUs) runs; ``ns`` (n, possible CPUs) nanoseconds in the handler, or None when
    times were not measured.
    """

    ids: np.ndarray
    names: tuple[str, ...]
    counts: np.ndarray
    ns: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.names) != len(self.ids) or len(self.counts) != len(self.ids):
            raise PercpuError(f"{len(self.ids)} ids, {len(self.names)} names, {len(self.counts)} rows")
        if self.ns is not None and self.ns.shape != self.counts.shape:
            raise PercpuError(f"times shaped {self.ns.shape}, counts {self.counts.shape}")

    def row(self, ident: int) -> int | None:
        """The row of a source id, or None."""
        hit = np.nonzero(self.ids == ident)[0]
        return int(hit[0]) if len(hit) else None

    def count(self, ident: int) -> np.ndarray:
        """Runs of one source per CPU (zeros when it has no row)."""
        r = self.row(ident)
        if r is None:
            return np.zeros(self.counts.shape[1], dtype=np.uint64)
        out: np.ndarray = self.counts[r]
        return out

    def per_cpu(self) -> np.ndarray:
        """All runs per CPU."""
        out: np.ndarray = self.counts.sum(axis=0, dtype=np.uint64)
        return out

    def minus(self, earlier: Handlers | None) -> Handlers:
        """Runs since ``earlier``, row by row (a source new since then counts from zero)."""
        if earlier is None:
            return self
        counts = self.counts.astype(np.int64)
        ns = None if self.ns is None else self.ns.astype(np.int64)
        for i, ident in enumerate(self.ids):
            j = earlier.row(int(ident))
            if j is None:
                continue
            counts[i] -= earlier.counts[j].astype(np.int64)
            if ns is not None and earlier.ns is not None:
                ns[i] -= earlier.ns[j].astype(np.int64)
        np.maximum(counts, 0, out=counts)
        if ns is not None:
            np.maximum(ns, 0, out=ns)
        return Handlers(
            self.ids, self.names, counts.astype(np.uint64), None if ns is None else ns.astype(np.uint64)
        )


@dataclass(frozen=True)
class Tasks:
    """Tasks switched in, one row per (pid, tgid, comm): ``keys`` a structured array with those fields
    (comm as the kernel's 16 bytes), ``kthread`` and ``idle`` (n,) flags, ``switches`` (n, possible CPUs)
    times switched in, ``ns`` (n, possible CPUs) time on the CPU (the task's own sum_exec_runtime, charged
    when it leaves the CPU; 0 for the idle task, whose time the kernel does not keep there) and ``untimed``
    (n, possible CPUs) stints whose time is not in ``ns`` (switched in before counting began, or unseen),
    or None when times were not measured. A row whose ``untimed`` is 0 has all its time.

    ``expected`` (n,) marks the expected workload's rows (the counter's ``expect``), ``outside`` the rows
    of tasks outside percpu's pid namespace (a container's percpu sees the host's tasks without pids:
    their pid and tgid are 0, one row per name). Rows of exited tasks summed by name have pid
    :data:`FOLDED_PID` (:meth:`pid` None) and their kind's flags in the tgid field; with an empty name,
    every such task of that kind whose name was not kept."""

    keys: np.ndarray
    kthread: np.ndarray
    idle: np.ndarray
    switches: np.ndarray
    ns: np.ndarray | None = None
    untimed: np.ndarray | None = None
    expected: np.ndarray | None = None
    outside: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.keys)
        if not (len(self.kthread) == len(self.idle) == len(self.switches) == n):
            raise PercpuError(f"{n} task keys but {len(self.switches)} rows")
        for what, a in (("expected", self.expected), ("outside", self.outside)):
            if a is not None and len(a) != n:
                raise PercpuError(f"{n} task keys but {len(a)} {what} flags")

    def comm(self, i: int) -> str:
        """Row i's command name (undecodable bytes escaped, as a file name would be)."""
        raw: bytes = bytes(self.keys[i]["comm"]).split(b"\0", 1)[0]
        return raw.decode("utf-8", "backslashreplace")

    def pid(self, i: int) -> int | None:
        """Row i's thread id; None for a row that sums exited tasks by name, or a task outside percpu's pid
        namespace."""
        pid = int(self.keys[i]["pid"])
        if pid == FOLDED_PID or (self.outside is not None and self.outside[i]):
            return None
        return pid

    def flags(self) -> np.ndarray:
        """Each row's TASK_* bits, as the kernel's table holds them."""
        out = self.kthread.astype(np.uint32) * TASK_KTHREAD | self.idle.astype(np.uint32) * TASK_IDLE
        if self.expected is not None:
            out |= self.expected.astype(np.uint32) * TASK_EXPECTED
        if self.outside is not None:
            out |= self.outside.astype(np.uint32) * TASK_OUTSIDE
        flags: np.ndarray = out
        return flags

    def rows_of(self, pid: int) -> np.ndarray:
        """Rows of one thread id (a task renamed while counting has one row per name)."""
        out: np.ndarray = np.nonzero(self.keys["pid"] == pid)[0]
        return out

    def credited(self, stints: Stints | None) -> Tasks:
        """These rows with each CPU's stint in progress added to its task's time there (``stints``); a
        stint whose task has no row (the full table had no room for it) is left out, as its time is."""
        if stints is None or self.ns is None or not stints.ns.any():
            return self
        ns = self.ns.copy()
        index = {k.tobytes(): i for i, k in enumerate(self.keys)}
        for cpu in np.nonzero(stints.ns)[0]:
            i = index.get(stints.keys[cpu].tobytes())
            if i is not None:
                ns[i, cpu] += stints.ns[cpu]
        return dataclasses.replace(self, ns=ns)

    def minus(self, earlier: Tasks | None) -> Tasks:
        """Switches and time since ``earlier``, key by key; rows with nothing new are dropped.

        A key of ``earlier`` that is gone now was an exited task's, summed by name since (the counter's
        task table): its counts are subtracted from the first of its folded rows present, so what was
        shown before is not shown again."""
        if earlier is None:
            return self
        index = {k.tobytes(): i for i, k in enumerate(self.keys)}
        sw = self.switches.astype(np.int64)
        ns = None if self.ns is None else self.ns.astype(np.int64)
        un = None if self.untimed is None else self.untimed.astype(np.int64)
        eflags = earlier.flags()
        for j, k in enumerate(earlier.keys):
            i = index.get(k.tobytes())
            if i is None and int(k["pid"]) != FOLDED_PID:
                moved = folded_keys(int(k["pid"]), int(eflags[j]), k["comm"])
                i = next((index[m.tobytes()] for m in moved if m.tobytes() in index), None)
            if i is None:
                continue
            sw[i] -= earlier.switches[j].astype(np.int64)
            if ns is not None and earlier.ns is not None:
                ns[i] -= earlier.ns[j].astype(np.int64)
            if un is not None and earlier.untimed is not None:
                un[i] -= earlier.untimed[j].astype(np.int64)
        keep = np.zeros(len(sw), dtype=bool)
        for a in (sw, ns, un):
            if a is not None:
                np.maximum(a, 0, out=a)
                keep |= a.sum(axis=1) > 0
        return Tasks(
            self.keys[keep],
            self.kthread[keep],
            self.idle[keep],
            sw[keep].astype(np.uint64),
            None if ns is None else ns[keep].astype(np.uint64),
            None if un is None else un[keep].astype(np.uint64),
            None if self.expected is None else self.expected[keep],
            None if self.outside is None else self.outside[keep],
        )


class Stints(NamedTuple):
    """The stint in progress on each CPU when a snapshot was taken, and the time it had run so far.

    The kernel charges a stint's time to its task when the task leaves the CPU: a task that runs through
    a window would get none of it there, and the window in which its stint ends all of it. A snapshot
    carries, per CPU, the key of the task on it (``keys``, (possible CPUs,) of TASK_KEY) and the part of
    its stint run so far (``ns``, (possible CPUs,) uint64; 0 where no stint is credited: the idle task,
    a task outside percpu's pid namespace, one that left the CPU while it was read). Deltas add it to that
    task's row (:meth:`Tasks.credited`): a window gets what ran in it, the window in which the stint is
    charged gets the rest, and consecutive windows still add up to what the kernel's table holds.
    ``task`` and ``start`` ((possible CPUs,) uint64: the task's address and its runtime at the switch-in,
    as the ``sched`` map holds them) tell one stint from the next."""

    keys: np.ndarray
    ns: np.ndarray
    task: np.ndarray
    start: np.ndarray


class Lost(NamedTuple):
    """Events a table could not take, per CPU ((possible CPUs,) uint64 each): IRQ numbers beyond the IRQ
    table, softirq vectors beyond its slots, switch-ins of tasks the full task table had no room for; and
    ``skipped``, runs of the programs the kernel skipped because the same program was already running on
    that CPU (all CPUs together: the kernel counts them per program, Linux 5.12)."""

    irqs: np.ndarray
    softirqs: np.ndarray
    tasks: np.ndarray
    skipped: int = 0

    def minus(self, earlier: Lost) -> Lost:
        return Lost(
            _sub(self.irqs, earlier.irqs),
            _sub(self.softirqs, earlier.softirqs),
            _sub(self.tasks, earlier.tasks),
            skipped=max(self.skipped - earlier.skipped, 0),
        )


class Untimed(NamedTuple):
    """Runs counted without a time, per CPU: handler runs (or a task's stint) that began before counting
    did, or whose entry the exit could not match (a task switched in unseen: a gap); a task's stint whose
    row the full table could not take."""

    irqs: np.ndarray
    softirqs: np.ndarray
    vectors: np.ndarray
    tasks: np.ndarray

    def minus(self, earlier: Untimed) -> Untimed:
        return Untimed(*(_sub(a, b) for a, b in zip(self, earlier, strict=True)))


def _sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.maximum(a.astype(np.int64) - b.astype(np.int64), 0).astype(np.uint64)
    return out


def _zeros(n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.uint64)


@dataclass(frozen=True)
class DisturbSnapshot:
    """Totals since counting began, at ``time`` (CLOCK_MONOTONIC seconds).

    ``switches`` (possible CPUs,) task switches seen at sched_switch (the scheduler's nr_switches);
    ``gaps`` how many times the task leaving a CPU was not the one seen switched in last, so the kernel
    had switched without sched_switch in between (at least one unseen switch each); ``irqs``, ``softirqs``,
    ``vectors`` and ``tasks`` are None when not counted (or not supported: the counter says why).
    ``untimed`` is None when times were not measured. ``online`` is the online-CPU list when the snapshot
    was taken (None when unknown). ``stints`` is the stint in progress on each CPU and its time so far
    (:class:`Stints`), None when none is credited (times not measured, or counting stopped: then the
    tables are final, and ``tasks`` is all there is); ``tasks`` is the kernel's table as read, and deltas
    add ``stints`` to it (:meth:`credited_tasks`).
    """

    time: float
    cpus: CpuList
    switches: np.ndarray
    gaps: np.ndarray | None = None
    irqs: Handlers | None = None
    softirqs: Handlers | None = None
    vectors: Handlers | None = None
    tasks: Tasks | None = None
    lost: Lost | None = None
    untimed: Untimed | None = None
    online: CpuList | None = None
    stints: Stints | None = None

    def __post_init__(self) -> None:
        n = len(self.cpus)
        if self.stints is not None and self.stints.ns.shape != (n,):
            raise PercpuError(f"stints shaped {self.stints.ns.shape}, expected ({n},) for {n} CPUs")
        if self.switches.shape != (n,):
            raise PercpuError(f"switches shaped {self.switches.shape}, expected ({n},) for {n} CPUs")
        for what, h in (("irqs", self.irqs), ("softirqs", self.softirqs), ("vectors", self.vectors)):
            if h is not None:
                _per_cpu(h.counts, n, what)
        if self.tasks is not None:
            _per_cpu(self.tasks.switches, n, "tasks")

    def credited_tasks(self) -> Tasks | None:
        """``tasks`` with each CPU's stint in progress credited (what deltas subtract)."""
        return None if self.tasks is None else self.tasks.credited(self.stints)

    @property
    def gaps_or_zeros(self) -> np.ndarray:
        return self.gaps if self.gaps is not None else _zeros(len(self.cpus))

    @property
    def lost_or_none(self) -> Lost:
        """``lost``, or zeros when the snapshot carries none."""
        n = len(self.cpus)
        return self.lost if self.lost is not None else Lost(_zeros(n), _zeros(n), _zeros(n))

    def delta(self, earlier: DisturbSnapshot) -> DisturbDelta:
        """What happened between ``earlier`` and this snapshot."""
        if earlier.cpus != self.cpus:
            raise PercpuError("snapshots of different CPU layouts cannot be subtracted")
        untimed = None
        if self.untimed is not None:
            untimed = self.untimed if earlier.untimed is None else self.untimed.minus(earlier.untimed)
        tasks = self.credited_tasks()
        return DisturbDelta(
            seconds=max(self.time - earlier.time, 1e-9),
            cpus=self.cpus,
            switches=_sub(self.switches, earlier.switches),
            gaps=_sub(self.gaps_or_zeros, earlier.gaps_or_zeros),
            irqs=None if self.irqs is None else self.irqs.minus(earlier.irqs),
            softirqs=None if self.softirqs is None else self.softirqs.minus(earlier.softirqs),
            vectors=None if self.vectors is None else self.vectors.minus(earlier.vectors),
            tasks=None if tasks is None else tasks.minus(earlier.credited_tasks()),
            lost=self.lost_or_none.minus(earlier.lost_or_none),
            untimed=untimed,
            online=self.online,
        )

    def since_start(self) -> DisturbDelta:
        """Everything since counting began, as a delta from zero (seconds unknown: 0)."""
        return DisturbDelta(
            seconds=0.0,
            cpus=self.cpus,
            switches=self.switches,
            gaps=self.gaps_or_zeros,
            irqs=self.irqs,
            softirqs=self.softirqs,
            vectors=self.vectors,
            tasks=self.credited_tasks(),
            lost=self.lost_or_none,
            untimed=self.untimed,
            online=self.online,
        )


@dataclass(frozen=True)
class DisturbDelta:
    """What happened on each CPU over ``seconds``; the same fields as :class:`DisturbSnapshot`."""

    seconds: float
    cpus: CpuList
    switches: np.ndarray
    gaps: np.ndarray
    irqs: Handlers | None
    softirqs: Handlers | None
    vectors: Handlers | None
    tasks: Tasks | None
    lost: Lost
    untimed: Untimed | None
    online: CpuList | None = None

    def vector_rows(self) -> dict[str, np.ndarray]:
        """The x86 vectors as /proc/interrupts' rows name them (LOC, RES, CAL, IWI, TLB), per CPU; a row
        is present only when every vector it sums was counted."""
        if self.vectors is None:
            return {}
        out: dict[str, np.ndarray] = {}
        missing: set[str] = set()
        for slot, row in enumerate(VECTOR_ROWS):
            r = self.vectors.row(slot)
            if r is None:
                missing.add(row)
                continue
            out[row] = out.get(row, _zeros(len(self.cpus))) + self.vectors.counts[r]
        return {k: v for k, v in out.items() if k not in missing}


class DisturbSource(Protocol):
    """What the views and the exporter need from a :class:`~percpu.disturb.DisturbCounter`: its CPUs, its
    snapshots, and what it could not count on this kernel (dimension -> reason). Tests use a fake."""

    @property
    def unsupported(self) -> dict[str, str]: ...
    @property
    def cpus(self) -> CpuList: ...
    def snapshot(self) -> DisturbSnapshot: ...
