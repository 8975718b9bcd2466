"""The disturbance counter: ``disturb.bpf.o`` loaded, attached and read as :class:`DisturbSnapshot` s.

:class:`DisturbCounter` opens the shipped object through :class:`~percpu.objects.BpfObject`, writes its
``.rodata`` config (times, the address of flush_tlb_func, ...), loads only the programs of the dimensions
asked for, at the best hook the kernel has (``tp_btf``, then ``raw_tp``; both need kernel BTF), and reads
its per-CPU maps through percpu's typed maps. A dimension this kernel lacks a hook for (the x86 vectors on
another architecture, TLB shootdowns on a kernel where none of their three hooks works) is left out and
named in :attr:`DisturbCounter.unsupported` with the reason, never an exception; a failure to count the
rest is a typed error.

:meth:`DisturbCounter.stop` detaches the programs and keeps the maps: a snapshot taken after it covers
exactly the window in which they were attached (what a comparison with the kernel's own counters needs).
"""

from __future__ import annotations

import ctypes
import os
import time
from dataclasses import dataclass

import numpy as np

from .. import _machine
from .._loaded import Drained, LoadedCounter
from ..cpus import CpuList, machine, possible_cpus
from ..errors import AttachError, NotSupported, PercpuError, ProgramLoadError
from ..maps import Map
from ..objects import BpfObject, Link, bundled
from ..syscount import Filters
from . import _proc
from ._contract import CPU_COUNTS, RUNS, SCHED_CPU, TASK_KEY, TASK_STAT, VEC_TLB, DisturbConfig
from ._data import DisturbSnapshot, Lost, Stints, Tasks, Untimed
from ._hooks import (
    ATTACH_MODES,
    KernelBtf,
    default_irq_entries,
    irq_handlers,
    plan_vectors,
    program_names,
    softirq_handlers,
    stints_of,
    tasks_of,
    vector_handlers,
    with_idle_rows,
)
from ._tasks import TaskTable

__all__ = ["ATTACH_MODES", "DisturbCounter", "Expected"]

MAX_TABLE_ENTRIES = 1 << 22


