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

import ctypes
import functools
import os
import threading
import time
from typing import Any

import numpy as np

from .. import _libbpf, _machine, features
from .. import syscalls as _names
from .._contract import (
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
from .._contract import LAT_INDEX as _LAT_INDEX
from .._contract import LAT_ROW as _LAT_ROW
from .._contract import PercpuConfig as _Config
from .._machine import cgroup2_root, ensure_tracefs
from ..cpus import CpuList, machine, possible_cpus
from ..errors import AttachError, NotSupported, PercpuError, ProgramLoadError
from ..maps import Map
from ..objects import BpfObject, bundled
from ._data import (
    FOLDED_TGID,
    Keyed,
    Lost,
    SyscallDelta,
    SyscallSnapshot,
    errno_name,
    folded_keys,
    merge_latency,
    slot_name,
)
from ._filters import COMM_LEN, PID_MAX_LIMIT, Filters, pid_namespace
from ._procs import PROC_CACHE, Drainer, ProcessTable, flush_caches, flush_pending

__all__ = [
    "ATTACH_MODES",
    "COMM_LEN",
    "COMPAT_BASE",
    "COMPAT_CHECKS",
    "ERR_KEY",
    "FOLDED_TGID",
    "LAT_BUCKETS",
    "LAT_KEY",
    "LOST_PROCESSES",
    "MAX_TABLE_ENTRIES",
    "NR_SLOTS",
    "PID_MAX_LIMIT",
    "PROC_KEY",
    "ROW_BUCKETS",
    "ROW_FIRST_BUCKET",
    "Filters",
    "Keyed",
    "Lost",
    "ProcessTable",
    "SyscallCounter",
    "SyscallDelta",
    "SyscallSnapshot",
    "cgroup2_root",
    "ensure_tracefs",
    "errno_name",
    "folded_keys",
    "merge_latency",
    "pid_namespace",
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
_MIN_KERNEL = {
    "tp_btf": f"{features.TP_BTF.needs} with BTF",
    "raw_tp": features.RAW_TP.needs,
    "tracepoint": f"{features.TRACEPOINT.needs} and tracefs",
}


# The largest opt-in table taken (keys): 16M keys of 8 bytes per possible CPU is already gigabytes.
MAX_TABLE_ENTRIES = 1 << 24


def _btf_available() -> bool:
    return _machine.current().kernel_btf is not None


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
        self._drainer: Drainer | None = None
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
            min_kernel=features.RAW_TP.since,
        )

    def _start(self, mode: str) -> None:
        feats = features.kernel_features()
        if mode == "tracepoint":
            ensure_tracefs()
        # Paths for kernels without TASK_BTF or TASK_STORAGE (helpers instead of the task pointer, start times
        # by thread id)
        # are chosen per feature, so each mode works wherever its own needs are met.
        self._config.task_btf = int(feats.task_btf and not self._nobtf)
        self._config.task_storage = int(feats.task_storage and not self._nobtf)
        # Latency at tp_btf keeps the start of the call in flight in a per-CPU slot, which a sched_switch
        # program spills to the task's store when the task leaves the CPU mid-call (about 90 ns less per
        # call than two task storage lookups). A kernel that refuses that program gets the previous path:
        # the start in the task's store at every sys_enter.
        # Per-process counts likewise gather in a per-CPU cache when the kernel can run the flush program
        # on a given CPU (features.TEST_RUN_ON_CPU); else each call looks up the hash.
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
            # (features.TASK_STORAGE) cannot create that map at all, and an unused LRU hash is allocated
            # up front.
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
                self._maps["proc_cache"] = obj.map("proc_cache", value=PROC_CACHE)
                self._flush_fd = obj.programs[flush].fd
                flush_caches(
                    self._flush_fd, self._cpus
                )  # refused here (no BPF_PROG_TEST_RUN on a CPU): the hash path instead
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
                flush=(
                    functools.partial(flush_pending, self._flush_fd, self._maps["proc_cache"], self._cpus)
                    if flush
                    else None
                ),
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

    @property
    def uses_start_slot(self) -> bool:
        """Whether latency start times are kept in a per-CPU slot, moved to the task's store at sched_switch
        (tp_btf, :attr:`latency_percpu`), rather than in the store at every call. Known once started."""
        return bool(self._config.lat_percpu)

    @property
    def uses_process_cache(self) -> bool:
        """Whether per-process counts gather in a per-CPU cache in front of the hash (:attr:`process_cache`),
        rather than in the hash at every call. Known once started."""
        return bool(self._config.proc_cache)

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
            self._drainer = Drainer(self._drain_if_due)
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
        """Runs the kernel skipped, summed over the attached programs (0 on a kernel without
        features.RECURSION_MISSES)."""
        if self._obj is None:
            return 0
        lib = _libbpf.libbpf()
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

    def _procs(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self._proc_table is None:
            return None
        return self._proc_table.read()

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
