"""Where the disturbance counter attaches on this kernel, and its maps' rows turned into snapshot parts.

* :func:`plan_vectors`: which x86 vectors have tracepoints here, and which of the three TLB hooks to try
  (bpf/disturb.bpf.c explains them), from the kernel's BTF and kallsyms; what cannot be counted is named
  with its reason, never an exception;
* :func:`program_names`: the programs of the dimensions asked for, in one attach mode;
* :func:`irq_handlers`, :func:`softirq_handlers`, :func:`vector_handlers`, :func:`tasks_of`: the per-CPU
  arrays read from the maps as :class:`~percpu.disturb.Handlers` and :class:`~percpu.disturb.Tasks`;
* :func:`stints_of`: the stint in progress on each CPU, from the ``sched`` map and /proc
  (:class:`~percpu.disturb.Stints`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ..cpus import CpuList
from ..errors import PercpuError
from . import _proc
from ._contract import (
    SOFTIRQ_SLOTS,
    TASK_EXPECTED,
    TASK_IDLE,
    TASK_KEY,
    TASK_KTHREAD,
    TASK_OUTSIDE,
    VEC_TLB,
    VECTOR_SLOTS,
)
from ._data import SOFTIRQ_NAMES, VECTOR_NAMES, Handlers, Stints, Tasks
from ._tasks import TaskRows

__all__ = [
    "ATTACH_MODES",
    "TLB_HOOKS",
    "KernelBtf",
    "VectorPlan",
    "default_irq_entries",
    "irq_handlers",
    "kallsyms_address",
    "plan_vectors",
    "program_names",
    "softirq_handlers",
    "stints_of",
    "tasks_of",
    "vector_handlers",
    "with_idle_rows",
]

ATTACH_MODES = ("tp_btf", "raw_tp")
_SUFFIX = {"tp_btf": "btf", "raw_tp": "raw"}
# Tracepoints of the x86 vectors counted, in slot order (the TLB slot has programs of its own).
VECTOR_TRACEPOINTS = VECTOR_NAMES[:VEC_TLB]
# How TLB shootdowns are counted, best first (see bpf/disturb.bpf.c): program, and what the kernel needs.
TLB_HOOKS = (
    ("tlb_csd", "the csd_function_entry tracepoint (Linux 6.5) and flush_tlb_func in /proc/kallsyms"),
    ("tlb_fentry", "BPF trampolines (fentry) and flush_tlb_func (Linux 5.17)"),
    ("tlb_fentry_remote", "BPF trampolines (fentry) and flush_tlb_func_remote (before Linux 5.17)"),
)


class KernelBtf:
    """Names the kernel's BTF has: a tracepoint has a ``btf_trace_<name>`` typedef, a function a FUNC of
    its name. Searched as NUL-delimited strings in the raw BTF (a string only those records use)."""

    def __init__(self, path: str) -> None:
        with open(path, "rb") as f:
            self._raw = f.read()

    def has(self, name: str) -> bool:
        return b"\0" + name.encode() + b"\0" in self._raw

    def tracepoint(self, name: str) -> bool:
        return self.has("btf_trace_" + name)


def kallsyms_address(name: str, procfs: str) -> int:
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


class VectorPlan(NamedTuple):
    """The vector slots with tracepoints here, the TLB hooks to try in order (with flush_tlb_func's
    address for the first), what cannot be counted and why, and why a hook was passed over."""

    slots: tuple[int, ...]
    hooks: tuple[str, ...]
    flush_tlb_func: int
    unsupported: dict[str, str]
    failures: dict[str, str]


def plan_vectors(btf: KernelBtf, arch: str, procfs: str) -> VectorPlan:
    unsupported: dict[str, str] = {}
    failures: dict[str, str] = {}
    if arch not in ("x86_64", "amd64"):
        unsupported["vectors"] = (
            f"the interrupt vectors are x86's; on {arch} IPIs and the local timer are IRQs (counted with the "
            "hard interrupts)"
        )
        return VectorPlan((), (), 0, unsupported, failures)
    slots = [i for i, name in enumerate(VECTOR_TRACEPOINTS) if btf.tracepoint(name + "_entry")]
    missing = [name for i, name in enumerate(VECTOR_TRACEPOINTS) if i not in slots]
    if missing:
        unsupported["vectors"] = "no irq_vectors tracepoint here for " + ", ".join(missing)
    hooks: list[str] = []
    flush = 0
    if btf.tracepoint("csd_function_entry"):
        flush = kallsyms_address("flush_tlb_func", procfs)
        if flush:
            hooks.append("tlb_csd")
        else:
            failures["tlb_csd"] = "flush_tlb_func has no address in /proc/kallsyms"
    if btf.has("flush_tlb_func"):
        hooks.append("tlb_fentry")
    elif btf.has("flush_tlb_func_remote"):
        hooks.append("tlb_fentry_remote")
    if not hooks:
        unsupported["tlb_shootdown"] = "none of its hooks exists here: " + "; ".join(
            need for _prog, need in TLB_HOOKS
        )
    return VectorPlan(tuple(slots), tuple(hooks), flush, unsupported, failures)


def default_irq_entries(procfs: str, sysfs: str) -> int:
    """Twice the highest IRQ number the machine has (sysfs and /proc/interrupts), at least 1024."""
    highest = max(_proc.irq_names(sysfs), default=0)
    try:
        with open(os.path.join(procfs, "interrupts"), encoding="utf-8", errors="replace") as f:
            _cols, rows = _proc.parse_interrupts(f.read())
        highest = max([highest, *(int(k) for k in rows if k.isdigit())])
    except (OSError, PercpuError):
        pass
    return max(1024, 2 * (highest + 1))


def program_names(
    mode: str,
    *,
    irqs: bool,
    softirqs: bool,
    vector_slots: tuple[int, ...],
    tlb: str | None,
    switches: bool,
    tasks: bool,
    times: bool,
) -> tuple[list[str], list[str]]:
    """(entry programs, exit programs) to load and attach in ``mode``. Each handler class's entry program
    comes in two builds (bpf/disturb.bpf.c): ``*_count_*`` counts, ``*_entry_*`` also takes the start that
    its exit program times; sched_switch's ``switch_count_*`` counts switches, ``switch_*`` keeps the tasks
    table too. The choice is made here, at load, so that a program of counts alone reads no option at every
    event."""
    s = _SUFFIX[mode]
    entry = "entry" if times else "count"
    entries: list[str] = []
    exits: list[str] = []
    handlers = (["irq"] if irqs else []) + (["softirq"] if softirqs else [])
    handlers += [VECTOR_TRACEPOINTS[slot] for slot in vector_slots]
    for name in handlers:
        entries.append(f"{name}_{entry}_{s}")
        exits += [f"{name}_exit_{s}"] if times else []
    if tlb:
        entries.append(tlb)
    if switches:
        entries.append(f"switch_{s}" if tasks else f"switch_count_{s}")
    return entries, exits


def _handlers(
    ids: np.ndarray, names: tuple[str, ...], counts: np.ndarray, ns: np.ndarray, times: bool
) -> Handlers:
    return Handlers(ids, names, counts[ids], ns[ids] if times else None)


def irq_handlers(counts: np.ndarray, ns: np.ndarray, names: dict[int, str], times: bool) -> Handlers:
    """Every IRQ with counts or an action now, named by its actions (``irq N`` without one)."""
    present = [i for i in names if i < len(counts)]
    counted = np.nonzero(counts.sum(axis=1))[0]
    ids = np.union1d(counted, np.array(present, dtype=np.int64)).astype(np.int64)
    return _handlers(ids, tuple(names.get(int(i), f"irq {int(i)}") for i in ids), counts, ns, times)


def softirq_handlers(counts: np.ndarray, ns: np.ndarray, times: bool) -> Handlers:
    """The kernel's softirq vectors by name, and any other slot with counts."""
    named = np.arange(len(SOFTIRQ_NAMES))
    ids = np.union1d(named, np.nonzero(counts.sum(axis=1))[0]).astype(np.int64)
    ids = ids[ids < SOFTIRQ_SLOTS]
    names = tuple(SOFTIRQ_NAMES[i] if i < len(SOFTIRQ_NAMES) else f"softirq_{i}" for i in ids)
    return _handlers(ids, names, counts, ns, times)


