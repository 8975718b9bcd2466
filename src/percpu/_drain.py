"""When to drain a kernel table that does not evict: the pace the syscall counter's per-process table and
the disturbance counter's task table keep.

Neither table evicts: a key the kernel has no room for is counted as lost, so that the rows plus that
count always equal what was counted. A thread takes the rows of exited processes (or tasks) out of it
whenever it is filling: :class:`DrainPace` says when that is, how often to ask, and when to back off. It
imports nothing of percpu's, so a table at any layer may keep it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["DrainPace"]


class DrainPace:
    """The pace of a table's drains, for a table of ``entries`` keys (a base of the tables that drain).

    A count that grows with every key the kernel inserts or loses (a cheap read) says when the table is
    filling: :meth:`_filling`, its growth since the last read against half the room that read left. How
    often to ask, :attr:`period`: about a quarter of the room left fills in that time at the rate seen, so
    the table holds the two drains' worth a row waits (seen, then taken out). A drain that freed little
    (the table full of what is still alive) backs off, since each one reads the whole table. ``clock`` is
    CLOCK_MONOTONIC (tests pass their own).
    """

    PERIOD_MIN = 0.005
    PERIOD_MAX = 0.05

    def __init__(self, entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.entries = entries
        self.clock = clock
        self.period = self.PERIOD_MAX
        self._left = 0  # rows left in the table by the last read
        self._events = 0  # the growing count at the last read
        self._read_at = 0.0  # the clock at the last read
        self._not_before = 0.0  # the next drain, after one that freed little
        self._backoff = 0.0

    def _resting(self, now: float) -> bool:
        """Whether the last drain freed little and was too recent to try again."""
        return now < self._not_before

    def _filling(self, grown: int) -> bool:
        """Whether ``grown`` keys inserted or lost since the last read reach half the room that read left
        (any at all once it is full)."""
        return grown > 0 and grown >= (self.entries - self._left) // 2

    def _paced(self, now: float, events: int, left: int, taken: int) -> None:
        """After a read at ``now`` that saw the count at ``events``, left ``left`` rows in the table and took
        ``taken`` out: the next period, and the back-off while drains free little."""
        rate = max(events - self._events, 0) / max(now - self._read_at, 1e-3) if self._read_at else 0.0
        self._left = left
        room = max(self.entries - left, 1)
        self.period = min(max(room / 4 / rate, self.PERIOD_MIN), self.PERIOD_MAX) if rate else self.PERIOD_MAX
        self._read_at = now
        self._events = events
        if taken * 8 >= self.entries or left * 2 < self.entries:
            self._backoff = 0.0
        else:
            self._backoff = min(max(self._backoff * 2, 0.05), 2.0)
        self._not_before = self.clock() + self._backoff
