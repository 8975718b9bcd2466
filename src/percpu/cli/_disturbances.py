"""The disturbance options of the counting commands (``-I -V -S -T``, ``-D`` for all four, ``-E`` the
expected workload) and what they become: a :class:`~percpu.disturb.DisturbCounter` running beside the
syscall counter, and each interval's :class:`~percpu.disturb.Disturbance` shaped by ``--cpus`` and ``--by``.

A kernel that cannot count a dimension leaves it out with a caveat; one that cannot run the counter at
all (no BTF) leaves every dimension out with a caveat, and the syscall counts go on: the command's output
says so in one line, never a traceback.
"""

from __future__ import annotations

import argparse
import time
from typing import NamedTuple

import numpy as np

from ..cpus import CpuList, cpu_lists
from ..disturb import DisturbCounter, DisturbDelta, DisturbSnapshot, Expected
from ..disturb._counter import MAX_TABLE_ENTRIES
from ..disturb._who import Caveat, Disturbance, SyscallRows, caveats, view, who_disturbs
from ..errors import NotSupported, PercpuError
from ..syscount import FOLDED_TGID, SyscallCounter, SyscallDelta, SyscallSnapshot
from ..topo import CpuTopology
from ._args import int_at_least

__all__ = [
    "Both",
    "DisturbSession",
    "Pair",
    "PairDelta",
    "add_options",
    "expected_of",
    "session",
    "syscall_rows",
    "wanted",
]


def add_options(g: argparse._ArgumentGroup) -> None:
    """The disturbance dimensions, in the counting commands' "opt-in dimensions" group."""
    g.add_argument(
        "-I",
        "--irqs",
        action="store_true",
        help="also count hard interrupts per CPU, by IRQ line (runs, time)",
    )
    g.add_argument(
        "-V",
        "--vectors",
        action="store_true",
        help="also count x86 interrupt vectors per CPU: LOC, RES, CAL, IWI, TLB (runs, time)",
    )
    g.add_argument(
        "-S", "--softirqs", action="store_true", help="also count softirqs per CPU, by vector (runs, time)"
    )
    g.add_argument(
        "-T",
        "--tasks",
        action="store_true",
        help="also count the tasks switched in on each CPU: pid, name, kernel thread or not, how often, "
        "how long",
    )
    g.add_argument(
        "-D",
        "--disturb",
        action="store_true",
        help="-I -V -S -T: who disturbs each CPU (interrupts, softirqs, other tasks, system calls)",
    )
    g.add_argument(
        "-E",
        "--expect",
        action="append",
        metavar="SPEC",
        help="the expected workload (implies -T): pid:N (or N), comm:NAME or cgroup:PATH|ID (repeat for "
        "more than one kind); every other task on those CPUs is the disturbance",
    )
    g.add_argument(
        "--no-times",
        action="store_true",
        help="with -I -V -S -T: count only, no clock reads in the handlers (cheaper; the view shows counts)",
    )
    g.add_argument(
        "--task-entries",
        type=int_at_least(1, maximum=MAX_TABLE_ENTRIES),
        default=8192,
        metavar="N",
        help="with -T: tasks the kernel table holds (default 8192); exited tasks are taken out while "
        "counting; switch-ins beyond are lost",
    )
    g.add_argument(
        "--irq-entries",
        type=int_at_least(1, maximum=MAX_TABLE_ENTRIES),
        metavar="N",
        help="with -I: IRQ numbers the table holds (default: twice the highest the machine has); higher "
        "are lost",
    )


def wanted(args: argparse.Namespace) -> bool:
    """Whether any disturbance dimension was asked for."""
    return any(getattr(args, k, False) for k in ("irqs", "vectors", "softirqs", "tasks", "disturb")) or bool(
        getattr(args, "expect", None)
    )


