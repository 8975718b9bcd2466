"""The syscall counter's modes tried on this kernel, for ``percpu doctor``: each loaded and attached once
(then detached), so the report says what the kernel really does, not what its version suggests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .. import _machine, features
from ..errors import PercpuError
from ..syscount import COMPAT_CHECKS, Filters, SyscallCounter

__all__ = ["COMPAT_CHECKS", "ModeSupport", "mode_support"]


@dataclass(frozen=True)
class ModeSupport:
    """Whether one mode of the counter loads and attaches on this kernel, at which hook, and how; ``compat``
    is how it tells 32-bit calls apart (a key of :data:`COMPAT_CHECKS`), None when it did not attach."""

    mode: str
    flag: str
    supported: bool
    hook: str | None
    detail: str
    compat: str | None = None


def _modes() -> list[tuple[str, str, dict[str, Any]]]:
    me = os.getpid()
    return [
        ("default", "", {}),
        ("per-process", "-P", {"per_process": True}),
        ("errors", "-e", {"errors": True}),
        ("latency", "-L", {"latency": True}),
        ("failed only", "-x", {"filters": Filters(failed_only=True)}),
        (
            "filters",
            "-p -t -c -s --cgroup",
            {
                "filters": Filters(
                    tgid=me,
                    tid=me,
                    comm="percpu",
                    syscalls=["getppid"],
                    cgroup="/" if _machine.cgroup2_root() else None,
                )
            },
        ),
    ]


def mode_support() -> list[ModeSupport]:
    """Load and attach the counter once per mode (then detach): what this kernel really supports."""
    out: list[ModeSupport] = []
    feats: features.KernelFeatures | None = None
    for mode, flag, kw in _modes():
        try:
            feats = feats or features.kernel_features()
            with SyscallCounter(**kw) as c:
                hook = c.attach_mode
                slot = c.uses_start_slot
                cache = c.uses_process_cache
                compat = c.compat_check
        except PercpuError as exc:
            out.append(ModeSupport(mode, flag, False, None, str(exc).splitlines()[0]))
            continue
        how = f"attaches at {hook}" + _paths(mode, feats, slot, cache) + _compat_words(compat)
        out.append(ModeSupport(mode, flag, True, hook, how, compat))
    return out


def _paths(mode: str, feats: features.KernelFeatures, slot: bool, cache: bool) -> str:
    """How a mode that attached keeps what it counts, and which declared feature a slower path lacks."""
    how = ""
    if mode == "per-process":
        task_btf = features.TASK_BTF
        how += (
            "; tgid and comm read from the task"
            if feats.task_btf
            else f"; tgid and comm from helpers ({task_btf.name} needs {task_btf.needs})"
        )
        how += "; a per-CPU cache in front of the hash" if cache else "; the hash at every call"
    if mode == "latency":
        store = (
            "task local storage"
            if feats.task_storage
            else f"a hash by thread id (task local storage needs {features.TASK_STORAGE.needs})"
        )
        how += (
            f"; start times in a per-CPU slot, moved at sched_switch to {store}"
            if slot
            else f"; start times in {store}"
        )
    return how


def _compat_words(compat: str) -> str:
    return (
        "; 32-bit calls told apart by the task's TS_COMPAT, as the kernel does"
        if compat == "TS_COMPAT"
        else "; 32-bit calls told apart by code segment only"
        if compat == "code segment"
        else "; 32-bit calls not told apart"
    )
