"""The system-call collector: BPF programs counting syscalls per CPU, read as numpy snapshots.

:class:`SyscallCounter` loads ``syscount.bpf.o`` (shipped compiled: no compiler at run time), configures it
through ``.rodata`` before load (so the verifier removes every disabled feature from the hot path),
attaches it at the best hook the kernel has (``tp_btf`` -> ``raw_tp`` -> classic tracepoint) and reads its
per-CPU maps. Counters are never reset: a :class:`SyscallSnapshot` holds absolute counts, and
:meth:`SyscallSnapshot.delta` turns two of them into counts over an interval.

Counts are indexed by *slot*: the syscall number for native calls, ``COMPAT_BASE + nr`` for 32-bit
compat calls on x86_64 (which the tracepoint reports with their own numbering).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _libbpf, _procfs
from . import syscalls as _names
from .cpus import CpuList, machine, possible_cpus
from .errors import AttachError, NotSupported, PercpuError, ProgramLoadError
from .maps import Map
from .objects import BpfObject, bundled

__all__ = [
    "ATTACH_MODES",
    "COMPAT_BASE",
    "Filters",
    "SyscallCounter",
    "SyscallDelta",
    "SyscallSnapshot",
    "ensure_tracefs",
    "slot_name",
]

NR_SLOTS = 2048
COMPAT_BASE = 1024
LAT_BUCKETS = 64
# Latency histogram rows in syscount.bpf.c: per CPU, LAT_ROWS rows holding buckets ROW_FIRST_BUCKET onward
# (ROW_BUCKETS of them); other buckets, and slots beyond a CPU's rows, are counted in the latency hash.
LAT_ROWS = 128
ROW_FIRST_BUCKET = 4
ROW_BUCKETS = 32
ATTACH_MODES = ("tp_btf", "raw_tp", "tracepoint")
_PROGRAMS = {
    "tp_btf": ("enter_btf", "exit_btf"),
    "raw_tp": ("enter_raw", "exit_raw"),
    "tracepoint": ("enter_tp", "exit_tp"),
}
# What each attach mode needs, for error messages (the syscount.bpf.o flavours also need kernel BTF for
# their CO-RE reads; without BTF, syscount_nobtf.bpf.o attaches at raw_tp only).
_MIN_KERNEL = {"tp_btf": "Linux 5.5 with BTF", "raw_tp": "Linux 4.17", "tracepoint": "Linux 4.7 and tracefs"}


class _Config(ctypes.Structure):
    """Mirror of ``struct percpu_config`` in bpf/syscount.bpf.c (checked against .rodata at load)."""

    _fields_ = [
        ("filter_tgid", ctypes.c_uint32),
        ("filter_tid", ctypes.c_uint32),
        ("filter_cgroup", ctypes.c_uint64),
        ("filter_comm", ctypes.c_char * 16),
        ("use_syscall_mask", ctypes.c_uint8),
        ("failed_only", ctypes.c_uint8),
        ("per_process", ctypes.c_uint8),
        ("errors", ctypes.c_uint8),
        ("latency", ctypes.c_uint8),
        ("detect_compat", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8 * 2),
        ("syscall_mask", ctypes.c_uint64 * 16),
    ]


PROC_KEY = np.dtype([("tgid", "<u4"), ("slot", "<u4"), ("comm", "S16")])
ERR_KEY = np.dtype([("slot", "<u4"), ("err", "<u4")])
LAT_KEY = np.dtype([("slot", "<u4"), ("bucket", "<u4")])
# struct lat_index and struct lat_row in bpf/syscount.bpf.c
_LAT_INDEX = np.dtype([("row", "u1", (NR_SLOTS,)), ("used", "<u4")])
_LAT_ROW = np.dtype([("n", "<u8", (ROW_BUCKETS,))])


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


def _mount_point(fstype: str) -> str | None:
    return next((m.point for m in _procfs.mounts() if m.fstype == fstype), None)


def cgroup2_root() -> str | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup``, or ``.../unified`` on hybrid
    systems), or None."""
    return _mount_point("cgroup2")


def ensure_tracefs() -> str:
    """Where tracefs is mounted, mounting it at /sys/kernel/tracing if it is not (needs root)."""
    point = _mount_point("tracefs")
    if point is not None:
        return point
    target = "/sys/kernel/tracing"
    try:
        _libbpf.mount("nodev", target, "tracefs")
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


@dataclass(frozen=True)
class Filters:
    """In-kernel filters, fixed when the programs load. Unset fields filter nothing."""

    tgid: int | None = None
    tid: int | None = None
    comm: str | None = None
    cgroup: int | str | None = None  # cgroup v2 id, or a path (absolute, or under the cgroup2 mount)
    syscalls: Sequence[int | str] | None = None  # names ("read", "compat:read") or numbers
    failed_only: bool = False

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

    def delta(self, earlier: SyscallSnapshot) -> SyscallDelta:
        """Counts between ``earlier`` and this snapshot."""
        if earlier.cpus != self.cpus:
            raise PercpuError("snapshots of different CPU layouts cannot be subtracted")
        counts = self.counts - earlier.counts
        return SyscallDelta(
            seconds=max(self.time - earlier.time, 1e-9),
            cpus=self.cpus,
            counts=counts,
            procs=_keyed_delta(self.procs, earlier.procs),
            errors=_keyed_delta(self.errors, earlier.errors),
            latency=_keyed_delta(self.latency, earlier.latency),
            dropped=self.dropped - earlier.dropped,
            arch=self.arch,
            online=self.online,
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
        )


