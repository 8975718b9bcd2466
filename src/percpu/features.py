"""What the running kernel can do: each feature declared once, with the Linux version that added it, and
probed once and remembered. The one place maps, the collectors and ``percpu doctor`` ask.

A :class:`Feature` is a declaration (``Feature("BPF_F_CPU ...", "7.0")``), as cilium/ebpf's
``NewFeatureTest(name, fn, "5.6")`` is: errors raised for a missing feature (:meth:`Feature.missing`),
the doctor and the docs quote it rather than writing the version again. The declarations are checked
against probes on the running kernel, never against its version number: distributions backport.

Each answer is memoized per kernel (the machine in use's: the real one, or a test's fake), so a test's
fake never sees an answer the real kernel gave. A probe that cannot run for want of privileges answers
"no" for now and is asked again next time: callers then take the path that works everywhere.

Some answers are also learned from the first real attempt (batch operations per map type, lookup-and-delete
on per-CPU hashes): a map that sees the kernel accept or refuse records it with :func:`record`, and every
later caller asks :func:`known` first. :func:`batch_ops` and :func:`cpu_flag` probe on a map of their own
when nothing is known yet, and remember the answer in the same place, so a probe and a real attempt never
disagree.
"""

from __future__ import annotations

import errno as _errno
import functools
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from . import _fork, _machine
from ._uapi import BPF_F_CPU, FuncId, MapType, ProgType
from .errors import NOT_SUPPORTED_ERRNOS, NotSupported, PercpuError, from_errno
from .layout import Layout

__all__ = [
    "ALL",
    "BATCH_ARRAY",
    "BATCH_HASH",
    "BATCH_OPS",
    "CPU_FLAG",
    "LOOKUP_AND_DELETE",
    "PROBE_MAP_NAME",
    "Feature",
    "KernelFeatures",
    "batch_feature",
    "batch_ops",
    "cpu_flag",
    "forget",
    "kernel_features",
    "known",
    "record",
]


@dataclass(frozen=True)
class Feature:
    """A kernel ability percpu uses: ``name`` as errors and the doctor say it, and ``since``, the mainline
    Linux version that added it."""

    name: str
    since: str

    @property
    def needs(self) -> str:
        """``"Linux 5.13"``: how messages say what a kernel without it lacks."""
        return f"Linux {self.since}"

    def missing(self, message: str, *, errno: int | None = None, map_name: str | None = None) -> NotSupported:
        """The error for a kernel without this feature: ``message`` then what adds it."""
        return NotSupported(
            f"{message} ({self.name}: {self.needs} adds it)",
            feature=self.name,
            min_kernel=self.since,
            errno=errno,
            map_name=map_name,
        )


# Maps.
BATCH_HASH = Feature("batch operations on hash maps", "5.6")
BATCH_ARRAY = Feature("batch operations on array maps", "5.13")
LOOKUP_AND_DELETE_PERCPU_HASH = Feature("lookup-and-delete on per-CPU hashes", "5.14")
CPU_FLAG_FEATURE = Feature("BPF_F_CPU, one CPU's value per operation", "7.0")
# Programs: where the syscall counter attaches, and what its optional paths need.
TRACEPOINT = Feature("BPF programs on classic tracepoints", "4.7")
RAW_TP = Feature("raw tracepoint programs (raw_tp)", "4.17")
TP_BTF = Feature("BTF-typed tracepoint programs (tp_btf) with kernel BTF", "5.5")
NS_PID = Feature("bpf_get_ns_current_pid_tgid()", "5.7")
TEST_RUN_ON_CPU = Feature("BPF_PROG_TEST_RUN on a chosen CPU", "5.10")
TASK_BTF = Feature("bpf_get_current_task_btf()", "5.11")
TASK_STORAGE = Feature("task local storage in tracing programs", "5.11")
RECURSION_MISSES = Feature("per-program recursion_misses", "5.12")
TASK_PT_REGS = Feature("bpf_task_pt_regs()", "5.15")

