"""What ``percpu stat`` and ``percpu top`` show of each interval: the CPUs that exist (``--all-cpus``: every
possible CPU), ``--cpus``, ``--by``; the topology they are grouped and ordered by, read again when CPUs go
offline or come online."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from ..cpus import cpu_lists
from ..errors import PercpuError
from ..syscount._data import SyscallDelta
from ..topo import GROUP_BY, CpuTopology, TopologyWatch
from ..views import shown, view

__all__ = ["View", "add_options", "from_args"]


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("CPUs shown (from sysfs topology: `percpu topology` prints it)")
    g.add_argument(
        "--by",
        choices=GROUP_BY,
        default="cpu",
        help="one column per cpu (default), or per core (SMT siblings summed), package (socket) or NUMA node",
    )
    g.add_argument(
        "--cpus",
        metavar="LIST",
        help="only these CPUs, in every table (per-process too): a CPU list (0-3,8), isolated "
        "(isolcpus=, nohz_full=, isolated cpuset partitions), housekeeping (the others), node:N, or "
        "several joined by commas",
    )
    g.add_argument(
        "--all-cpus",
        action="store_true",
        help="a column for every possible CPU; by default the CPUs not online that made no call are left "
        "out (one line says which)",
    )


class View:
    """The view of ``percpu stat`` or ``top``: call it on each interval's counts, in order.

    By default a report shows the CPUs online at the end of the interval, those with calls, and every CPU
    it showed before (a CPU taken offline keeps its column; see :func:`percpu.views.shown`); ``--cpus``
    shows the CPUs chosen, ``--all-cpus`` every possible CPU. With ``--by`` (or for pictures) the topology
    is watched: read again when the online CPUs of an interval differ from the last read's, a CPU gone
    offline keeping its place (:class:`percpu.topo.TopologyWatch`)."""

    def __init__(self, by: str, spec: str | None, all_cpus: bool, watch: TopologyWatch | None) -> None:
        self.by = by
        self.spec = spec
        self.all_cpus = all_cpus
        self.watch = watch
        self.cpus = watch.topology.select(spec) if spec is not None and watch is not None else None
        self.keep: set[int] = set()  # the CPUs shown so far

    @property
    def topology(self) -> CpuTopology | None:
        return None if self.watch is None else self.watch.topology

    def remember(self, cpus: Iterable[int] | None) -> None:
        """Show these CPUs from now on (the CPUs online when a run started)."""
        self.keep.update(cpus or ())

    def __call__(self, d: SyscallDelta) -> SyscallDelta:
        """The next interval's view: the topology read again if CPUs went offline or came online."""
        if self.watch is not None:
            self.watch.update(d.online)
        out = self.apply(d)
        if out.groups is None:
            self.keep.update(out.cpus)
        else:
            self.keep.update(c for m in out.groups.members for c in m)
        return out

    def apply(self, d: SyscallDelta) -> SyscallDelta:
        """``d`` as this view shows it now, changing nothing (a picture of intervals drawn at the end)."""
        if self.cpus is None and not self.all_cpus:
            d = shown(d, keep=self.keep)
        if self.by == "cpu" and self.cpus is None:
            return d
        topology = self.topology
        if topology is None:
            raise PercpuError("a view by core, package or node needs the machine's topology")
        return view(d, topology, by=self.by, cpus=self.cpus, selected=self.spec)


def from_args(args: argparse.Namespace, topology: CpuTopology | None = None, *, watch: bool = False) -> View:
    """The view the options ask for. Reads the topology (when ``--by`` or ``--cpus`` needs it, or ``watch``
    asks for it: pictures order CPUs by it, and do without it if it cannot be read) and checks ``--cpus``
    now, before anything is counted; ``topology`` is the first read's, when given."""
    by: str = getattr(args, "by", "cpu")
    spec: str | None = getattr(args, "cpus", None)
    all_cpus: bool = getattr(args, "all_cpus", False)
    needed = by != "cpu" or spec is not None
    tw = None
    if needed or watch:
        first = [topology] if topology is not None else []
        try:
            tw = TopologyWatch(lambda: first.pop() if first else cpu_lists().topology())
        except PercpuError:
            if needed:
                raise
            # pictures only: drawn in CPU order without it
    return View(by, spec, all_cpus, tw)
