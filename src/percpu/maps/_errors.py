"""What an element operation's errno means for one map: the key that was missing or present, a full hash
versus an index past an array's end. The errno-to-class translation itself is
:func:`percpu.errors.from_errno`."""

from __future__ import annotations

import errno as _errno
from typing import TYPE_CHECKING, Any

from .._libbpf import BPF_EXIST
from ..errors import BpfError, KeyExists, KeyNotFound, MapFull

if TYPE_CHECKING:
    from ._base import Map


def lookup_error(m: Map, exc: OSError, key: Any) -> BpfError:
    if exc.errno == _errno.ENOENT:
        return KeyNotFound(f"map {m.name!r}: no key {key!r}", errno=exc.errno, map_name=m.name)
    return m._error(exc, "lookup")


def update_error(m: Map, exc: OSError, flags: int, key: Any) -> BpfError:
    if exc.errno == _errno.ENOENT and flags & 3 == BPF_EXIST:
        return KeyNotFound(f"map {m.name!r}: no key {key!r} to replace", errno=exc.errno, map_name=m.name)
    if exc.errno == _errno.EEXIST:
        return KeyExists(
            f"map {m.name!r}: key {key!r} exists (BPF_NOEXIST)", errno=exc.errno, map_name=m.name
        )
    if exc.errno == _errno.E2BIG:
        if m._is_array:
            return BpfError(
                f"map {m.name!r}: index {key!r} is out of range (the array has "
                f"{m.info.max_entries} elements)",
                errno=exc.errno,
                map_name=m.name,
            )
        return MapFull(
            f"map {m.name!r}: is full ({m.info.max_entries} entries); delete some or create it "
            "with a larger max_entries",
            errno=exc.errno,
            map_name=m.name,
        )
    return m._error(exc, "update")
