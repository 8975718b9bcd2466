"""What a failed operation on one map means, said in one place: the key that was missing or present, a
full hash versus an index past an array's end, a pin path that exists or whose directory does not, a batch
operation or a lookup-and-delete this kernel does not have (quoting its :mod:`percpu.features`
declaration), and what a map type refuses before any call (deleting an array's or a cgroup storage's
elements, flags a batch update cannot take). :meth:`~percpu.maps._handle.MapHandle.call` applies
:func:`map_error` to every call that fails; the errno-to-class translation underneath is
:func:`percpu.errors.from_errno`. Every message a map's kernel call can end in is written here."""

from __future__ import annotations

import errno as _errno
import os
from typing import Any, Literal, NamedTuple

import numpy as np

from .. import features
from .._libbpf import BPF_EXIST, BPF_NOEXIST, MapInfo, PartialBatch
from .._uapi import BPF_F_LOCK
from ..errors import (
    ENOTSUPP,
    NOT_SUPPORTED_ERRNOS,
    BpfError,
    InvalidArgument,
    KeyExists,
    KeyNotFound,
    MapFull,
    MapTypeError,
    NotSupported,
    from_errno,
)
from ._kinds import ARRAY_TYPES, PERCPU_TYPES, MapType

__all__ = [
    "NO_KEY",
    "Op",
    "batch_flags_refused",
    "key_exists",
    "label",
    "map_error",
    "no_batch",
    "no_delete",
    "no_key",
    "nth_key",
    "shown",
]

OpName = Literal[
    "lookup",
    "update",
    "delete",
    "lookup_and_delete",
    "get_next_key",
    "lookup_batch",
    "update_batch",
    "delete_batch",
    "dup",
    "pin",
]

# What the message calls each operation.
_WORDS = {"lookup_and_delete": "lookup-and-delete", "get_next_key": "get-next-key", "dup": "duplicate the fd"}

# Map types whose elements user space cannot delete, and why: the kernel answers EINVAL, which says nothing.
_NO_DELETE = {
    **dict.fromkeys(ARRAY_TYPES, "an array always holds max_entries elements"),
    MapType.PERCPU_CGROUP_STORAGE: (
        "its elements are the kernel's, one per cgroup a program using the map is attached to, freed when "
        "the program is detached or the cgroup removed"
    ),
}


class _NoKey:
    """What an operation that is about no key in particular (a walk's lookups) names as its key."""

    def __repr__(self) -> str:
        return "NO_KEY"


NO_KEY: Any = _NoKey()


class Op(NamedTuple):
    """One operation on a map, as its errors tell it: ``name``, the key it was about (a walk's lookups
    name none; a batch names its keys, in order), its flags, how many elements a batch write held
    (``batch``), whether a batch read had read nothing yet (``first``: a kernel without batch operations
    refuses the first call), the pin path."""

    name: OpName
    key: Any = NO_KEY
    flags: int = 0
    batch: int = 0
    first: bool = True
    path: str = ""


def label(info: MapInfo) -> str:
    """How a message names the map: ``map 'counts'``, or ``map id 42`` for a map without a name."""
    return f"map {info.name!r}" if info.name else f"map id {info.id}"


def shown(key: Any) -> str:
    """A key as a message shows it: numpy scalars and records as the Python values they hold (``7``,
    ``(1234, 2)``), not numpy's multi-line reprs."""
    if isinstance(key, np.ndarray) and key.ndim == 0:
        key = key[()]
    if isinstance(key, np.generic):
        key = key.item()
    return repr(key)


def _type_name(info: MapInfo) -> str:
    return MapType.name_of(info.type).upper()


def no_key(info: MapInfo, key: Any, *, replace: bool = False, errno: int | None = None) -> KeyNotFound:
    """``key`` is not in the map (``replace``: and the update said BPF_EXIST)."""
    what = " to replace" if replace else ""
    if info.type == MapType.PERCPU_CGROUP_STORAGE:
        what += (
            ": the kernel makes a cgroup storage's elements when a program using the map is attached to a "
            "cgroup; user space can read and update those, not create others"
        )
    return KeyNotFound(f"{label(info)}: no key {shown(key)}{what}", errno=errno, map_name=info.name)


def key_exists(info: MapInfo, key: Any, *, errno: int | None = None) -> KeyExists:
    """``key`` is in the map and the update said BPF_NOEXIST."""
    return KeyExists(f"{label(info)}: key {shown(key)} exists (BPF_NOEXIST)", errno=errno, map_name=info.name)


