"""The machine's shape: each possible CPU's core, package, die, cluster, SMT siblings and NUMA node, and
which CPUs are isolated (``isolcpus=``, ``nohz_full=``, cgroup v2 cpuset partitions).

Everything is read from sysfs under a root directory that is a parameter, so tests point it at a fake
tree. The kernel removes ``cpuN/topology`` while CPU N is offline, so a possible CPU that is not online
(or was never present) has no core or package: its record says ``known=False`` and it falls in the
``unknown`` group. The topology is read once, when :func:`read_topology` is called.

Group labels (stable strings, used as table columns, JSON keys and Prometheus label values):
``cpu3``; ``core1.0`` (package 1, core 0; ``core1.2.0`` with die 2 on multi-die packages);
``pkg1``; ``node1``; ``unknown`` for CPUs whose topology sysfs does not show.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .cpulist import CpuGroups, CpuList, parse_cpu_list
from .errors import PercpuError

__all__ = [
    "GROUP_BY",
    "CpuGroups",
    "CpuInfo",
    "CpuTopology",
    "Partition",
    "group_rows",
    "read_topology",
    "select_cpus",
]

GROUP_BY = ("cpu", "core", "package", "node")
UNKNOWN = "unknown"


class Partition(NamedTuple):
    """A cgroup v2 cpuset partition: ``kind`` is ``isolated`` or ``root``; ``cpus`` its effective CPUs."""

    path: str
    kind: str
    cpus: CpuList


class CpuInfo(NamedTuple):
    """One possible CPU. ``slot`` is its index in a per-CPU value. CpuLists fields are None (and
    ``known`` False) when sysfs has no ``cpuN/topology`` for it: offline, or never present."""

    cpu: int
    slot: int
    online: bool
    present: bool
    known: bool
    core: int | None
    package: int | None
    die: int | None
    cluster: int | None
    node: int | None
    siblings: CpuList  # SMT threads of its core, itself included (empty when unknown)
    isolated: bool  # in /sys/devices/system/cpu/isolated (isolcpus=, domain isolation)
    nohz_full: bool
    partition: Partition | None  # the cpuset partition (isolated or root) whose CPUs include it

    @property
    def state(self) -> str:
        """``online``; ``offline`` (present, not online); ``absent`` (possible only: never brought up)."""
        return "online" if self.online else ("offline" if self.present else "absent")

    @property
    def is_isolated(self) -> bool:
        """Kept away from general work: isolcpus=, nohz_full= or an isolated cpuset partition."""
        return (
            self.isolated
            or self.nohz_full
            or (self.partition is not None and self.partition.kind == "isolated")
        )

    def label(self, by: str, multi_die: bool = False) -> str:
        """The label of the group this CPU belongs to when grouping ``by`` cpu|core|package|node."""
        if by == "cpu":
            return f"cpu{self.cpu}"
        if by == "node":
            return UNKNOWN if self.node is None else f"node{self.node}"
        if not self.known or self.package is None:
            return UNKNOWN
        if by == "package":
            return f"pkg{self.package}"
        if by == "core":
            die = f".{self.die}" if multi_die and self.die is not None else ""
            return f"core{self.package}{die}.{self.core}"
        raise PercpuError(f"cannot group by {by!r}: choose one of {', '.join(GROUP_BY)}")


@dataclass(frozen=True)
class CpuTopology:
    """Every possible CPU as a :class:`CpuInfo` (in slot order), with lookups and groupings."""

    cpus: tuple[CpuInfo, ...]
    partitions: tuple[Partition, ...] = ()

    @property
    def possible(self) -> CpuList:
        return CpuList(c.cpu for c in self.cpus)

    @functools.cached_property
    def _by_cpu(self) -> dict[int, CpuInfo]:
        return {c.cpu: c for c in self.cpus}

    def __getitem__(self, cpu: int) -> CpuInfo:
        info = self._by_cpu.get(cpu)
        if info is not None:
            return info
        raise PercpuError(f"CPU {cpu} is not possible on this machine (possible: {self.possible})")

    def __len__(self) -> int:
        return len(self.cpus)

    @property
    def nodes(self) -> tuple[int, ...]:
        return tuple(sorted({c.node for c in self.cpus if c.node is not None}))

    @property
    def isolated(self) -> CpuList:
        """CPUs kept away from general work (see :attr:`CpuInfo.is_isolated`)."""
        return CpuList(c.cpu for c in self.cpus if c.is_isolated)

    @property
    def housekeeping(self) -> CpuList:
        """Possible CPUs that are not isolated."""
        return CpuList(c.cpu for c in self.cpus if not c.is_isolated)

    @property
    def absent(self) -> CpuList:
        """Possible CPUs that are not present: slots for hotplug that this boot never brought up."""
        return CpuList(c.cpu for c in self.cpus if c.state == "absent")

    def node(self, n: int) -> CpuList:
        return CpuList(c.cpu for c in self.cpus if c.node == n)

    def core_of(self, cpu: int) -> CpuList:
        """The CPUs sharing ``cpu``'s core (its SMT siblings, itself included)."""
        return self[cpu].siblings

    @property
    def multi_die(self) -> bool:
        """Whether some package has more than one die (then core labels name the die too). Die ids may be
        numbered across the machine (Linux 6.1 gives package 1's die the id 1): compare pairs, not ids."""
        known = [c for c in self.cpus if c.known]
        return len({(c.package, c.die) for c in known}) > len({c.package for c in known})

    def groups(self, by: str, cpus: Iterable[int] | None = None) -> CpuGroups:
        """Group the possible CPUs (or only ``cpus``) ``by`` cpu|core|package|node, groups in order of
        their first CPU, ``unknown`` last. ``index`` runs over the grouped CPUs in ascending order."""
        if by not in GROUP_BY:
            raise PercpuError(f"cannot group by {by!r}: choose one of {', '.join(GROUP_BY)}")
        multi = self.multi_die
        infos = self.cpus if cpus is None else tuple(self[c] for c in sorted(set(cpus)))
        labels = [c.label(by, multi) for c in infos]
        order: dict[str, list[int]] = {}
        for c, lab in zip(infos, labels, strict=True):
            order.setdefault(lab, []).append(c.cpu)
        names = [k for k in order if k != UNKNOWN] + ([UNKNOWN] if UNKNOWN in order else [])
        row = {k: i for i, k in enumerate(names)}
        index = np.array([row[lab] for lab in labels], dtype=np.intp)
        return CpuGroups(by, tuple(names), tuple(CpuList(order[k]) for k in names), index)

    def select(self, spec: str) -> CpuList:
        """CPUs named by ``spec``: see :func:`select_cpus`."""
        return select_cpus(self, spec)


