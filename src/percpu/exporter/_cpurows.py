"""The rows of the exported syscall matrix: one per CPU, or one per group of CPUs (core, package, NUMA node)
that follows CPUs going offline and coming online."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..cpus import CpuList, cpu_lists
from ..syscount._data import SyscallSnapshot
from ..topo import CpuTopology, TopologyWatch

__all__ = ["CpuRows"]


class CpuRows:
    """Which row of the matrix each possible CPU's counts go to, and the rows' labels.

    ``by`` is ``cpu`` (a row per possible CPU, labelled by its id: nothing to follow) or ``core``,
    ``package`` or ``node``. Grouped, the topology is read again when a snapshot's online CPUs differ
    from the last read's (:class:`~percpu.topo.TopologyWatch`: a CPU gone offline keeps its place), so a CPU
    brought online later is counted in its group from the next scrape, not in ``unknown`` until a
    restart. A CPU keeps the row its counts were first served in: were its counts to move to another
    group, that group's counter would go down, which Prometheus takes for a reset and counts again. New
    groups are added after the others, so a row's index never changes."""

    def __init__(
        self,
        cpus: CpuList,
        by: str,
        topology: CpuTopology | None = None,
        read: Callable[[], CpuTopology] | None = None,
    ) -> None:
        self.cpus = cpus
        self.by = by
        self.labels: list[str] = []
        self._watch: TopologyWatch | None = None
        self._row = np.zeros(len(cpus), np.intp)
        self._served = np.zeros(len(cpus), dtype=bool)  # CPUs whose counts are in their row for good
        if by == "cpu":
            self.labels = [str(c) for c in cpus]
            self._row = np.arange(len(cpus), dtype=np.intp)
            return
        first = [topology] if topology is not None else []
        reread = read if read is not None else (lambda: cpu_lists().topology())
        self._watch = TopologyWatch(lambda: first.pop() if first else reread())
        self._place()

    @property
    def topology(self) -> CpuTopology | None:
        return None if self._watch is None else self._watch.topology

    def _place(self) -> None:
        """Give each CPU whose counts were never served the row of its group in the topology read last."""
        assert self._watch is not None
        topo = self._watch.topology
        index = {lab: i for i, lab in enumerate(self.labels)}
        for i, cpu in enumerate(self.cpus):
            if self._served[i]:
                continue
            label = topo[cpu].label(self.by, topo.multi_die)
            if label not in index:
                index[label] = len(self.labels)
                self.labels.append(label)
            self._row[i] = index[label]

    def counts(self, snap: SyscallSnapshot) -> np.ndarray:
        """``snap``'s counts as the matrix's rows: per CPU, or summed per group."""
        if self._watch is None:
            return snap.counts
        if self._watch.update(snap.online):
            self._place()
        self._served |= snap.counts.any(axis=1)
        out = np.zeros((len(self.labels), snap.counts.shape[1]), dtype=snap.counts.dtype)
        np.add.at(out, self._row, snap.counts)
        return out
