"""``--by`` and ``--cpus`` for ``percpu stat`` and ``percpu top``: views shaped by the machine's topology."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..cpus import cpu_lists
from ..syscount._data import SyscallDelta
from ..topo import GROUP_BY, CpuTopology
from ..views import view

__all__ = ["add_options", "from_args"]

View = Callable[[SyscallDelta], SyscallDelta]


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


def from_args(
    args: argparse.Namespace, topology: CpuTopology | None = None
) -> tuple[View | None, CpuTopology | None]:
    """The view the options ask for (None: all CPUs, one column each) and the topology it was built from.
    Reads the topology and checks ``--cpus`` now, before anything is counted."""
    by: str = getattr(args, "by", "cpu")
    spec: str | None = getattr(args, "cpus", None)
    if by == "cpu" and spec is None:
        return None, topology
    topo = topology if topology is not None else cpu_lists().topology()
    cpus = topo.select(spec) if spec is not None else None

    def apply(d: SyscallDelta) -> SyscallDelta:
        return view(d, topo, by=by, cpus=cpus, selected=spec)

    return apply, topo
