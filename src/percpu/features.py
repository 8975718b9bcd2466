"""What the running kernel can do, probed once and remembered: the one place maps (and ``percpu doctor``)
ask.

Each answer is memoized per kernel seam (the real kernel, or a test's fake), so a test's fake never sees
an answer the real kernel gave. A probe that cannot run for want of privileges answers "no" for now and is
asked again next time: callers then take the path that works everywhere.

Some answers are learned from the first real attempt instead of a probe map (batch operations per map
type, lookup-and-delete on per-CPU hashes): a caller that sees the kernel refuse records it with
:func:`record`, and every later caller asks :func:`known` first.
"""

from __future__ import annotations

import errno as _errno
import threading
import weakref
from typing import Any

from . import _libbpf
from .errors import NOT_SUPPORTED_ERRNOS, from_errno
from .layout import BPF_F_CPU, Layout

__all__ = ["BATCH_OPS", "LOOKUP_AND_DELETE", "cpu_flag", "forget", "known", "record"]

BATCH_OPS = "batch ops"  # BPF_MAP_*_BATCH on a map type: hashes Linux 5.6, per-CPU arrays 5.13
LOOKUP_AND_DELETE = "lookup_and_delete"  # BPF_MAP_LOOKUP_AND_DELETE_ELEM on per-CPU hashes: Linux 5.14
CPU_FLAG = "BPF_F_CPU"  # one CPU's value per operation: Linux 7.0

_PERCPU_ARRAY = 6

_lock = threading.Lock()
_answers: weakref.WeakKeyDictionary[Any, dict[tuple[str, int], bool]] = weakref.WeakKeyDictionary()


def known(feature: str, map_type: int = 0) -> bool | None:
    """What was learned about ``feature`` (for ``map_type``) on the kernel in use; None if not yet."""
    with _lock:
        return _answers.get(_libbpf.backend(), {}).get((feature, map_type))


def record(feature: str, map_type: int, supported: bool) -> None:
    """Remember what the kernel in use said about ``feature`` for ``map_type``."""
    with _lock:
        _answers.setdefault(_libbpf.backend(), {})[(feature, map_type)] = supported


def forget() -> None:
    """Drop every answer about the kernel in use (tests that change a fake's abilities)."""
    with _lock:
        _answers.pop(_libbpf.backend(), None)


def cpu_flag(*, strict: bool = False) -> bool:
    """Whether lookups and updates of per-CPU maps take BPF_F_CPU (one CPU's value; Linux 7.0).

    Probed on a map of its own: its buffer holds every possible CPU's value, so even a kernel that ignored
    the flag could not write past it. Without the privilege to create a map the answer is "no" (not
    remembered): the caller reads the whole element instead, which a map fd's holder can always do.
    ``strict`` raises :class:`~percpu.errors.PermissionDenied` then instead (``percpu doctor``).
    """
    b = _libbpf.backend()
    answer = known(CPU_FLAG)
    if answer is not None:
        return answer
    try:
        fd = b.map_create(_PERCPU_ARRAY, "percpu_probe", 4, 8, 1)
    except OSError as exc:
        if exc.errno in (_errno.EPERM, _errno.EACCES) and not strict:
            return False
        raise from_errno(exc.errno or 0, "probe BPF_F_CPU: create map") from exc
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
