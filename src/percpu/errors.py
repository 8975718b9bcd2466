"""The one error tree of percpu.

Every failure the public API reports is a :class:`PercpuError`. OS errors from the bpf() syscall are
translated in one place (:func:`from_errno`, used by the binding module) and chained with ``raise ... from``
so the original errno stays visible. Each class carries fields a caller can act on, and its message says
what to do next.
"""

from __future__ import annotations

import errno as _errno
import operator
import os

__all__ = [
    "AttachError",
    "BpfError",
    "BtfError",
    "CommandNotRunnable",
    "CpuNotPossible",
    "InvalidArgument",
    "InvalidFilter",
    "KeyExists",
    "KeyNotFound",
    "LibbpfError",
    "MapFull",
    "MapNotFound",
    "MapTooLarge",
    "MapTypeError",
    "NotCopyable",
    "NotSupported",
    "PercpuError",
    "PermissionDenied",
    "ProgramLoadError",
    "SizeMismatch",
    "TopologyMismatch",
    "TypeSpecError",
    "UnknownSyscall",
    "from_errno",
]


class PercpuError(Exception):
    """Base class of every error percpu raises.

    ``errno`` is the kernel's error number when the failure came from a syscall, else ``None``;
    ``map_name`` names the map involved, when there is one.
    """

    def __init__(self, message: str, *, errno: int | None = None, map_name: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errno = errno
        self.map_name = map_name

    def __str__(self) -> str:
        return self.message


class InvalidFilter(PercpuError, ValueError):
    """A counting filter that the kernel could not hold as given (a pid beyond the kernel's limit, a cgroup
    id beyond 64 bits, a command name longer than 15 bytes): refused rather than truncated into a filter on
    something else. ``field`` names the filter (``tgid``, ``tid``, ``cgroup``, ``comm``)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class InvalidArgument(PercpuError, ValueError):
    """An integer or text that would change on its way into the kernel: an id, fd, flag word, count or
    CPU id outside the C type it crosses into (ctypes keeps the low bits of ``2**32 + 7`` as ``7`` without
    a word), or a path or name holding a NUL byte (C reads up to it). Refused before any syscall, rather
    than turned into a call about something else. ``argument`` names it, ``value`` is what was given."""

    def __init__(self, message: str, *, argument: str, value: object, map_name: str | None = None) -> None:
        super().__init__(message, map_name=map_name)
        self.argument = argument
        self.value = value


class NotCopyable(PercpuError, TypeError):
    """An object holding kernel handles was asked to be pickled, or copied where no copy can be made.

    A file descriptor means nothing in another process, so a map cannot be pickled: pickle its id or pin
    path and reopen it with :func:`percpu.open_map`. (``copy.copy`` of a map is :meth:`Map.clone`, a
    handle of its own on the same kernel map.) libbpf cannot duplicate a loaded object, so a
    :class:`~percpu.objects.BpfObject` and its programs, links and ``.rodata`` are neither copied nor
    pickled. Also a ``TypeError``, what Python raises for other objects pickle cannot take."""


class MapTooLarge(PercpuError):
    """Creating the map would make the kernel allocate more memory than this machine has for it.

    Per-CPU maps cost ``max_entries x round_up(value_size, 8) x possible CPUs``, allocated at creation
    (hashes too, unless ``BPF_F_NO_PREALLOC``): a size that looks modest becomes gigabytes on a machine
    with many possible CPUs, and the kernel's out-of-memory killer may end this or any other process
    before the syscall returns. ``cost`` is what the map would take (bytes), ``available`` what the
    machine has (bytes), ``limit`` where that figure comes from (``MemAvailable`` in /proc/meminfo, or a
    cgroup's ``memory.max``). ``check_memory=False`` on ``create`` skips the check."""

    def __init__(
        self, message: str, *, cost: int, available: int, limit: str, map_name: str | None = None
    ) -> None:
        super().__init__(message, map_name=map_name)
        self.cost = cost
        self.available = available
        self.limit = limit


class LibbpfError(PercpuError):
    """libbpf.so.1 is missing, too old, or lacks a symbol percpu needs."""


class BpfError(PercpuError):
    """A bpf() operation failed for a reason with no more specific class."""


class PermissionDenied(BpfError):
    """The caller lacks the privileges for a BPF operation (EPERM / EACCES)."""


class NotSupported(BpfError):
    """The running kernel lacks a feature. ``feature`` names it, ``min_kernel`` says where it appeared."""

    def __init__(
        self,
        message: str,
        *,
        feature: str,
        min_kernel: str | None = None,
        errno: int | None = None,
        map_name: str | None = None,
    ) -> None:
        super().__init__(message, errno=errno, map_name=map_name)
        self.feature = feature
        self.min_kernel = min_kernel


class KeyNotFound(BpfError, KeyError):
    """The key is not in the map (ENOENT on lookup or delete)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


class KeyExists(BpfError):
    """The key is already in the map and the update said BPF_NOEXIST (EEXIST)."""


class MapFull(BpfError):
    """A hash map holds ``max_entries`` elements and the update would add one more (E2BIG)."""


class TopologyMismatch(PercpuError):
    """The CPU lists percpu read disagree with the kernel's own count of possible CPUs.

    Per-CPU buffers are sized by the kernel's count; a CPU list of another length would put values under
    the wrong CPU ids, so percpu refuses it.
    """


class MapNotFound(BpfError, LookupError):
    """No map matches the id, name or pinned path given."""


class MapTypeError(PercpuError, TypeError):
    """A map was opened or used as a type it is not."""

    def __init__(self, message: str, *, expected: str, actual: str, map_name: str | None = None) -> None:
        super().__init__(message, map_name=map_name)
        self.expected = expected
        self.actual = actual


class SizeMismatch(PercpuError, ValueError):
    """A declared key or value type does not have the size the map has.

    ``what`` is ``"key"`` or ``"value"``; ``expected`` is the map's size in bytes, ``actual`` the declared
    type's. ``cpu`` is set when one CPU's value was the wrong shape. Raised before any syscall.
    """

    def __init__(
        self,
        message: str,
        *,
        what: str,
        expected: int,
        actual: int,
        cpu: int | None = None,
        map_name: str | None = None,
    ) -> None:
        super().__init__(message, map_name=map_name)
        self.what = what
        self.expected = expected
        self.actual = actual
        self.cpu = cpu


class CpuNotPossible(PercpuError, ValueError, IndexError):
    """A CPU id that is not a possible CPU on this system, so no per-CPU value has a slot for it.

    ``cpu`` is the id asked for, ``possible`` the system's possible-CPU list as the kernel writes it
    (``0-7``). Also a ``ValueError`` and an ``IndexError``, so code catching either keeps working.
    """

    def __init__(self, cpu: object, possible: str, *, map_name: str | None = None) -> None:
        where = f" (map {map_name!r})" if map_name else ""
        try:
            if isinstance(cpu, bool):
                raise TypeError(cpu)
            operator.index(cpu)  # type: ignore[arg-type]
        except TypeError:
            why = f"is not a CPU id: CPU ids are integers, not {type(cpu).__name__}{where}; give one of the"
        else:
            why = f"is not a possible CPU on this system{where};"
        super().__init__(f"CPU {cpu!r} {why} possible CPUs: {possible or 'none'}", map_name=map_name)
        self.cpu = cpu
        self.possible = possible


class ProgramLoadError(BpfError):
    """The kernel rejected a BPF program; ``log`` holds what the verifier said, when it said anything."""

    def __init__(self, message: str, *, log: str = "", errno: int | None = None) -> None:
        super().__init__(message, errno=errno)
        self.log = log


class AttachError(BpfError):
    """A loaded program could not be attached to its hook."""


class UnknownSyscall(PercpuError, LookupError):
    """A system call name is not in the table of the architecture asked for."""


class CommandNotRunnable(PercpuError):
    """A command to count (``percpu stat -- CMD``) that cannot be run: not found, a directory, not
    executable. ``command`` is the name given; ``status`` the exit status a shell gives for it (127: not
    found; 126: found but not runnable), which ``percpu stat`` exits with."""

    def __init__(self, message: str, *, command: str, status: int, errno: int | None = None) -> None:
        super().__init__(message, errno=errno)
        self.command = command
        self.status = status


class BtfError(PercpuError, ValueError):
    """A BTF blob or type is malformed, cyclic, or too large to lay out (``type_id`` names the type, when
    one is to blame). Kernel-held BTF passed the kernel's checks; this still guards against what it
    allows (shared types, huge arrays) and against blobs read from elsewhere."""

    def __init__(self, message: str, *, type_id: int | None = None) -> None:
        super().__init__(message)
        self.type_id = type_id


class TypeSpecError(PercpuError, ValueError):
    """A key or value type written as text (``"u64"``, ``"struct{u32 pid; char comm[16]}"``) does not
    parse; the message points at the place and says what was expected there."""


# What a kernel says when it lacks an operation or a flag altogether: EINVAL (unknown command or flag),
# EOPNOTSUPP, and the kernel-internal ENOTSUPP (524) that leaks to user space from some map types.
ENOTSUPP = 524
NOT_SUPPORTED_ERRNOS = frozenset({_errno.EINVAL, _errno.EOPNOTSUPP, ENOTSUPP})

_PRIV_HINT = "run as root, or grant CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN on kernels before 5.8)"


def from_errno(err: int, what: str, *, map_name: str | None = None) -> BpfError:
    """Translate an errno from a bpf() operation into the matching error class.

    ``what`` says what was being done ("lookup", "create map"); it leads the message.
    """
    where = f" on map {map_name!r}" if map_name else ""
    text = os.strerror(err) if err > 0 else f"error {err}"
    if err in (_errno.EPERM, _errno.EACCES):
        return PermissionDenied(f"{what}{where}: {text}; {_PRIV_HINT}", errno=err, map_name=map_name)
    if err == _errno.ENOENT:
        return KeyNotFound(f"{what}{where}: no such key", errno=err, map_name=map_name)
    if err == _errno.EEXIST:
        return KeyExists(f"{what}{where}: the key exists", errno=err, map_name=map_name)
    if err in (_errno.EOPNOTSUPP, ENOTSUPP):
        return NotSupported(
            f"{what}{where}: not supported by this kernel or map type",
            feature=what,
            errno=err,
            map_name=map_name,
        )
    if err == _errno.ENOSYS:
        return NotSupported(
            f"{what}: this kernel has no bpf() syscall (CONFIG_BPF_SYSCALL)", feature="bpf", errno=err
        )
    return BpfError(f"{what}{where}: {text} (errno {err})", errno=err, map_name=map_name)