def no_batch(info: MapInfo, what: str = "batch operations", *, errno: int | None = None) -> NotSupported:
    """This kernel has no batch operation (``what``) for the map's type."""
    return features.batch_feature(info.type).missing(
        f"{label(info)}: no {what} for {_type_name(info)} on this kernel", errno=errno, map_name=info.name
    )


def no_delete(info: MapInfo, what: str) -> MapTypeError | None:
    """The error for ``what`` (``delete``, ``delete_batch``, ...) on a map type whose elements user space
    cannot delete (arrays, cgroup storage), raised before any call; None where it can."""
    why = _NO_DELETE.get(MapType(info.type)) if info.type in MapType._value2member_map_ else None
    if why is None:
        return None
    return MapTypeError(
        f"{label(info)}: {what}: {_type_name(info)} elements cannot be deleted ({why}); write zeros with "
        "update() instead",
        expected="a hash map",
        actual=_type_name(info),
        map_name=info.name,
    )


def batch_flags_refused(info: MapInfo, flags: int) -> InvalidArgument | None:
    """The error for a batch update's ``flags`` the kernel refuses in every case, before any call; None
    for flags it takes. ``generic_map_update_batch`` (kernel/bpf/syscall.c), which every map type's batch
    update is, takes BPF_F_LOCK alone in its element flags (for values holding a ``bpf_spin_lock``, which
    per-CPU values never do) and answers EINVAL to anything else, BPF_NOEXIST and BPF_EXIST included,
    before writing an element."""
    allowed = 0 if info.type in PERCPU_TYPES else BPF_F_LOCK
    if not flags & ~allowed:
        return None
    low = flags & 3
    named = {BPF_NOEXIST: " (BPF_NOEXIST)", BPF_EXIST: " (BPF_EXIST)"}.get(low, "") if flags == low else ""
    takes = (
        "no flags for a per-CPU map (its element flags take BPF_F_LOCK alone, for values holding a "
        "bpf_spin_lock, which per-CPU values never do)"
        if not allowed
        else "BPF_F_LOCK alone in its element flags (for values holding a bpf_spin_lock)"
    )
    return InvalidArgument(
        f"{label(info)}: update_batch flags {flags}{named}: the kernel's batch update takes {takes} and "
        "refuses the whole batch otherwise; to create only or replace only, write with update(key, value, "
        "flags) one key at a time; else leave flags at BPF_ANY",
        argument="flags",
        value=flags,
        map_name=info.name,
    )


def map_error(info: MapInfo, op: Op, exc: OSError) -> BpfError:
    """The error to raise for ``exc``, the kernel's answer to ``op`` on the map ``info`` describes."""
    err = exc.errno or 0
    if op.name in ("lookup", "delete", "lookup_and_delete"):
        if op.name == "lookup_and_delete" and err in NOT_SUPPORTED_ERRNOS and info.type in PERCPU_TYPES:
            return features.LOOKUP_AND_DELETE_PERCPU_HASH.missing(
                f"{label(info)}: lookup-and-delete of a {_type_name(info)} element is not supported "
                "by this kernel",
                errno=err,
                map_name=info.name,
            )
        if err == _errno.ENOENT and op.key is not NO_KEY:
            return no_key(info, op.key, errno=err)
        return from_errno(err, _what(op), map_name=info.name)
    if op.name == "update":
        return _update_error(info, op, err)
    if op.name == "pin":
        return _pin_error(info, op, err)
    if op.name == "lookup_batch" and op.first and err in NOT_SUPPORTED_ERRNOS:
        return no_batch(info, errno=err)
    if isinstance(exc, PartialBatch) and op.name in ("update_batch", "delete_batch"):
        return _batch_write_error(info, op, exc)
    return from_errno(err, _what(op), map_name=info.name)


def _what(op: Op) -> str:
    """``delete of key 7``: what was being done, for :func:`~percpu.errors.from_errno`'s message."""
    word = _WORDS.get(op.name, op.name)
    return word if op.key is NO_KEY or op.batch else f"{word} of key {shown(op.key)}"


