"""The system-call collector: BPF programs counting syscalls per CPU, read as numpy snapshots.

:class:`SyscallCounter` loads ``syscount.bpf.o`` (shipped compiled: no compiler at run time), configures it
through ``.rodata`` before load (so the verifier removes every disabled feature from the hot path),
attaches it at the best hook the kernel has (``tp_btf`` -> ``raw_tp`` -> classic tracepoint) and reads its
per-CPU maps. Counters are never reset: a :class:`SyscallSnapshot` holds absolute counts, and
:meth:`SyscallSnapshot.delta` turns two of them into counts over an interval.

Counts are indexed by *slot*: the syscall number for native calls, ``COMPAT_BASE + nr`` for 32-bit
compat calls on x86_64 (which the tracepoint reports with their own numbering). A call is a compat one when
the kernel runs it as one (the task's TS_COMPAT status, which ``in_ia32_syscall()`` reads): a 64-bit task's
``int $0x80`` calls included. :attr:`SyscallCounter.compat_check` says how a counter tells them apart.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from . import _libc, _machine
from . import syscalls as _names
from ._contract import (
    COMPAT_BASE,
    ERR_KEY,
    LAT_BUCKETS,
    LAT_KEY,
    LOST_PROCESSES,
    NR_SLOTS,
    PROC_KEY,
    ROW_BUCKETS,
    ROW_FIRST_BUCKET,
)
from ._contract import LAT_INDEX as _LAT_INDEX
from ._contract import LAT_ROW as _LAT_ROW
from ._contract import PROC_LINES as _PROC_LINES
from ._contract import PercpuConfig as _Config
from .cpus import CpuList, machine, possible_cpus
from .errors import AttachError, InvalidFilter, NotSupported, PercpuError, ProgramLoadError
from .maps import Map
from .objects import BpfObject, bundled

if TYPE_CHECKING:
    from .topo import CpuGroups

__all__ = [
    "ATTACH_MODES",
    "COMPAT_BASE",
    "COMPAT_CHECKS",
    "FOLDED_TGID",
    "Filters",
    "Lost",
    "ProcessTable",
    "SyscallCounter",
    "SyscallDelta",
    "SyscallSnapshot",
    "ensure_tracefs",
    "slot_name",
]

ATTACH_MODES = ("tp_btf", "raw_tp", "tracepoint")
_PROGRAMS = {
    "tp_btf": ("enter_btf", "exit_btf"),
    "raw_tp": ("enter_raw", "exit_raw"),
    "tracepoint": ("enter_tp", "exit_tp"),
}
# What each attach mode needs, for error messages (the syscount.bpf.o flavours also need kernel BTF for
# their CO-RE reads; without BTF, syscount_nobtf.bpf.o attaches at raw_tp only).
_MIN_KERNEL = {"tp_btf": "Linux 5.5 with BTF", "raw_tp": "Linux 4.17", "tracepoint": "Linux 4.7 and tracefs"}


def merge_latency(
    index: np.ndarray, rows: np.ndarray, overflow: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Latency counts keyed by (slot, bucket), counts shaped (n, possible CPUs), from the kernel's layout.

    ``index`` is (possible CPUs, NR_SLOTS) uint8: row + 1 of each slot on that CPU (each CPU numbers its
    own rows), 0 for none; ``rows`` is (LAT_ROWS, possible CPUs, ROW_BUCKETS), column j being bucket
    ROW_FIRST_BUCKET + j; ``overflow`` is the latency hash, which holds the buckets outside a row and the
    slots a CPU found no free row for. Keys with no count on any CPU are left out.
    """
    ncpu = index.shape[0]
    cpu, slot = np.nonzero(index)
    row = index[cpu, slot].astype(np.int64) - 1
    buckets = np.arange(ROW_FIRST_BUCKET, ROW_FIRST_BUCKET + ROW_BUCKETS)
    ids = [(slot.astype(np.int64)[:, None] * LAT_BUCKETS + buckets).ravel()]
    cpus = [np.repeat(cpu, ROW_BUCKETS)]
    vals = [rows[row, cpu, :].ravel()]
    hkeys, hcounts = overflow
    if len(hkeys):
        hid = hkeys["slot"].astype(np.int64) * LAT_BUCKETS + hkeys["bucket"].astype(np.int64)
        ids.append(np.repeat(hid, ncpu))
        cpus.append(np.tile(np.arange(ncpu), len(hkeys)))
        vals.append(np.asarray(hcounts, dtype=np.uint64).reshape(-1))
    all_ids, all_cpus, all_vals = np.concatenate(ids), np.concatenate(cpus), np.concatenate(vals)
    nz = all_vals != 0
    uniq, inv = np.unique(all_ids[nz], return_inverse=True)
    counts = np.zeros((len(uniq), ncpu), dtype=np.uint64)
    np.add.at(counts, (inv, all_cpus[nz]), all_vals[nz])
    keys = np.zeros(len(uniq), dtype=LAT_KEY)
    keys["slot"] = uniq // LAT_BUCKETS
    keys["bucket"] = uniq % LAT_BUCKETS
    return keys, counts


def slot_name(slot: int, arch: str | None = None) -> str:
    """Name of a counter slot: ``read``, ``compat:read`` for 32-bit calls, ``syscall_N`` when unknown."""
    if slot >= COMPAT_BASE:
        return "compat:" + _names.syscall_name(slot - COMPAT_BASE, arch, compat=True)
    return _names.syscall_name(slot, arch)


def errno_name(err: int) -> str:
    """``ENOENT`` for 2; ``E<n>`` for numbers Python does not name (kernel-internal ones like 512)."""
    return errno.errorcode.get(err, f"E{err}")


