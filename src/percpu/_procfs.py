"""How to read what procfs says about this process and others: mounts, effective capabilities, sysctls,
tasks (their state, pid namespaces, command lines, cgroup), what an fd is, and the memory this process may
still take (MemAvailable, its memory cgroup's limit less its usage).

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
    "cgroup_memory_left",
    "cgroup_v2",
    "cmdline",
    "effective_caps",
    "fd_kind",
    "mem_available",
    "mount_of",
    "mount_point",
    "mounts",
    "ns_pids",
    "seccomp_mode",
    "sysctl",
    "task_exists",
    "task_state",
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


def task_state(tid: int, proc: str = PROC) -> str | None:
    """The state letter of a task (``R``, ``S``, ``Z`` for a zombie, ...) from ``/proc/TID/stat``; None when
    it is gone. The command name before it is in parentheses and may hold any character, so the state is
    the first field after the last ``)``."""
    try:
        with open(os.path.join(proc, str(tid), "stat"), encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def ns_pids(tid: int, proc: str = PROC) -> list[int]:
    """A task's pid in each pid namespace it is in, outermost first (the ``NSpid`` line of its status);
    [] when it is gone or the kernel has no such line (before Linux 4.1)."""
    try:
        with open(os.path.join(proc, str(tid), "status"), encoding="ascii", errors="replace") as f:
            line = next((ln for ln in f if ln.startswith("NSpid:")), "")
        return [int(p) for p in line.split()[1:]]
    except (OSError, ValueError):
        return []


def cmdline(tid: int, proc: str = PROC) -> bytes | None:
    """A process's arguments as the kernel keeps them (NUL-separated); None when it is gone."""
    try:
        with open(os.path.join(proc, str(tid), "cmdline"), "rb") as f:
            return f.read()
    except OSError:
        return None


def cgroup_v2(path: str) -> str | None:
    """The cgroup v2 path (``/user.slice/...``, relative to the cgroup namespace's root) in a
    ``/proc/PID/cgroup`` file; None without a v2 line or when unreadable."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return next((ln[3:].rstrip("\n") for ln in f if ln.startswith("0::")), None)
    except OSError:
        return None


def mem_available(path: str) -> int | None:
    """``MemAvailable`` of a ``/proc/meminfo`` file, in bytes: the kernel's estimate of what can still be
    allocated without swapping; None when unreadable (kernels before 3.14 lack the line)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    parts = line.split()
                    return int(parts[1]) * (1024 if parts[2:3] == ["kB"] else 1)
    except (OSError, IndexError, ValueError):
        return None
    return None


# A memory cgroup's limit and usage files: v2, then v1 (whose "no limit" is a page-rounded 2**63 - 1).
_MEMORY_FILES = {
    "cgroup2": ("memory.max", "memory.current"),
    "cgroup": ("memory.limit_in_bytes", "memory.usage_in_bytes"),
}
_NO_LIMIT = 1 << 62


def cgroup_memory_left(cgroup_file: str, mounts_file: str) -> tuple[int, str] | None:
    """The least a memory cgroup of this process has left (its limit less its usage), over the cgroup and
    its ancestors, v2 or v1, with which limit it is (``memory.max of cgroup /a/b``); None when no memory
    cgroup above this process has a limit, or nothing can be read."""
    try:
        with open(cgroup_file, encoding="utf-8", errors="surrogateescape") as f:
            lines = [ln.rstrip("\n").split(":", 2) for ln in f]
        with open(mounts_file, encoding="utf-8", errors="replace") as f:
            table = [ln.split() for ln in f]
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for parts in lines:
        if len(parts) != 3:
            continue
        hier, controllers, rel = parts
        fstype = "cgroup2" if hier == "0" and not controllers else "cgroup"
        if fstype == "cgroup" and "memory" not in controllers.split(","):
            continue
        root = next(
            (
                _unescape(m[1])
                for m in table
                if len(m) >= 4 and m[2] == fstype and (fstype == "cgroup2" or "memory" in m[3].split(","))
            ),
            None,
        )
        if root is None:
            continue
        limit_file, usage_file = _MEMORY_FILES[fstype]
        path = rel
        while True:
            left = _memory_left(os.path.join(root, path.lstrip("/")), limit_file, usage_file)
            if left is not None and (best is None or left < best[0]):
                best = (left, f"{limit_file} of cgroup {path}")
            if path in ("/", ""):
                break
            path = os.path.dirname(path.rstrip("/")) or "/"
    return best


def _memory_left(cgroup_dir: str, limit_file: str, usage_file: str) -> int | None:
    try:
        with open(os.path.join(cgroup_dir, limit_file), encoding="ascii") as f:
            limit = f.read().strip()
        if limit == "max" or int(limit) >= _NO_LIMIT:
            return None
        with open(os.path.join(cgroup_dir, usage_file), encoding="ascii") as f:
            return max(int(limit) - int(f.read().strip()), 0)
    except (OSError, ValueError):
        return None


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


def seccomp_mode(status: str = STATUS) -> int | None:
    """The process's seccomp mode (``Seccomp:``: 0 none, 1 strict, 2 a filter, as container engines
    install), or None when it cannot be read. A filter can refuse bpf() with EPERM to a process that holds
    every capability it needs."""
    try:
        with open(status, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Seccomp:"):
                    return int(line.split()[1])
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
