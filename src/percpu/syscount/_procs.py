"""The syscall counter's per-process counts: a kernel table that does not evict, kept from filling.

:class:`ProcessTable` reads the kernel's ``proc_counts`` hash and takes the rows of exited processes out of
it, keeping them by pid, then summed by name (:data:`~percpu.syscount.FOLDED_TGID`), then by syscall; a
:class:`~percpu._loaded.Drainer` thread does that whenever the table is filling (its pace:
:class:`~percpu._drain.DrainPace`). :func:`flush_caches` and :func:`flush_pending` move each CPU's
per-process cache (``proc_cache``) into the table first.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence

import numpy as np

from .. import _machine, features
from .._contract import PROC_KEY, PROC_LINES
from .._drain import DrainPace
from ..cpulist import CpuList
from ..errors import PercpuError
from ..maps import Map
from ._data import FOLDED_TGID, Keyed
from ._filters import PID_MAX_LIMIT

__all__ = ["PROC_CACHE", "ProcessTable", "flush_caches", "flush_pending", "pending_cpus"]

# struct proc_cache of bpf/syscount.bpf.c: a CPU's per-process cache lines (read only for an offline CPU,
# which no flush can reach).
_PROC_LINE = np.dtype(
    {"names": ["key", "n"], "formats": [PROC_KEY, np.uint64], "offsets": [0, 24], "itemsize": 32}
)
PROC_CACHE = np.dtype(
    {
        "names": ["busy", "line"],
        "formats": [np.uint32, (_PROC_LINE, (PROC_LINES,))],
        "offsets": [0, 8],
        "itemsize": 8 + 32 * PROC_LINES,
    }
)


_KEY_BYTES = PROC_KEY.itemsize


def _raw_keys(keys: np.ndarray) -> list[bytes]:
    """Each key's bytes, for dictionaries (one copy of the array, then slices)."""
    raw = np.ascontiguousarray(keys).tobytes()
    return [raw[i : i + _KEY_BYTES] for i in range(0, len(raw), _KEY_BYTES)]


