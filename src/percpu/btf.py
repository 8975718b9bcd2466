"""BTF (the kernel's type format) parsed in pure Python, and turned into numpy dtypes.

A map created from a compiled BPF object carries BTF ids for its key and value types; with them percpu
decodes values field by field without the user declaring anything. The layout of a BTF blob is the one in
``include/uapi/linux/btf.h``: a header, a type section, a string section.

What numpy cannot express exactly is not guessed at: a struct with bitfields, or any other type this
module cannot lay out, yields ``None`` and the map falls back to raw bytes.
"""

from __future__ import annotations

import functools
import struct
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .codecs import Codec, NumpyCodec
from .errors import BtfError, PercpuError

__all__ = ["Btf", "BtfError", "BtfType", "btf_codec", "codec_from_btf", "parse_btf"]

BTF_MAGIC = 0xEB9F
KIND_NAMES = {
    1: "int",
    2: "ptr",
    3: "array",
    4: "struct",
    5: "union",
    6: "enum",
    7: "fwd",
    8: "typedef",
    9: "volatile",
    10: "const",
    11: "restrict",
    12: "func",
    13: "func_proto",
    14: "var",
    15: "datasec",
    16: "float",
    17: "decl_tag",
    18: "type_tag",
    19: "enum64",
}
_QUALIFIERS = ("typedef", "volatile", "const", "restrict", "type_tag")  # same layout as their target
_MODIFIERS = ("volatile", "const", "restrict", "type_tag")  # qualifiers that do not rename a type
# Deeper nesting than this only comes from a reference cycle in a malformed blob; stop before Python's
# recursion limit does.
_MAX_DEPTH = 32
# Kernel-valid BTF may use one type many times (a struct of 8 members of a struct of 8 members...): a
# layout is built once per type id, and its flattened field count, which is what walking a value costs
# (decoding, summing, printing), is capped so a small blob cannot describe an endless value.
MAX_FIELDS = 1 << 16
# The kernel refuses names of KSYM_NAME_LEN (512) or more; a longer run without NUL is not a name.
_MAX_NAME = 1024
# Element types that make an array a C string, as clang and pahole emit them: the kernel's INT_CHAR
# encoding bit is never set by either, so the name decides (through const/volatile, not a typedef:
# ``__u8 addr[16]`` is bytes of a number, not text).
_CHAR_NAMES = frozenset({"char", "signed char", "unsigned char"})
_INT_CHAR = 2


def _too_deep(type_id: int) -> BtfError:
    return BtfError(
        f"BTF type {type_id} nests more than {_MAX_DEPTH} levels deep (a reference cycle?)", type_id=type_id
    )


def _cycle(type_id: int) -> BtfError:
    return BtfError(f"BTF type {type_id} contains itself (a reference cycle?)", type_id=type_id)


class _Layout(NamedTuple):
    dtype: np.dtype[Any] | None
    fields: int  # nodes of the flattened field tree (an array counts its element once)


@dataclass(frozen=True)
class BtfType:
    """One type record: ``kind`` (``"struct"``...), ``name``, ``size_or_type`` and its trailing data."""

    id: int
    kind: str
    name: str
    kind_flag: bool
    size_or_type: int
    vlen: int
    extra: tuple[Any, ...]


