"""The CPU lists from sysfs: possible, online and present CPUs, and the slot of each possible CPU.

The kernel lays out a per-CPU value as one slot per *possible* CPU, in ascending CPU-id order. Slot i is the
i-th possible CPU, which is CPU id i only when the possible list has no gaps. :class:`CpuLists` gives the
lists and the slot <-> CPU-id mapping; the sysfs root is a parameter so tests can point it at fixtures.
Where each CPU sits in the machine (core, package, node, isolation) is :class:`~percpu.topo.CpuTopology`,
read by :meth:`CpuLists.topology`.

Three words, three things: a *CPU list* is a set of CPU ids (:class:`CpuList`), the *CPU lists* are the
machine's possible, online and present lists (:class:`CpuLists`), the *topology* is each CPU's place
(:class:`~percpu.topo.CpuTopology`); a *layout* is only ever a map's bytes (:class:`percpu.layout.Layout`).

``possible`` is fixed at boot and cached; ``online`` and ``present`` change with hotplug and are read anew
each time they are asked for.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Any

from .cpulist import CpuList, format_cpu_list, parse_cpu_list
from .errors import PercpuError, TopologyMismatch
from .topo import CpuTopology, read_topology

__all__ = [
    "CpuList",
    "CpuLists",
    "cpu_lists",
    "format_cpu_list",
    "machine",
    "parse_cpu_list",
    "possible_cpus",
]

SYSFS_CPU = "/sys/devices/system/cpu"


class CpuLists:
    """CPU lists read from ``root`` (default ``/sys/devices/system/cpu``)."""

    def __init__(self, root: str = SYSFS_CPU) -> None:
        self.root = root
        self._possible: CpuList | None = None

    def _read(self, name: str) -> CpuList:
        path = os.path.join(self.root, name)
        try:
            with open(path, encoding="ascii") as f:
                text = f.read()
        except OSError as exc:
            raise PercpuError(
                f"cannot read {path}: {exc.strerror}; is sysfs mounted at /sys?", errno=exc.errno
            ) from exc
        return CpuList.parse(text)

    @property
    def possible(self) -> CpuList:
        """CPUs that can ever be online on this boot: one per-CPU value slot each. Cached."""
        if self._possible is None:
            possible = self._read("possible")
            if not possible:
                raise PercpuError(f"{self.root}/possible lists no CPU")
            self._possible = possible
        return self._possible

    @property
    def online(self) -> CpuList:
        """CPUs online now (changes with hotplug)."""
        return self._read("online")

    @property
    def present(self) -> CpuList:
        """CPUs physically present now (changes with hotplug)."""
        return self._read("present")

    @property
    def num_possible(self) -> int:
        return len(self.possible)

    def slot(self, cpu: int) -> int:
        """The slot index of CPU id ``cpu`` in a per-CPU value (:meth:`CpuList.slot`, the one rule for CPU
        ids). Raises :class:`~percpu.errors.CpuNotPossible`."""
        return self.possible.slot(cpu)

    def cpu(self, slot: int) -> int:
        """The CPU id that slot ``slot`` holds."""
        return self.possible[slot]

    def topology(self, *, node_root: str | None = None, cgroup_root: str | None = "") -> CpuTopology:
        """Each possible CPU's core, package, die, cluster, SMT siblings, NUMA node and isolation, read
        from sysfs now (see :mod:`percpu.topo`; ``cgroup_root=None`` skips cpuset partitions)."""
        return read_topology(self.root, node_root=node_root, cgroup_root=cgroup_root, possible=self.possible)

    def layout(self, *, node_root: str | None = None, cgroup_root: str | None = "") -> CpuTopology:
        """Deprecated: :meth:`topology` (a *layout* is a map's bytes in percpu)."""
        warnings.warn("CpuLists.layout() is now CpuLists.topology()", DeprecationWarning, stacklevel=2)
        return self.topology(node_root=node_root, cgroup_root=cgroup_root)


@functools.lru_cache(maxsize=8)
def cpu_lists(root: str = SYSFS_CPU) -> CpuLists:
    """The shared :class:`CpuLists` for ``root`` (one per root, so ``possible`` is read once)."""
    return CpuLists(root)


def machine() -> CpuLists:
    """The CPU lists of the machine in use (:func:`percpu._machine.current`: sysfs, or a test fake's own
    files)."""
    from . import _machine

    return cpu_lists(_machine.current().cpu_root)


def possible_cpus() -> CpuList:
    """The possible CPUs, in slot order, checked against the kernel's own count.

    Per-CPU buffers are sized by ``libbpf_num_possible_cpus()``; the ids here name their slots. Lists that
    disagree with the kernel's count raise :class:`~percpu.errors.TopologyMismatch` instead of putting
    values under the wrong CPU ids.
    """
    from . import _machine

    topo = machine()
    n = _machine.current().num_possible_cpus()
    if len(topo.possible) != n:
        raise TopologyMismatch(
            f"{topo.root}/possible lists {len(topo.possible)} CPUs ({topo.possible}) but the kernel counts "
            f"{n} possible CPUs; per-CPU values follow the kernel's count. Is another sysfs mounted at "
            f"{topo.root}?"
        )
    return topo.possible


_DEPRECATED = {"Topology": ("CpuLists", CpuLists), "topology": ("cpu_lists", cpu_lists)}


def __getattr__(name: str) -> Any:
    """The names these had before (``Topology``, ``topology``), kept with a DeprecationWarning."""
    if name in _DEPRECATED:
        new, obj = _DEPRECATED[name]
        warnings.warn(f"percpu.cpus.{name} is now percpu.cpus.{new}", DeprecationWarning, stacklevel=2)
        return obj
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
