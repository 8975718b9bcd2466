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

The package, by responsibility: ``_data`` (snapshots, deltas and names: what views, pictures, reports and
the exporter read; no binding), ``_filters`` (in-kernel filters), ``_procs`` (the per-process table),
``_load`` (loading and attaching the object) and ``_counter`` (the counter). Every name below is
importable from ``percpu.syscount`` as it always was.
"""

from .. import features as _features
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
from .._machine import cgroup2_root, ensure_tracefs
from ._counter import COMPAT_CHECKS, MAX_TABLE_ENTRIES, SyscallCounter
from ._data import (
    FOLDED_TGID,
    Keyed,
    Lost,
    SnapshotSource,
    SyscallDelta,
    SyscallSnapshot,
    errno_name,
    folded_keys,
    merge_latency,
    slot_name,
)
from ._filters import COMM_LEN, PID_MAX_LIMIT, Filters, pid_namespace
from ._load import ATTACH_MODES
from ._procs import ProcessTable

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
    "SnapshotSource",
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

# The counter's probes moved to percpu.features, with the declarations they answer for; their old names
# still work, with a DeprecationWarning.
_MOVED = ("KernelFeatures", "kernel_features")


def __getattr__(name: str) -> object:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    warnings.warn(f"percpu.syscount.{name} is now percpu.features.{name}", DeprecationWarning, stacklevel=2)
    return getattr(_features, name)