def vector_handlers(counts: np.ndarray, ns: np.ndarray, slots: tuple[int, ...], times: bool) -> Handlers:
    """The vector slots counted here; the TLB slot has no time (it runs inside a call-function vector)."""
    ns = ns.copy()
    ns[VEC_TLB] = 0
    ids = np.array(sorted(slots), dtype=np.int64)
    ids = ids[ids < VECTOR_SLOTS]
    return _handlers(ids, tuple(VECTOR_NAMES[i] for i in ids), counts, ns, times)


def with_idle_rows(rows: TaskRows, idle_switches: np.ndarray, cpus: CpuList) -> TaskRows:
    """The idle task's switch-ins are kept in each CPU's own counter (bpf/disturb.bpf.c): one row per CPU's
    idle task, pid 0, named as the kernel names it, with no time (the kernel keeps none)."""
    busy = np.nonzero(idle_switches)[0]
    if not len(busy):
        return rows
    ncpu = len(cpus)
    keys = np.zeros(len(busy), dtype=TASK_KEY)
    keys["comm"] = [f"swapper/{cpus[int(i)]}".encode() for i in busy]
    switches = np.zeros((len(busy), ncpu), dtype=np.uint64)
    switches[np.arange(len(busy)), busy] = idle_switches[busy]
    zeros = np.zeros_like(switches)
    flags = np.full(len(busy), TASK_KTHREAD | TASK_IDLE, dtype=np.uint32)
    return rows.concat(TaskRows(keys, switches, zeros, zeros.copy(), flags))


