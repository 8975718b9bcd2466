"""CPU topology from sysfs: possible, online and present CPU lists.

The kernel lays out a per-CPU value as one slot per *possible* CPU, in ascending CPU-id order. Slot i is the
i-th possible CPU, which is CPU id i only when the possible list has no gaps. :class:`Topology` gives the
lists and the slot <-> CPU-id mapping; the sysfs root is a parameter so tests can point it at fixtures.

``possible`` is fixed at boot and cached; ``online`` and ``present`` change with hotplug and are read anew
each time they are asked for.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, overload

from .errors import CpuNotPossible, PercpuError, TopologyMismatch

if TYPE_CHECKING:
    from .topo import CpuLayout

__all__ = ["CpuList", "Topology", "machine", "parse_cpu_list", "possible_cpus", "topology"]

SYSFS_CPU = "/sys/devices/system/cpu"


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """Parse the kernel's CPU list format (``0-3,8,10-11``) into sorted CPU ids.

    >>> parse_cpu_list("0,2-3")
    (0, 2, 3)
    """
    cpus: set[int] = set()
    text = text.strip()
    if not text:
        return ()
    for raw in text.split(","):
        part = raw.strip()
        try:
            if "-" in part:
                lo_s, hi_s = part.split("-", 1)
                lo, hi = int(lo_s), int(hi_s)
                if lo < 0 or hi < lo:
                    raise ValueError(part)
                cpus.update(range(lo, hi + 1))
            else:
                n = int(part)
                if n < 0:
                    raise ValueError(part)
                cpus.add(n)
        except ValueError as exc:
            raise PercpuError(f"malformed CPU list {text!r}: bad element {part!r}") from exc
    return tuple(sorted(cpus))


def format_cpu_list(cpus: Iterable[int]) -> str:
    """The inverse of :func:`parse_cpu_list`: ``(0, 2, 3)`` -> ``"0,2-3"``."""
    out: list[str] = []
    ids = sorted(set(cpus))
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(out)


class CpuList(Sequence[int]):
    """An immutable, sorted list of CPU ids that prints the way the kernel writes it."""

    __slots__ = ("_ids",)

    def __init__(self, ids: Iterable[int]) -> None:
        self._ids = tuple(sorted(set(ids)))

    @classmethod
    def parse(cls, text: str) -> CpuList:
        return cls(parse_cpu_list(text))

    @overload
    def __getitem__(self, i: int) -> int: ...
    @overload
    def __getitem__(self, i: slice) -> CpuList: ...
    def __getitem__(self, i: int | slice) -> int | CpuList:
        if isinstance(i, slice):
            return CpuList(self._ids[i])
        return self._ids[i]

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, cpu: object) -> bool:
        return cpu in self._ids

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CpuList):
            return self._ids == other._ids
        if isinstance(other, tuple | list):
            return self._ids == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._ids)

    def __str__(self) -> str:
        return format_cpu_list(self._ids)

    def __repr__(self) -> str:
        return f"CpuList({format_cpu_list(self._ids)!r})"

    @property
    def ids(self) -> tuple[int, ...]:
        return self._ids


class Topology:
    """CPU lists read from ``root`` (default ``/sys/devices/system/cpu``)."""

    def __init__(self, root: str = SYSFS_CPU) -> None:
        self.root = root
        self._possible: CpuList | None = None
        self._slot_of: dict[int, int] | None = None

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
        """The slot index of CPU id ``cpu`` in a per-CPU value. Raises :class:`CpuNotPossible`."""
        if self._slot_of is None:
            self._slot_of = {c: i for i, c in enumerate(self.possible)}
        try:
            return self._slot_of[cpu]
        except (KeyError, TypeError):
            raise CpuNotPossible(cpu, str(self.possible)) from None

    def cpu(self, slot: int) -> int:
        """The CPU id that slot ``slot`` holds."""
        return self.possible[slot]

    def layout(self, *, node_root: str | None = None, cgroup_root: str | None = "") -> CpuLayout:
        """Each possible CPU's core, package, die, cluster, SMT siblings, NUMA node and isolation, read
        from sysfs now (see :mod:`percpu.topo`; ``cgroup_root=None`` skips cpuset partitions)."""
        from .topo import read_layout

        return read_layout(self.root, node_root=node_root, cgroup_root=cgroup_root, topology=self)


@functools.lru_cache(maxsize=8)
def topology(root: str = SYSFS_CPU) -> Topology:
    """The shared :class:`Topology` for ``root`` (one per root, so ``possible`` is read once)."""
    return Topology(root)


def machine() -> Topology:
    """The CPU lists of the machine in use (:func:`percpu._machine.current`: sysfs, or a test fake's own
    files)."""
    from . import _machine

    return topology(_machine.current().cpu_root)


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
