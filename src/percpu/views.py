"""Views of syscall counts shaped by the machine: only some CPUs, or CPUs summed by core, package or node.

Every per-CPU dimension of a :class:`~percpu.syscount.SyscallDelta` is restricted or grouped together
(the syscall matrix, and the per-process, errno and latency counts, which are per CPU too), so
``percpu stat -P --cpus isolated`` lists exactly the processes and syscalls that ran on isolated CPUs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .cpus import CpuList
from .errors import PercpuError
from .syscount._data import SyscallDelta
from .topo import CpuGroups, CpuTopology, group_rows

__all__ = ["group", "restrict", "view"]

Keyed = tuple[np.ndarray, np.ndarray] | None


def _keyed_cols(keyed: Keyed, mask: np.ndarray) -> Keyed:
    """Keep the columns in ``mask``; keys left with no count on them are dropped."""
    if keyed is None:
        return None
    keys, counts = keyed
    sub = counts[:, mask]
    keep = sub.any(axis=1) if sub.size else np.zeros(len(keys), dtype=bool)
    return keys[keep], sub[keep]


def _keyed_grouped(keyed: Keyed, groups: CpuGroups) -> Keyed:
    if keyed is None:
        return None
    keys, counts = keyed
    return keys, group_rows(counts.T, groups).T.copy()


def restrict(d: SyscallDelta, cpus: CpuList, selected: str | None = None) -> SyscallDelta:
    """Only the CPUs in ``cpus`` (those of them in ``d.cpus``), in every per-CPU dimension."""
    if d.groups is not None:
        raise PercpuError("restrict CPUs before grouping them")
    mask = np.isin(np.asarray(d.cpus.ids), np.asarray(cpus.ids))
    if not mask.any():
        raise PercpuError(f"none of the CPUs {cpus} is among the counted CPUs {d.cpus}")
    return dataclasses.replace(
        d,
        cpus=CpuList(c for c, m in zip(d.cpus, mask, strict=True) if m),
        counts=d.counts[mask],
        procs=_keyed_cols(d.procs, mask),
        errors=_keyed_cols(d.errors, mask),
        latency=_keyed_cols(d.latency, mask),
        selected=selected if selected is not None else str(cpus),
    )


def group(d: SyscallDelta, topology: CpuTopology, by: str) -> SyscallDelta:
    """Sum ``d``'s CPUs into groups ``by`` core, package or node (``cpu`` returns ``d`` unchanged)."""
    if by == "cpu" or d.groups is not None:
        return d
    groups = topology.groups(by, d.cpus)
    return dataclasses.replace(
        d,
        counts=group_rows(d.counts, groups),
        procs=_keyed_grouped(d.procs, groups),
        errors=_keyed_grouped(d.errors, groups),
        latency=_keyed_grouped(d.latency, groups),
        groups=groups,
    )


def view(
    d: SyscallDelta,
    topology: CpuTopology,
    *,
    by: str = "cpu",
    cpus: CpuList | None = None,
    selected: str | None = None,
) -> SyscallDelta:
    """``d`` restricted to ``cpus`` (None: all), then grouped ``by`` cpu|core|package|node."""
    if cpus is not None:
        d = restrict(d, cpus, selected)
    return group(d, topology, by)
