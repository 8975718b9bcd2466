"""The task table that does not fill with exited tasks: the kernel's ``tasks`` hash plus what percpu took
out of it.

The kernel's table never evicts: a task it has no room for is counted as lost, so that its rows plus the
lost count always equal the switches seen. On a long run (``percpu top``, the exporter) the tasks that
exited would fill it, and every later switch-in would count as lost. So :class:`TaskTable` takes the rows
of exited tasks out of the kernel's table and keeps them here, as the syscall counter's per-process table
does (``syscount.ProcessTable``):

* by thread id, while fewer than ``keep`` such rows are kept;
* then summed by name and kind: key (:data:`FOLDED_PID`, flags, comm), while fewer than ``fold`` exist;
* then by kind alone: (:data:`FOLDED_PID`, flags, empty comm), at most one row per combination of flags.

Memory is bounded by ``keep + fold + 16`` rows whatever tasks do. A row kept by thread id keeps its key; a
row summed by name leaves the snapshots, and its counts are in the first of :func:`folded_keys` present
(:meth:`Tasks.minus <percpu.disturb.Tasks.minus>` accounts for that).

A task is taken out once it was seen gone (``alive(tid)`` false) at one drain and is still gone at a later
one, at least :attr:`TaskTable.GRACE` after. A thread is released (its pid freed) before its last switch
away from the CPU, whose time is charged to its row: taken out before that, the stint would land after the
copy was made. The grace lets that last switch happen first (it comes within microseconds). A row that
comes back all the same (a task preempted on its way out) is added to the
one kept here: counts are summed by key, never lost or counted twice. Rows of tasks outside percpu's pid
namespace (no pid there, ``TASK_OUTSIDE``) cannot be checked and stay in the kernel's table: they are
one row per name already.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .._drain import DrainPace
from ._contract import TASK_KEY, TASK_OUTSIDE

__all__ = ["FOLDED_PID", "TaskRows", "TaskTable", "folded_keys", "name_bytes"]

# The pid of a row that sums exited tasks by name (its tgid field holds the rows' flags): no task has it.
FOLDED_PID = 0xFFFFFFFF
_KEY_BYTES = TASK_KEY.itemsize


class TaskRows(NamedTuple):
    """Task rows: ``keys`` (n,) of TASK_KEY, ``switches``, ``ns`` and ``untimed`` (n, possible CPUs) uint64,
    ``flags`` (n,) uint32 (TASK_* bits, of every CPU's slot)."""

    keys: np.ndarray
    switches: np.ndarray
    ns: np.ndarray
    untimed: np.ndarray
    flags: np.ndarray

    @classmethod
    def empty(cls, ncpu: int) -> TaskRows:
        z = np.zeros((0, ncpu), np.uint64)
        return cls(np.zeros(0, TASK_KEY), z, z.copy(), z.copy(), np.zeros(0, np.uint32))

    @classmethod
    def from_table(cls, keys: np.ndarray, values: np.ndarray, ncpu: int) -> TaskRows:
        """Rows from a snapshot of the kernel's table: ``values`` (n, possible CPUs) of TASK_STAT."""
        n = len(keys)
        values = np.asarray(values).reshape(n, ncpu)
        flags = np.bitwise_or.reduce(values["flags"], axis=1) if n else np.zeros(0, np.uint32)
        return cls(
            np.array(keys, dtype=TASK_KEY),
            values["switches"].astype(np.uint64),
            values["ns"].astype(np.uint64),
            values["untimed"].astype(np.uint64),
            flags.astype(np.uint32),
        )

    def concat(self, other: TaskRows) -> TaskRows:
        return TaskRows(*(np.concatenate([a, b]) for a, b in zip(self, other, strict=True)))

    def merged(self) -> TaskRows:
        """Each key once, the counts of a key present more than once added up (flags or'ed)."""
        if len(self.keys) < 2:
            return self
        uniq, inv = np.unique(self.keys.view(np.dtype((np.void, _KEY_BYTES))), return_inverse=True)
        if len(uniq) == len(self.keys):
            return self
        inv = inv.reshape(-1)
        ncpu = self.switches.shape[1]
        sums = [np.zeros((len(uniq), ncpu), np.uint64) for _ in range(3)]
        for out, a in zip(sums, (self.switches, self.ns, self.untimed), strict=True):
            np.add.at(out, inv, a)
        flags = np.zeros(len(uniq), np.uint32)
        np.bitwise_or.at(flags, inv, self.flags)
        switches, ns, untimed = sums
        return TaskRows(uniq.view(TASK_KEY).reshape(-1), switches, ns, untimed, flags)


def name_bytes(comm: Any) -> bytes:
    """A task name's bytes before its NUL, padded with NULs to the key's 16: two keys of one name compare
    equal whatever stale bytes followed the NUL (kernels before 6.x copied names with strlcpy)."""
    raw = bytes(comm).split(b"\0", 1)[0]
    return raw.ljust(16, b"\0")


def folded_keys(pid: int, flags: int, comm: Any) -> tuple[np.ndarray, np.ndarray]:
    """Where an exited task's row goes when it is not kept by thread id, in order: its name's row (of the
    same kind), then its kind's row without a name."""
    out = np.zeros(2, TASK_KEY)
    out["pid"] = FOLDED_PID
    out["tgid"] = flags
    out["comm"][0] = name_bytes(comm)
    return out[0:1], out[1:2]


class TaskTable(DrainPace):
    """The kernel's ``tasks`` table, and the rows of exited tasks taken out of it (see the module's doc).

    ``table`` has ``snapshot()`` (keys, values of TASK_STAT) and ``delete_batch(keys)``; ``alive(tid)``
    says whether a thread still exists (None: nothing is taken out); ``inserts()`` is a count that grows
    with every row the kernel adds or could not add (a small read): :meth:`due` compares its growth with
    the room left, every :attr:`period` seconds, to say when to drain (:class:`DrainPace`). ``clock`` is
    CLOCK_MONOTONIC (tests pass their own).
    """

    # How long a task must have been seen gone before its row is taken out: its last switch away from the
    # CPU, which comes after its pid is freed, is over by then (it runs within microseconds of it).
    GRACE = 0.01

    def __init__(
        self,
        table: Any,
        ncpu: int,
        entries: int,
        *,
        keep: int,
        fold: int,
        alive: Callable[[int], bool] | None,
        inserts: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(entries, clock)
        self.table = table
        self.ncpu = ncpu
        self.keep = keep
        self.fold = fold
        self.alive = alive
        self.inserts = inserts
        self._kept = TaskRows.empty(ncpu)
        self._index: dict[bytes, int] = {}
        self._dying: dict[int, float] = {}  # thread id -> when it was first seen gone
        self.kept_by_pid = 0
        self.kept_by_name = 0
        self.taken = 0  # rows taken out of the kernel's table so far

    def read(self) -> TaskRows:
        """Every row: the kernel table's and those taken out, each key once."""
        rows = self.drain()
        return rows.concat(self._kept).merged()

    def due(self, now: float) -> bool:
        """Whether to drain now: rows added (or lost) since the last read reach half the room that read
        left (any at all once it is full), or, with those, rows of tasks gone for their grace a quarter."""
        if self.inserts is None or self.alive is None or self._resting(now):
            return False
        grown = self.inserts() - self._events
        if self._filling(grown):
            return True
        ripe = sum(1 for t in self._dying.values() if now - t >= self.GRACE)
        return ripe > 0 and ripe + grown >= (self.entries - self._left) // 4

    def drain(self) -> TaskRows:
        """Take the rows of tasks gone for their grace out of the kernel's table, and note which of those
        left in it are gone now; returns what is left in it."""
        now = self.clock()
        ripe = self._ripe(now)
        events = self.inserts() if self.inserts is not None else 0
        snap = self.table.snapshot()
        rows = TaskRows.from_table(snap.keys, snap.values, self.ncpu)
        inside = (rows.flags & TASK_OUTSIDE) == 0
        taken = 0
        if ripe:
            out = inside & np.isin(rows.keys["pid"], np.fromiter(ripe, np.uint32, len(ripe)))
            if out.any():
                self._take(TaskRows(*(a[out] for a in rows)))
                self.table.delete_batch(rows.keys[out])
                taken = int(out.sum())
                rows, inside = TaskRows(*(a[~out] for a in rows)), inside[~out]
        self._note_gone(rows.keys["pid"][inside], now)
        self.taken += taken
        self._paced(now, events, len(rows.keys), taken)
        if self._dying:
            self.period = min(self.period, max(self.GRACE, self.PERIOD_MIN))
        return rows

    def _ripe(self, now: float) -> set[int]:
        """Tasks gone for their grace and still gone (a pid used again is alive: its row stays)."""
        if self.alive is None:
            return set()
        ripe = {t for t, since in self._dying.items() if now - since >= self.GRACE}
        for t in ripe:
            del self._dying[t]
        return {t for t in ripe if not self.alive(t)}

    def _note_gone(self, pids: np.ndarray, now: float) -> None:
        if self.alive is None:
            return
        for t in np.unique(pids).tolist():
            if t and t not in self._dying and not self.alive(t):
                self._dying[t] = now

    def _take(self, rows: TaskRows) -> None:
        """Keep rows taken out of the table: by thread id while there is room, else summed by name and kind,
        else by kind alone."""
        dest = rows.keys.copy()
        for j in range(len(dest)):
            raw = dest[j].tobytes()
            if raw in self._index:
                continue
            if self.kept_by_pid < self.keep:
                self.kept_by_pid += 1
                self._index[raw] = -1  # placed below
                continue
            named, bare = folded_keys(int(dest[j]["pid"]), int(rows.flags[j]), dest[j]["comm"])
            key = named if named.tobytes() in self._index or self.kept_by_name < self.fold else bare
            if key is named and named.tobytes() not in self._index:
                self.kept_by_name += 1
                self._index[named.tobytes()] = -1
            dest[j] = key[0]
        self._add(TaskRows(dest, rows.switches, rows.ns, rows.untimed, rows.flags))

    def _add(self, rows: TaskRows) -> None:
        rows = rows.merged()
        fresh: list[int] = []
        for j, k in enumerate(rows.keys):
            raw = k.tobytes()
            i = self._index.get(raw, -1)
            if i >= 0:
                self._kept.switches[i] += rows.switches[j]
                self._kept.ns[i] += rows.ns[j]
                self._kept.untimed[i] += rows.untimed[j]
                self._kept.flags[i] |= rows.flags[j]
            else:
                self._index[raw] = len(self._kept.keys) + len(fresh)
                fresh.append(j)
        if fresh:
            pick = np.array(fresh, np.int64)
            self._kept = self._kept.concat(TaskRows(*(a[pick] for a in rows)))