ALL = (
    TRACEPOINT,
    RAW_TP,
    TP_BTF,
    BATCH_HASH,
    NS_PID,
    TEST_RUN_ON_CPU,
    TASK_BTF,
    TASK_STORAGE,
    RECURSION_MISSES,
    BATCH_ARRAY,
    LOOKUP_AND_DELETE_PERCPU_HASH,
    TASK_PT_REGS,
    CPU_FLAG_FEATURE,
)

# Keys of what was learned (per map type where it matters).
BATCH_OPS = "batch ops"
LOOKUP_AND_DELETE = "lookup_and_delete"
CPU_FLAG = "BPF_F_CPU"

# The map types a batch probe can create, each with whether its values are per-CPU.
_BATCH_PROBE_TYPES: dict[int, bool] = {
    t: t.percpu
    for t in (
        MapType.HASH,
        MapType.ARRAY,
        MapType.PERCPU_HASH,
        MapType.PERCPU_ARRAY,
        MapType.LRU_HASH,
        MapType.LRU_PERCPU_HASH,
    )
}


def batch_feature(map_type: int) -> Feature:
    """The declaration of batch operations for ``map_type``: arrays got them later than hashes."""
    return BATCH_ARRAY if map_type in (MapType.ARRAY, MapType.PERCPU_ARRAY) else BATCH_HASH


_lock = threading.Lock()


@_fork.at_fork_in_child
def _renew_lock() -> None:
    global _lock  # noqa: PLW0603 - a thread holding it at fork() is not in the child
    _lock = threading.Lock()


_answers: weakref.WeakKeyDictionary[Any, dict[tuple[str, int], bool]] = weakref.WeakKeyDictionary()


def known(feature: str, map_type: int = 0) -> bool | None:
    """What was learned about ``feature`` (for ``map_type``) on the kernel in use; None if not yet."""
    with _lock:
        return _answers.get(_machine.current().kernel, {}).get((feature, map_type))


def record(feature: str, map_type: int, supported: bool) -> None:
    """Remember what the kernel in use said about ``feature`` for ``map_type``."""
    with _lock:
        _answers.setdefault(_machine.current().kernel, {})[(feature, map_type)] = supported


def forget() -> None:
    """Drop every answer about the kernel in use (tests that change a fake's abilities)."""
    with _lock:
        _answers.pop(_machine.current().kernel, None)


# The name of every map percpu creates to probe the kernel: closed at once, such a map can stay listed for
# a while (the kernel frees it later), and `percpu maps` and `percpu doctor` tell it apart by this name.
PROBE_MAP_NAME = "percpu_probe"


def _probe_map(map_type: int, what: str, max_entries: int, strict: bool) -> int | None:
    """A map of 4-byte keys and 8-byte values to probe on; None (and nothing remembered) when this process
    may not create maps and the caller is not ``strict``."""
    try:
        return _machine.current().kernel.map_create(map_type, PROBE_MAP_NAME, 4, 8, max_entries)
    except OSError as exc:
        if exc.errno in (_errno.EPERM, _errno.EACCES) and not strict:
            return None
        raise from_errno(exc.errno or 0, f"probe {what}: create map") from exc


def batch_ops(map_type: int, *, strict: bool = False) -> bool:
    """Whether the kernel has batch operations (BPF_MAP_LOOKUP_BATCH and the rest) for ``map_type``
    (:data:`BATCH_HASH`, :data:`BATCH_ARRAY`).

    Answered from what a map already learned, else by one batch lookup on a map of its own. Without the
    privilege to create a map the answer is "no" (not remembered): the caller reads without them (a key
    walk, or an array's lookups by index). ``strict`` raises :class:`~percpu.errors.PermissionDenied`
    then instead (``percpu doctor``).
    """
    percpu = _BATCH_PROBE_TYPES.get(map_type)
    if percpu is None:
        raise PercpuError(f"no batch-operation probe for map type {map_type}")
    answer = known(BATCH_OPS, map_type)
    if answer is not None:
        return answer
    b = _machine.current().kernel
    fd = _probe_map(map_type, BATCH_OPS, 4, strict)
    if fd is None:
        return False
    try:
        layout = Layout(4, 8, b.num_possible_cpus(), percpu)
        keys, values = layout.key_buffer(4), layout.value_buffer(4)
        try:
            b.map_lookup_batch(fd, None, layout.token_buffer(), keys, values, 4, layout)
            answer = True
        except OSError as exc:
            if exc.errno not in NOT_SUPPORTED_ERRNOS:
                raise from_errno(exc.errno or 0, f"probe {BATCH_OPS}: lookup_batch") from exc
            answer = False
    finally:
        b.close(fd)
    record(BATCH_OPS, map_type, answer)
    return answer