def select_cpus(topology: CpuTopology, spec: str) -> CpuList:
    """Parse a CPU selection: comma-separated terms, each a CPU id or range (``0-3``), ``isolated``,
    ``housekeeping``, or ``node:N``; their union. Raises :class:`PercpuError` on a bad term, a CPU that
    is not possible, or an empty result."""
    terms = [t.strip() for t in spec.split(",")]
    if not spec.strip() or not all(terms):
        raise PercpuError(f"CPU selection {spec!r} has an empty term: use e.g. 0-3, isolated, node:1")
    possible = topology.possible
    chosen: set[int] = set()
    for term in terms:
        if term == "isolated":
            got = topology.isolated
            if not got:
                raise PercpuError(
                    "--cpus isolated: no CPU is isolated here (no isolcpus= or nohz_full= on the kernel "
                    "command line, no isolated cpuset partition); see /sys/devices/system/cpu/isolated"
                )
        elif term == "housekeeping":
            got = topology.housekeeping
        elif term.startswith("node:"):
            num = term[5:]
            if not num.isdigit():
                raise PercpuError(f"CPU selection {term!r}: node:N takes a node number, e.g. node:0")
            got = topology.node(int(num))
            if not got:
                have = ", ".join(str(n) for n in topology.nodes) or "none"
                raise PercpuError(f"CPU selection {term!r}: no such NUMA node with CPUs (nodes: {have})")
        else:
            try:
                ids = parse_cpu_list(term)
            except PercpuError:
                raise PercpuError(
                    f"CPU selection {term!r}: not a CPU list (0-3,8), isolated, housekeeping or node:N"
                ) from None
            bad = [c for c in ids if c not in possible]
            if bad:
                raise PercpuError(
                    f"CPU selection {term!r}: CPU {bad[0]} is not possible here (possible: {possible})"
                )
            got = CpuList(ids)
        chosen.update(got)
    if not chosen:
        raise PercpuError(f"CPU selection {spec!r} selects no CPU")
    return CpuList(chosen)


