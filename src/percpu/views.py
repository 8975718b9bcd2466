"""Views of syscall counts shaped by the machine: only some CPUs, or CPUs summed by core, package or node.

Every per-CPU dimension of a :class:`~percpu.syscount.SyscallDelta` is restricted or grouped together
(the syscall matrix, and the per-process, errno and latency counts, which are per CPU too), so
``percpu stat -P --cpus isolated`` lists exactly the processes and syscalls that ran on isolated CPUs.

:func:`shown` is what reports show by default: the CPUs that exist (online) and those with calls, not the
possible CPUs a VM will never bring up (2 online of 128 possible is common in the cloud).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from .cpus import CpuList
from .errors import PercpuError
from .syscount._data import SyscallDelta, not_shown_line
from .topo import CpuGroups, CpuTopology, group_rows

__all__ = ["group", "has_calls", "not_shown_line", "restrict", "shown", "view"]

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


def _masked(d: SyscallDelta, mask: np.ndarray) -> SyscallDelta:
    """``d`` with the CPUs of ``mask`` only, in every per-CPU dimension."""
    return dataclasses.replace(
        d,
        cpus=CpuList(c for c, m in zip(d.cpus, mask, strict=True) if m),
        counts=d.counts[mask],
        procs=_keyed_cols(d.procs, mask),
        errors=_keyed_cols(d.errors, mask),
        latency=_keyed_cols(d.latency, mask),
    )


def restrict(d: SyscallDelta, cpus: CpuList, selected: str | None = None) -> SyscallDelta:
    """Only the CPUs in ``cpus`` (those of them in ``d.cpus``), in every per-CPU dimension."""
    if d.groups is not None:
        raise PercpuError("restrict CPUs before grouping them")
    mask = np.isin(np.asarray(d.cpus.ids), np.asarray(cpus.ids))
    if not mask.any():
        raise PercpuError(f"none of the CPUs {cpus} is among the counted CPUs {d.cpus}")
    return dataclasses.replace(_masked(d, mask), selected=selected if selected is not None else str(cpus))


def has_calls(d: SyscallDelta) -> np.ndarray:
    """Per row of ``d`` (a CPU, or a group): whether it has calls in any dimension, the syscall matrix or
    the per-process, errno and latency counts."""
    has = np.asarray(d.counts.any(axis=1), dtype=bool)
    for keyed in (d.procs, d.errors, d.latency):
        if keyed is not None and len(keyed[1]):
            has |= np.asarray(keyed[1].any(axis=0), dtype=bool)
    return has


def shown(d: SyscallDelta, *, keep: Iterable[int] = ()) -> SyscallDelta:
    """``d`` with the CPUs a report shows by default: those online at its end (``d.online``), those with
    calls, and those in ``keep`` (the CPUs a live view or a run showed before, so a CPU taken offline
    keeps its column). The others, possible CPUs that were not online and made no call, are left out and
    listed in ``not_shown``; on a VM with 2 CPUs online of 64 possible, 62 columns of zeros. ``d`` as it
    is when nothing is left out, or when its online CPUs are unknown."""
    if d.groups is not None:
        raise PercpuError("choose the CPUs shown before grouping them")
    if d.online is None:
        return d
    ids = np.asarray(d.cpus.ids)
    live = np.isin(ids, np.asarray(d.online.ids)) | np.isin(
        ids, np.asarray(sorted(set(keep)), dtype=np.int64)
    )
    mask = live | has_calls(d)
    if mask.all():
        return d
    left = CpuList(c for c, m in zip(d.cpus, mask, strict=True) if not m)
    return dataclasses.replace(_masked(d, mask), not_shown=left)


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