def _update_error(info: MapInfo, op: Op, err: int) -> BpfError:
    if err == _errno.ENOENT and (op.flags & 3 == BPF_EXIST or info.type == MapType.PERCPU_CGROUP_STORAGE):
        return no_key(info, op.key, replace=op.flags & 3 == BPF_EXIST, errno=err)
    if err == _errno.EEXIST:
        return key_exists(info, op.key, errno=err)
    if err == _errno.EINVAL and op.flags & 3 == BPF_NOEXIST and info.type == MapType.PERCPU_CGROUP_STORAGE:
        return BpfError(
            f"{label(info)}: BPF_NOEXIST cannot create a PERCPU_CGROUP_STORAGE element (key "
            f"{shown(op.key)}): the kernel makes them when a program using the map is attached to a "
            "cgroup; update an existing one with BPF_ANY or BPF_EXIST",
            errno=err,
            map_name=info.name,
        )
    if err == _errno.E2BIG:
        return _too_big(info, op.key, err)
    return from_errno(err, _what(op), map_name=info.name)


def _too_big(info: MapInfo, key: Any, err: int, written: str = "") -> BpfError:
    """E2BIG from an update: an index past an array's end, or a hash holding max_entries elements."""
    if info.type in ARRAY_TYPES:
        return BpfError(
            f"{label(info)}: index {shown(key)} is out of range (the array has {info.max_entries} elements, "
            f"0..{info.max_entries - 1}){written}",
            errno=err,
            map_name=info.name,
        )
    return MapFull(
        f"{label(info)}: is full ({info.max_entries} entries), no room for key {shown(key)}{written}; delete "
        "some or create it with a larger max_entries",
        errno=err,
        map_name=info.name,
    )


def _pin_error(info: MapInfo, op: Op, err: int) -> BpfError:
    where = f"{label(info)}: cannot pin at {op.path}"
    if err == _errno.EEXIST:
        return BpfError(
            f"{where}: the path exists (another pinned object, or a file); if it is a stale pin, remove "
            f"it first (os.unlink({op.path!r}), or rm), else pin at another path",
            errno=err,
            map_name=info.name,
        )
    if err == _errno.ENOENT:
        directory = os.path.dirname(op.path) or "."
        return BpfError(
            f"{where}: directory {directory} does not exist; make it first (os.makedirs({directory!r}), or "
            "mkdir -p): bpffs holds directories as any file system does",
            errno=err,
            map_name=info.name,
        )
    return from_errno(err, f"pin at {op.path}", map_name=info.name)


def nth_key(keys: Any, i: int) -> Any:
    """Key ``i`` of a batch's keys (what a message names; :func:`shown` says how)."""
    try:
        return keys[i]
    except (IndexError, TypeError, KeyError):
        return f"#{i}"


def _progress(op: Op, done: int, n: int) -> str:
    """``update_batch wrote the 3 elements before it, not the 6 after it``: what a batch write that
    stopped at element ``done`` of ``n`` did (the kernel goes in order and stops at the first failure)."""
    verb, thing = ("wrote", "element") if op.name == "update_batch" else ("deleted", "key")
    before = f"the {done} {thing}{'s' * (done != 1)} before it" if done else "nothing before it"
    after = n - done - 1
    return f"{op.name} {verb} {before}" + (f", not the {after} after it" if after else "")


def _batch_write_error(info: MapInfo, op: Op, exc: PartialBatch) -> BpfError:
    err, done, n = exc.errno or 0, exc.done, op.batch
    things = "elements" if op.name == "update_batch" else "keys"
    # EOPNOTSUPP or ENOTSUPP: the map type has no batch operation at all (arrays on a kernel without
    # features.BATCH_ARRAY); the kernel returns before touching the count, which still holds the number
    # asked for, as it does for a command it does not know (EINVAL, before Linux 5.6). EINVAL also counts
    # when nothing was done: the flags it refuses whole are refused before the call (batch_flags_refused),
    # and the one-element fallback then says what the first element's own error is.
    untouched = done == 0 or done >= n
    if err in (_errno.EOPNOTSUPP, ENOTSUPP) or (untouched and err in NOT_SUPPORTED_ERRNOS):
        return no_batch(info, errno=err)
    if done >= n:
        return from_errno(err, f"{op.name} of {n} {things} (refused whole, none done)", map_name=info.name)
    key = nth_key(op.key, done)
    progress = _progress(op, done, n)
    if op.name == "delete_batch" and err == _errno.ENOENT:
        return KeyNotFound(
            f"{label(info)}: key {shown(key)} is not in the map ({progress})", errno=err, map_name=info.name
        )
    if op.name == "update_batch" and err == _errno.E2BIG:
        return _too_big(info, key, err, f" ({progress})")
    return from_errno(err, f"{op.name} at key {shown(key)} ({progress})", map_name=info.name)
