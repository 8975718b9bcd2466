"""Who disturbs a CPU: hard interrupts, x86 interrupt vectors, softirqs and task switches, per CPU.

:class:`DisturbCounter` counts them with BPF programs at the kernel's tracepoints (``bpf/disturb.bpf.c``),
each placed where the kernel's own counter is incremented, so that over the same window the counts equal
/proc/interrupts, /proc/softirqs, the scheduler's nr_switches and a task's /proc/PID/schedstat
(docs/disturbances.md). Snapshots and deltas are plain numpy data (:mod:`._data`); the kernel's own
counters are parsed by :mod:`._proc`.
"""

from ._counter import ATTACH_MODES, DisturbCounter, Expected
from ._data import (
    FOLDED_PID,
    SOFTIRQ_NAMES,
    VECTOR_NAMES,
    VECTOR_ROWS,
    DisturbDelta,
    DisturbSnapshot,
    Handlers,
    Lost,
    Stints,
    Tasks,
    Untimed,
)
from ._proc import (
    InterruptRow,
    Schedstat,
    irq_names,
    parse_interrupts,
    parse_sched_debug,
    parse_schedstat,
    parse_softirqs,
    per_cpu,
    wrapping_delta,
)

__all__ = [
    "ATTACH_MODES",
    "FOLDED_PID",
    "SOFTIRQ_NAMES",
    "VECTOR_NAMES",
    "VECTOR_ROWS",
    "DisturbCounter",
    "DisturbDelta",
    "DisturbSnapshot",
    "Expected",
    "Handlers",
    "InterruptRow",
    "Lost",
    "Schedstat",
    "Stints",
    "Tasks",
    "Untimed",
    "irq_names",
    "parse_interrupts",
    "parse_sched_debug",
    "parse_schedstat",
    "parse_softirqs",
    "per_cpu",
    "wrapping_delta",
]
