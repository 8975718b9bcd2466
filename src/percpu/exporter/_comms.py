"""The per-process series of the exporter (``-P``): calls by command name and syscall, at most
``max_comms`` names plus ``comm="other"``, accumulated from the counter's per-process rows so every
series only grows and the comm series of a syscall always add up to its per-process calls."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._text import printable
from ..syscount._data import FOLDED_TGID, folded_keys
from ._exposition import Family

OTHER = "other"
_FOLDED = FOLDED_TGID.to_bytes(4, "little")


class CommSeries:
    """The named command names and each (comm, syscall) series' total, kept between scrapes."""

    def __init__(self, max_comms: int) -> None:
        self.max_comms = max_comms
        self._comms: set[str] = set()
        self._last: dict[bytes, int] = {}
        self._totals: dict[tuple[str, str], int] = {}

    @property
    def tracked_comms(self) -> int:
        """Command names held in memory (at most ``max_comms``, whatever processes call themselves)."""
        return len(self._comms)

    @property
    def tracked_keys(self) -> int:
        """Per-process keys remembered between scrapes: the counter's rows (its kernel table's, and those of
        exited processes summed by name), bounded whatever processes do."""
        return len(self._last)

    def family(self, keys: np.ndarray, counts: np.ndarray, label: Callable[[int], str]) -> Family:
        """``percpu_process_syscalls``: the series accumulated to this snapshot, ``label`` naming a slot
        as the syscall matrix does."""
        m = Family(
            "percpu_process_syscalls",
            "counter",
            "System calls by command name (comm) and syscall; "
            f'at most {self.max_comms} comms, the rest as comm="other".',
        )
        now = dict(
            zip([k.tobytes() for k in keys], counts.sum(axis=1, dtype=np.uint64).tolist(), strict=True)
        )
        delta: dict[bytes, int] = {}
        for raw, t in now.items():
            before = self._last.get(raw, 0)
            delta[raw] = t - before if t >= before else t  # smaller: evicted and counted again from zero
        for raw, before in self._last.items():
            if raw in now:
                continue
            # Gone from the snapshot: its process exited and its counts were summed by name, into the
            # first of these the snapshot has (see syscount.ProcessTable). That row's growth holds what
            # this key had already exported: taken off, or it would be counted twice.
            dest = next((d for d in folded_keys(raw) if d in now), None)
            if dest is not None:
                delta[dest] = max(delta[dest] - before, 0)
        self._last = now  # the keys of this snapshot: bounded by the counter's tables
        rows: list[tuple[str, int, int]] = []
        by_comm: dict[str, int] = {}
        for raw, d in delta.items():
            if not d:
                continue
            name = raw[8:].split(b"\0", 1)[0]
            if not name and raw[:4] == _FOLDED:
                comm = OTHER  # exited processes whose names were not kept
            else:
                # Escaped as stat and top show it: a name is another user's choice, and control characters
                # or bytes that are not UTF-8 must not reach whoever reads the scrape (a terminal, a browser).
                comm = printable(name) or "?"
                by_comm[comm] = by_comm.get(comm, 0) + d
            rows.append((comm, int.from_bytes(raw[4:8], "little"), d))
        self._name_comms(by_comm)
        for comm, slot, d in rows:
            key = (comm if comm in self._comms else OTHER, label(slot))
            self._totals[key] = self._totals.get(key, 0) + d
        for (comm, sc), v in sorted(self._totals.items()):
            m.add((("comm", comm), ("syscall", sc)), v)
        return m

    def _name_comms(self, calls: dict[str, int]) -> None:
        """Give names their series: the first half of the ``max_comms`` slots to names as they appear (the
        busiest first), the rest to names among the busiest half since the previous scrape.

        A name keeps its series for good, so no series disappears and each only grows; a name's series
        counts from the scrape that named it (its calls before are in "other", which keeps them), so the
        comm series of a syscall, "other" included, always add up to its per-process calls.
        """
        name_comms(self._comms, calls, self.max_comms)


def name_comms(named: set[str], weight: dict[str, int], max_comms: int) -> None:
    """Add to ``named`` (the names with series of their own) what this scrape's ``weight`` per name earns:
    the first half of the ``max_comms`` slots to names as they appear, the busiest first, the rest to names
    among the busiest half since the previous scrape. Names are only ever added."""
    half = (max_comms + 1) // 2
    busiest = sorted(weight, key=lambda c: -weight[c])
    for c in busiest:
        if len(named) >= half:
            break
        named.add(c)
    for c in busiest[:half]:
        if len(named) >= max_comms:
            break
        named.add(c)
