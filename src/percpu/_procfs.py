"""What procfs says about this process: mounts, effective capabilities, what an fd is.

One reader for each, used by the layers above (pinned paths, tracefs and cgroup2 mounts, privilege
checks). Paths are parameters so tests can point them at fixtures. Nothing here raises for an unreadable
file: callers get None or an empty list and decide what that means.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

__all__ = ["Mount", "effective_caps", "fd_kind", "mount_of", "mounts"]

MOUNTS = "/proc/self/mounts"
STATUS = "/proc/self/status"

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


def fd_kind(fd: int) -> str | None:
    """``"map"``, ``"program"`` or ``"link"`` for a BPF fd, from the kernel's fdinfo; None if unknown.

    The kernel answers BPF_OBJ_GET_INFO_BY_FD on a program with a program's info, which must not be read
    as a map's, so the kind is checked before.
    """
    try:
        with open(f"/proc/self/fdinfo/{fd}", encoding="ascii", errors="replace") as f:
            for line in f:
                for prefix, kind in (("map_type:", "map"), ("prog_type:", "program"), ("link_type:", "link")):
                    if line.startswith(prefix):
                        return kind
    except OSError:
        return None
    return None
