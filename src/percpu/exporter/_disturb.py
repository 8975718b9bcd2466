"""Prometheus metrics of who disturbs each CPU, from the disturbance counter, formatted by percpu itself.

The families beside the syscall counts (:mod:`percpu.exporter`; served with ``percpu exporter -D``), under the
same conventions:

* counters of the kernel's counts, never reset; every series is served at 0 the first time it is served
  and at its value from the next scrape on (``increase()`` then sees what came before its first sample);
* only cells with counts make series: no series for a CPU (or group) nothing was counted on;
* bounded cardinality: hard IRQs by number and name (the machine's lines), softirqs and x86 vectors by
  name (at most 10 and 6), tasks by kind and command name only (never pid), at most ``max_comms`` names
  plus ``comm="other"`` (half the names to names as they appear, the busiest first, half to the busiest
  since the previous scrape, as ``-P``'s); the task series are sums of deltas, so a name's series counts
  from the scrape that named it (its earlier time stays in "other") and every series only grows.

Families (``cpu`` is ``core``, ``package`` or ``node`` with ``cpu_label``; ``none`` sums the CPUs):

=========================================== ================== =============================================
metric                                      labels             what
=========================================== ================== =============================================
percpu_irq_runs_total                       cpu, irq, name     hard-interrupt flow-handler runs
percpu_irq_seconds_total                    cpu, irq, name     time in the handlers (times on)
percpu_interrupt_vector_runs_total          cpu, vector        x86 vectors: local_timer, ..., tlb_shootdown
percpu_interrupt_vector_seconds_total       cpu, vector        time in the handler (TLB: counted only)
percpu_softirq_runs_total                   cpu, softirq       softirqs by vector (TIMER, NET_RX, ...)
percpu_softirq_seconds_total                cpu, softirq       time in the handler
percpu_task_switches_total                  cpu                switches seen (the scheduler's nr_switches)
percpu_task_switch_gaps_total               cpu                switches the kernel made without reporting
percpu_task_switch_ins_total                cpu, kind, comm    tasks switched in: kind task, kthread,
                                                               expected, idle
percpu_task_seconds_total                   cpu, kind, comm    their time on the CPU (times on; not idle)
percpu_disturb_lost_total                   table              what a table could not take: irqs,
                                                               softirqs, tasks (switch-ins)
percpu_disturb_untimed_total                kind               runs or stints without a time
percpu_disturb_skipped_program_runs_total                      program runs the kernel skipped
percpu_disturb_unsupported_info             dimension, reason  1 per dimension this kernel cannot count
=========================================== ================== =============================================
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np

from .._text import printable
from ..cpus import cpu_lists
from ..disturb._data import DisturbSnapshot, DisturbSource, Handlers, Tasks
from ..topo import CpuGroups, CpuTopology, group_rows
from ._comms import OTHER, name_comms
from ._exposition import Family, Labels

__all__ = ["DisturbCollector"]


class DisturbCollector:
    """The disturbance families of one scrape: :meth:`families` reads the counter once."""

    def __init__(
        self,
        counter: DisturbSource,
        *,
        cpu_label: bool | str = True,
        topology: CpuTopology | None = None,
        max_comms: int = 20,
    ) -> None:
        if max_comms < 1:
            raise ValueError(f"max_comms must be 1 or more: {max_comms}")
        self.counter = counter
        self.max_comms = max_comms
        self._groups: CpuGroups | None = None
        self._label_name: str | None = "cpu"
        if cpu_label in ("cpu", True):
            self._labels = [str(c) for c in counter.cpus]
        elif cpu_label in ("none", False):
            self._label_name = None
            self._labels = [""]
        elif cpu_label in ("core", "package", "node"):
            topo = topology if topology is not None else cpu_lists().topology()
            self._groups = topo.groups(str(cpu_label), counter.cpus)
            self._label_name = str(cpu_label)
            self._labels = list(self._groups.labels)
        else:
            raise ValueError(f"cpu_label {cpu_label!r}: choose cpu, core, package, node or none")
        self._lock = threading.Lock()
        self._born: set[tuple[str, Labels]] = set()
        self._last_tasks: Tasks | None = None
        self._comms: set[str] = set()
        self._task_totals: dict[tuple[str, Labels], int] = {}  # (family, labels) -> accumulated value

    @property
    def tracked_comms(self) -> int:
        return len(self._comms)

    def families(self) -> list[Family]:
        """Read the counter once and build every family (new series at 0)."""
        with self._lock:
            snap = self.counter.snapshot()
            fams = list(self._families(snap))
            for f in fams:
                self._first_at_zero(f)
            return fams

    # --- per column ---------------------------------------------------------------------------------

    def _cols(self, per_cpu: np.ndarray) -> np.ndarray:
        """(..., possible CPUs) -> (..., columns): grouped, or summed when there is no CPU label."""
        if self._label_name is None:
            out: np.ndarray = per_cpu.sum(axis=-1, dtype=np.uint64)[..., None]
            return out
        if self._groups is None:
            return per_cpu
        moved = np.moveaxis(per_cpu, -1, 0)
        return np.moveaxis(group_rows(moved, self._groups), 0, -1)

    def _cell_labels(self, col: int) -> Labels:
        return () if self._label_name is None else ((self._label_name, self._labels[col]),)

    def _handlers(
        self, h: Handlers | None, runs: Family, seconds: Family | None, label: str, names: bool = False
    ) -> None:
        if h is None:
            return
        counts = self._cols(h.counts)
        ns = None if h.ns is None else self._cols(h.ns)
        for r, (ident, name) in enumerate(zip(h.ids.tolist(), h.names, strict=True)):
            own: Labels = ((label, str(ident)), ("name", name)) if names else ((label, name),)
            timed = ns is not None and seconds is not None and name != "tlb_shootdown"
            for c in np.nonzero(counts[r])[0].tolist():
                labels = (*self._cell_labels(c), *own)
                runs.add(labels, int(counts[r, c]))
                if timed:
                    assert seconds is not None and ns is not None
                    seconds.add(labels, int(ns[r, c]) / 1e9)

    def _families(self, snap: DisturbSnapshot) -> Iterator[Family]:
        timed = snap.untimed is not None
        if snap.irqs is not None:
            runs = Family(
                "percpu_irq_runs", "counter", "Hard-interrupt flow-handler runs, by CPU and IRQ line."
            )
            secs = Family(
                "percpu_irq_seconds", "counter", "Time in hard-interrupt handlers, by CPU and IRQ line."
            )
            self._handlers(snap.irqs, runs, secs if timed else None, "irq", names=True)
            yield runs
            if timed:
                yield secs
        if snap.vectors is not None:
            runs = Family(
                "percpu_interrupt_vector_runs", "counter", "x86 interrupt vectors run, by CPU and vector."
            )
            secs = Family(
                "percpu_interrupt_vector_seconds",
                "counter",
                "Time in x86 interrupt vector handlers, by CPU and vector (TLB shootdowns are counted only).",
            )
            self._handlers(snap.vectors, runs, secs if timed else None, "vector")
            yield runs
            if timed:
                yield secs
        if snap.softirqs is not None:
            runs = Family("percpu_softirq_runs", "counter", "Softirqs run, by CPU and vector.")
            secs = Family("percpu_softirq_seconds", "counter", "Time in softirq handlers, by CPU and vector.")
            self._handlers(snap.softirqs, runs, secs if timed else None, "softirq")
            yield runs
            if timed:
                yield secs
        yield from self._switches(snap)
        tasks = snap.credited_tasks()  # a task running through scrapes gets its time scrape by scrape
        if tasks is not None:
            yield from self._tasks(tasks)
        yield from self._losses(snap)

    def _switches(self, snap: DisturbSnapshot) -> Iterator[Family]:
        sw = Family(
            "percpu_task_switches", "counter", "Task switches seen, by CPU (the scheduler's nr_switches)."
        )
        gaps = Family(
            "percpu_task_switch_gaps",
            "counter",
            "Task switches the kernel made without reporting them (sched_switch), by CPU: each hides at "
            "least one.",
        )
        for fam, a in ((sw, snap.switches), (gaps, snap.gaps_or_zeros)):
            cols = self._cols(a.astype(np.uint64))
            for c in np.nonzero(cols)[0].tolist():
                fam.add(self._cell_labels(c), int(cols[c]))
        yield sw
        yield gaps

    def _tasks(self, tasks: Tasks) -> Iterator[Family]:
        """Switch-ins and time by (column, kind, comm), accumulated from each scrape's delta."""
        d = tasks.minus(self._last_tasks)
        self._last_tasks = tasks
        sw = self._cols(d.switches)
        ns = None if d.ns is None else self._cols(d.ns)
        rows: list[tuple[str, str, int, int, int]] = []  # (kind, comm, column, switch-ins, ns)
        by_comm: dict[str, int] = {}
        for i in range(len(d.keys)):
            kind = _kind(d, i)
            comm = "swapper" if kind == "idle" else printable(d.comm(i).encode()) or "?"
            for c in np.nonzero(sw[i] | (ns[i] if ns is not None else 0))[0].tolist():
                t = int(ns[i, c]) if ns is not None else 0
                rows.append((kind, comm, c, int(sw[i, c]), t))
                if kind != "idle":
                    by_comm[comm] = by_comm.get(comm, 0) + t + int(sw[i, c])
        self._name_comms(by_comm)
        for kind, comm, c, n, t in rows:
            name = comm if kind == "idle" or comm in self._comms else OTHER
            labels = (*self._cell_labels(c), ("kind", kind), ("comm", name))
            for fam, v in (("percpu_task_switch_ins", n), ("percpu_task_seconds", t)):
                if v or (fam, labels) in self._task_totals:
                    self._task_totals[(fam, labels)] = self._task_totals.get((fam, labels), 0) + v
        ins = Family(
            "percpu_task_switch_ins",
            "counter",
            f"Tasks switched in, by CPU, kind (task, kthread, expected, idle) and command name; at most "
            f'{self.max_comms} names, the rest as comm="other".',
        )
        secs = Family(
            "percpu_task_seconds", "counter", "Time tasks ran, by CPU, kind and command name (not idle)."
        )
        for (fam, labels), v in sorted(self._task_totals.items()):
            if fam == ins.name:
                ins.add(labels, v)
            elif tasks.ns is not None and ("kind", "idle") not in labels:
                secs.add(labels, v / 1e9)
        yield ins
        if tasks.ns is not None:
            yield secs

    def _name_comms(self, weight: dict[str, int]) -> None:
        """Half the slots to names as they appear (the busiest first), half to the busiest half since the
        previous scrape (the rule of percpu exporter -P --max-comms)."""
        name_comms(self._comms, weight, self.max_comms)

    def _losses(self, snap: DisturbSnapshot) -> Iterator[Family]:
        lost = Family(
            "percpu_disturb_lost",
            "counter",
            "Events a disturbance table could not take (counted, not named): irqs, softirqs, tasks "
            "(switch-ins).",
        )
        l = snap.lost_or_none  # noqa: E741 - the kernel's name
        for table, a in (("irqs", l.irqs), ("softirqs", l.softirqs), ("tasks", l.tasks)):
            lost.add((("table", table),), int(a.sum()))
        yield lost
        if snap.untimed is not None:
            un = Family(
                "percpu_disturb_untimed", "counter", "Handler runs or task stints counted without a time."
            )
            for kind, a in zip(("irq", "softirq", "vector", "task"), snap.untimed, strict=True):
                un.add((("kind", kind),), int(a.sum()))
            yield un
        sk = Family(
            "percpu_disturb_skipped_program_runs",
            "counter",
            "Runs of the disturbance counter's programs the kernel skipped (recursion; Linux 5.12+).",
        )
        sk.add((), l.skipped)
        yield sk
        if self.counter.unsupported:
            info = Family(
                "percpu_disturb_unsupported_info",
                "gauge",
                "1 for each dimension of the disturbance counter this kernel cannot count, with the reason.",
            )
            for dim, why in sorted(self.counter.unsupported.items()):
                info.add((("dimension", dim), ("reason", why)), 1)
            yield info

    def _first_at_zero(self, fam: Family) -> None:
        if fam.kind == "gauge":
            return
        for i, smp in enumerate(fam.samples):
            key = (fam.name, smp.labels)
            if key not in self._born:
                self._born.add(key)
                fam.samples[i] = smp._replace(value=0)


def _kind(t: Tasks, i: int) -> str:
    if t.idle[i]:
        return "idle"
    if t.expected is not None and t.expected[i]:
        return "expected"
    return "kthread" if t.kthread[i] else "task"
