"""The disturbance counter: ``disturb.bpf.o`` loaded, attached and read as :class:`DisturbSnapshot` s.

:class:`DisturbCounter` opens the shipped object through :class:`~percpu.objects.BpfObject`, writes its
``.rodata`` config (times, tasks, the address of flush_tlb_func), loads only the programs of the dimensions
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
import threading
import time
from typing import Any

import numpy as np

from .. import _libbpf, _machine
from ..cpus import CpuList, machine, possible_cpus
from ..errors import AttachError, NotSupported, PercpuError, ProgramLoadError
from ..maps import Map
from ..objects import BpfObject, Link, bundled
from . import _proc
from ._contract import (
    CPU_COUNTS,
    RUNS,
    SCHED_CPU,
    SOFTIRQ_SLOTS,
    TASK_IDLE,
    TASK_KEY,
    TASK_KTHREAD,
    TASK_STAT,
    VEC_TLB,
    VECTOR_SLOTS,
    DisturbConfig,
)
from ._data import SOFTIRQ_NAMES, VECTOR_NAMES, DisturbSnapshot, Handlers, Lost, Tasks, Untimed

__all__ = ["ATTACH_MODES", "DisturbCounter"]

ATTACH_MODES = ("tp_btf", "raw_tp")
_SUFFIX = {"tp_btf": "btf", "raw_tp": "raw"}
# Tracepoints of the x86 vectors counted, in slot order (the TLB slot has programs of its own).
_VECTOR_TRACEPOINTS = VECTOR_NAMES[:VEC_TLB]
# How TLB shootdowns are counted, best first (see bpf/disturb.bpf.c): program, and what the kernel needs.
_TLB_HOOKS = (
    ("tlb_csd", "the csd_function_entry tracepoint (Linux 6.5) and flush_tlb_func in /proc/kallsyms"),
    ("tlb_fentry", "BPF trampolines (fentry) and flush_tlb_func (Linux 5.17)"),
    ("tlb_fentry_remote", "BPF trampolines (fentry) and flush_tlb_func_remote (before Linux 5.17)"),
)
MAX_TABLE_ENTRIES = 1 << 22


def _entries(name: str, n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_TABLE_ENTRIES:
        raise PercpuError(f"{name}={n!r}: give a table size from 1 to {MAX_TABLE_ENTRIES}")
    return n


class _Btf:
    """Names the kernel's BTF has: a tracepoint has a ``btf_trace_<name>`` typedef, a function a FUNC of
    its name. Searched as NUL-delimited strings in the raw BTF (a string only those records use)."""

    def __init__(self, path: str) -> None:
        with open(path, "rb") as f:
            self._raw = f.read()

    def has(self, name: str) -> bool:
        return b"\0" + name.encode() + b"\0" in self._raw

    def tracepoint(self, name: str) -> bool:
        return self.has("btf_trace_" + name)


def _kallsyms_address(name: str, procfs: str) -> int:
    """Address of a kernel symbol from kallsyms, 0 when absent or hidden (kptr_restrict shows zeros)."""
    tail = f" {name}\n".encode()
    try:
        with open(os.path.join(procfs, "kallsyms"), "rb") as f:
            data = f.read()
    except OSError:
        return 0
    at = data.find(tail)
    while at >= 0:
        start = data.rfind(b"\n", 0, at) + 1
        fields = data[start:at].split()
        if len(fields) == 2 and fields[1] in (b"t", b"T"):
            return int(fields[0], 16)
        at = data.find(tail, at + 1)
    return 0


class DisturbCounter:
    """Count what disturbs each CPU: hard IRQs, x86 vectors, softirqs, task switches (and, on request,
    which tasks were switched in, and the time in each).

    >>> with DisturbCounter(tasks=True, times=True) as c:   # doctest: +SKIP
    ...     before = c.snapshot(); time.sleep(1); d = c.snapshot().delta(before)

    ``irq_entries`` sizes the IRQ table (default: twice the highest IRQ number the machine has, at least
    1024); ``task_entries`` the task table (a task it has no room for is counted in ``lost.tasks``).
    ``procfs`` and ``sysfs`` are where IRQ names and kernel symbols are read.
    """

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
        obj_path: str | None = None,
        procfs: str = "/proc",
        sysfs: str = "/sys",
        start: bool = True,
    ) -> None:
        if attach != "auto" and attach not in ATTACH_MODES:
            raise PercpuError(f"attach mode {attach!r}: choose auto, {', '.join(ATTACH_MODES)}")
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
        self.irq_entries = _entries("irq_entries", irq_entries) if irq_entries is not None else None
        self._obj_path = obj_path or bundled("disturb.bpf.o")
        self._topo = machine()
        self._cpus = possible_cpus()
        self._obj: BpfObject | None = None
        self._links: list[Link] = []
        self._maps: dict[str, Map] = {}
        self._lock = threading.RLock()
        self.attach_mode: str | None = None
        # What could not be counted on this kernel, and why (dimension -> reason); each attach mode that
        # failed, and why.
        self.unsupported: dict[str, str] = {}
        self.attach_failures: dict[str, str] = {}
        self.tlb_hook: str | None = None
        self._vector_slots: tuple[int, ...] = ()
        self._flush_tlb_func = 0
        self._irq_table = 0
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
        btf = _Btf(btf_path)
        self.unsupported = {}
        tlb_hooks = self._plan_vectors(btf)
        self._irq_table = self.irq_entries or self._default_irq_entries()
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

    def _plan_vectors(self, btf: _Btf) -> list[str]:
        """Which vector slots can be counted, and the TLB hooks to try in order; records what cannot."""
        self._vector_slots = ()
        if not self.vectors:
            return []
        arch = _machine.current().architecture()
        if arch not in ("x86_64", "amd64"):
            self.unsupported["vectors"] = (
                f"the interrupt vectors are x86's; on {arch} IPIs and the local timer are IRQs (counted "
                "with the hard interrupts)"
            )
            return []
        slots = [i for i, name in enumerate(_VECTOR_TRACEPOINTS) if btf.tracepoint(name + "_entry")]
        missing = [name for i, name in enumerate(_VECTOR_TRACEPOINTS) if i not in slots]
        if missing:
            self.unsupported["vectors"] = "no irq_vectors tracepoint here for " + ", ".join(missing)
        hooks: list[str] = []
        self._flush_tlb_func = 0
        if btf.tracepoint("csd_function_entry"):
            self._flush_tlb_func = _kallsyms_address("flush_tlb_func", self.procfs)
            if self._flush_tlb_func:
                hooks.append("tlb_csd")
            else:
                self.attach_failures["tlb_csd"] = "flush_tlb_func has no address in /proc/kallsyms"
        if btf.has("flush_tlb_func"):
            hooks.append("tlb_fentry")
        elif btf.has("flush_tlb_func_remote"):
            hooks.append("tlb_fentry_remote")
        if not hooks:
            self.unsupported["tlb_shootdown"] = "none of its hooks exists here: " + "; ".join(
                need for _prog, need in _TLB_HOOKS
            )
        self._vector_slots = tuple(slots)
        return hooks

    def _default_irq_entries(self) -> int:
        highest = max(_proc.irq_names(self.sysfs), default=0)
        try:
            with open(os.path.join(self.procfs, "interrupts"), encoding="utf-8", errors="replace") as f:
                _cols, rows = _proc.parse_interrupts(f.read())
            highest = max([highest, *(int(k) for k in rows if k.isdigit())])
        except (OSError, PercpuError):
            pass
        return max(1024, 2 * (highest + 1))

    def _programs(self, mode: str, tlb: str | None) -> tuple[list[str], list[str]]:
        """(entry programs, exit programs) to load and attach."""
        s = _SUFFIX[mode]
        entries: list[str] = []
        exits: list[str] = []
        if self.irqs:
            entries.append(f"irq_entry_{s}")
            exits += [f"irq_exit_{s}"] if self.times else []
        if self.softirqs:
            entries.append(f"softirq_entry_{s}")
            exits += [f"softirq_exit_{s}"] if self.times else []
        for slot in self._vector_slots:
            name = _VECTOR_TRACEPOINTS[slot]
            entries.append(f"{name}_entry_{s}")
            exits += [f"{name}_exit_{s}"] if self.times else []
        if tlb:
            entries.append(tlb)
        if self.switches:
            entries.append(f"switch_{s}")
        return entries, exits

    def _start_object(self, mode: str, tlb: str | None) -> None:
        obj = BpfObject(self._obj_path)
        maps: dict[str, Map] = {}
        links: list[Link] = []
        try:
            cfg = DisturbConfig()
            cfg.times = int(self.times)
            cfg.tasks = int(self.tasks)
            cfg.flush_tlb_func = self._flush_tlb_func if tlb == "tlb_csd" else 0
            if len(obj.rodata()) < ctypes.sizeof(DisturbConfig):
                raise PercpuError(
                    f"{os.path.basename(self._obj_path)}: .rodata is smaller than the config: the BPF object "
                    "and this percpu do not match; reinstall"
                )
            obj.set_rodata(cfg)
            entries, exits = self._programs(mode, tlb)
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

    def stop(self) -> None:
        """Detach every program; the counts stay readable (:meth:`snapshot`) until :meth:`close`."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()

    @property
    def counting(self) -> bool:
        return bool(self._links)

    def close(self) -> None:
        """Detach the programs and free the maps (waits for a snapshot running in another thread)."""
        with self._lock:
            maps, self._maps = self._maps, {}
            obj, self._obj = self._obj, None
            self._links = []
        for m in maps.values():
            m.close()
        if obj is not None:
            obj.close()

    def __enter__(self) -> DisturbCounter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ------------------------------------------------------------------------------------

    @property
    def cpus(self) -> CpuList:
        return self._cpus

    def programs(self) -> list[Any]:
        """The loaded programs (run counts and run time when bpf_stats are on)."""
        with self._lock:
            if self._obj is None:
                return []
            return [p for p in self._obj.programs.values() if p.autoload]

    def snapshot(self) -> DisturbSnapshot:
        """Read every map once; never resets a counter. Raises :class:`PercpuError` once closed."""
        with self._lock:
            if self._obj is None:
                raise PercpuError("the disturbance counter is not running (closed, or start() not called)")
            return self._snapshot_locked()

    def _snapshot_locked(self) -> DisturbSnapshot:
        now = time.monotonic()
        n = len(self._cpus)
        cpu = self._maps["cpu"].snapshot().values[0]  # (possible CPUs,) of CPU_COUNTS
        sched = self._maps["sched"].snapshot().values[0]  # (possible CPUs,) of SCHED_CPU
        irqs = self._irqs() if self.irqs else None  # before the tasks: the IRQ names are files to read
        softirqs = self._softirqs() if self.softirqs else None
        vectors = self._vectors() if self._vector_slots or self.tlb_hook else None
        tasks = self._tasks(sched["idle_switches"].astype(np.uint64)) if self.tasks else None

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
        )

    def _runs(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(counts, ns) of a RUNS array, each (entries, possible CPUs)."""
        snap = self._maps[name].snapshot()
        order = np.argsort(snap.keys.astype(np.int64), kind="stable")
        values = snap.values[order]
        return values["count"].astype(np.uint64), values["ns"].astype(np.uint64)

    def _handlers(
        self, ids: np.ndarray, names: tuple[str, ...], counts: np.ndarray, ns: np.ndarray
    ) -> Handlers:
        return Handlers(ids, names, counts[ids], ns[ids] if self.times else None)

    def _irqs(self) -> Handlers:
        counts, ns = self._runs("irqs")
        names = _proc.irq_names(self.sysfs)
        present = [i for i in names if i < len(counts)]
        counted = np.nonzero(counts.sum(axis=1))[0]
        ids = np.union1d(counted, np.array(present, dtype=np.int64)).astype(np.int64)
        return self._handlers(ids, tuple(names.get(int(i), f"irq {int(i)}") for i in ids), counts, ns)

    def _softirqs(self) -> Handlers:
        counts, ns = self._runs("softirqs")
        named = np.arange(len(SOFTIRQ_NAMES))
        ids = np.union1d(named, np.nonzero(counts.sum(axis=1))[0]).astype(np.int64)
        ids = ids[ids < SOFTIRQ_SLOTS]
        names = tuple(SOFTIRQ_NAMES[i] if i < len(SOFTIRQ_NAMES) else f"softirq_{i}" for i in ids)
        return self._handlers(ids, names, counts, ns)

    def _vectors(self) -> Handlers:
        counts, ns = self._runs("vectors")
        ns[VEC_TLB] = 0  # counted only: its time is inside the call-function vector that carried it
        slots = list(self._vector_slots) + ([VEC_TLB] if self.tlb_hook else [])
        ids = np.array(sorted(slots), dtype=np.int64)
        ids = ids[ids < VECTOR_SLOTS]
        return self._handlers(ids, tuple(VECTOR_NAMES[i] for i in ids), counts, ns)

    def _tasks(self, idle_switches: np.ndarray) -> Tasks:
        snap = self._maps["tasks"].snapshot()
        values = snap.values  # (n, possible CPUs) of TASK_STAT
        n, ncpu = len(values), len(self._cpus)
        flags = np.bitwise_or.reduce(values["flags"], axis=1) if n else np.zeros(0, np.uint32)
        keys = np.array(snap.keys, dtype=TASK_KEY)
        switches = values["switches"].astype(np.uint64).reshape(n, ncpu)
        ns = values["ns"].astype(np.uint64).reshape(n, ncpu)
        untimed = values["untimed"].astype(np.uint64).reshape(n, ncpu)
        # The idle task's switch-ins are kept in each CPU's own counter (bpf/disturb.bpf.c): one row per
        # CPU's idle task, pid 0, named as the kernel names it, with no time (the kernel keeps none).
        busy = np.nonzero(idle_switches)[0]
        if len(busy):
            idle_keys = np.zeros(len(busy), dtype=TASK_KEY)
            idle_keys["comm"] = [f"swapper/{self._cpus[int(i)]}".encode() for i in busy]
            idle_rows = np.zeros((len(busy), ncpu), dtype=np.uint64)
            idle_rows[np.arange(len(busy)), busy] = idle_switches[busy]
            keys = np.concatenate([keys, idle_keys])
            switches = np.concatenate([switches, idle_rows])
            ns = np.concatenate([ns, np.zeros_like(idle_rows)])
            untimed = np.concatenate([untimed, np.zeros_like(idle_rows)])
            flags = np.concatenate([flags, np.full(len(busy), TASK_KTHREAD | TASK_IDLE, dtype=flags.dtype)])
        return Tasks(
            keys=keys,
            kthread=(flags & TASK_KTHREAD) != 0,
            idle=(flags & TASK_IDLE) != 0,
            switches=switches,
            ns=ns if self.times else None,
            untimed=untimed if self.times else None,
        )

    def _skipped_runs(self) -> int:
        """Runs the kernel skipped, summed over the loaded programs (0 before Linux 5.12)."""
        if self._obj is None:
            return 0
        lib = _libbpf.libbpf()
        total = 0
        for p in self._obj.programs.values():
            if p.autoload:
                try:
                    total += lib.prog_recursion_misses(p.fd)
                except OSError:
                    continue
        return total

    def _online(self) -> CpuList | None:
        try:
            return self._topo.online
        except PercpuError:
            return None
