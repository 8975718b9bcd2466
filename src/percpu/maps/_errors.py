"""What a failed operation on one map means, said in one place: the key that was missing or present, a
full hash versus an index past an array's end, a batch operation or a lookup-and-delete this kernel does
not have (quoting its :mod:`percpu.features` declaration). :meth:`~percpu.maps._handle.MapHandle.call`
applies :func:`map_error` to every call that fails; the errno-to-class translation underneath is
:func:`percpu.errors.from_errno`. Every message a map's kernel call can end in is written here."""

from __future__ import annotations

import errno as _errno
from typing import Any, Literal, NamedTuple

from .. import features
from .._libbpf import BPF_EXIST, MapInfo, PartialBatch
from ..errors import (
    ENOTSUPP,
    NOT_SUPPORTED_ERRNOS,
    BpfError,
    KeyExists,
    KeyNotFound,
    MapFull,
    NotSupported,
    from_errno,
)
from ._kinds import ARRAY_TYPES, PERCPU_TYPES, MapType

__all__ = ["NO_KEY", "Op", "key_exists", "map_error", "no_batch", "no_key"]

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


class _NoKey:
    """What an operation that is about no key in particular (a walk's lookups) names as its key."""

    def __repr__(self) -> str:
        return "NO_KEY"


NO_KEY: Any = _NoKey()


class Op(NamedTuple):
    """One operation on a map, as its errors tell it: ``name``, the key it was about (a walk's lookups
    name none), its flags, how many elements a batch write held (``batch``), whether a batch read had read
    nothing yet (``first``: a kernel without batch operations refuses the first call), the pin path."""

    name: OpName
    key: Any = NO_KEY
    flags: int = 0
    batch: int = 0
    first: bool = True
    path: str = ""


def _type_name(info: MapInfo) -> str:
    return MapType.name_of(info.type).upper()


def no_key(info: MapInfo, key: Any, *, replace: bool = False, errno: int | None = None) -> KeyNotFound:
    """``key`` is not in the map (``replace``: and the update said BPF_EXIST)."""
    what = " to replace" if replace else ""
    return KeyNotFound(f"map {info.name!r}: no key {key!r}{what}", errno=errno, map_name=info.name)


def key_exists(info: MapInfo, key: Any, *, errno: int | None = None) -> KeyExists:
    """``key`` is in the map and the update said BPF_NOEXIST."""
    return KeyExists(f"map {info.name!r}: key {key!r} exists (BPF_NOEXIST)", errno=errno, map_name=info.name)


def no_batch(info: MapInfo, what: str = "batch operations", *, errno: int | None = None) -> NotSupported:
    """This kernel has no batch operation (``what``) for the map's type."""
    return features.batch_feature(info.type).missing(
        f"map {info.name!r}: no {what} for {_type_name(info)} on this kernel", errno=errno, map_name=info.name
    )


def map_error(info: MapInfo, op: Op, exc: OSError) -> BpfError:
    """The error to raise for ``exc``, the kernel's answer to ``op`` on the map ``info`` describes."""
    err = exc.errno or 0
    if op.name in ("lookup", "delete", "lookup_and_delete"):
        if op.name == "lookup_and_delete" and err in NOT_SUPPORTED_ERRNOS and info.type in PERCPU_TYPES:
            return features.LOOKUP_AND_DELETE_PERCPU_HASH.missing(
                f"map {info.name!r}: lookup-and-delete of a {_type_name(info)} element is not supported "
                "by this kernel",
                errno=err,
                map_name=info.name,
            )
        if err == _errno.ENOENT and op.key is not NO_KEY:
            return no_key(info, op.key, errno=err)
        return from_errno(err, "lookup", map_name=info.name)
    if op.name == "update":
        return _update_error(info, op, err)
    if op.name == "lookup_batch" and op.first and err in NOT_SUPPORTED_ERRNOS:
        return no_batch(info, errno=err)
    if isinstance(exc, PartialBatch) and op.name in ("update_batch", "delete_batch"):
        return _batch_write_error(info, op, exc)
    what = {"dup": "duplicate the fd", "pin": f"pin at {op.path}"}.get(op.name, op.name)
    return from_errno(err, what, map_name=info.name)


def _update_error(info: MapInfo, op: Op, err: int) -> BpfError:
    if err == _errno.ENOENT and op.flags & 3 == BPF_EXIST:
        return no_key(info, op.key, replace=True, errno=err)
    if err == _errno.EEXIST:
        return key_exists(info, op.key, errno=err)
    if err == _errno.E2BIG:
        if info.type in ARRAY_TYPES:
            return BpfError(
                f"map {info.name!r}: index {op.key!r} is out of range (the array has "
                f"{info.max_entries} elements)",
                errno=err,
                map_name=info.name,
            )
        return MapFull(
            f"map {info.name!r}: is full ({info.max_entries} entries); delete some or create it "
            "with a larger max_entries",
            errno=err,
            map_name=info.name,
        )
    return from_errno(err, "update", map_name=info.name)


def _batch_write_error(info: MapInfo, op: Op, exc: PartialBatch) -> BpfError:
    err, done, n = exc.errno or 0, exc.done, op.batch
    if op.name == "delete_batch" and err == _errno.ENOENT:
        return KeyNotFound(
            f"map {info.name!r}: delete_batch: key {done} of {n} is not in the map",
            errno=err,
            map_name=info.name,
        )
    # EOPNOTSUPP or ENOTSUPP: the map type has no batch operation at all (arrays on a kernel without
    # features.BATCH_ARRAY); the kernel returns before touching the count, which still holds the number
    # asked for. Any other "not supported" errno counts only when nothing was done.
    if err in (_errno.EOPNOTSUPP, ENOTSUPP) or (done == 0 and err in NOT_SUPPORTED_ERRNOS):
        return no_batch(info, errno=err)
    things = "elements" if op.name == "update_batch" else "keys"
    return from_errno(err, f"{op.name} (after {done} of {n} {things})", map_name=info.name)