def _keyed_delta(
    now: tuple[np.ndarray, np.ndarray] | None, before: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Subtract per-key counts; keys gone since (evicted from an LRU) count from zero, never negative."""
    if now is None:
        return None
    keys, counts = now
    if before is None or len(before[0]) == 0 or len(keys) == 0:
        return keys, counts.copy()
    bkeys, bcounts = before
    index = {k.tobytes(): i for i, k in enumerate(bkeys)}
    out = counts.astype(np.int64)
    for i, k in enumerate(keys):
        j = index.get(k.tobytes())
        if j is not None:
            out[i] -= bcounts[j].astype(np.int64)
    np.maximum(out, 0, out=out)
    keep = out.sum(axis=1) > 0
    return keys[keep], out[keep].astype(np.uint64)


@dataclass(frozen=True)
class SyscallDelta:
    """Counts over an interval of ``seconds``; same shapes as :class:`SyscallSnapshot`."""

    seconds: float
    cpus: CpuList
    counts: np.ndarray
    procs: tuple[np.ndarray, np.ndarray] | None = None
    errors: tuple[np.ndarray, np.ndarray] | None = None
    latency: tuple[np.ndarray, np.ndarray] | None = None
    dropped: int = 0
    arch: str | None = None
    online: CpuList | None = None
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
            live = np.isin(np.asarray(self.cpus.ids), np.asarray(self.online.ids)) | (per > 0)
            per = per[live]
        mean = per.mean() if per.size else 0.0
        return float(per.max() / mean) if mean > 0 else 0.0


def _btf_available() -> bool:
    return os.path.exists("/sys/kernel/btf/vmlinux")


class SyscallCounter:
    """Count system calls per CPU (and, on request, per process, per errno and by latency).

    >>> with SyscallCounter() as c:           # doctest: +SKIP
    ...     before = c.snapshot(); time.sleep(1); d = c.snapshot().delta(before)

    ``attach``: ``"auto"`` tries ``tp_btf``, then ``raw_tp``, then the classic tracepoint;
    :attr:`attach_mode` says which one is in use.
    """

    def __init__(
        self,
        *,
        filters: Filters | None = None,
        per_process: bool = False,
        errors: bool = False,
        latency: bool = False,
        attach: str = "auto",
        proc_entries: int = 10240,
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
        self.proc_entries = proc_entries
        self.detect_compat = detect_compat and _names.machine_arch() == "x86_64"
        self._topo = machine()
        self._cpus = possible_cpus()
        self.arch = _names.machine_arch()
        self._own_obj_path = obj_path
        self._obj_path = obj_path or bundled("syscount.bpf.o")
        self._nobtf = False
        self._obj: BpfObject | None = None
        self._maps: dict[str, Map] = {}
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
        if f.comm:
            comm = f.comm.encode()
            if len(comm) > 15:
                raise PercpuError(f"comm filter {f.comm!r} is longer than the kernel's 15 characters")
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
        if mode == "tracepoint":
            ensure_tracefs()
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
            for name, prog in obj.programs.items():
                prog.autoload = name == enter or (name == exit_ and self.needs_exit)
            # Maps of the modes not asked for shrink to one entry: their memory is per possible CPU (tens
            # of MB on a machine with 256 possible CPUs), and the verifier has removed their code anyway.
            obj.set_max_entries("proc_counts", max(self.proc_entries, 1) if self.per_process else 1)
            if not self.errors:
                obj.set_max_entries("errors", 1)
            if not self.latency:
                obj.set_max_entries("latency", 1)
                obj.set_max_entries("lat_rows", 1)
                if self._nobtf:  # its start times are an LRU hash, allocated up front
                    obj.set_max_entries("starts", 1)
            obj.load()
            obj.attach(enter)
            if self.needs_exit:
                obj.attach(exit_)
            self._maps = {
                "counts": obj.map("counts", value=np.uint64),
                "dropped": obj.map("dropped", value=np.uint64),
            }
            if self.per_process:
                self._maps["proc_counts"] = obj.map("proc_counts", key=PROC_KEY, value=np.uint64)
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

    def close(self) -> None:
        """Detach the programs and free the maps (waits for a snapshot running in another thread)."""
        with self._lock:
            maps, self._maps = self._maps, {}
            obj, self._obj = self._obj, None
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
            return self._snapshot_locked()

    def _snapshot_locked(self) -> SyscallSnapshot:
        now = time.monotonic()
        snap = self._maps["counts"].snapshot()
        counts = np.zeros((len(self.cpus), NR_SLOTS), dtype=np.uint64)
        counts[:, snap.keys.astype(np.int64)] = snap.values.T
        dropped = int(self._maps["dropped"].snapshot().values.sum())
        return SyscallSnapshot(
            time=now,
            cpus=self.cpus,
            counts=counts,
            procs=self._keyed("proc_counts"),
            errors=self._keyed("errors"),
            latency=self._latency(),
            dropped=dropped,
            arch=self.arch,
            online=self._online(),
        )

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

    def _keyed(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        m = self._maps.get(name)
        if m is None:
            return None
        s = m.snapshot()
        return s.keys, s.values


def slots_by_name(names: Iterable[str], arch: str | None = None) -> list[int]:
    """Slots of syscalls given by name (``read``, ``compat:read``)."""
    return Filters(syscalls=list(names)).slots(arch)