def cgroup2_root() -> str | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup``, or ``.../unified`` on hybrid
    systems), or None."""
    return _machine.current().mount_point("cgroup2")


def ensure_tracefs() -> str:
    """Where tracefs is mounted for libbpf, mounting it at /sys/kernel/tracing if it is not (needs root).

    Only /sys/kernel/tracing and /sys/kernel/debug/tracing count (see ``Machine.tracefs_dir``): a tracefs
    mounted only elsewhere, as a chroot's /sys is from the host, would leave libbpf failing with ENOENT.
    """
    point = _machine.current().tracefs_dir()
    if point is not None:
        return point
    target = _machine.TRACEFS_DIRS[0]
    try:
        _libc.mount("nodev", target, "tracefs")
    except OSError as exc:
        raise NotSupported(
            f"tracefs is not mounted and mounting it at {target} failed: {exc.strerror}; "
            f"run `mount -t tracefs nodev {target}` as root",
            feature="tracefs",
            errno=exc.errno,
        ) from exc
    return target


def _cgroup_id_exists(root: str, cgroup_id: int) -> bool:
    """Whether a cgroup v2 directory under ``root`` has inode number ``cgroup_id`` (its cgroup id).
    Cgroups come and go while the tree is walked: one that vanishes is skipped, not an error."""
    with contextlib.suppress(OSError):
        if os.stat(root).st_ino == cgroup_id:
            return True
    todo = [root]
    while todo:
        try:
            with os.scandir(todo.pop()) as it:
                for entry in it:
                    try:
                        if not entry.is_dir(follow_symlinks=False):
                            continue
                        if entry.inode() == cgroup_id:
                            return True
                    except OSError:
                        continue
                    todo.append(entry.path)
        except OSError:
            continue
    return False


def pid_namespace() -> tuple[int, int] | None:
    """(device, inode) of this process's pid namespace when it is not the initial one, else None.

    In a container, pids given on the command line are the container's, while the kernel's tracepoints
    see the initial namespace's: the filter then compares in this namespace instead."""
    return _machine.current().pid_namespace()


class Lost(NamedTuple):
    """Calls an opt-in table could not take, because it was full (or the kernel had no memory for the
    entry): per-process (``proc_counts``), per-errno (``errors``), and latency (the ``latency`` hash that
    holds what the histogram rows do not). Zero when the table is not in use."""

    processes: int = 0
    errors: int = 0
    latency: int = 0
    # Runs of percpu's programs the kernel skipped because the same program was already running on that
    # CPU: a run preempted in the middle (kernels whose syscall tracepoints run BPF preemptibly, e.g. 7.x
    # with lazy or full preemption) blocks the program on that CPU until it resumes. A skipped enter run
    # is a call not counted at all; the kernel counts them per program (recursion_misses, Linux 5.12).
    skipped: int = 0

    def __sub__(self, other: tuple[int, ...]) -> Lost:
        return Lost(*(max(a - b, 0) for a, b in zip(self, other, strict=True)))


_NO_LOSS = Lost()


# The largest opt-in table taken (keys): 16M keys of 8 bytes per possible CPU is already gigabytes.
MAX_TABLE_ENTRIES = 1 << 24

# The kernel's hard limit on pid numbers (PID_MAX_LIMIT on 64-bit; pid_max can only be set lower).
PID_MAX_LIMIT = 1 << 22
# task->comm is 16 bytes with the terminating NUL.
COMM_LEN = 15


