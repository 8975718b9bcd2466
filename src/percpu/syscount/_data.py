"""The syscall counter's data: what views, pictures, reports and the exporter consume.

Snapshots (:class:`SyscallSnapshot`: absolute counts at one moment) and the deltas between them
(:class:`SyscallDelta`), what was lost (:class:`Lost`), the names of slots and errnos, and the per-process
keys summed by name. Pure numpy: this module imports no binding, no maps and no BPF objects, so whatever
only reads counts sits above the data, not above the loader.

Counts are indexed by *slot*: the syscall number for native calls, ``COMPAT_BASE + nr`` for 32-bit
compat calls on x86_64 (which the tracepoint reports with their own numbering).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from .. import syscalls as _names
from .._contract import COMPAT_BASE, LAT_BUCKETS, LAT_KEY, PROC_KEY, ROW_BUCKETS, ROW_FIRST_BUCKET
from ..cpulist import CpuGroups, CpuList
from ..errors import PercpuError

__all__ = [
    "FOLDED_TGID",
    "Keyed",
    "Lost",
    "SnapshotSource",
    "SyscallDelta",
    "SyscallSnapshot",
    "errno_name",
    "folded_keys",
    "merge_latency",
    "not_shown_line",
    "slot_name",
]


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
    # is a call not counted at all; the kernel counts them per program (recursion_misses, see
    # features.RECURSION_MISSES).
    skipped: int = 0

    def __sub__(self, other: tuple[int, ...]) -> Lost:
        return Lost(*(max(a - b, 0) for a, b in zip(self, other, strict=True)))


_NO_LOSS = Lost()


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
        """All counts since the programs were attached, as a delta from zero: :meth:`delta` from a snapshot
        of nothing, so every field a delta carries is carried once, there (a keyed table subtracts nothing
        from an empty one, and no count is negative)."""
        return self.delta(SyscallSnapshot(0.0, self.cpus, np.zeros_like(self.counts)))


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
    i of the keyed counts, is group ``groups.labels[i]``, not a CPU). :func:`percpu.views.shown` leaves
    out the CPUs that were not online and made no call, and lists them in ``not_shown``.
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
    not_shown: CpuList | None = None
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


def not_shown_line(d: SyscallDelta) -> str | None:
    """What a report left out of ``d`` (:attr:`SyscallDelta.not_shown`, see :func:`percpu.views.shown`), as
    reports, top and pictures say it: ``62 possible CPUs not online (2-63): no calls``."""
    if not d.not_shown:
        return None
    n = len(d.not_shown)
    return f"{n} possible CPU{'s' if n > 1 else ''} not online ({d.not_shown}): no calls"


class SnapshotSource(Protocol):
    """A source of snapshots, what the exporter's collector and ``percpu top``'s screen read (the way
    prometheus_client's collectors take their source): a :class:`~percpu.syscount.SyscallCounter`, or a
    test's fake. ``programs()`` are the BPF programs behind the counts, whose ``name`` and ``info()`` (run
    count and time, while BPF stats are on) the exporter serves; a source without programs returns []."""

    attach_mode: str | None
    arch: str

    @property
    def cpus(self) -> CpuList: ...
    def snapshot(self) -> SyscallSnapshot: ...
    def programs(self) -> list[Any]: ...
