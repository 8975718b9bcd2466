"""What the disturbance counter can count on this kernel, dimension by dimension, found by loading and
attaching it for real (as ``percpu doctor`` does for the syscall counter's modes)."""

from __future__ import annotations

from typing import NamedTuple

from ..errors import PercpuError
from ._counter import DisturbCounter

__all__ = ["DimensionSupport", "dimension_support"]


class DimensionSupport(NamedTuple):
    """One dimension: its name, the option that asks for it, whether it counts here, and how (the hook and
    what it records) or why not."""

    dimension: str
    option: str
    supported: bool
    detail: str


# Each dimension alone: (name, option, the counter's irqs, vectors, softirqs, tasks).
_DIMENSIONS = (
    ("hard interrupts", "-I", (True, False, False, False)),
    ("x86 interrupt vectors", "-V", (False, True, False, False)),
    ("softirqs", "-S", (False, False, True, False)),
    ("task switches", "-T", (False, False, False, True)),
)


def dimension_support() -> list[DimensionSupport]:
    """Load and attach the counter once per dimension, with times (then detach): what this kernel counts.

    A dimension the kernel has no hook for says why (the counter's ``unsupported``); one that fails to
    attach says how it failed; nothing raises."""
    out: list[DimensionSupport] = []
    for name, option, (irqs, vectors, softirqs, tasks) in _DIMENSIONS:
        try:
            with DisturbCounter(
                irqs=irqs, vectors=vectors, softirqs=softirqs, switches=tasks, tasks=tasks, times=True
            ) as c:
                hook = c.attach_mode
                unsupported = dict(c.unsupported)
                tlb = c.tlb_hook
                slots = len(c._vector_slots)
        except PercpuError as exc:
            out.append(DimensionSupport(name, option, False, str(exc).splitlines()[0]))
            continue
        if name == "x86 interrupt vectors":
            if "vectors" in unsupported and not slots:
                out.append(DimensionSupport(name, option, False, unsupported["vectors"]))
                continue
            detail = f"irq_vectors tracepoints at {hook}"
            if "vectors" in unsupported:
                detail += f" ({unsupported['vectors']})"
            out.append(DimensionSupport(name, option, True, detail + "; LOC RES CAL IWI counted, with times"))
            if tlb is not None:
                how = {"tlb_csd": "csd_function_entry", "tlb_fentry": "fentry/flush_tlb_func"}.get(tlb, tlb)
                out.append(DimensionSupport("TLB shootdowns", option, True, f"counted at {how}"))
            else:
                why = unsupported.get("tlb_shootdown", "no hook")
                out.append(DimensionSupport("TLB shootdowns", option, False, why))
            continue
        what = {
            "hard interrupts": "irq_handler_entry/exit: runs by IRQ line, time in the handlers",
            "softirqs": "softirq_entry/exit: runs by vector, time in the handler",
            "task switches": "sched_switch: tasks switched in by pid and name, their time on the CPU",
        }[name]
        out.append(DimensionSupport(name, option, True, f"{what} (at {hook})"))
    return out
