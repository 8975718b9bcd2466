"""What the running kernel can do, probed once and remembered: the one place maps and ``percpu doctor``
ask.

Each answer is memoized per kernel seam (the real kernel, or a test's fake), so a test's fake never sees
an answer the real kernel gave. A probe that cannot run for want of privileges answers "no" for now and is
asked again next time: callers then take the path that works everywhere.

Some answers are also learned from the first real attempt (batch operations per map type, lookup-and-delete
on per-CPU hashes): a map that sees the kernel accept or refuse records it with :func:`record`, and every
later caller asks :func:`known` first. :func:`batch_ops` and :func:`cpu_flag` probe on a map of their own
when nothing is known yet, and remember the answer in the same place, so a probe and a real attempt never
disagree.
"""

from __future__ import annotations

import errno as _errno
import threading
import weakref
from typing import Any

from . import _fork, _libbpf
from .errors import NOT_SUPPORTED_ERRNOS, PercpuError, from_errno
from .layout import BPF_F_CPU, Layout

__all__ = ["BATCH_OPS", "CPU_FLAG", "LOOKUP_AND_DELETE", "batch_ops", "cpu_flag", "forget", "known", "record"]

BATCH_OPS = "batch ops"  # BPF_MAP_*_BATCH on a map type: hashes Linux 5.6, per-CPU arrays 5.13
LOOKUP_AND_DELETE = "lookup_and_delete"  # BPF_MAP_LOOKUP_AND_DELETE_ELEM on per-CPU hashes: Linux 5.14
CPU_FLAG = "BPF_F_CPU"  # one CPU's value per operation: Linux 7.0

_PERCPU_ARRAY = 6
# The map types a batch probe can create (enum bpf_map_type), each with whether its values are per-CPU.
_BATCH_PROBE_TYPES = {1: False, 2: False, 5: True, _PERCPU_ARRAY: True, 9: False, 10: True}

_lock = threading.Lock()


@_fork.at_fork_in_child
def _renew_lock() -> None:
    global _lock  # noqa: PLW0603 - a thread holding it at fork() is not in the child
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


def _probe_map(map_type: int, what: str, max_entries: int, strict: bool) -> int | None:
    """A map of 4-byte keys and 8-byte values to probe on; None (and nothing remembered) when this process
    may not create maps and the caller is not ``strict``."""
    try:
        return _libbpf.backend().map_create(map_type, "percpu_probe", 4, 8, max_entries)
    except OSError as exc:
        if exc.errno in (_errno.EPERM, _errno.EACCES) and not strict:
            return None
        raise from_errno(exc.errno or 0, f"probe {what}: create map") from exc


def batch_ops(map_type: int, *, strict: bool = False) -> bool:
    """Whether the kernel has batch operations (BPF_MAP_LOOKUP_BATCH and the rest) for ``map_type``
    (hashes since Linux 5.6, per-CPU arrays 5.13).

    Answered from what a map already learned, else by one batch lookup on a map of its own. Without the
    privilege to create a map the answer is "no" (not remembered): the caller walks the keys instead.
    ``strict`` raises :class:`~percpu.errors.PermissionDenied` then instead (``percpu doctor``).
    """
    percpu = _BATCH_PROBE_TYPES.get(map_type)
    if percpu is None:
        raise PercpuError(f"no batch-operation probe for map type {map_type}")
    answer = known(BATCH_OPS, map_type)
    if answer is not None:
        return answer
    b = _libbpf.backend()
    fd = _probe_map(map_type, BATCH_OPS, 4, strict)
    if fd is None:
        return False
    try:
        layout = Layout(4, 8, b.num_possible_cpus(), percpu)
        keys, values = layout.key_buffer(4), layout.value_buffer(4)
        try:
            b.map_lookup_batch(fd, None, layout.token_buffer(), keys, values, 4, layout)
            answer = True
        except OSError as exc:
            if exc.errno not in NOT_SUPPORTED_ERRNOS:
                raise from_errno(exc.errno or 0, f"probe {BATCH_OPS}: lookup_batch") from exc
            answer = False
    finally:
        b.close(fd)
    record(BATCH_OPS, map_type, answer)
    return answer


def cpu_flag(*, strict: bool = False) -> bool:
    """Whether lookups and updates of per-CPU maps take BPF_F_CPU (one CPU's value; Linux 7.0).

    Probed on a map of its own: its buffer holds every possible CPU's value, so even a kernel that ignored
    the flag could not write past it. Without the privilege to create a map the answer is "no" (not
    remembered): the caller reads the whole element instead, which a map fd's holder can always do.
    ``strict`` raises :class:`~percpu.errors.PermissionDenied` then instead (``percpu doctor``).
    """
    answer = known(CPU_FLAG)
    if answer is not None:
        return answer
    b = _libbpf.backend()
    fd = _probe_map(_PERCPU_ARRAY, CPU_FLAG, 1, strict)
    if fd is None:
        return False
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