def expected_of(specs: list[str] | None) -> Expected | None:
    """``-E pid:42 -E comm:app``: one of each kind at most; a bare number is a pid."""
    if not specs:
        return None
    got: dict[str, str] = {}
    for spec in (s.strip() for given in specs for s in given.split(",") if s.strip()):
        kind, sep, value = spec.partition(":")
        if not sep and kind.isdigit():
            kind, value = "pid", kind
        if kind not in ("pid", "comm", "cgroup") or not value:
            raise PercpuError(f"-E/--expect {spec!r}: give pid:N, comm:NAME or cgroup:PATH (or a cgroup id)")
        if kind in got:
            raise PercpuError(f"-E/--expect: one {kind} at most (got {got[kind]!r} and {value!r})")
        got[kind] = value
    pid = got.get("pid")
    if pid is not None and not pid.isdigit():
        raise PercpuError(f"-E/--expect pid:{pid}: a pid is a whole number")
    cgroup: int | str | None = got.get("cgroup")
    if isinstance(cgroup, str) and cgroup.isdigit():
        cgroup = int(cgroup)
    return Expected(pid=int(pid) if pid is not None else None, comm=got.get("comm"), cgroup=cgroup)


def syscall_rows(d: SyscallDelta, expected: Expected | None = None) -> SyscallRows:
    """The calls of ``d`` per CPU (``d`` not restricted or grouped), and per process when it has per-process
    counts (summed over syscalls), each marked when it is the expected workload's (by pid or name)."""
    totals = d.counts.sum(axis=1, dtype=np.uint64)
    if d.procs is None:
        return SyscallRows(totals=totals)
    keys, counts = d.procs
    by: dict[tuple[int, bytes], np.ndarray] = {}
    for k, row in zip(keys, counts, strict=True):
        tgid = int(k["tgid"])
        comm = bytes(k["comm"]).split(b"\0", 1)[0]
        key = (-1 if tgid == FOLDED_TGID else tgid, comm)
        by[key] = by.get(key, np.zeros(len(totals), np.uint64)) + row.astype(np.uint64)
    tgids = np.array([t for t, _ in by], np.int64)
    comms = tuple(c.decode("utf-8", "backslashreplace") or "(exited processes)" for _, c in by)
    mine = np.zeros(len(by), bool)
    if expected is not None:
        want = expected.comm.encode() if isinstance(expected.comm, str) else expected.comm
        mine = np.array(
            [
                (expected.pid is not None and t == expected.pid) or (want is not None and c == want)
                for t, c in by
            ],
            bool,
        )
    rows = np.array(list(by.values()), np.uint64).reshape(len(by), len(totals))
    return SyscallRows(
        totals=totals, tgids=tgids, comms=comms, counts=rows, expected=mine, lost=d.lost.processes
    )