class Btf:
    """A parsed BTF blob. Type ids start at 1 (0 is void); with a ``base`` (split BTF) they continue
    after the base's.

    Sizes and layouts are computed once per type id and remembered, so a type used many times costs one
    visit: every method is linear in the number of types, whatever the blob's shape.
    """

    def __init__(self, types: list[BtfType], strings: bytes, base: Btf | None = None) -> None:
        self._types = types
        self._strings = strings
        self.base = base
        self._first = base.count + 1 if base else 1
        # Results only: a race between two threads computes the same value twice, never a wrong one.
        self._sizes: dict[int, int] = {}
        self._layouts: dict[int, _Layout] = {}

    @property
    def count(self) -> int:
        return self._first - 1 + len(self._types)

    def type(self, type_id: int) -> BtfType:
        if type_id < self._first:
            if self.base is not None:
                return self.base.type(type_id)
            raise BtfError(f"BTF type id {type_id} does not exist", type_id=type_id)
        try:
            return self._types[type_id - self._first]
        except IndexError:
            raise BtfError(
                f"BTF type id {type_id} does not exist (last is {self.count})", type_id=type_id
            ) from None

    def find(self, name: str, kind: str | None = None) -> int:
        """Id of the first type called ``name`` (of ``kind``, if given)."""
        for t in self._types:
            if t.name == name and (kind is None or t.kind == kind):
                return t.id
        if self.base is not None:
            return self.base.find(name, kind)
        raise BtfError(f"no BTF type named {name!r}")

    def resolve(self, type_id: int) -> BtfType:
        """Follow typedefs and qualifiers to the type that has a layout."""
        return self._skip(type_id, _QUALIFIERS)

    def _skip(self, type_id: int, kinds: tuple[str, ...]) -> BtfType:
        t = self.type(type_id)
        for _ in range(64):
            if t.kind not in kinds:
                return t
            t = self.type(t.size_or_type)
        raise BtfError(f"BTF type {type_id}: qualifier chain too long (a reference cycle?)", type_id=type_id)

    def size(self, type_id: int) -> int:
        return self._size(type_id, 0)

    def _size(self, type_id: int, depth: int) -> int:
        known = self._sizes.get(type_id)
        if known is not None:
            return known
        if depth > _MAX_DEPTH:
            raise _too_deep(type_id)
        t = self.resolve(type_id)
        if t.kind in ("int", "struct", "union", "enum", "enum64", "float", "datasec"):
            n = int(t.size_or_type)
        elif t.kind == "ptr":
            n = 8
        elif t.kind == "array":
            elem, _index, count = t.extra
            n = int(self._size(elem, depth + 1) * count)
        else:
            raise BtfError(f"BTF type {type_id} ({t.kind}) has no size", type_id=type_id)
        self._sizes[type_id] = n
        return n

    def type_name(self, type_id: int) -> str:
        """A C-like name: ``struct stat_val``, ``__u64[4]``, ``enum proto``."""
        return self._type_name(type_id, 0)

    def _type_name(self, type_id: int, depth: int) -> str:
        if depth > _MAX_DEPTH:
            raise _too_deep(type_id)
        if type_id == 0:
            return "void"
        t = self.type(type_id)
        if t.kind in ("struct", "union", "enum", "enum64"):
            k = "enum" if t.kind == "enum64" else t.kind
            return f"{k} {t.name}" if t.name else f"{k} (anonymous)"
        if t.kind == "array":
            elem, _index, n = t.extra
            return f"{self._type_name(elem, depth + 1)}[{n}]"
        if t.kind == "ptr":
            return f"{self._type_name(t.size_or_type, depth + 1)} *"
        if t.kind in ("volatile", "const", "restrict"):
            return f"{t.kind} {self._type_name(t.size_or_type, depth + 1)}"
        return t.name or t.kind

    def is_char(self, type_id: int) -> bool:
        """Whether an array of this type is a C string: a 1-byte int named ``char``, ``signed char`` or
        ``unsigned char`` (or with the INT_CHAR bit), seen through const/volatile but not a typedef."""
        t = self._skip(type_id, _MODIFIERS)
        if t.kind != "int" or t.size_or_type != 1:
            return False
        (enc,) = t.extra
        if enc & 0xFF != 8 or (enc >> 16) & 0xFF:
            return False
        return t.name in _CHAR_NAMES or bool(enc >> 24 & _INT_CHAR)

    def dtype(self, type_id: int) -> np.dtype[Any] | None:
        """The numpy dtype of a type, or None where numpy cannot lay it out exactly (bitfields).

        Raises :class:`BtfError` for a malformed or cyclic type, and for one whose value would have more
        than ``MAX_FIELDS`` fields; nothing numpy raises escapes.
        """
        try:
            return self._layout(type_id, 0, set()).dtype
        except PercpuError:
            raise
        except (ValueError, TypeError, OverflowError, MemoryError) as exc:
            raise BtfError(
                f"BTF type {type_id} ({self._safe_name(type_id)}) cannot be laid out: {exc}", type_id=type_id
            ) from None

    def _safe_name(self, type_id: int) -> str:
        try:
            return self.type_name(type_id)
        except PercpuError:
            return "unnamed"

    def _layout(self, type_id: int, depth: int, busy: set[int]) -> _Layout:
        known = self._layouts.get(type_id)
        if known is not None:
            return known
        if type_id in busy:
            raise _cycle(type_id)
        if depth > _MAX_DEPTH:
            raise _too_deep(type_id)
        busy.add(type_id)
        try:
            out = self._build(type_id, depth, busy)
        finally:
            busy.discard(type_id)
        if out.fields > MAX_FIELDS:
            raise BtfError(
                f"BTF type {type_id} ({self._safe_name(type_id)}) has more than {MAX_FIELDS:,} fields "
                "when flattened, more than percpu lays out",
                type_id=type_id,
            )
        self._layouts[type_id] = out
        return out

    def _build(self, type_id: int, depth: int, busy: set[int]) -> _Layout:
        t = self.resolve(type_id)
        if t.id != type_id:  # typedefs and qualifiers: the target's layout, remembered under both ids
            return self._layout(t.id, depth + 1, busy)
        if t.kind == "int":
            (enc,) = t.extra
            bits, signed, is_bool = enc & 0xFF, bool(enc & (1 << 24)), bool(enc & (4 << 24))
            if bits != t.size_or_type * 8 or (enc >> 16) & 0xFF:
                return _Layout(None, 1)  # an int narrower than its storage: a bitfield-like layout
            if is_bool and t.size_or_type == 1:
                return _Layout(np.dtype("?"), 1)
            if t.size_or_type in (1, 2, 4, 8):
                return _Layout(np.dtype(f"<{'i' if signed else 'u'}{t.size_or_type}"), 1)
            return _Layout(np.dtype((np.void, t.size_or_type)), 1)  # __int128 and friends: raw bytes
        if t.kind in ("enum", "enum64"):
            if t.size_or_type in (1, 2, 4, 8):
                return _Layout(np.dtype(f"<{'i' if t.kind_flag else 'u'}{t.size_or_type}"), 1)
            return _Layout(None, 1)
        if t.kind == "float":
            ok = t.size_or_type in (2, 4, 8)
            return _Layout(np.dtype(f"<f{t.size_or_type}") if ok else None, 1)
        if t.kind == "ptr":
            return _Layout(np.dtype("<u8"), 1)
        if t.kind == "array":
            elem, _index, n = t.extra
            inner = self._layout(elem, depth + 1, busy)
            if inner.dtype is None:
                return _Layout(None, inner.fields)
            if n and inner.dtype.itemsize == 1 and self.is_char(elem):
                return _Layout(np.dtype(f"S{n}"), 1)
            if not n:
                return _Layout(np.dtype((np.void, 0)), 1)
            # An array of arrays is one multi-dimensional subarray (u32[2][3] has shape (2, 3)), not a
            # subarray nested in another.
            return _Layout(np.dtype((inner.dtype.base, (n, *inner.dtype.shape))), inner.fields)
        if t.kind == "struct":
            if t.kind_flag and any((off >> 24) for _n, _t, off in t.extra):
                return _Layout(None, 1)  # bitfields
            names, formats, offsets = [], [], []
            fields = 1
            for i, (name, mtype, off) in enumerate(t.extra):
                if off % 8:
                    return _Layout(None, fields)
                member = self._layout(mtype, depth + 1, busy)
                fields += member.fields
                if member.dtype is None:
                    return _Layout(None, fields)
                if fields > MAX_FIELDS:
                    return _Layout(None, fields)  # refused by the caller, before numpy builds it
                names.append(name or f"_anon{i}")
                formats.append(member.dtype)
                offsets.append(off // 8)
            try:
                dt = np.dtype(
                    {"names": names, "formats": formats, "offsets": offsets, "itemsize": t.size_or_type}
                )
            except (ValueError, TypeError) as exc:  # a member past the struct's size, two of one name
                raise BtfError(
                    f"BTF type {t.id} ({self.type_name(t.id)}) is malformed: {exc}", type_id=t.id
                ) from None
            return _Layout(dt, fields)
        if t.kind == "union":
            return _Layout(np.dtype((np.void, t.size_or_type)), 1)
        return _Layout(None, 1)

    def enum_values(self, type_id: int) -> dict[int, str]:
        """{value: enumerator name} of an enum type (empty for other kinds)."""
        t = self.resolve(type_id)
        if t.kind not in ("enum", "enum64"):
            return {}
        return {v: n for n, v in t.extra}

    def describe(self, type_id: int, indent: str = "") -> str:
        """A C-like rendering of a type with field offsets, for display."""
        t = self.resolve(type_id)
        if t.kind not in ("struct", "union"):
            return f"{indent}{self.type_name(type_id)} ({self.size(type_id)} bytes)"
        lines = [f"{indent}{self.type_name(t.id)} {{  /* {t.size_or_type} bytes */"]
        for name, mtype, off in t.extra:
            bits = (off >> 24) if t.kind_flag else 0
            boff = (off & 0xFFFFFF) if t.kind_flag else off
            where = f"bit {boff}, {bits} bits" if bits else f"offset {boff // 8}"
            lines.append(f"{indent}    {self.type_name(mtype)} {name};  /* {where} */")
        lines.append(f"{indent}}}")
        return "\n".join(lines)


def parse_btf(raw: bytes, base: Btf | None = None) -> Btf:
    """Parse a BTF blob (as the kernel hands it out, or /sys/kernel/btf/vmlinux).

    Any malformed blob raises :class:`BtfError`; the time taken is linear in the blob's size.
    """
    try:
        return _parse(raw, base)
    except struct.error as exc:  # _record_len checks every record first; this is the backstop
        raise BtfError(f"BTF blob is malformed: {exc}") from None


def _parse(raw: bytes, base: Btf | None) -> Btf:
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
    strings = raw[hdr_len + str_off : hdr_len + str_off + str_len]
    first = base.count + 1 if base else 1

    names: dict[int, str] = {}

    def name_at(off: int) -> str:
        known = names.get(off)
        if known is not None:
            return known
        if base is not None and off < len(base._strings):
            text = _cstr(base._strings, off)
        else:
            local = off - len(base._strings) if base is not None else off
            if local >= len(strings):
                raise BtfError(
                    f"BTF type {first + len(types)}: string offset {off} is outside the string section"
                )
            text = _cstr(strings, local)
        names[off] = text
        return text

    types: list[BtfType] = []
    pos = 0
    while pos < len(types_raw):
        if _record_len(types_raw, pos) > len(types_raw) - pos:
            raise BtfError(
                f"BTF type {first + len(types)}: its record runs past the end of the "
                f"{len(types_raw)}-byte type section"
            )
        name_off, info, size_or_type = struct.unpack_from("<III", types_raw, pos)
        pos += 12
        vlen, kind, kflag = info & 0xFFFF, (info >> 24) & 0x1F, bool(info >> 31)
        extra: tuple[Any, ...] = ()
        if kind == 1:  # int
            extra = struct.unpack_from("<I", types_raw, pos)
            pos += 4
        elif kind == 3:  # array
            extra = struct.unpack_from("<III", types_raw, pos)
            pos += 12
        elif kind in (4, 5):  # struct, union
            members = []
            for _ in range(vlen):
                m_name, m_type, m_off = struct.unpack_from("<III", types_raw, pos)
                pos += 12
                members.append((name_at(m_name), m_type, m_off))
            extra = tuple(members)
        elif kind == 6:  # enum
            vals = []
            for _ in range(vlen):
                e_name, e_val = struct.unpack_from("<Ii" if kflag else "<II", types_raw, pos)
                pos += 8
                vals.append((name_at(e_name), e_val))
            extra = tuple(vals)
        elif kind == 19:  # enum64
            vals = []
            for _ in range(vlen):
                e_name, lo, hi = struct.unpack_from("<III", types_raw, pos)
                pos += 12
                v = (hi << 32) | lo
                if kflag and v >= 1 << 63:
                    v -= 1 << 64
                vals.append((name_at(e_name), v))
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
            raise BtfError(f"BTF type {first + len(types)} has unknown kind {kind}")
        types.append(
            BtfType(
                first + len(types),
                KIND_NAMES.get(kind, str(kind)),
                name_at(name_off),
                kflag,
                size_or_type,
                vlen,
                extra,
            )
        )
    return Btf(types, strings if base is None else base._strings + strings, base)


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


@functools.lru_cache(maxsize=32)
def _btf_by_id(btf_id: int) -> Btf:
    from . import _libbpf

    return parse_btf(_libbpf.libbpf().btf_raw(btf_id))


def load_btf(btf_id: int) -> Btf:
    """The parsed BTF object the kernel holds under ``btf_id`` (cached)."""
    with _cache_lock:
        return _btf_by_id(btf_id)


def codec_from_btf(btf_id: int, type_id: int, size: int) -> Codec | None:
    """A codec for a map's key or value from its BTF, or None when BTF cannot give an exact layout (the
    map then reads as raw bytes). Whatever the BTF holds, this returns in time linear in its size."""
    try:
        btf = load_btf(btf_id)
        return btf_codec(btf, type_id, size)
    except (PercpuError, OSError):
        return None


def btf_codec(btf: Btf, type_id: int, size: int) -> Codec | None:
    """The codec of ``type_id`` in ``btf`` for a key or value of ``size`` bytes, or None where its size
    differs or it has no exact numpy layout (bitfields). Raises :class:`BtfError` for a malformed type."""
    if btf.size(type_id) != size:  # before any layout: the map's own size bounds what is built
        return None
    dt = btf.dtype(type_id)
    if dt is None or dt.itemsize != size:
        return None
    codec = NumpyCodec(dt)
    codec.name = btf.type_name(type_id)
    return codec
