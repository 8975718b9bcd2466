"""Reading a BTF blob: its header and sections checked, each type record read once, in time linear in
the blob's size; and the kernel's BTF objects by id, parsed once."""

from __future__ import annotations

import functools
import struct
import threading
from typing import Any

from .. import _fork
from ..errors import BtfError
from ._btf import Btf
from ._model import _MAX_NAME, BTF_MAGIC, KIND_NAMES, BtfType


def parse_btf(raw: bytes, base: Btf | None = None) -> Btf:
    """Parse a BTF blob (as the kernel hands it out, or /sys/kernel/btf/vmlinux).

    Any malformed blob raises :class:`BtfError`; the time taken is linear in the blob's size.
    """
    try:
        return _parse(raw, base)
    except struct.error as exc:  # _record_len checks every record first; this is the backstop
        raise BtfError(f"BTF blob is malformed: {exc}") from None


def _parse(raw: bytes, base: Btf | None) -> Btf:
    types_raw, strings = _sections(raw)
    first = base.count + 1 if base else 1
    names = _Names(strings, base)
    types: list[BtfType] = []
    pos = 0
    while pos < len(types_raw):
        type_id = first + len(types)
        if _record_len(types_raw, pos) > len(types_raw) - pos:
            raise BtfError(
                f"BTF type {type_id}: its record runs past the end of the {len(types_raw)}-byte type section"
            )
        name_off, info, size_or_type = struct.unpack_from("<III", types_raw, pos)
        vlen, kind, kflag = info & 0xFFFF, (info >> 24) & 0x1F, bool(info >> 31)
        extra, pos = _kind_data(types_raw, pos + 12, type_id, kind, vlen, kflag, names)
        types.append(
            BtfType(
                type_id,
                KIND_NAMES.get(kind, str(kind)),
                names.at(name_off, type_id),
                kflag,
                size_or_type,
                vlen,
                extra,
            )
        )
    return Btf(types, strings if base is None else base.strings + strings, base)


def _sections(raw: bytes) -> tuple[bytes, bytes]:
    """A blob's type and string sections, once its header says it is BTF this parser reads and both
    sections lie inside the blob."""
    if len(raw) < 24:
        raise BtfError("BTF blob is too short")
    magic, version, _flags, hdr_len = struct.unpack_from("<HBBI", raw, 0)
    if magic != BTF_MAGIC:
        raise BtfError(f"not BTF (magic {magic:#x}; big-endian BTF is not supported)")
    if version != 1:
        raise BtfError(f"BTF version {version} is not supported")
    type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", raw, 8)
    if hdr_len < 24 or hdr_len > len(raw):
        raise BtfError(f"BTF header length {hdr_len} is invalid for a {len(raw)}-byte blob")
    for what, off, length in (("type", type_off, type_len), ("string", str_off, str_len)):
        if hdr_len + off + length > len(raw):
            raise BtfError(
                f"BTF {what} section ({length} bytes at offset {off}) runs past the end of the "
                f"{len(raw)}-byte blob"
            )
    types_raw = raw[hdr_len + type_off : hdr_len + type_off + type_len]
    return types_raw, raw[hdr_len + str_off : hdr_len + str_off + str_len]


class _Names:
    """A blob's names by string offset, each decoded once: offsets inside the base's string section
    (split BTF: a module's over vmlinux's) are the base's, the rest this blob's."""

    def __init__(self, strings: bytes, base: Btf | None) -> None:
        self.strings = strings
        self.base = base
        self.known: dict[int, str] = {}

    def at(self, off: int, type_id: int) -> str:
        known = self.known.get(off)
        if known is not None:
            return known
        base = self.base
        if base is not None and off < len(base.strings):
            text = _cstr(base.strings, off)
        else:
            local = off - len(base.strings) if base is not None else off
            if local >= len(self.strings):
                raise BtfError(f"BTF type {type_id}: string offset {off} is outside the string section")
            text = _cstr(self.strings, local)
        self.known[off] = text
        return text


def _kind_data(
    data: bytes, pos: int, type_id: int, kind: int, vlen: int, kflag: bool, names: _Names
) -> tuple[tuple[Any, ...], int]:
    """What follows type ``type_id``'s ``struct btf_type`` at ``pos`` for its kind (an int's encoding, an
    array's element type and length, members, enumerators; skipped where percpu reads none), and where
    the next record starts."""
    extra: tuple[Any, ...] = ()
    if kind == 1:  # int
        extra = struct.unpack_from("<I", data, pos)
        pos += 4
    elif kind == 3:  # array
        extra = struct.unpack_from("<III", data, pos)
        pos += 12
    elif kind in (4, 5):  # struct, union
        members = []
        for _ in range(vlen):
            m_name, m_type, m_off = struct.unpack_from("<III", data, pos)
            pos += 12
            members.append((names.at(m_name, type_id), m_type, m_off))
        extra = tuple(members)
    elif kind == 6:  # enum
        vals = []
        for _ in range(vlen):
            e_name, e_val = struct.unpack_from("<Ii" if kflag else "<II", data, pos)
            pos += 8
            vals.append((names.at(e_name, type_id), e_val))
        extra = tuple(vals)
    elif kind == 19:  # enum64
        vals = []
        for _ in range(vlen):
            e_name, lo, hi = struct.unpack_from("<III", data, pos)
            pos += 12
            v = (hi << 32) | lo
            if kflag and v >= 1 << 63:
                v -= 1 << 64
            vals.append((names.at(e_name, type_id), v))
        extra = tuple(vals)
    elif kind == 13:  # func_proto
        pos += 8 * vlen
    elif kind == 14:  # var
        pos += 4
    elif kind == 15:  # datasec
        pos += 12 * vlen
    elif kind == 17:  # decl_tag
        pos += 4
    elif kind not in KIND_NAMES:
        raise BtfError(f"BTF type {type_id} has unknown kind {kind}")
    return extra, pos


def _record_len(types_raw: bytes, pos: int) -> int:
    """Bytes of the type record at ``pos``: ``struct btf_type`` and the trailing data of its kind."""
    if len(types_raw) - pos < 12:
        return 12
    (info,) = struct.unpack_from("<I", types_raw, pos + 4)
    vlen, kind = int(info) & 0xFFFF, (int(info) >> 24) & 0x1F
    per_kind = {1: 4, 3: 12, 14: 4, 17: 4}.get(kind, 0)
    per_member = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}.get(kind, 0)
    return 12 + per_kind + per_member * vlen


def _cstr(buf: bytes, off: int) -> str:
    # Bounded: a blob whose strings lack NULs must not make each lookup scan the whole section.
    end = buf.find(b"\0", off, off + _MAX_NAME)
    if end < 0:
        if len(buf) - off >= _MAX_NAME:
            raise BtfError(f"BTF string at offset {off} is not NUL-terminated within {_MAX_NAME} bytes")
        end = len(buf)
    return buf[off:end].decode(errors="replace")


_cache_lock = threading.Lock()


@_fork.at_fork_in_child
def _renew_cache_lock() -> None:
    global _cache_lock  # noqa: PLW0603 - a thread holding it at fork() is not in the child
    _cache_lock = threading.Lock()


@functools.lru_cache(maxsize=32)
def _btf_by_id(btf_id: int) -> Btf:
    from .. import _machine

    return parse_btf(_machine.current().libbpf().btf_raw(btf_id))


def load_btf(btf_id: int) -> Btf:
    """The parsed BTF object the kernel holds under ``btf_id`` (cached)."""
    with _cache_lock:
        return _btf_by_id(btf_id)