def group_rows(counts: np.ndarray, groups: CpuGroups) -> np.ndarray:
    """Sum rows of ``counts`` (axis 0 indexed by possible-CPU slot) into one row per group."""
    if counts.shape[0] != len(groups.index):
        raise PercpuError(
            f"counts have {counts.shape[0]} CPU rows, the grouping has {len(groups.index)} possible CPUs"
        )
    out = np.zeros((len(groups), *counts.shape[1:]), dtype=counts.dtype)
    np.add.at(out, groups.index, counts)
    return out


# --- reading sysfs --------------------------------------------------------------------------------------


def _text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _int(path: str) -> int | None:
    text = _text(path)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _cpus(path: str) -> CpuList:
    """A CPU list file; an absent or unreadable file is an empty list (the feature is off). So is
    ``(null)``: a kernel built with NO_HZ_FULL but booted without nohz_full= prints its unallocated mask
    that way in ``cpu/nohz_full``."""
    text = _text(path)
    if not text or text == "(null)":
        return CpuList(())
    try:
        return CpuList.parse(text)
    except PercpuError as exc:
        raise PercpuError(f"{path}: {exc}") from None


def _node_of(cpu_root: str, node_root: str, cpus: Sequence[int]) -> dict[int, int]:
    """CPU -> NUMA node, from nodeN/cpulist and, for CPUs those lists leave out (offline ones on some
    architectures), from the cpuN/nodeM links that stay for every registered CPU."""
    out: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for name in os.listdir(node_root):
            if name.startswith("node") and name[4:].isdigit():
                for c in _cpus(os.path.join(node_root, name, "cpulist")):
                    out[c] = int(name[4:])
    for c in cpus:
        if c in out:
            continue
        with contextlib.suppress(OSError):
            for name in os.listdir(os.path.join(cpu_root, f"cpu{c}")):
                if name.startswith("node") and name[4:].isdigit():
                    out[c] = int(name[4:])
                    break
    return out


def _partitions(cgroup_root: str | None) -> tuple[Partition, ...]:
    """Valid cpuset partitions (``isolated`` or ``root``) under a cgroup v2 mount. An invalid one
    (``isolated invalid (...)``) holds no CPUs of its own and is left out."""
    if cgroup_root is None or not os.path.isdir(cgroup_root):
        return ()
    out: list[Partition] = []
    todo = [cgroup_root]
    while todo:
        d = todo.pop()
        kind = _text(os.path.join(d, "cpuset.cpus.partition"))
        if d != cgroup_root and kind in ("isolated", "root"):
            eff = _cpus(os.path.join(d, "cpuset.cpus.effective"))
            out.append(Partition("/" + os.path.relpath(d, cgroup_root), kind, eff))
        with contextlib.suppress(OSError), os.scandir(d) as it:
            for e in it:
                with contextlib.suppress(OSError):
                    if e.is_dir(follow_symlinks=False):
                        todo.append(e.path)
    out.sort()
    return tuple(out)


