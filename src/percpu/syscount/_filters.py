"""The syscall counter's in-kernel filters: which tasks and calls count, fixed when the programs load.

A :class:`Filters` checks every value before the kernel sees it (a pid the kernel could not hold, a name
longer than a task's) and resolves what the kernel compares: a cgroup path into its cgroup v2 id, a
syscall name into its slot, and, in a pid namespace other than the initial one, the namespace pids are
compared in (:func:`pid_namespace`).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass

from .. import _machine
from .. import syscalls as _names
from .._contract import COMPAT_BASE
from ..errors import InvalidFilter, PercpuError

__all__ = ["COMM_LEN", "PID_MAX_LIMIT", "Filters", "pid_namespace"]


# The kernel's hard limit on pid numbers (PID_MAX_LIMIT on 64-bit; pid_max can only be set lower).
PID_MAX_LIMIT = 1 << 22
# task->comm is 16 bytes with the terminating NUL.
COMM_LEN = 15


def _check_id(value: object, name: str, limit: int, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidFilter(f"{name} filter {value!r}: {what} must be a whole number", field=name)
    if not 1 <= value <= limit:
        raise InvalidFilter(f"{name} filter {value}: {what} must be in 1..{limit}", field=name)


@dataclass(frozen=True)
class Filters:
    """In-kernel filters, fixed when the programs load. Unset fields filter nothing.

    ``comm`` is compared by the kernel byte for byte with the task's name (at most 15 bytes): a ``str`` is
    encoded as the file system encodes names (UTF-8, with undecodable bytes from the command line kept as
    they were), ``bytes`` are taken as they are. ``tgid`` and ``tid`` are pids as this process sees them:
    in a pid namespace other than the initial one (a container) the kernel compares them in that namespace,
    and tasks outside it never match. Values the kernel could not hold (a pid above the kernel's
    limit, a cgroup id beyond 64 bits, a longer name) raise :class:`~percpu.errors.InvalidFilter` here,
    instead of being truncated into a filter on some other task.
    """

    tgid: int | None = None
    tid: int | None = None
    comm: str | bytes | None = None
    cgroup: int | str | None = None  # cgroup v2 id, or a path (absolute, or under the cgroup2 mount)
    syscalls: Sequence[int | str] | None = None  # names ("read", "compat:read") or numbers
    failed_only: bool = False

    def __post_init__(self) -> None:
        _check_id(self.tgid, "tgid", PID_MAX_LIMIT, "a process id")
        _check_id(self.tid, "tid", PID_MAX_LIMIT, "a thread id")
        if self.cgroup is not None and not isinstance(self.cgroup, str):
            _check_id(self.cgroup, "cgroup", (1 << 64) - 1, "a cgroup v2 id")
        self.comm_bytes()

    def comm_bytes(self) -> bytes | None:
        """The name the kernel compares, as bytes; None when there is no name filter."""
        if self.comm is None:
            return None
        if isinstance(self.comm, bytes):
            raw = self.comm
        elif isinstance(self.comm, str):
            raw = os.fsencode(self.comm)  # surrogate escapes back to the bytes the command line held
        else:
            raise InvalidFilter(f"comm filter {self.comm!r}: give a str or bytes", field="comm")
        if not raw:
            raise InvalidFilter("comm filter is empty: give a command name, or no comm filter", field="comm")
        if b"\0" in raw:
            raise InvalidFilter(f"comm filter {raw!r} has a NUL byte, which no task name holds", field="comm")
        if len(raw) > COMM_LEN:
            raise InvalidFilter(
                f"comm filter {raw!r} is {len(raw)} bytes; the kernel keeps {COMM_LEN} bytes of a task's "
                f"name: give the first {COMM_LEN} (e.g. {raw[:COMM_LEN]!r})",
                field="comm",
            )
        return raw

    def cgroup_id(self) -> int | None:
        """The cgroup v2 id to filter on; refuses paths outside the cgroup2 mount and ids none has."""
        if self.cgroup is None:
            return None
        root = _machine.cgroup2_root()
        if root is None:
            raise PercpuError("the cgroup filter needs cgroup v2, and no cgroup2 file system is mounted")
        root = os.path.realpath(root)
        if isinstance(self.cgroup, int):
            # On cgroup v2 the cgroup id is the inode number of its directory; a filter on an id no
            # cgroup has would load fine and count nothing.
            if not _cgroup_id_exists(root, self.cgroup):
                raise PercpuError(f"no cgroup v2 has id {self.cgroup} (under {root})", errno=errno.ENOENT)
            return self.cgroup
        given = os.path.realpath(self.cgroup) if os.path.isabs(self.cgroup) else ""
        under = os.path.commonpath([given, root]) == root if given else False
        path = given if under else os.path.realpath(os.path.join(root, self.cgroup.lstrip("/")))
        if os.path.commonpath([path, root]) != root or not os.path.isfile(os.path.join(path, "cgroup.procs")):
            what = f"cgroup {self.cgroup!r}: {path} is not a cgroup v2 directory under {root}"
            raise PercpuError(what, errno=errno.EINVAL)
        try:
            return os.stat(path).st_ino
        except OSError as exc:  # removed since the check above
            raise PercpuError(f"cgroup {self.cgroup!r}: {path}: {exc.strerror}", errno=exc.errno) from exc

    def slots(self, arch: str | None = None) -> list[int]:
        out: list[int] = []
        for s in self.syscalls or ():
            if isinstance(s, int):
                nr, base = s, 0
            elif s.startswith("compat:"):
                nr, base = _names.syscall_number(s[7:], arch, compat=True), COMPAT_BASE
            elif s.isdigit():
                nr, base = int(s), 0
            else:
                nr, base = _names.syscall_number(s, arch), 0
            if not 0 <= nr < COMPAT_BASE:
                raise PercpuError(f"syscall number {nr} is out of range 0..{COMPAT_BASE - 1}")
            out.append(base + nr)
        return out


def _cgroup_id_exists(root: str, cgroup_id: int) -> bool:
    """Whether a cgroup v2 directory under ``root`` has inode number ``cgroup_id`` (its cgroup id).
    Cgroups come and go while the tree is walked: one that vanishes is skipped, not an error."""
    with contextlib.suppress(OSError):
        if os.stat(root).st_ino == cgroup_id:
            return True
    todo = [root]
    while todo:
        try:
            with os.scandir(todo.pop()) as it:
                for entry in it:
                    try:
                        if not entry.is_dir(follow_symlinks=False):
                            continue
                        if entry.inode() == cgroup_id:
                            return True
                    except OSError:
                        continue
                    todo.append(entry.path)
        except OSError:
            continue
    return False


def pid_namespace() -> tuple[int, int] | None:
    """(device, inode) of this process's pid namespace when it is not the initial one, else None.

    In a container, pids given on the command line are the container's, while the kernel's tracepoints
    see the initial namespace's: the filter then compares in this namespace instead."""
    return _machine.current().pid_namespace()