def tasks_of(rows: TaskRows, times: bool) -> Tasks:
    flags = rows.flags
    return Tasks(
        keys=rows.keys,
        kthread=(flags & TASK_KTHREAD) != 0,
        idle=(flags & TASK_IDLE) != 0,
        switches=rows.switches,
        ns=rows.ns if times else None,
        untimed=rows.untimed if times else None,
        expected=(flags & TASK_EXPECTED) != 0,
        outside=(flags & TASK_OUTSIDE) != 0,
    )


def stints_of(
    read: Callable[[], np.ndarray],
    cpus: CpuList,
    thread: Callable[[int, int], _proc.ThreadRun | None],
    previous: Stints | None = None,
) -> Stints:
    """The stint in progress on each CPU and its time so far: the task the ``sched`` map (``read()``:
    SCHED_CPU per possible CPU) names there, its runtime now (``thread(tgid, tid)``) less its runtime when
    it was switched in. The map is read before and after the tasks.

    A CPU's stint is credited only when it is certainly the one running while its task was read: the
    same stint in both reads (a switch between them writes another runtime at the switch-in), a task
    there (pid 0: the idle task, or a task outside percpu's pid namespace, which /proc cannot show),
    found (not exited), runnable on that CPU (not asleep, not moved: the kernel switched without the
    tracepoint), and its runtime not below the switch-in's. Otherwise 0, and that stint is charged whole
    when it ends, as before; but a stint credited by ``previous`` (the last snapshot's) and still in
    progress keeps at least that credit, so that no window takes back what one before it was given while
    the kernel has not charged it yet."""
    before = read()
    n = len(cpus)
    keys = np.zeros(n, dtype=TASK_KEY)
    ns = np.zeros(n, dtype=np.uint64)
    for i in range(n):
        key = np.frombuffer(before["key"][i].tobytes(), TASK_KEY)[0]
        tid, tgid = int(key["pid"]), int(key["tgid"])
        if not tid or not tgid:
            continue
        run = thread(tgid, tid)
        began = int(before["task_runtime"][i])
        if run is None or run.state != "R" or run.cpu != cpus[i] or run.runtime_ns < began:
            continue
        keys[i] = key
        ns[i] = run.runtime_ns - began
    task = before["task"].astype(np.uint64)
    start = before["task_runtime"].astype(np.uint64)
    if previous is not None:
        again = (previous.task == task) & (previous.start == start) & (previous.ns > 0)
        again &= previous.keys["pid"] != 0
        keys[again] = previous.keys[again]
        ns[again] = np.maximum(ns[again], previous.ns[again])
    if ns.any():
        after = read()
        same = (
            (task == after["task"])
            & (start == after["task_runtime"])
            & (before["key"] == after["key"]).all(axis=1)
        )
        ns[~same] = 0
        keys[~same] = np.zeros((), TASK_KEY)
    return Stints(keys, ns, task, start)