def read_topology(
    cpu_root: str | None = None,
    node_root: str | None = None,
    cgroup_root: str | None = "",
    possible: CpuList | None = None,
) -> CpuTopology:
    """Read every possible CPU's place in the machine.

    ``cpu_root`` defaults to the machine in use's (:mod:`percpu._machine`), ``node_root`` to ``node``
    beside it; ``cgroup_root`` is where cgroup v2 is mounted ("" asks the machine's mount table, None skips
    cpuset partitions). ``possible`` is the possible-CPU list when the caller has it (default: read from
    ``cpu_root``). The paths are for fixtures of other machines' sysfs trees.
    """
    from . import _machine

    if cpu_root is None:
        cpu_root = _machine.current().cpu_root
    if node_root is None:
        node_root = os.path.join(os.path.dirname(cpu_root.rstrip("/")), "node")
    if cgroup_root == "":
        cgroup_root = _machine.current().mount_point("cgroup2")
    if possible is None:
        possible = _cpus(os.path.join(cpu_root, "possible"))
        if not possible:
            raise PercpuError(f"{cpu_root}/possible lists no CPU")
    online = set(_cpus(os.path.join(cpu_root, "online")))
    present = set(_cpus(os.path.join(cpu_root, "present")))
    isolated = set(_cpus(os.path.join(cpu_root, "isolated")))
    nohz = set(_cpus(os.path.join(cpu_root, "nohz_full")))
    nodes = _node_of(cpu_root, node_root, possible.ids)
    parts = _partitions(cgroup_root)
    part_of: dict[int, Partition] = {}
    for p in parts:
        for c in p.cpus:
            # A nested partition is more specific than its parent's: the deepest one wins.
            if c not in part_of or len(p.path) > len(part_of[c].path):
                part_of[c] = p
    out: list[CpuInfo] = []
    for slot, cpu in enumerate(possible):
        t = os.path.join(cpu_root, f"cpu{cpu}", "topology")
        known = os.path.isdir(t)
        core = _int(os.path.join(t, "core_id")) if known else None
        pkg = _int(os.path.join(t, "physical_package_id")) if known else None
        die = _int(os.path.join(t, "die_id")) if known else None
        cluster = _int(os.path.join(t, "cluster_id")) if known else None
        sib = _cpus(os.path.join(t, "thread_siblings_list")) if known else CpuList(())
        out.append(
            CpuInfo(
                cpu=cpu,
                slot=slot,
                online=cpu in online,
                present=cpu in present,
                known=known and pkg is not None,
                core=core,
                package=pkg,
                die=die,
                cluster=cluster,
                node=nodes.get(cpu),
                siblings=sib,
                isolated=cpu in isolated,
                nohz_full=cpu in nohz,
                partition=part_of.get(cpu),
            )
        )
    return CpuTopology(tuple(out), parts)


def topology_lines(topology: CpuTopology) -> Iterable[str]:
    """A human-readable table of the topology (``percpu topology``)."""
    yield (
        f"{'cpu':>5} {'slot':>5} {'state':<12} {'node':>4} {'pkg':>4} {'die':>4} {'core':>5} {'smt':<10} "
        "isolation"
    )
    for c in topology.cpus:
        iso = [n for n, on in (("isolcpus", c.isolated), ("nohz_full", c.nohz_full)) if on]
        if c.partition is not None:
            iso.append(f"{c.partition.kind} partition {c.partition.path}")

        def f(v: int | None) -> str:
            return "-" if v is None else str(v)

        yield (
            f"{c.cpu:>5} {c.slot:>5} {c.state:<12} {f(c.node):>4} {f(c.package):>4} {f(c.die):>4} "
            f"{f(c.core):>5} {str(c.siblings) or '-':<10} {', '.join(iso) or '-'}"
        )


def __getattr__(name: str) -> Any:
    """The names these had before (``CpuLayout``, ``read_layout``, ``layout_lines``), kept with a
    DeprecationWarning: a *layout* is a map's bytes in percpu."""
    new = {"CpuLayout": "CpuTopology", "read_layout": "read_topology", "layout_lines": "topology_lines"}.get(
        name
    )
    if new is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"percpu.topo.{name} is now percpu.topo.{new}", DeprecationWarning, stacklevel=2)
    return globals()[new]