def _entries(name: str, n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_TABLE_ENTRIES:
        raise PercpuError(f"{name}={n!r}: give a table size from 1 to {MAX_TABLE_ENTRIES}")
    return n


@dataclass(frozen=True)
class Expected:
    """The expected workload: what the CPUs are for. Every other task switched in there is a disturbance.

    A task is expected when any of the fields given matches: its process id (``pid``, the thread group as
    percpu's pid namespace numbers it: in a container, the container's pid), its name (``comm``, compared
    up to its NUL as the kernel keeps it: at most 15 bytes) or its cgroup v2 (``cgroup``: an id, or a path
    absolute or under the cgroup2 mount; the task's own cgroup, not a descendant's). Checked by the kernel
    at each switch-in; values it could not hold are refused as the syscall counter's filters refuse them
    (:class:`~percpu.errors.InvalidFilter`)."""

    pid: int | None = None
    comm: str | bytes | None = None
    cgroup: int | str | None = None

    def __post_init__(self) -> None:
        if self.pid is None and self.comm is None and self.cgroup is None:
            raise PercpuError("an expected workload names a pid, a comm or a cgroup")
        Filters(tgid=self.pid, comm=self.comm, cgroup=self.cgroup)  # the same checks, the same errors

    def describe(self) -> str:
        """``pid 1234``, ``comm app``, ``cgroup /app``, joined by " or ": what reports print."""
        parts = []
        if self.pid is not None:
            parts.append(f"pid {self.pid}")
        if self.comm is not None:
            name = self.comm if isinstance(self.comm, str) else self.comm.decode("utf-8", "backslashreplace")
            parts.append(f"comm {name}")
        if self.cgroup is not None:
            parts.append(f"cgroup {self.cgroup}")
        return " or ".join(parts)

    def config(self, cfg: DisturbConfig) -> None:
        """Written into the program's config (the cgroup resolved to its id now, so a bad path fails here)."""
        f = Filters(tgid=self.pid, comm=self.comm, cgroup=self.cgroup)
        cfg.expect_tgid = self.pid or 0
        cfg.expect_comm = f.comm_bytes() or b""
        cfg.expect_cgroup = f.cgroup_id() or 0


class DisturbCounter(LoadedCounter):
    """Count what disturbs each CPU: hard IRQs, x86 vectors, softirqs, task switches (and, on request,
    which tasks were switched in, and the time in each).

    >>> with DisturbCounter(tasks=True, times=True) as c:   # doctest: +SKIP
    ...     before = c.snapshot(); time.sleep(1); d = c.snapshot().delta(before)

    ``irq_entries`` sizes the IRQ table (default: twice the highest IRQ number the machine has, at least
    1024); ``task_entries`` the task table (a task it has no room for is counted in ``lost.tasks``). From
    the first :meth:`snapshot` on, a thread takes the rows of exited tasks out of the table whenever it is
    filling (:class:`~percpu.disturb._tasks.TaskTable`): kept by thread id up to ``task_keep`` rows
    (default ``task_entries``), then summed by name, so a long run does not fill it with tasks that are
    gone (``drain_exited=False``: never, the table fills and counts the rest as lost). ``expect`` names the
    expected workload (:class:`Expected`): its rows are marked (``Tasks.expected``). Task pids are numbered in
    percpu's own pid namespace (``pidns_ino``, its inode number; None: this process's, when it is not the
    initial one), as the syscall counter's are. ``procfs`` and ``sysfs`` are where IRQ names and kernel
    symbols are read.
    """

    _what = "the disturbance counter"
    _drained = "exited tasks out of the task table"
    _drain_thread = "percpu-task-drain"

    def __init__(
        self,
        *,
        irqs: bool = True,
        softirqs: bool = True,
        vectors: bool = True,
        switches: bool = True,
        tasks: bool = False,
        times: bool = False,
        attach: str = "auto",
        irq_entries: int | None = None,
        task_entries: int = 8192,
        task_keep: int | None = None,
        drain_exited: bool = True,
        expect: Expected | None = None,
        pidns_ino: int | None = None,
        obj_path: str | None = None,
        procfs: str = "/proc",
        sysfs: str = "/sys",
        start: bool = True,
    ) -> None:
        if attach != "auto" and attach not in ATTACH_MODES:
            raise PercpuError(f"attach mode {attach!r}: choose auto, {', '.join(ATTACH_MODES)}")
        super().__init__()
        self.irqs = irqs
        self.softirqs = softirqs
        self.vectors = vectors
        self.tasks = tasks
        self.switches = switches or tasks
        self.times = times
        self.attach = attach
        self.procfs = procfs
        self.sysfs = sysfs
        if not (irqs or softirqs or vectors or self.switches):
            raise PercpuError("nothing to count: ask for irqs, softirqs, vectors, switches or tasks")
        self.task_entries = _entries("task_entries", task_entries)
        if task_keep is not None and (isinstance(task_keep, bool) or not isinstance(task_keep, int)):
            raise PercpuError(f"task_keep={task_keep!r}: give a number of rows (0: sum exited tasks by name)")
        self.task_keep = self.task_entries if task_keep is None else max(task_keep, 0)
        self.drain_exited = drain_exited
        if expect is not None and not tasks:
            raise PercpuError("an expected workload needs tasks=True: it marks rows of the task table")
        self.expect = expect
        if pidns_ino is None:
            ns = _machine.current().pid_namespace()
            pidns_ino = ns[1] if ns is not None else 0
        self.pidns_ino = pidns_ino
        self.irq_entries = _entries("irq_entries", irq_entries) if irq_entries is not None else None
        self._obj_path = obj_path or bundled("disturb.bpf.o")
        self._topo = machine()
        self._cpus = possible_cpus()
        self._links: list[Link] = []
        self.attach_mode: str | None = None
        # What could not be counted on this kernel, and why (dimension -> reason); each attach mode that
        # failed, and why.
        self.unsupported: dict[str, str] = {}
        self.attach_failures: dict[str, str] = {}
        self.tlb_hook: str | None = None
        self._vector_slots: tuple[int, ...] = ()
        self._flush_tlb_func = 0
        self._irq_table = 0
        self._task_table: TaskTable | None = None
        self._last_stints: Stints | None = None
        if start:
            self.start()

    # --- lifetime -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Load and attach (tp_btf, then raw_tp); raises if nothing asked for can be counted."""
        with self._lock:
            if self._obj is None:
                self._start_locked()

    def _start_locked(self) -> None:
        btf_path = _machine.current().kernel_btf
        if btf_path is None:
            raise NotSupported(
                "the disturbance counter reads kernel structures through BTF (CO-RE), and this kernel has "
                "no /sys/kernel/btf/vmlinux: boot a kernel built with CONFIG_DEBUG_INFO_BTF",
                feature="kernel BTF",
                min_kernel="5.5",
            )
        btf = KernelBtf(btf_path)
        self.unsupported = {}
        tlb_hooks = self._plan_vectors(btf)
        self._irq_table = self.irq_entries or default_irq_entries(self.procfs, self.sysfs)
        modes = ATTACH_MODES if self.attach == "auto" else (self.attach,)
        errors: list[str] = []
        for mode in modes:
            hooks = list(tlb_hooks)
            while True:
                tlb = hooks[0] if hooks else None
                try:
                    self._start_object(mode, tlb)
                    self.attach_mode = mode
                    self.tlb_hook = tlb
                    if tlb_hooks and tlb is None:
                        self.unsupported["tlb_shootdown"] = "no TLB hook worked: " + "; ".join(
                            f"{h}: {self.attach_failures.get(h, 'not tried')}" for h in tlb_hooks
                        )
                    return
                except (ProgramLoadError, AttachError, NotSupported) as exc:
                    first = str(exc).splitlines()[0]
                    if getattr(exc, "errno", None) == 13:
                        raise
                    if tlb is not None:
                        # The TLB hook is the part most likely refused (trampolines): try the next one,
                        # then none, before giving up on this attach mode.
                        self.attach_failures[tlb] = first
                        hooks.pop(0)
                        continue
                    self.attach_failures[mode] = first
                    errors.append(f"{mode}: {first}")
                    break
        raise NotSupported(
            "cannot attach the disturbance counter at any hook:\n  " + "\n  ".join(errors),
            feature="irq, softirq and sched tracepoints",
            min_kernel="5.5",
        )

    def _plan_vectors(self, btf: KernelBtf) -> list[str]:
        """Which vector slots can be counted, and the TLB hooks to try in order; records what cannot."""
        self._vector_slots = ()
        self._flush_tlb_func = 0
        if not self.vectors:
            return []
        plan = plan_vectors(btf, _machine.current().architecture(), self.procfs)
        self.unsupported.update(plan.unsupported)
        self.attach_failures.update(plan.failures)
        self._vector_slots, self._flush_tlb_func = plan.slots, plan.flush_tlb_func
        return list(plan.hooks)

    def _start_object(self, mode: str, tlb: str | None) -> None:
        obj = BpfObject(self._obj_path)
        maps: dict[str, Map] = {}
        links: list[Link] = []
        try:
            cfg = DisturbConfig()
            cfg.times = int(self.times)
            cfg.flush_tlb_func = self._flush_tlb_func if tlb == "tlb_csd" else 0
            cfg.pidns_ino = self.pidns_ino if self.tasks else 0
            if self.expect is not None:
                self.expect.config(cfg)
            if len(obj.rodata()) < ctypes.sizeof(DisturbConfig):
                raise PercpuError(
                    f"{os.path.basename(self._obj_path)}: .rodata is smaller than the config: the BPF object "
                    "and this percpu do not match; reinstall"
                )
            obj.set_rodata(cfg)
            entries, exits = program_names(
                mode,
                irqs=self.irqs,
                softirqs=self.softirqs,
                vector_slots=self._vector_slots,
                tlb=tlb,
                switches=self.switches,
                tasks=self.tasks,
                times=self.times,
            )
            wanted = set(entries) | set(exits)
            missing = wanted - set(obj.programs)
            if missing:
                raise NotSupported(
                    f"{os.path.basename(self._obj_path)} has no program {', '.join(sorted(missing))}",
                    feature=", ".join(sorted(missing)),
                )
            for name, prog in obj.programs.items():
                prog.autoload = name in wanted
            obj.set_max_entries("irqs", self._irq_table)
            obj.set_max_entries("tasks", self.task_entries if self.tasks else 1)
            obj.load()
            # Entries first: a run whose entry came before its exit program was attached is counted
            # untimed, never timed from a stale start.
            for name in entries + exits:
                links.append(obj.attach(name))
            maps["cpu"] = obj.map("cpu", value=CPU_COUNTS)
            maps["sched"] = obj.map("sched", value=SCHED_CPU)
            maps["irqs"] = obj.map("irqs", value=RUNS)
            maps["softirqs"] = obj.map("softirqs", value=RUNS)
            maps["vectors"] = obj.map("vectors", value=RUNS)
            if self.tasks:
                maps["tasks"] = obj.map("tasks", key=TASK_KEY, value=TASK_STAT)
        except BaseException:
            for m in maps.values():
                m.close()
            obj.close()
            raise
        self._obj, self._maps, self._links = obj, maps, links
        self._prog_fds = [p.fd for p in obj.programs.values() if p.autoload]
        self._last_stints = None
        if self.tasks:
            self._drain_error = None
            self._task_table = TaskTable(
                maps["tasks"],
                len(self._cpus),
                self.task_entries,
                keep=self.task_keep,
                fold=self.task_entries,
                alive=_machine.current().process_exists if self.drain_exited else None,
                inserts=self._inserts,
            )

    def stop(self) -> None:
        """Detach every program; the counts stay readable (:meth:`snapshot`) until :meth:`close`."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()

    @property
    def counting(self) -> bool:
        return bool(self._links)

    def _closed_locked(self) -> None:
        self._links = []
        self._task_table = None

    # --- reading ------------------------------------------------------------------------------------

    @property
    def cpus(self) -> CpuList:
        return self._cpus

    def snapshot(self) -> DisturbSnapshot:
        """Read every map once; never resets a counter. Raises :class:`PercpuError` once closed."""
        return self._read(self._snapshot_locked)

    def _drains(self) -> bool:
        """A drainer for the task table while the programs are attached."""
        return self._task_table is not None and self.counting

    def _table_to_drain(self) -> Drained | None:
        return self._task_table

    def _inserts(self) -> int:
        """Rows the kernel added to the task table plus switch-ins it could not take (one small read)."""
        sched = self._maps["sched"].snapshot().values[0]
        return int(sched["inserts"].sum(dtype=np.uint64)) + int(sched["lost_tasks"].sum(dtype=np.uint64))

    def _snapshot_locked(self) -> DisturbSnapshot:
        now = time.monotonic()
        n = len(self._cpus)
        cpu = self._maps["cpu"].snapshot().values[0]  # (possible CPUs,) of CPU_COUNTS
        sched = self._maps["sched"].snapshot().values[0]  # (possible CPUs,) of SCHED_CPU
        # The IRQs before the tasks: their names are files to read.
        irqs = (
            irq_handlers(*self._runs("irqs"), _proc.irq_names(self.sysfs), self.times) if self.irqs else None
        )
        softirqs = softirq_handlers(*self._runs("softirqs"), self.times) if self.softirqs else None
        vectors = None
        if self._vector_slots or self.tlb_hook:
            slots = (*self._vector_slots, *((VEC_TLB,) if self.tlb_hook else ()))
            vectors = vector_handlers(*self._runs("vectors"), slots, self.times)
        tasks = self._tasks(sched["idle_switches"].astype(np.uint64)) if self.tasks else None
        # After the table: a stint that ended before this is charged there, and is not credited again.
        stints = self._stints() if tasks is not None and self.times and self.counting else None

        def u(field: str) -> np.ndarray:
            out: np.ndarray = (sched if field in (SCHED_CPU.names or ()) else cpu)[field].astype(np.uint64)
            return out

        lost = Lost(u("lost_irqs"), u("lost_softirqs"), u("lost_tasks"), skipped=self._skipped_runs())
        untimed = (
            Untimed(u("untimed_irqs"), u("untimed_softirqs"), u("untimed_vectors"), u("untimed_tasks"))
            if self.times
            else None
        )
        return DisturbSnapshot(
            time=now,
            cpus=self._cpus,
            switches=u("switches") if self.switches else np.zeros(n, dtype=np.uint64),
            gaps=u("gaps") if self.switches else np.zeros(n, dtype=np.uint64),
            irqs=irqs,
            softirqs=softirqs,
            vectors=vectors,
            tasks=tasks,
            lost=lost,
            untimed=untimed,
            online=self._online(),
            stints=stints,
        )

    def _runs(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(counts, ns) of a RUNS array, each (entries, possible CPUs)."""
        snap = self._maps[name].snapshot()
        order = np.argsort(snap.keys.astype(np.int64), kind="stable")
        values = snap.values[order]
        return values["count"].astype(np.uint64), values["ns"].astype(np.uint64)

    def _tasks(self, idle_switches: np.ndarray) -> Tasks:
        assert self._task_table is not None
        rows = with_idle_rows(self._task_table.read(), idle_switches, self._cpus)
        return tasks_of(rows, self.times)

    def _stints(self) -> Stints:
        """The stint in progress on each CPU (:func:`~percpu.disturb._hooks.stints_of`); the last ones are
        kept, so a stint credited before keeps its credit."""
        sched = self._maps["sched"]
        self._last_stints = stints_of(
            lambda: sched.snapshot().values[0],
            self._cpus,
            lambda tgid, tid: _proc.thread_runtime(self.procfs, tgid, tid),
            self._last_stints,
        )
        return self._last_stints