class DisturbSession:
    """The disturbance counter of one run, with what it could not count, and the view of its intervals."""

    def __init__(self, args: argparse.Namespace, topology: CpuTopology | None = None) -> None:
        every = bool(getattr(args, "disturb", False))
        self.expect = expected_of(getattr(args, "expect", None))
        tasks = every or bool(args.tasks) or self.expect is not None
        self.counter = DisturbCounter(
            irqs=every or args.irqs,
            vectors=every or args.vectors,
            softirqs=every or args.softirqs,
            switches=tasks,
            tasks=tasks,
            times=not args.no_times,
            irq_entries=args.irq_entries,
            task_entries=args.task_entries,
            task_keep=getattr(args, "task_keep", None),
            expect=self.expect,
            start=False,
        )
        self.failed: str | None = None  # why nothing could be counted, if so
        self.by: str = getattr(args, "by", "cpu")
        self.spec: str | None = getattr(args, "cpus", None)
        self.topology = topology
        if self.by != "cpu" or self.spec is not None:
            self.topology = topology if topology is not None else cpu_lists().topology()
        self.chosen = self.topology.select(self.spec) if self.topology is not None and self.spec else None

    @property
    def cpus(self) -> CpuList:
        return self.counter.cpus

    @property
    def unsupported(self) -> dict[str, str]:
        """What this kernel cannot count, and why ("all" when it cannot run the counter at all)."""
        return {"all": self.failed} if self.failed is not None else dict(self.counter.unsupported)

    def start(self) -> None:
        """Attach; a kernel that cannot run the counter at all is a caveat, not the end of the run (a
        missing privilege still is: the syscall counter would fail the same way)."""
        try:
            self.counter.start()
        except NotSupported as exc:
            self.failed = str(exc).splitlines()[0]

    def snapshot(self) -> DisturbSnapshot:
        if self.failed is not None:  # nothing counted: an empty snapshot, taken now
            return DisturbSnapshot(
                time.monotonic(), self.counter.cpus, np.zeros(len(self.counter.cpus), np.uint64)
            )
        return self.counter.snapshot()

    def view(self, d: DisturbDelta, syscalls: SyscallDelta | None = None) -> Disturbance:
        """One interval as the run shows it: with its system calls, restricted and grouped as asked."""
        rows = syscall_rows(syscalls, self.expect) if syscalls is not None else None
        v = who_disturbs(
            d,
            syscalls=rows,
            unsupported=self.unsupported,
            expected=self.expect.describe() if self.expect is not None else None,
        )
        if self.topology is not None:
            v = view(v, self.topology, by=self.by, cpus=self.chosen, selected=self.spec)
        return v

    def run_caveats(self) -> list[Caveat]:
        """What the whole run leaves out, known once attached: the dimensions this kernel cannot count,
        and the expected workload's system calls when it is named by cgroup."""
        out = [c for c in caveats(_nothing(self.counter.cpus, self.unsupported)) if c.code.startswith(_RUN)]
        if self.expect is not None and self.expect.cgroup is not None:
            out.append(
                Caveat(
                    "disturb.syscalls-by-cgroup",
                    "the expected workload's system calls are told apart by pid or name only: those of its "
                    "cgroup are among the others' (-E pid: or comm: tells them apart, with -P)",
                )
            )
        return out

    def close(self) -> None:
        self.counter.close()


_RUN = "disturb.unsupported."


def _nothing(cpus: CpuList, unsupported: dict[str, str]) -> Disturbance:
    """An empty view that carries only what could not be counted (for the run's caveats)."""
    z = np.zeros((0, len(cpus)), np.uint64)
    return Disturbance(
        seconds=0.0,
        cpus=cpus,
        sources=(),
        counts=z,
        ns=z,
        timed=np.zeros(0, bool),
        untimed=z,
        switches=np.zeros(len(cpus), np.uint64),
        gaps=np.zeros(len(cpus), np.uint64),
        lost={},
        untimed_runs={},
        counted=(),
        unsupported=unsupported,
    )


class Pair(NamedTuple):
    """The syscall counter's snapshot and the disturbance counter's (None: not counting them), taken
    together."""

    sys: SyscallSnapshot
    dist: DisturbSnapshot | None

    @property
    def time(self) -> float:
        return self.sys.time

    def delta(self, earlier: Pair) -> PairDelta:
        dist = None if self.dist is None or earlier.dist is None else self.dist.delta(earlier.dist)
        return PairDelta(self.sys.delta(earlier.sys), dist)


class PairDelta(NamedTuple):
    sys: SyscallDelta
    dist: DisturbDelta | None


class Both:
    """The syscall counter and the disturbance session (if any), read one after the other at each
    report."""

    def __init__(self, counter: SyscallCounter, disturb: DisturbSession | None) -> None:
        self.counter = counter
        self.disturb = disturb

    def snapshot(self) -> Pair:
        return Pair(self.counter.snapshot(), None if self.disturb is None else self.disturb.snapshot())


def session(args: argparse.Namespace, topology: CpuTopology | None = None) -> DisturbSession | None:
    """The run's disturbance session, when a dimension was asked for (checked now, before counting)."""
    return DisturbSession(args, topology) if wanted(args) else None
