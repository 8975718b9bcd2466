"""CPU id lists as the kernel writes them (``0-3,8,10-11``): :class:`CpuList` and its parser, and
:class:`CpuGroups`, CPUs grouped into rows.

The ground floor of everything that names CPUs: it reads nothing and imports nothing of percpu's but
the error tree, so the CPU lists (:mod:`percpu.cpus`), the machine's shape (:mod:`percpu.topo`, which
makes the groups) and the syscall data (grouped deltas) all build on it.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np

from .errors import CpuNotPossible, PercpuError

__all__ = ["CpuGroups", "CpuList", "format_cpu_list", "parse_cpu_list"]


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

    __slots__ = ("_ids", "_slot_of")

    def __init__(self, ids: Iterable[int]) -> None:
        self._ids = tuple(sorted(set(ids)))
        self._slot_of: dict[int, int] | None = None

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

    def slot(self, cpu: object, *, map_name: str | None = None) -> int:
        """The position of CPU id ``cpu`` in this list: the slot of its value in a per-CPU value, when this
        is the possible list. The one rule for CPU ids, wherever one is given: an integer (numpy's too)
        that is in the list. ``True`` and ``1.0`` hash like CPU 1 but are not CPU ids, and are refused
        with the rest. Raises :class:`~percpu.errors.CpuNotPossible` naming the CPU and this list."""
        slots = self._slot_of
        if slots is None:
            slots = self._slot_of = {c: i for i, c in enumerate(self._ids)}
        try:
            if isinstance(cpu, bool):
                raise TypeError(cpu)
            return slots[operator.index(cpu)]  # type: ignore[arg-type]
        except (KeyError, TypeError):
            raise CpuNotPossible(cpu, str(self), map_name=map_name) from None


@dataclass(frozen=True)
class CpuGroups:
    """Possible CPUs grouped ``by`` cpu, core, package or node: ``index[slot]`` is the row of the group
    holding that slot, ``labels[row]`` its label and ``members[row]`` its CPUs."""

    by: str
    labels: tuple[str, ...]
    members: tuple[CpuList, ...]
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def live(self, online: Iterable[int]) -> np.ndarray:
        """Per group: whether any of its CPUs is in ``online``."""
        on = set(online)
        return np.array([any(c in on for c in m) for m in self.members], dtype=bool)