def cpu_flag(*, strict: bool = False) -> bool:
    """Whether lookups and updates of per-CPU maps take BPF_F_CPU (:data:`CPU_FLAG_FEATURE`).

    Probed on a map of its own: its buffer holds every possible CPU's value, so even a kernel that ignored
    the flag could not write past it. Without the privilege to create a map the answer is "no" (not
    remembered): the caller reads the whole element instead, which a map fd's holder can always do.
    ``strict`` raises :class:`~percpu.errors.PermissionDenied` then instead (``percpu doctor``).
    """
    answer = known(CPU_FLAG)
    if answer is not None:
        return answer
    b = _machine.current().kernel
    fd = _probe_map(MapType.PERCPU_ARRAY, CPU_FLAG, 1, strict)
    if fd is None:
        return False
    try:
        layout = Layout(4, 8, b.num_possible_cpus(), True)
        key = layout.key_buffer()
        value = layout.value_buffer()  # the whole element: room for a kernel that ignores the flag
        try:
            b.map_lookup(fd, key, value, layout, BPF_F_CPU)
            answer = True
        except OSError as exc:
            if exc.errno not in NOT_SUPPORTED_ERRNOS:
                raise from_errno(exc.errno or 0, "probe BPF_F_CPU: lookup") from exc
            answer = False
    finally:
        b.close(fd)
    record(CPU_FLAG, 0, answer)
    return answer


# --- What the syscall counter's optional paths need ------------------------------------------------------


@dataclass(frozen=True)
class KernelFeatures:
    """What the syscall counter's optional code paths need, probed on the running kernel (each a load of
    a tiny program or map, not a version comparison: distributions backport). Each field is the answer
    for one declaration above."""

    task_btf: bool  # TASK_BTF: tgid and comm read straight from the task
    task_storage: bool  # TASK_STORAGE: latency start times in the task's own store


def _helper(prog_type: ProgType, func: FuncId) -> bool:
    """Whether ``prog_type`` programs may call helper ``func``; no when it cannot tell (no privilege): the
    fallback paths work everywhere."""
    try:
        return _machine.current().libbpf().probe_helper(prog_type, func)
    except OSError:
        return False


def _probe_task_btf() -> bool:
    """:data:`TASK_BTF`: raw tracepoint programs may call bpf_get_current_task_btf()."""
    return _helper(ProgType.RAW_TRACEPOINT, FuncId.get_current_task_btf)


def _probe_task_storage() -> bool:
    """:data:`TASK_STORAGE`: TASK_STORAGE maps can be made, and raw tracepoint programs may call
    bpf_task_storage_get()."""
    try:
        storage_map = _machine.current().libbpf().probe_map_type(MapType.TASK_STORAGE)
    except OSError:
        return False
    return storage_map and _helper(ProgType.RAW_TRACEPOINT, FuncId.task_storage_get)


@functools.cache
def kernel_features() -> KernelFeatures:
    """Probe the helpers and map types the counter's modes choose between: asked of libbpf itself
    (``_machine.current().libbpf()``: programs are loaded by libbpf, which no fake kernel replaces), once
    per process."""
    task_btf = _probe_task_btf()
    # The counter reaches the task's store through the task pointer bpf_get_current_task_btf() gives.
    return KernelFeatures(task_btf=task_btf, task_storage=task_btf and _probe_task_storage())
