"""How to read what procfs says about this process: mounts, effective capabilities, sysctls, tasks, what
an fd is.

One parser for each, given the path to read: :class:`percpu._machine.Machine` calls them with its own
``/proc``, and the layers above ask the machine in use (``_machine.current()``), never these directly, so a
test's fake machine answers for all of them. Nothing here raises for an unreadable file: callers get None
or an empty list and decide what that means.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

__all__ = [
    "Mount",
    "bpf_cap_names",
    "can_load_bpf",
    "effective_caps",
    "fd_kind",
    "mount_of",
    "mount_point",
    "mounts",
    "sysctl",
    "task_exists",
    "thread_count",
]

MOUNTS = "/proc/self/mounts"
STATUS = "/proc/self/status"
SYSCTL = "/proc/sys"
PROC = "/proc"

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


class Mount(NamedTuple):
    source: str
    point: str
    fstype: str


def _unescape(field: str) -> str:
    """The kernel writes space, tab, newline and backslash in mount fields as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda g: chr(int(g.group(1), 8)), field)


def mounts(path: str = MOUNTS) -> list[Mount]:
    """The mount table, in mount order (later entries are mounted over earlier ones); [] if unreadable."""
    out: list[Mount] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    out.append(Mount(_unescape(parts[0]), _unescape(parts[1]), parts[2]))
    except OSError:
        return []
    return out


def mount_of(path: str, table: list[Mount]) -> Mount | None:
    """The mount that holds ``path`` (symbolic links resolved; a missing tail stays as written)."""
    real = os.path.realpath(path)
    best: Mount | None = None
    for m in table:
        inside = real == m.point or real.startswith(m.point.rstrip("/") + "/")
        # Later lines are mounted over earlier ones, so the last of the longest points wins.
        if inside and (best is None or len(m.point) >= len(best.point)):
            best = m
    return best


def mount_point(fstype: str, table: list[Mount]) -> str | None:
    """Where a file system of this type is mounted (the first such mount), or None."""
    return next((m.point for m in table if m.fstype == fstype), None)


def sysctl(name: str, root: str = SYSCTL) -> str | None:
    """A sysctl's value as text (``"kernel.bpf_stats_enabled"`` reads /proc/sys/kernel/bpf_stats_enabled),
    or None when it cannot be read (no such sysctl on this kernel, or not allowed)."""
    try:
        with open(os.path.join(root, *name.split(".")), encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def task_exists(tid: int, proc: str = PROC) -> bool:
    """Whether a process or a thread with this id is visible here. A thread's /proc/TID is not listed
    in /proc but resolves, so a thread id is found too."""
    return os.path.exists(os.path.join(proc, str(tid)))


def thread_count(proc: str = PROC) -> int:
    """How many threads this process has now (capabilities belong to each thread)."""
    return len(os.listdir(os.path.join(proc, "self", "task")))


def effective_caps(status: str = STATUS) -> int | None:
    """The effective capability set (CapEff), or None when it cannot be read.

    Being uid 0 proves nothing: a container runtime or ``setpriv`` can leave root with no capabilities,
    and then every bpf() call fails with EPERM.
    """
    try:
        with open(status, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, IndexError, ValueError):
        return None
    return None


def can_load_bpf(caps: int) -> bool:
    """CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON (tracing programs need both since Linux 5.8)."""
    needed = (1 << CAP_BPF) | (1 << CAP_PERFMON)
    return bool(caps >> CAP_SYS_ADMIN & 1) or caps & needed == needed


def bpf_cap_names(caps: int) -> list[str]:
    """The capabilities in the set ``caps`` that BPF work can use, by name (linux/capability.h)."""
    names = ((CAP_SYS_ADMIN, "CAP_SYS_ADMIN"), (CAP_PERFMON, "CAP_PERFMON"), (CAP_BPF, "CAP_BPF"))
    return [name for bit, name in names if caps >> bit & 1]


def fd_kind(fd: int, proc: str = PROC) -> str | None:
    """``"map"``, ``"program"`` or ``"link"`` for a BPF fd, from the kernel's fdinfo; None if unknown.

    The kernel answers BPF_OBJ_GET_INFO_BY_FD on a program with a program's info, which must not be read
    as a map's, so the kind is checked before.
    """
    try:
        with open(os.path.join(proc, "self", "fdinfo", str(fd)), encoding="ascii", errors="replace") as f:
            for line in f:
                for prefix, kind in (("map_type:", "map"), ("prog_type:", "program"), ("link_type:", "link")):
                    if line.startswith(prefix):
                        return kind
    except OSError:
        return None
    return None