def _merge_keyed(parts: Sequence[Keyed], ncpu: int) -> Keyed:
    """Rows of ``parts`` in one table, the counts of a key present more than once added up."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return np.zeros(0, PROC_KEY), np.zeros((0, ncpu), np.uint64)
    keys = np.concatenate([p[0] for p in parts]).astype(PROC_KEY, copy=False)
    counts = np.concatenate([np.asarray(p[1], np.uint64).reshape(len(p[0]), ncpu) for p in parts])
    uniq, inv = np.unique(keys.view(np.dtype((np.void, _KEY_BYTES))), return_inverse=True)
    if len(uniq) == len(keys):
        return keys, counts
    out = np.zeros((len(uniq), ncpu), np.uint64)
    np.add.at(out, inv.reshape(-1), counts)
    return uniq.view(PROC_KEY), out


class ProcessTable(DrainPace):
    """Per-process counts that add up: the kernel's table (live processes) plus what percpu took out of it.

    The kernel's ``proc_counts`` hash does not evict: a key it has no room for is counted as lost
    (``Lost.processes``), so the rows plus that always equal the calls counted. So that the table does
    not fill with processes that are gone, :meth:`read` takes out the rows of every process that had
    exited before it began (``alive(tgid)`` false) and keeps them here:

    * by pid, while fewer than ``keep`` such rows are kept (a process's rows are kept or summed together);
    * then summed by name: key (``FOLDED_TGID``, syscall, comm), while fewer than ``fold`` of those exist;
    * then by syscall alone: (``FOLDED_TGID``, syscall, empty comm), at most one row per syscall.

    Memory is bounded by ``keep + fold + NR_SLOTS`` rows whatever processes do. A row kept by pid keeps
    its key; a row summed by name leaves the snapshots, and its counts are in :func:`folded_keys`' first
    key present (deltas account for that). Liveness is checked *before* the caches are flushed and the
    table read: a process gone by then has every call in the table, and no cached call of it can reach
    the table later, so nothing is added to a row between its read and its removal. (One exception no
    user-space reader can close: a new process that gets the same pid and name in that window.)

    ``flush()`` moves the kernel's per-CPU caches into the table and returns the rows of caches no flush
    could reach (an offline CPU's), which are added to what is read and are not taken out meanwhile;
    ``alive`` None takes nothing out (pids that are not this namespace's). ``events()`` is a count that
    grows with every key the kernel inserts or loses (a cheap read): :meth:`due` compares it with the
    room left to say when the table is filling, every :attr:`period` seconds (:class:`DrainPace`).
    """

    def __init__(
        self,
        table: Map,
        ncpu: int,
        *,
        keep: int,
        fold: int,
        alive: Callable[[int], bool] | None,
        flush: Callable[[], Keyed | None] | None = None,
        events: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(table.info.max_entries)
        self.table = table
        self.ncpu = ncpu
        self.keep = keep
        self.fold = fold
        self.alive = alive
        self.flush = flush
        self.events = events
        self._seen: set[int] = set()  # tgids in the table at the last read
        self._keys = np.zeros(0, PROC_KEY)
        self._counts = np.zeros((0, ncpu), np.uint64)
        self._n = 0
        self._index: dict[bytes, int] = {}
        self.kept_by_pid = 0
        self.kept_by_name = 0
        self.taken = 0  # rows taken out of the kernel's table so far

    def read(self) -> Keyed:
        """Every row: the table's, the unreachable caches', and those taken out, each key once."""
        parts = self.drain()
        parts.append((self._keys[: self._n], self._counts[: self._n]))
        return _merge_keyed(parts, self.ncpu)

    def due(self, now: float) -> bool:
        """Whether the table is filling: keys inserted or lost since the last read reach half the room
        that read left (any at all once it is full), and the last drain that freed little is not recent."""
        if self.events is None or self.alive is None or self._resting(now):
            return False
        return self._filling(self.events() - self._events)

    def drain(self) -> list[Keyed]:
        """Take the rows of processes that had exited out of the table; returns what is left in it (and
        the unreachable caches' rows)."""
        gone = self._gone()
        events = self.events() if self.events is not None else 0
        pending = self.flush() if self.flush is not None else None
        snap = self.table.snapshot()
        keys, counts = snap.keys.astype(PROC_KEY, copy=False), np.asarray(snap.values, np.uint64)
        counts = counts.reshape(len(keys), self.ncpu)
        taken = 0
        if gone:
            out = np.isin(keys["tgid"], np.fromiter(gone, np.uint32, len(gone)))
            if pending is not None and len(pending[0]):
                void = np.dtype((np.void, _KEY_BYTES))
                out &= ~np.isin(keys.view(void), pending[0].astype(PROC_KEY, copy=False).view(void))
            if out.any():
                self._take(keys[out], counts[out])
                self.table.delete_batch(keys[out])
                taken = int(out.sum())
                keys, counts = keys[~out], counts[~out]
        self.taken += taken
        self._paced(self.clock(), events, len(keys), taken)
        self._seen = set(np.unique(keys["tgid"]).tolist())
        parts: list[Keyed] = [(keys, counts)]
        if pending is not None and len(pending[0]):
            self._seen |= set(np.unique(pending[0]["tgid"]).tolist())
            parts.append(pending)
        return parts

    def _gone(self) -> set[int]:
        if self.alive is None:
            return set()
        return {t for t in self._seen if 0 < t < PID_MAX_LIMIT and not self.alive(t)}

    def _take(self, keys: np.ndarray, counts: np.ndarray) -> None:
        """Keep rows taken out of the table, by pid while there is room (whole processes, in pid order),
        else summed by name, else by syscall alone."""
        void = np.dtype((np.void, _KEY_BYTES))
        known = np.fromiter((k in self._index for k in _raw_keys(keys)), bool, len(keys))
        dest = keys.copy()
        tgids, inv = np.unique(keys["tgid"], return_inverse=True)
        inv = inv.reshape(-1)
        new = np.bincount(inv, weights=~known, minlength=len(tgids)).astype(np.int64)
        whole = np.cumsum(new) <= self.keep - self.kept_by_pid
        self.kept_by_pid += int(new[whole].sum())
        fold = ~(whole[inv] | known)
        if fold.any():
            dest["tgid"][fold] = FOLDED_TGID
            at = np.nonzero(fold)[0]
            named = _raw_keys(dest[at])
            room = self.fold - self.kept_by_name
            taken: set[bytes] = set()
            for j, k in zip(at.tolist(), named, strict=True):
                if k in self._index or k in taken:
                    continue
                if len(taken) < room:
                    taken.add(k)
                else:
                    dest["comm"][j] = b""
            self.kept_by_name += len(taken)
        uniq, where = np.unique(dest.view(void), return_inverse=True)
        sums = np.zeros((len(uniq), self.ncpu), np.uint64)
        np.add.at(sums, where.reshape(-1), counts)
        uniq_raw = _raw_keys(uniq)
        rows = [self._index.get(k, -1) for k in uniq_raw]
        old = np.array(rows, np.int64) >= 0
        if old.any():
            self._counts[np.array(rows, np.int64)[old]] += sums[old]
        fresh = ~old
        n = int(fresh.sum())
        if not n:
            return
        if self._n + n > len(self._keys):
            size = max(16, 2 * (self._n + n))
            self._keys = np.concatenate([self._keys[: self._n], np.zeros(size - self._n, PROC_KEY)])
            grow = np.zeros((size - self._n, self.ncpu), np.uint64)
            self._counts = np.concatenate([self._counts[: self._n], grow])
        self._keys[self._n : self._n + n] = uniq[fresh].view(PROC_KEY)
        self._counts[self._n : self._n + n] = sums[fresh]
        for j in np.nonzero(fresh)[0].tolist():
            self._index[uniq_raw[j]] = self._n
            self._n += 1


def flush_caches(fd: int, cpus: CpuList, only: Sequence[int] | None = None) -> list[int]:
    """Move every CPU's cached per-process counts into proc_counts by running the flush program ``fd`` on
    each CPU (those at the indexes ``only``, when given); returns the indexes of the CPUs it could not
    reach (offline)."""
    lib = _machine.current().libbpf()
    offline: list[int] = []
    for i in range(len(cpus)) if only is None else only:
        cpu = cpus[i]
        # 1: it interrupted a counting program on that CPU, which is done in well under a microsecond
        for _ in range(100_000):
            try:
                if lib.prog_run_on_cpu(fd, cpu) == 0:
                    break
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    offline.append(i)
                    break
                raise features.TEST_RUN_ON_CPU.missing(
                    f"cannot run the per-process flush on CPU {cpu}: {exc.strerror}", errno=exc.errno
                ) from exc
        else:
            raise PercpuError(f"the per-process flush found CPU {cpu} busy 100,000 times in a row")
    return offline


def pending_cpus(cache: Map) -> list[int]:
    """The indexes of the CPUs whose per-process cache holds calls (a line with a count), read as they are.

    Only these are flushed: running the flush on a CPU interrupts it (a function-call IPI, or its idle loop
    woken), which on an idle isolated CPU would be a disturbance of percpu's own at every read. A CPU whose
    cache was empty when read
    keeps the calls it takes after that in its cache, for the next read: late, never lost or counted twice
    (only that CPU's programs and its flush touch its lines)."""
    lines: np.ndarray = cache.snapshot().values[0]["line"]["n"]
    return [int(i) for i in np.nonzero(lines.any(axis=-1))[0]]


def flush_pending(fd: int, cache: Map, cpus: CpuList) -> Keyed | None:
    """Flush the per-process cache of every CPU that holds calls into the table (:func:`pending_cpus`,
    :func:`flush_caches`); the rows of the caches of CPUs no flush can reach (offline: they keep their calls
    until they come back), or None."""
    offline = flush_caches(fd, cpus, pending_cpus(cache))
    if not offline:
        return None
    lines = cache.snapshot().values[0]
    keys: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    for i in offline:
        for line in lines[i]["line"]:
            if line["n"]:
                row = np.zeros(len(cpus), dtype=np.uint64)
                row[i] = line["n"]
                keys.append(line["key"])
                counts.append(row)
    if not keys:
        return None
    return _merge_keyed([(np.array(keys, dtype=PROC_KEY), np.array(counts, dtype=np.uint64))], len(cpus))