def _check_id(value: object, name: str, limit: int, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidFilter(f"{name} filter {value!r}: {what} must be a whole number", field=name)
    if not 1 <= value <= limit:
        raise InvalidFilter(f"{name} filter {value}: {what} must be in 1..{limit}", field=name)


@dataclass(frozen=True)
class Filters:
    """In-kernel filters, fixed when the programs load. Unset fields filter nothing.

    ``comm`` is compared by the kernel byte for byte with the task's name (at most 15 bytes): a ``str`` is
    encoded as the file system encodes names (UTF-8, with undecodable bytes from the command line kept as
    they were), ``bytes`` are taken as they are. ``tgid`` and ``tid`` are pids as this process sees them:
    in a pid namespace other than the initial one (a container) the kernel compares them in that namespace,
    and tasks outside it never match. Values the kernel could not hold (a pid above the kernel's
    limit, a cgroup id beyond 64 bits, a longer name) raise :class:`~percpu.errors.InvalidFilter` here,
    instead of being truncated into a filter on some other task.
    """

    tgid: int | None = None
    tid: int | None = None
    comm: str | bytes | None = None
    cgroup: int | str | None = None  # cgroup v2 id, or a path (absolute, or under the cgroup2 mount)
    syscalls: Sequence[int | str] | None = None  # names ("read", "compat:read") or numbers
    failed_only: bool = False

    def __post_init__(self) -> None:
        _check_id(self.tgid, "tgid", PID_MAX_LIMIT, "a process id")
        _check_id(self.tid, "tid", PID_MAX_LIMIT, "a thread id")
        if self.cgroup is not None and not isinstance(self.cgroup, str):
            _check_id(self.cgroup, "cgroup", (1 << 64) - 1, "a cgroup v2 id")
        self.comm_bytes()

    def comm_bytes(self) -> bytes | None:
        """The name the kernel compares, as bytes; None when there is no name filter."""
        if self.comm is None:
            return None
        if isinstance(self.comm, bytes):
            raw = self.comm
        elif isinstance(self.comm, str):
            raw = os.fsencode(self.comm)  # surrogate escapes back to the bytes the command line held
        else:
            raise InvalidFilter(f"comm filter {self.comm!r}: give a str or bytes", field="comm")
        if not raw:
            raise InvalidFilter("comm filter is empty: give a command name, or no comm filter", field="comm")
        if b"\0" in raw:
            raise InvalidFilter(f"comm filter {raw!r} has a NUL byte, which no task name holds", field="comm")
        if len(raw) > COMM_LEN:
            raise InvalidFilter(
                f"comm filter {raw!r} is {len(raw)} bytes; the kernel keeps {COMM_LEN} bytes of a task's "
                f"name: give the first {COMM_LEN} (e.g. {raw[:COMM_LEN]!r})",
                field="comm",
            )
        return raw

    def cgroup_id(self) -> int | None:
        """The cgroup v2 id to filter on; refuses paths outside the cgroup2 mount and ids none has."""
        if self.cgroup is None:
            return None
        root = cgroup2_root()
        if root is None:
            raise PercpuError("the cgroup filter needs cgroup v2, and no cgroup2 file system is mounted")
        root = os.path.realpath(root)
        if isinstance(self.cgroup, int):
            # On cgroup v2 the cgroup id is the inode number of its directory; a filter on an id no
            # cgroup has would load fine and count nothing.
            if not _cgroup_id_exists(root, self.cgroup):
                raise PercpuError(f"no cgroup v2 has id {self.cgroup} (under {root})", errno=errno.ENOENT)
            return self.cgroup
        given = os.path.realpath(self.cgroup) if os.path.isabs(self.cgroup) else ""
        under = os.path.commonpath([given, root]) == root if given else False
        path = given if under else os.path.realpath(os.path.join(root, self.cgroup.lstrip("/")))
        if os.path.commonpath([path, root]) != root or not os.path.isfile(os.path.join(path, "cgroup.procs")):
            what = f"cgroup {self.cgroup!r}: {path} is not a cgroup v2 directory under {root}"
            raise PercpuError(what, errno=errno.EINVAL)
        try:
            return os.stat(path).st_ino
        except OSError as exc:  # removed since the check above
            raise PercpuError(f"cgroup {self.cgroup!r}: {path}: {exc.strerror}", errno=exc.errno) from exc

    def slots(self, arch: str | None = None) -> list[int]:
        out: list[int] = []
        for s in self.syscalls or ():
            if isinstance(s, int):
                nr, base = s, 0
            elif s.startswith("compat:"):
                nr, base = _names.syscall_number(s[7:], arch, compat=True), COMPAT_BASE
            elif s.isdigit():
                nr, base = int(s), 0
            else:
                nr, base = _names.syscall_number(s, arch), 0
            if not 0 <= nr < COMPAT_BASE:
                raise PercpuError(f"syscall number {nr} is out of range 0..{COMPAT_BASE - 1}")
            out.append(base + nr)
        return out


Keyed = tuple[np.ndarray, np.ndarray]

# The tgid of the rows that sum exited processes by name (see ProcessTable): no pid is this large (the
# kernel's limit is PID_MAX_LIMIT, 2^22), and 0 already means a task outside percpu's pid namespace.
FOLDED_TGID = 0xFFFF_FFFF
_FOLDED = FOLDED_TGID.to_bytes(4, "little")
_KEY_BYTES = PROC_KEY.itemsize
_NO_COMM = bytes(_KEY_BYTES - 8)


def folded_keys(key: bytes) -> tuple[bytes, bytes]:
    """Where the calls of a per-process key go when its process is summed by name: the key of its name and
    syscall, then (once that many names are kept) the key of its syscall alone, comm empty.

    A key that leaves a snapshot went to the first of these present in the next one: that is how
    :meth:`SyscallSnapshot.delta` and the exporter subtract what it had already shown."""
    slot = key[4:8]
    return _FOLDED + slot + key[8:_KEY_BYTES], _FOLDED + slot + _NO_COMM


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


class ProcessTable:
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
    room left to say when the table is filling, every :attr:`period` seconds.
    """

    PERIOD_MIN = 0.005
    PERIOD_MAX = 0.05

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
        self.table = table
        self.ncpu = ncpu
        self.keep = keep
        self.fold = fold
        self.alive = alive
        self.flush = flush
        self.events = events
        self.entries = table.info.max_entries
        self._seen: set[int] = set()  # tgids in the table at the last read
        self._left = 0  # rows left in the table by the last read
        self._events = 0  # events() at the last read
        self._read_at = 0.0  # time.monotonic() of the last read
        self._not_before = 0.0  # the next drain, after one that freed little
        self._backoff = 0.0
        # How often to ask due(): about a quarter of the room left fills in that time at the rate seen,
        # so the table holds the two drains' worth a process's rows wait (seen, then taken out).
        self.period = self.PERIOD_MAX
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
        if self.events is None or self.alive is None or now < self._not_before:
            return False
        grown = self.events() - self._events
        return grown > 0 and grown >= (self.entries - self._left) // 2

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
        self._left = len(keys)
        now = time.monotonic()
        rate = max(events - self._events, 0) / max(now - self._read_at, 1e-3) if self._read_at else 0.0
        room = max(self.entries - self._left, 1)
        self.period = min(max(room / 4 / rate, self.PERIOD_MIN), self.PERIOD_MAX) if rate else self.PERIOD_MAX
        self._read_at = now
        self._events = events
        self._seen = set(np.unique(keys["tgid"]).tolist())
        parts: list[Keyed] = [(keys, counts)]
        if pending is not None and len(pending[0]):
            self._seen |= set(np.unique(pending[0]["tgid"]).tolist())
            parts.append(pending)
        self._pace(taken)
        return parts

    def _pace(self, taken: int) -> None:
        """Back off while drains free little (the table full of live processes): each one reads it all."""
        if taken * 8 >= self.entries or self._left * 2 < self.entries:
            self._backoff = 0.0
        else:
            self._backoff = min(max(self._backoff * 2, 0.05), 2.0)
        self._not_before = time.monotonic() + self._backoff

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


@dataclass(frozen=True)
class SyscallSnapshot:
    """Absolute counts at one moment (``time`` from CLOCK_MONOTONIC, seconds).

    ``counts`` is (possible CPUs, slots) uint64; row i is CPU ``cpus[i]``. The optional dimensions are
    ``(keys, counts)`` pairs, counts shaped (n, possible CPUs): ``procs`` keyed by (tgid, slot, comm),
    ``errors`` by (slot, errno), ``latency`` by (slot, log2 ns bucket). ``online`` is the online-CPU list
    when the snapshot was taken (None when unknown).
    """

    time: float
    cpus: CpuList
    counts: np.ndarray
    procs: tuple[np.ndarray, np.ndarray] | None = None
    errors: tuple[np.ndarray, np.ndarray] | None = None
    latency: tuple[np.ndarray, np.ndarray] | None = None
    dropped: int = 0
    arch: str | None = None
    online: CpuList | None = None
    lost: Lost = _NO_LOSS

    def delta(self, earlier: SyscallSnapshot) -> SyscallDelta:
        """Counts between ``earlier`` and this snapshot."""
        if earlier.cpus != self.cpus:
            raise PercpuError("snapshots of different CPU layouts cannot be subtracted")
        counts = self.counts - earlier.counts
        return SyscallDelta(
            seconds=max(self.time - earlier.time, 1e-9),
            cpus=self.cpus,
            counts=counts,
            procs=_keyed_delta(self.procs, earlier.procs, folded_keys),
            errors=_keyed_delta(self.errors, earlier.errors),
            latency=_keyed_delta(self.latency, earlier.latency),
            dropped=self.dropped - earlier.dropped,
            arch=self.arch,
            online=self.online,
            lost=self.lost - earlier.lost,
        )

    def since_start(self) -> SyscallDelta:
        """All counts since the programs were attached, as a delta from zero."""
        zero = SyscallSnapshot(0.0, self.cpus, np.zeros_like(self.counts))
        d = self.delta(zero)
        return SyscallDelta(
            seconds=d.seconds,
            cpus=d.cpus,
            counts=d.counts,
            procs=self.procs,
            errors=self.errors,
            latency=self.latency,
            dropped=self.dropped,
            arch=self.arch,
            online=self.online,
            lost=self.lost,
        )


def _keyed_delta(
    now: tuple[np.ndarray, np.ndarray] | None,
    before: tuple[np.ndarray, np.ndarray] | None,
    moved: Callable[[bytes], tuple[bytes, ...]] | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Subtract per-key counts, never below zero.

    A key of ``before`` missing from ``now`` had its counts moved to the first of ``moved(key)`` present
    in ``now`` (per-process rows summed by name, see :class:`ProcessTable`): they are subtracted there,
    so the counts shown before are not shown again. Without ``moved``, or with none of them present, a
    missing key's counts are gone (an LRU evicted it) and a key found again counts from zero.
    """
    if now is None:
        return None
    keys, counts = now
    if before is None or len(before[0]) == 0 or len(keys) == 0:
        return keys, counts.copy()
    bkeys, bcounts = before
    index = {k.tobytes(): i for i, k in enumerate(keys)}
    out = counts.astype(np.int64)
    for j, k in enumerate(bkeys):
        raw = k.tobytes()
        i = index.get(raw)
        if i is None and moved is not None:
            i = next((index[m] for m in moved(raw) if m in index), None)
        if i is not None:
            out[i] -= bcounts[j].astype(np.int64)
    np.maximum(out, 0, out=out)
    keep = out.sum(axis=1) > 0
    return keys[keep], out[keep].astype(np.uint64)


@dataclass(frozen=True)
class SyscallDelta:
    """Counts over an interval of ``seconds``; same shapes as :class:`SyscallSnapshot`.

    A view of it (:func:`percpu.views.view`) may keep only some CPUs (``cpus`` lists them, ``selected``
    says how they were chosen) or sum them into groups (``groups``: then row i of ``counts``, and column
    i of the keyed counts, is group ``groups.labels[i]``, not a CPU).
    """

    seconds: float
    cpus: CpuList
    counts: np.ndarray
    procs: tuple[np.ndarray, np.ndarray] | None = None
    errors: tuple[np.ndarray, np.ndarray] | None = None
    latency: tuple[np.ndarray, np.ndarray] | None = None
    dropped: int = 0
    arch: str | None = None
    online: CpuList | None = None
    lost: Lost = _NO_LOSS
    groups: CpuGroups | None = None
    selected: str | None = None
    _names: dict[int, str] = field(default_factory=dict, repr=False, compare=False)

    def rates(self) -> np.ndarray:
        """Calls per second, (CPUs, slots)."""
        out: np.ndarray = self.counts / self.seconds
        return out

    def per_syscall(self) -> np.ndarray:
        """Total calls per slot over all CPUs."""
        out: np.ndarray = self.counts.sum(axis=0, dtype=np.uint64)
        return out

    def per_cpu(self) -> np.ndarray:
        """Total calls per CPU."""
        out: np.ndarray = self.counts.sum(axis=1, dtype=np.uint64)
        return out

    def active_slots(self) -> np.ndarray:
        """Slots with at least one call, most calls first."""
        tot = self.per_syscall()
        idx = np.nonzero(tot)[0]
        out: np.ndarray = idx[np.argsort(-tot[idx].astype(np.int64), kind="stable")]
        return out

    def name(self, slot: int) -> str:
        n = self._names.get(slot)
        if n is None:
            n = self._names[slot] = slot_name(int(slot), self.arch)
        return n

    def imbalance(self) -> float:
        """Busiest CPU's calls over the mean per CPU (1.0 = even; 0 when there were no calls).

        The mean is over the CPUs that were online or made calls: possible CPUs that never came online
        (often most of them on a VM) would otherwise make an even load look badly imbalanced.
        """
        per = self.per_cpu().astype(np.float64)
        if self.online is not None and per.size:
            if self.groups is not None:
                live = self.groups.live(self.online) | (per > 0)
            else:
                live = np.isin(np.asarray(self.cpus.ids), np.asarray(self.online.ids)) | (per > 0)
            per = per[live]
        mean = per.mean() if per.size else 0.0
        return float(per.max() / mean) if mean > 0 else 0.0


def _btf_available() -> bool:
    return _machine.current().kernel_btf is not None


# enum bpf_prog_type, enum bpf_func_id and enum bpf_map_type values (include/uapi/linux/bpf.h)
_PROG_TRACEPOINT = 5
_PROG_RAW_TRACEPOINT = 17
_FUNC_TASK_STORAGE_GET = 156
_FUNC_GET_CURRENT_TASK_BTF = 158
_MAP_TASK_STORAGE = 29


# struct proc_cache of bpf/syscount.bpf.c: a CPU's per-process cache lines (read only for an offline CPU,
# which no flush can reach).
_PROC_LINE = np.dtype(
    {"names": ["key", "n"], "formats": [PROC_KEY, np.uint64], "offsets": [0, 24], "itemsize": 32}
)
_PROC_CACHE = np.dtype(
    {
        "names": ["busy", "line"],
        "formats": [np.uint32, (_PROC_LINE, (_PROC_LINES,))],
        "offsets": [0, 8],
        "itemsize": 8 + 32 * _PROC_LINES,
    }
)
_ENXIO = 6


@dataclass(frozen=True)
class KernelFeatures:
    """What the syscall counter's optional code paths need, probed on the running kernel (each a load of
    a tiny program or map, not a version comparison: distributions backport)."""

    task_btf: bool  # bpf_get_current_task_btf(), Linux 5.11: tgid and comm read straight from the task
    task_storage: bool  # task local storage from tracing programs, Linux 5.11: latency start times


@functools.cache
def kernel_features() -> KernelFeatures:
    """Probe (once per process) the helpers and map types the counter's modes choose between."""
    lib = _machine.current().libbpf()

    def helper(prog_type: int, func: int) -> bool:
        try:
            return lib.probe_helper(prog_type, func)
        except OSError:
            return False  # cannot tell (no privilege): the fallback paths work everywhere

    try:
        storage_map = lib.probe_map_type(_MAP_TASK_STORAGE)
    except OSError:
        storage_map = False
    task_btf = helper(_PROG_RAW_TRACEPOINT, _FUNC_GET_CURRENT_TASK_BTF)
    return KernelFeatures(
        task_btf=task_btf,
        task_storage=task_btf and storage_map and helper(_PROG_RAW_TRACEPOINT, _FUNC_TASK_STORAGE_GET),
    )


class _Drainer(threading.Thread):
    """Takes exited processes out of a counter's per-process table whenever it is filling (a check of two
    small maps every ``ProcessTable.period`` s). Holds the counter weakly: a counter dropped without
    close() is still finalized."""

    def __init__(self, counter: SyscallCounter) -> None:
        super().__init__(name="percpu-process-drain", daemon=True)
        self.counter = weakref.ref(counter)
        self.stop = threading.Event()

    def run(self) -> None:
        period = ProcessTable.PERIOD_MAX
        while not self.stop.wait(period):
            c = self.counter()
            if c is None:
                return
            period = c._drain_if_due(self.stop)
            del c


class SyscallCounter:
    """Count system calls per CPU (and, on request, per process, per errno and by latency).

    >>> with SyscallCounter() as c:           # doctest: +SKIP
    ...     before = c.snapshot(); time.sleep(1); d = c.snapshot().delta(before)

    ``attach``: ``"auto"`` tries ``tp_btf``, then ``raw_tp``, then the classic tracepoint;
    :attr:`attach_mode` says which one is in use.

    Per-process counts (``per_process``) live in a kernel table of ``proc_entries`` keys (pid, syscall,
    name) that does not evict: what it cannot take is counted in ``Lost.processes``, so the rows plus that
    always equal the calls counted. From the first :meth:`snapshot` on, a thread takes the rows of
    processes that have exited out of the table whenever it is filling, and keeps them: by pid up to
    ``proc_keep`` rows (default ``proc_entries``), then summed by name (pid :data:`FOLDED_TGID`) up to
    ``proc_entries`` rows, then by syscall alone; see :class:`ProcessTable`.
    """

    # Latency at tp_btf: start times in a per-CPU slot spilled at sched_switch (True), or in the task's
    # store at every call (False, the path of raw_tp, tracepoint and kernels that refuse the former).
    latency_percpu: bool = True
    # Per-process counts: a per-CPU cache in front of the hash, flushed on each CPU before every read
    # (True), or the hash at every call (False, and kernels that cannot run a program on a given CPU).
    process_cache: bool = True

    def __init__(
        self,
        *,
        filters: Filters | None = None,
        per_process: bool = False,
        errors: bool = False,
        latency: bool = False,
        attach: str = "auto",
        proc_entries: int = 10240,
        errors_entries: int = 8192,
        latency_entries: int = 16384,
        proc_keep: int | None = None,
        detect_compat: bool = True,
        obj_path: str | None = None,
        start: bool = True,
    ) -> None:
        if attach != "auto" and attach not in ATTACH_MODES:
            raise PercpuError(f"attach mode {attach!r}: choose auto, {', '.join(ATTACH_MODES)}")
        self.filters = filters or Filters()
        self.per_process = per_process
        self.errors = errors
        self.latency = latency
        self.attach = attach
        for name, n in (
            ("proc_entries", proc_entries),
            ("errors_entries", errors_entries),
            ("latency_entries", latency_entries),
        ):
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_TABLE_ENTRIES:
                raise PercpuError(f"{name}={n!r}: give a table size from 1 to {MAX_TABLE_ENTRIES} keys")
        self.proc_entries = proc_entries
        self.errors_entries = errors_entries
        self.latency_entries = latency_entries
        keep = proc_entries if proc_keep is None else proc_keep
        if isinstance(keep, bool) or not isinstance(keep, int) or not 0 <= keep <= MAX_TABLE_ENTRIES:
            raise PercpuError(f"proc_keep={keep!r}: give a number of rows from 0 to {MAX_TABLE_ENTRIES}")
        # Rows of exited processes kept by pid once taken out of the kernel's table (see ProcessTable);
        # as many again are kept summed by name.
        self.proc_keep = keep
        self.detect_compat = detect_compat and _names.machine_arch() == "x86_64"
        self._topo = machine()
        self._cpus = possible_cpus()
        self.arch = _names.machine_arch()
        self._own_obj_path = obj_path
        self._obj_path = obj_path or bundled("syscount.bpf.o")
        self._nobtf = False
        self._obj: BpfObject | None = None
        self._maps: dict[str, Map] = {}
        self._flush_fd = -1
        self._proc_table: ProcessTable | None = None
        self._drainer: _Drainer | None = None
        self._drain_error: BaseException | None = None
        # close() and snapshot() may run in different threads (an exporter shutting down while a scrape
        # reads): the lock makes a snapshot finish before the maps go, or fail with a typed error after.
        self._lock = threading.RLock()
        self.attach_mode: str | None = None
        self.attach_failures: dict[str, str] = {}
        self.needs_exit = self.filters.failed_only or errors or latency
        # Nothing but counting: a dedicated program with the fewest instructions does it.
        self._default_mode = not (self.needs_exit or per_process) and self.filters == Filters()
        self._config = self._build_config()
        if start:
            self.start()

    def _build_config(self) -> _Config:
        f = self.filters
        cfg = _Config()
        cfg.filter_tgid = f.tgid or 0
        cfg.filter_tid = f.tid or 0
        cfg.filter_cgroup = f.cgroup_id() or 0
        comm = f.comm_bytes()
        if comm is not None:
            cfg.filter_comm = comm
        slots = f.slots(self.arch)
        if f.syscalls is not None:
            cfg.use_syscall_mask = 1
            for s in slots:
                if s >= COMPAT_BASE:
                    raise PercpuError("the syscall filter takes native syscalls only")
                cfg.syscall_mask[s // 64] |= 1 << (s % 64)
        cfg.failed_only = int(f.failed_only)
        cfg.per_process = int(self.per_process)
        cfg.errors = int(self.errors)
        cfg.latency = int(self.latency)
        cfg.detect_compat = int(self.detect_compat)
        ns = pid_namespace() if f.tgid is not None or f.tid is not None or self.per_process else None
        if ns is not None:
            cfg.pidns_dev, cfg.pidns_ino = ns
        return cfg

    # --- lifetime -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Load and attach, trying attach modes in order of cost; raises if none works."""
        with self._lock:
            self._start_locked()

    def _start_locked(self) -> None:
        if self._obj is not None:
            return
        modes = ATTACH_MODES if self.attach == "auto" else (self.attach,)
        errors: list[str] = []
        btf = _btf_available()
        self._nobtf = not btf and self._own_obj_path is None
        default = "syscount_nobtf.bpf.o" if self._nobtf else "syscount.bpf.o"
        # (Per-process pids from a namespace stay the kernel's there: only a filter must be refused.)
        if self._nobtf and self._config.pidns_ino and (self._config.filter_tgid or self._config.filter_tid):
            raise NotSupported(
                "a pid filter from inside a pid namespace (a container) needs the kernel's BTF, which this "
                "kernel lacks: its pids are not the kernel's. Run percpu in the host's pid namespace, or "
                "filter by cgroup (--cgroup) or command name (-c) instead",
                feature="pid namespace filter",
            )
        self._obj_path = self._own_obj_path or bundled(default)
        for mode in modes:
            if not btf and self._own_obj_path is None and mode != "raw_tp":
                why = "this kernel has no BTF (/sys/kernel/btf/vmlinux): without it percpu attaches at raw_tp"
                self.attach_failures[mode] = why
                errors.append(f"{mode}: {why}")
                continue
            try:
                self._start(mode)
                self.attach_mode = mode
                return
            except (ProgramLoadError, AttachError, NotSupported) as exc:
                if getattr(exc, "errno", None) in (1, 13) and self.attach != "auto":
                    raise
                first = str(exc).splitlines()[0]
                self.attach_failures[mode] = first
                errors.append(f"{mode} (needs {_MIN_KERNEL[mode]}): {first}")
                if getattr(exc, "errno", None) in (1, 13):
                    raise
        raise NotSupported(
            "cannot attach the syscall counter at any hook:\n  " + "\n  ".join(errors),
            feature="syscall tracepoints",
            min_kernel="4.17",
        )

    def _start(self, mode: str) -> None:
        feats = kernel_features()
        if mode == "tracepoint":
            ensure_tracefs()
        # Paths for kernels before 5.11 (helpers instead of the task pointer, start times by thread id)
        # are chosen per feature, so each mode works wherever its own needs are met.
        self._config.task_btf = int(feats.task_btf and not self._nobtf)
        self._config.task_storage = int(feats.task_storage and not self._nobtf)
        # Latency at tp_btf keeps the start of the call in flight in a per-CPU slot, which a sched_switch
        # program spills to the task's store when the task leaves the CPU mid-call (about 90 ns less per
        # call than two task storage lookups). A kernel that refuses that program gets the previous path:
        # the start in the task's store at every sys_enter.
        # Per-process counts likewise gather in a per-CPU cache when the kernel can run the flush program
        # on a given CPU (BPF_PROG_TEST_RUN on a CPU, Linux 5.10); else each call looks up the hash.
        slot = mode == "tp_btf" and self.latency and self.latency_percpu
        cache = self.per_process and self.process_cache
        tries: list[tuple[bool, bool]] = []
        for t in ((slot, cache), (False, cache), (slot, False)):
            if any(t) and t not in tries:
                tries.append(t)
        for lat_percpu, proc_cache in tries:
            self._config.lat_percpu = int(lat_percpu)
            self._config.proc_cache = int(proc_cache)
            try:
                self._start_object(mode)
                return
            except (ProgramLoadError, AttachError, NotSupported) as exc:
                if getattr(exc, "errno", None) in (1, 13):
                    raise
                what = " and ".join(
                    n
                    for n, on in (("per-CPU start slot", lat_percpu), ("per-process cache", proc_cache))
                    if on
                )
                self.attach_failures[f"{mode} {what}"] = str(exc).splitlines()[0]
        self._config.lat_percpu = 0
        self._config.proc_cache = 0
        self._start_object(mode)

    def _start_object(self, mode: str) -> None:
        obj = BpfObject(self._obj_path)
        try:
            view = obj.rodata()
            if len(view) < ctypes.sizeof(_Config):
                raise PercpuError(
                    f"{os.path.basename(self._obj_path)}: .rodata is {len(view)} bytes, the config is "
                    f"{ctypes.sizeof(_Config)}: the BPF object and this percpu do not match; reinstall"
                )
            obj.set_rodata(self._config)
            enter, exit_ = _PROGRAMS[mode]
            if mode == "tp_btf" and self._default_mode:
                enter = "enter_btf_fast"
            switch = "switch_btf" if self._config.lat_percpu else None
            flush = "flush_procs" if self._config.proc_cache else None
            for extra in (switch, flush):
                if extra and extra not in obj.programs:
                    raise NotSupported(
                        f"{os.path.basename(self._obj_path)} has no {extra} program", feature=extra
                    )
            for name, prog in obj.programs.items():
                prog.autoload = name in (enter, switch, flush) or (name == exit_ and self.needs_exit)
            # Maps of the modes not asked for shrink to one entry: their memory is per possible CPU (tens
            # of MB on a machine with 256 possible CPUs), and the verifier has removed their code anyway.
            obj.set_max_entries("proc_counts", self.proc_entries if self.per_process else 1)
            obj.set_max_entries("errors", self.errors_entries if self.errors else 1)
            obj.set_max_entries("latency", self.latency_entries if self.latency else 1)
            if not self.latency:
                obj.set_max_entries("lat_rows", 1)
            # Only the start-time map latency uses is created: a kernel without task local storage
            # (before 5.11) cannot create that map at all, and an unused LRU hash is allocated up front.
            names = obj.map_names
            if "starts" in names:
                obj.set_autocreate("starts", self.latency and bool(self._config.task_storage))
            if "starts_tid" in names:
                obj.set_autocreate("starts_tid", self.latency and not self._config.task_storage)
            if "inflight" in names:
                obj.set_autocreate("inflight", bool(self._config.lat_percpu))
            if "proc_cache" in names:
                obj.set_autocreate("proc_cache", bool(self._config.proc_cache))
            obj.load()
            if switch:
                obj.attach(switch)  # first: the slot must never hold a start its task took off the CPU
            obj.attach(enter)
            if self.needs_exit:
                obj.attach(exit_)
            self._maps = {
                "counts": obj.map("counts", value=np.uint64),
                "dropped": obj.map("dropped", value=np.uint64),
                "lost": obj.map("lost", value=np.uint64),
            }
            if self.per_process:
                self._maps["proc_counts"] = obj.map("proc_counts", key=PROC_KEY, value=np.uint64)
                if "proc_inserts" in names:
                    self._maps["proc_inserts"] = obj.map("proc_inserts", value=np.uint64)
            if flush:
                self._maps["proc_cache"] = obj.map("proc_cache", value=_PROC_CACHE)
                self._flush_fd = obj.programs[flush].fd
                self._flush_procs()  # refused here (no BPF_PROG_TEST_RUN on a CPU): the hash path instead
            if self.errors:
                self._maps["errors"] = obj.map("errors", key=ERR_KEY, value=np.uint64)
            if self.latency:
                self._maps["latency"] = obj.map("latency", key=LAT_KEY, value=np.uint64)
                self._maps["lat_index"] = obj.map("lat_index", value=_LAT_INDEX)
                self._maps["lat_rows"] = obj.map("lat_rows", value=_LAT_ROW)
        except BaseException:
            for m in self._maps.values():
                m.close()
            self._maps = {}
            obj.close()
            raise
        self._obj = obj
        if self.per_process:
            # Pids of the kernel's own namespace (the no-BTF object inside a container) cannot be checked
            # from here: nothing is taken out then, and a full table counts what it loses.
            foreign = self._nobtf and bool(self._config.pidns_ino)
            self._drain_error = None
            self._proc_table = ProcessTable(
                self._maps["proc_counts"],
                len(self._cpus),
                keep=self.proc_keep,
                fold=self.proc_entries,
                alive=None if foreign else _machine.current().process_exists,
                flush=self._flush_pending if flush else None,
                events=self._proc_events if "proc_inserts" in self._maps else None,
            )

    @property
    def compat_check(self) -> str:
        """How this counter tells 32-bit (compat) calls apart, a key of :data:`COMPAT_CHECKS`: ``TS_COMPAT``
        (the task's status, as the kernel does), ``code segment`` (the object without BTF, which cannot
        read that status: a 64-bit task's ``int $0x80`` calls get 64-bit names), ``AArch32`` (arm64: not
        told apart) or ``off`` (``detect_compat=False``). Known once started."""
        if self.arch == "arm64":
            return "AArch32"
        if not self.detect_compat:
            return "off"
        return "code segment" if self._nobtf else "TS_COMPAT"

    def close(self) -> None:
        """Detach the programs and free the maps (waits for a snapshot running in another thread)."""
        drainer, self._drainer = self._drainer, None
        if drainer is not None:
            drainer.stop.set()
            if drainer is not threading.current_thread():
                drainer.join()
        with self._lock:
            maps, self._maps = self._maps, {}
            obj, self._obj = self._obj, None
            self._proc_table = None
        for m in maps.values():
            m.close()
        if obj is not None:
            obj.close()

    def __enter__(self) -> SyscallCounter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ------------------------------------------------------------------------------------

    @property
    def cpus(self) -> CpuList:
        return self._cpus

    def programs(self) -> list[Any]:
        """The loaded programs (for run counts and run time when bpf_stats are on)."""
        with self._lock:
            if self._obj is None:
                return []
            return [p for p in self._obj.programs.values() if p.autoload]

    def snapshot(self) -> SyscallSnapshot:
        """Read every map once (batch reads); never resets a counter and never blocks counting.

        Raises :class:`PercpuError` once the counter is closed, also when another thread closes it."""
        with self._lock:
            if self._obj is None:
                raise PercpuError("the syscall counter is not running (closed, or start() not called)")
            if self._drain_error is not None:
                exc = self._drain_error
                raise PercpuError(
                    f"taking exited processes out of the per-process table failed: {exc}"
                ) from exc
            snap = self._snapshot_locked()
            self._start_drainer()
            return snap

    def _start_drainer(self) -> None:
        """The thread that keeps the per-process table from filling, at the first snapshot: not at start,
        so that a caller may still give up privileges while it has one thread (the exporter does)."""
        t = self._proc_table
        if self._drainer is None and t is not None and t.events is not None and t.alive is not None:
            self._drainer = _Drainer(self)
            self._drainer.start()

    def _drain_if_due(self, stop: threading.Event) -> float:
        """Drain the per-process table if it is filling; returns how long to wait before asking again."""
        with self._lock:
            t = self._proc_table
            if stop.is_set() or t is None:
                return 0.0
            if t.due(time.monotonic()):
                try:
                    t.drain()
                except Exception as exc:  # raised by the next snapshot, not lost with the thread
                    self._drain_error = exc
                    stop.set()
            return t.period

    def _proc_events(self) -> int:
        """Keys the kernel inserted into the per-process table plus calls it could not take: grows
        whenever the table fills (two small reads, not the table)."""
        inserted = int(self._maps["proc_inserts"].snapshot().values.sum(dtype=np.uint64))
        lost = self._maps["lost"].snapshot()
        return inserted + int(lost.values[lost.keys == LOST_PROCESSES].sum(dtype=np.uint64))

    def _snapshot_locked(self) -> SyscallSnapshot:
        now = time.monotonic()
        snap = self._maps["counts"].snapshot()
        counts = np.zeros((len(self.cpus), NR_SLOTS), dtype=np.uint64)
        counts[:, snap.keys.astype(np.int64)] = snap.values.T
        dropped = int(self._maps["dropped"].snapshot().values.sum())
        # The per-process rows before the lost counts: the flush that moves the per-CPU caches into the
        # table counts there what the table cannot take.
        procs = self._procs()
        lost = self._maps["lost"].snapshot()
        per_table = np.zeros(len(Lost._fields), dtype=np.uint64)
        per_table[lost.keys.astype(np.int64)] = lost.values.sum(axis=1, dtype=np.uint64)
        per_table[Lost._fields.index("skipped")] = self._skipped_runs()
        return SyscallSnapshot(
            time=now,
            cpus=self.cpus,
            counts=counts,
            procs=procs,
            errors=self._keyed("errors"),
            latency=self._latency(),
            dropped=dropped,
            arch=self.arch,
            online=self._online(),
            lost=Lost(*(int(v) for v in per_table)),
        )

    def _skipped_runs(self) -> int:
        """Runs the kernel skipped, summed over the attached programs (0 before Linux 5.12)."""
        if self._obj is None:
            return 0
        lib = _machine.current().libbpf()
        total = 0
        for p in self._obj.programs.values():
            if p.autoload and p.name != "flush_procs":
                try:
                    total += lib.prog_recursion_misses(p.fd)
                except OSError:
                    continue
        return total

    def _online(self) -> CpuList | None:
        """The online CPUs now, or None when sysfs cannot say (a snapshot must not fail over it)."""
        try:
            return self._topo.online
        except PercpuError:
            return None

    def _latency(self) -> tuple[np.ndarray, np.ndarray] | None:
        overflow = self._keyed("latency")
        if overflow is None:
            return None
        # The index before the rows: a row taken in between then reads as not yet taken (counted next
        # time), never as counts without a slot.
        index = self._maps["lat_index"].snapshot().values["row"][0]
        rows = self._maps["lat_rows"].snapshot().values["n"]
        return merge_latency(index, rows, overflow)

    def _flush_procs(self) -> list[int]:
        """Move every CPU's cached per-process counts into proc_counts by running flush_procs on each
        CPU; returns the indexes of the CPUs it could not reach (offline)."""
        lib = _machine.current().libbpf()
        offline: list[int] = []
        for i in range(len(self._cpus)):
            cpu = self._cpus[i]
            # 1: it interrupted a counting program on that CPU, which is done in well under a microsecond
            for _ in range(100_000):
                try:
                    if lib.prog_run_on_cpu(self._flush_fd, cpu) == 0:
                        break
                except OSError as exc:
                    if exc.errno == _ENXIO:
                        offline.append(i)
                        break
                    raise NotSupported(
                        f"cannot run the per-process flush on CPU {cpu}: {exc.strerror}",
                        feature="BPF_PROG_TEST_RUN on a CPU",
                        min_kernel="5.10",
                        errno=exc.errno,
                    ) from exc
            else:
                raise PercpuError(f"the per-process flush found CPU {cpu} busy 100,000 times in a row")
        return offline

    def _procs(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self._proc_table is None:
            return None
        return self._proc_table.read()

    def _flush_pending(self) -> Keyed | None:
        """Flush every CPU's per-process cache into the table; the rows of the caches of CPUs no flush
        can reach (offline: they keep their calls until they come back), or None."""
        offline = self._flush_procs()
        if not offline:
            return None
        lines = self._maps["proc_cache"].snapshot().values[0]
        keys: list[np.ndarray] = []
        counts: list[np.ndarray] = []
        for i in offline:
            for line in lines[i]["line"]:
                if line["n"]:
                    row = np.zeros(len(self._cpus), dtype=np.uint64)
                    row[i] = line["n"]
                    keys.append(line["key"])
                    counts.append(row)
        if not keys:
            return None
        return _merge_keyed(
            [(np.array(keys, dtype=PROC_KEY), np.array(counts, dtype=np.uint64))], len(self._cpus)
        )

    def _keyed(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        m = self._maps.get(name)
        if m is None:
            return None
        s = m.snapshot()
        return s.keys, s.values


# What each way of telling 32-bit calls apart (SyscallCounter.compat_check) cannot tell: percpu doctor
# prints it with the modes. None: nothing.
COMPAT_CHECKS: dict[str, str | None] = {
    "TS_COMPAT": None,
    "code segment": "without kernel BTF the task's TS_COMPAT status has no known offset, so 32-bit calls are "
    "told apart by the code segment only: a 64-bit task's int $0x80 calls are named from the x86_64 table",
    "AArch32": "an AArch32 task's calls are not told apart on arm64: they are named from the arm64 table, "
    "which numbers them differently",
    "off": "32-bit calls are not told apart (detect_compat=False)",
}


@dataclass(frozen=True)
class ModeSupport:
    """Whether one mode of the counter loads and attaches on this kernel, at which hook, and how; ``compat``
    is how it tells 32-bit calls apart (a key of :data:`COMPAT_CHECKS`), None when it did not attach."""

    mode: str
    flag: str
    supported: bool
    hook: str | None
    detail: str
    compat: str | None = None


def _modes() -> list[tuple[str, str, dict[str, Any]]]:
    me = os.getpid()
    return [
        ("default", "", {}),
        ("per-process", "-P", {"per_process": True}),
        ("errors", "-e", {"errors": True}),
        ("latency", "-L", {"latency": True}),
        ("failed only", "-x", {"filters": Filters(failed_only=True)}),
        (
            "filters",
            "-p -t -c -s --cgroup",
            {
                "filters": Filters(
                    tgid=me,
                    tid=me,
                    comm="percpu",
                    syscalls=["getppid"],
                    cgroup="/" if cgroup2_root() else None,
                )
            },
        ),
    ]


def mode_support() -> list[ModeSupport]:
    """Load and attach the counter once per mode (then detach): what this kernel really supports."""
    out: list[ModeSupport] = []
    feats: KernelFeatures | None = None
    for mode, flag, kw in _modes():
        try:
            feats = feats or kernel_features()
            with SyscallCounter(**kw) as c:
                hook = c.attach_mode
                slot = bool(c._config.lat_percpu)
                cache = bool(c._config.proc_cache)
                compat = c.compat_check
        except PercpuError as exc:
            out.append(ModeSupport(mode, flag, False, None, str(exc).splitlines()[0]))
            continue
        how = f"attaches at {hook}"
        if mode == "per-process":
            how += (
                "; tgid and comm read from the task"
                if feats.task_btf
                else "; tgid and comm from helpers (bpf_get_current_task_btf needs Linux 5.11)"
            )
            how += "; a per-CPU cache in front of the hash" if cache else "; the hash at every call"
        if mode == "latency":
            store = (
                "task local storage"
                if feats.task_storage
                else "a hash by thread id (task local storage needs Linux 5.11)"
            )
            how += (
                f"; start times in a per-CPU slot, moved at sched_switch to {store}"
                if slot
                else f"; start times in {store}"
            )
        how += (
            "; 32-bit calls told apart by the task's TS_COMPAT, as the kernel does"
            if compat == "TS_COMPAT"
            else "; 32-bit calls told apart by code segment only"
            if compat == "code segment"
            else "; 32-bit calls not told apart"
        )
        out.append(ModeSupport(mode, flag, True, hook, how, compat))
    return out
