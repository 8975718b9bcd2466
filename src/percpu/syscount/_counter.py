"""The syscall counter: :class:`SyscallCounter`'s options, lifetime and reads.

It configures and loads ``syscount.bpf.o`` through a :class:`~._load.Loader` (shipped compiled: no
compiler at run time), reads its per-CPU maps into :class:`~._data.SyscallSnapshot` values (batch reads,
never a reset), and keeps the per-process table from filling (:mod:`._procs`).
"""

from __future__ import annotations

import functools
import time

import numpy as np

from .. import _machine
from .. import syscalls as _names
from .._contract import LOST_PROCESSES, NR_SLOTS
from .._loaded import Drained, LoadedCounter
from ..cpulist import CpuList
from ..cpus import machine, possible_cpus
from ..errors import PercpuError
from ..objects import bundled
from . import _load
from ._data import Lost, SyscallSnapshot, merge_latency
from ._filters import Filters
from ._procs import ProcessTable, flush_pending
from ._reads import CpuReads

__all__ = ["COMPAT_CHECKS", "MAX_TABLE_ENTRIES", "SyscallCounter"]

# The largest opt-in table taken (keys): 16M keys of 8 bytes per possible CPU is already gigabytes.
MAX_TABLE_ENTRIES = 1 << 24


class SyscallCounter(LoadedCounter):
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

    ``one_cpu_reads``: read the per-CPU arrays (the syscall counts, the latency rows) one CPU at a time,
    each online CPU's slots at every snapshot and an offline CPU's once after it went offline, as a kernel
    with BPF_F_CPU (Linux 7.0) allows: on a VM with 2 CPUs online of 32 possible, a 16th of the bytes.
    True (the default) does so where the kernel has BPF_F_CPU and it copies less, and reads every possible
    CPU's slots elsewhere; False always does (see :mod:`._reads`). The per-process, errno and latency
    hashes are read whole.
    """

    # Latency at tp_btf: start times in a per-CPU slot spilled at sched_switch (True), or in the task's
    # store at every call (False, the path of raw_tp, tracepoint and kernels that refuse the former).
    latency_percpu: bool = True
    # Per-process counts: a per-CPU cache in front of the hash, flushed on each CPU before every read
    # (True), or the hash at every call (False, and kernels that cannot run a program on a given CPU).
    process_cache: bool = True

    _what = "the syscall counter"
    _drained = "exited processes out of the per-process table"
    _drain_thread = "percpu-process-drain"

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
        one_cpu_reads: bool = True,
    ) -> None:
        if attach != "auto" and attach not in _load.ATTACH_MODES:
            raise PercpuError(f"attach mode {attach!r}: choose auto, {', '.join(_load.ATTACH_MODES)}")
        super().__init__()
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
        self._reads = CpuReads(self._cpus, one_cpu=one_cpu_reads)
        self.arch = _names.machine_arch()
        self._own_obj_path = obj_path
        self._obj_path = obj_path or bundled("syscount.bpf.o")
        self._nobtf = False
        self._flush_fd = -1
        self._proc_table: ProcessTable | None = None
        self.attach_mode: str | None = None
        self.attach_failures: dict[str, str] = {}
        self.needs_exit = self.filters.failed_only or errors or latency
        # Nothing but counting: a dedicated program with the fewest instructions does it.
        self._default_mode = not (self.needs_exit or per_process) and self.filters == Filters()
        self._config = _load.configure(
            self.filters,
            per_process=per_process,
            errors=errors,
            latency=latency,
            detect_compat=self.detect_compat,
            arch=self.arch,
        )
        if start:
            self.start()

    # --- lifetime -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Load and attach, trying attach modes in order of cost; raises if none works."""
        with self._lock:
            self._start_locked()

    def _start_locked(self) -> None:
        if self._obj is not None:
            return
        self._nobtf = not _load.kernel_btf() and self._own_obj_path is None
        default = "syscount_nobtf.bpf.o" if self._nobtf else "syscount.bpf.o"
        self._obj_path = self._own_obj_path or bundled(default)
        loaded = self._loader().load()
        self._obj, self._maps, self._flush_fd, self.attach_mode = loaded
        # The counting programs' fds, asked once: which programs load does not change once loaded, and
        # asking libbpf at every snapshot cost two calls per program (a read's fixed cost).
        self._prog_fds = [p.fd for p in self._obj.programs.values() if p.autoload and p.name != "flush_procs"]
        if self.per_process:
            self._drain_error = None
            self._proc_table = self._process_table()

    def _loader(self) -> _load.Loader:
        return _load.Loader(
            config=self._config,
            path=self._obj_path,
            nobtf=self._nobtf,
            attach=self.attach,
            per_process=self.per_process,
            errors=self.errors,
            latency=self.latency,
            needs_exit=self.needs_exit,
            default_mode=self._default_mode,
            proc_entries=self.proc_entries,
            errors_entries=self.errors_entries,
            latency_entries=self.latency_entries,
            latency_percpu=self.latency_percpu,
            process_cache=self.process_cache,
            cpus=self._cpus,
            failures=self.attach_failures,
        )

    def _process_table(self) -> ProcessTable:
        # Pids of the kernel's own namespace (the no-BTF object inside a container) cannot be checked
        # from here: nothing is taken out then, and a full table counts what it loses.
        foreign = self._nobtf and bool(self._config.pidns_ino)
        cache = self._maps.get("proc_cache")
        return ProcessTable(
            self._maps["proc_counts"],
            len(self._cpus),
            keep=self.proc_keep,
            fold=self.proc_entries,
            alive=None if foreign else _machine.current().process_exists,
            flush=functools.partial(flush_pending, self._flush_fd, cache, self._cpus)
            if cache is not None
            else None,
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
    def reads_one_cpu(self) -> bool:
        """Whether snapshots read the per-CPU arrays one CPU at a time, the online CPUs' slots and an offline
        CPU's once after it went offline (``one_cpu_reads`` and a kernel with BPF_F_CPU)."""
        return self._reads.one_cpu

    @property
    def uses_process_cache(self) -> bool:
        """Whether per-process counts gather in a per-CPU cache in front of the hash (:attr:`process_cache`),
        rather than in the hash at every call. Known once started."""
        return bool(self._config.proc_cache)

    def _closed_locked(self) -> None:
        self._proc_table = None

    # --- reading ------------------------------------------------------------------------------------

    @property
    def cpus(self) -> CpuList:
        return self._cpus

    def snapshot(self) -> SyscallSnapshot:
        """Read every map once (batch reads); never resets a counter and never blocks counting.

        Raises :class:`PercpuError` once the counter is closed, also when another thread closes it."""
        return self._read(self._snapshot_locked)

    def _drains(self) -> bool:
        """A drainer for the per-process table, where it can tell the table fills and who exited."""
        t = self._proc_table
        return t is not None and t.events is not None and t.alive is not None

    def _table_to_drain(self) -> Drained | None:
        return self._proc_table

    def _proc_events(self) -> int:
        """Keys the kernel inserted into the per-process table plus calls it could not take: grows
        whenever the table fills (two small reads, not the table)."""
        inserted = int(self._maps["proc_inserts"].snapshot().values.sum(dtype=np.uint64))
        lost = self._maps["lost"].snapshot()
        return inserted + int(lost.values[lost.keys == LOST_PROCESSES].sum(dtype=np.uint64))

    def _snapshot_locked(self) -> SyscallSnapshot:
        now = time.monotonic()
        # Before the reads: a CPU seen offline here has made its last calls, which the reads then hold.
        online = self._online()
        self._reads.begin(online)
        counts = _by_cpu(*self._reads.read("counts", self._maps["counts"]), len(self.cpus))
        dropped = int(self._reads.read("dropped", self._maps["dropped"])[1].sum())
        # The per-process rows before the lost counts: the flush that moves the per-CPU caches into the
        # table counts there what the table cannot take.
        procs = self._procs()
        per_table = np.zeros(len(Lost._fields), dtype=np.uint64)
        # Only a full table (per-process, errno, latency) or a latency start with nowhere to go counts in
        # lost: without them it holds zeros, and reading it would be a syscall for nothing.
        if self.per_process or self.errors or self.latency:
            lost_keys, lost = self._reads.read("lost", self._maps["lost"])
            per_table[lost_keys.astype(np.int64)] = lost.sum(axis=1, dtype=np.uint64)
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
            online=online,
            lost=Lost(*(int(v) for v in per_table)),
        )

    def _latency(self) -> tuple[np.ndarray, np.ndarray] | None:
        overflow = self._keyed("latency")
        if overflow is None:
            return None
        # The index before the rows: a row taken in between then reads as not yet taken (counted next
        # time), never as counts without a slot.
        index = self._reads.read("lat_index", self._maps["lat_index"])[1]["row"][0]
        rows = self._reads.read("lat_rows", self._maps["lat_rows"])[1]["n"]
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


def _by_cpu(keys: np.ndarray, values: np.ndarray, ncpus: int) -> np.ndarray:
    """The counts map's values (keys, CPUs) as a new (CPUs, NR_SLOTS) array: one copy where the keys are
    every slot in order (an array's are), rather than zeros and a scatter."""
    if len(keys) == NR_SLOTS and np.array_equal(keys, np.arange(NR_SLOTS)):
        return np.array(values.T, dtype=np.uint64, order="C")
    counts = np.zeros((ncpus, NR_SLOTS), dtype=np.uint64)
    counts[:, keys.astype(np.int64)] = values.T
    return counts


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
