"""BTF (the kernel's type format) parsed in pure Python, turned into numpy dtypes, and decoded exactly.

A map created from a compiled BPF object carries BTF ids for its key and value types; with them percpu
decodes values field by field without the user declaring anything. The layout of a BTF blob is the one in
``include/uapi/linux/btf.h``: a header, a type section, a string section.

Two views of one value. :meth:`Btf.dtype` is the numpy layout the library reads and writes in bulk; what
numpy cannot hold exactly (a union, a struct with bitfields, an int narrower than its bytes) keeps its
raw storage there, as ``np.void`` bytes, rather than a guess. :meth:`Btf.value` decodes every kind from
the bytes, bit by bit where it must: bitfields signed and unsigned, enums with their enumerator names,
every member of a union, floats, char arrays with all their bytes. ``percpu dump`` prints the second.
"""

from __future__ import annotations

import functools
import math
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .codecs import Codec, NumpyCodec
from .errors import BtfError, PercpuError

__all__ = [
    "Btf",
    "BtfCodec",
    "BtfError",
    "BtfType",
    "CharArray",
    "EnumValue",
    "NanValue",
    "RawBytes",
    "btf_codec",
    "codec_from_btf",
    "parse_btf",
]

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
_INT_SIGNED, _INT_CHAR, _INT_BOOL = 1, 2, 4


def _too_deep(type_id: int) -> BtfError:
    return BtfError(
        f"BTF type {type_id} nests more than {_MAX_DEPTH} levels deep (a reference cycle?)", type_id=type_id
    )


def _cycle(type_id: int) -> BtfError:
    return BtfError(f"BTF type {type_id} contains itself (a reference cycle?)", type_id=type_id)


def _int_overflows(t: BtfType, first: int, bits: int) -> BtfError:
    return BtfError(
        f"BTF type {t.id} ({t.name or 'int'}) holds {bits} bits from bit {first}, past its "
        f"{t.size_or_type} bytes",
        type_id=t.id,
    )


class EnumValue(int):
    """An enum's value: the integer, and ``name``, the enumerator it equals (None when it equals none)."""

    name: str | None

    def __new__(cls, value: int, name: str | None = None) -> EnumValue:
        obj = super().__new__(cls, value)
        obj.name = name
        return obj

    def __getnewargs__(self) -> tuple[int, str | None]:  # type: ignore[override]
        return (int(self), self.name)

    def __repr__(self) -> str:
        return self.name if self.name is not None else int.__repr__(self)


class NanValue(float):
    """A NaN read from a value, with ``bits``, its exact bit pattern (sign, quiet bit and payload), and
    ``size``, the bytes of its type: a Python float cannot say which NaN it is."""

    bits: int
    size: int

    def __new__(cls, bits: int, size: int) -> NanValue:
        obj = super().__new__(cls, "nan")
        obj.bits, obj.size = bits, size
        return obj

    def __getnewargs__(self) -> tuple[int, int]:  # type: ignore[override]
        return (self.bits, self.size)


class CharArray(bytes):
    """A C char array: all its bytes, NULs and what follows them included."""

    @property
    def c_string(self) -> bytes:
        """What C reads as the string: the bytes before the first NUL."""
        return self.split(b"\0", 1)[0]


class RawBytes(bytes):
    """Bytes whose type says nothing of what they mean (an empty struct of non-zero size, a float of a
    width Python has no type for)."""


_Decode = Callable[[bytes, int], Any]  # (the value's buffer, the byte offset of this part) -> value


class _Dec(NamedTuple):
    fn: _Decode
    items: int  # Python objects one value decodes into: what decoding it costs


def _refused(buf: bytes, at: int) -> Any:
    raise BtfError("a type refused as too large was decoded")  # pragma: no cover - never built


_INT_FORMATS = {1: "b", 2: "h", 4: "i", 8: "q"}


def _whole_int(size: int, signed: bool, is_bool: bool) -> _Decode:
    if size in _INT_FORMATS:
        fmt = _INT_FORMATS[size]
        unpack = struct.Struct("<" + (fmt if signed else fmt.upper())).unpack_from
        if is_bool:
            return lambda buf, at: _as_bool(unpack(buf, at)[0])
        return lambda buf, at: unpack(buf, at)[0]
    return lambda buf, at: _as_bool(int.from_bytes(buf[at : at + size], "little", signed=signed), is_bool)


def _bits_at(first: int, width: int, signed: bool, is_bool: bool, names: dict[int, str] | None) -> _Decode:
    """Bits ``first`` .. ``first + width`` of a little-endian value (BTF bit offsets count from the least
    significant bit of the first byte), sign-extended when ``signed``."""
    lo, hi, shift, mask = first // 8, (first + width + 7) // 8, first % 8, (1 << width) - 1
    sign = 1 << (width - 1) if signed and width else 0

    def read(buf: bytes, at: int) -> Any:
        v = int.from_bytes(buf[at + lo : at + hi], "little") >> shift & mask
        if v & sign:
            v -= 1 << width
        if names is not None:
            return EnumValue(v, names.get(v))
        return _as_bool(v, is_bool)

    return read


def _as_bool(v: int, is_bool: bool = True) -> Any:
    # A _Bool holding 2 is shown as 2, not as True: the byte is what the program wrote.
    return bool(v) if is_bool and v in (0, 1) else v


_FLOAT_FORMATS = {2: ("<e", "<H"), 4: ("<f", "<I"), 8: ("<d", "<Q")}


def _float_at(size: int) -> _Decode:
    if size not in _FLOAT_FORMATS:
        return lambda buf, at: RawBytes(buf[at : at + size])
    value, bits = (struct.Struct(f).unpack_from for f in _FLOAT_FORMATS[size])

    def read(buf: bytes, at: int) -> Any:
        v = value(buf, at)[0]
        return NanValue(bits(buf, at)[0], size) if math.isnan(v) else v

    return read


class _Layout(NamedTuple):
    dtype: np.dtype[Any] | None
    fields: int  # nodes of the flattened field tree (an array counts its element once)


def _raw(size: int) -> _Layout:
    """The raw storage of a type numpy cannot hold exactly: its bytes, which Btf.value() decodes."""
    return _Layout(np.dtype((np.void, size)), 1)


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
        self._decoders: dict[int, _Dec] = {}
        self._enums: dict[int, dict[int, str]] = {}
        self._signedness_marked: bool | None = None

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
        if t.kind == "type_tag":  # its name is the tag's, not the type's
            return self._type_name(t.size_or_type, depth + 1)
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

    def _narrow(self, type_id: int) -> bool:
        """Whether a member of this type holds fewer bits than its bytes: an int whose BTF_INT_BITS is
        below its size, or that has a BTF_INT_OFFSET (how bitfields were encoded before kind_flag)."""
        t = self.resolve(type_id)
        if t.kind != "int":
            return False
        (enc,) = t.extra
        return enc & 0xFF != t.size_or_type * 8 or bool((enc >> 16) & 0xFF)

    def dtype(self, type_id: int) -> np.dtype[Any] | None:
        """The numpy dtype of a type: ``np.void`` bytes, its raw storage, where numpy cannot hold it
        exactly (a union, a struct with bitfields, ``__int128``), None where it has no layout at all (a
        function, a forward declaration).

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
            bits, first = enc & 0xFF, (enc >> 16) & 0xFF
            signed, is_bool = bool(enc & (1 << 24)), bool(enc & (4 << 24))
            if first + bits > t.size_or_type * 8:
                raise _int_overflows(t, first, bits)
            if bits != t.size_or_type * 8 or first:
                return _raw(t.size_or_type)  # fewer bits than bytes: kept raw, value() reads the bits
            if is_bool and t.size_or_type == 1:
                return _Layout(np.dtype("?"), 1)
            if t.size_or_type in (1, 2, 4, 8):
                return _Layout(np.dtype(f"<{'i' if signed else 'u'}{t.size_or_type}"), 1)
            return _raw(t.size_or_type)  # __int128 and friends: raw bytes
        if t.kind in ("enum", "enum64"):
            if t.size_or_type in (1, 2, 4, 8):
                return _Layout(np.dtype(f"<{'i' if self.enum_signed(t.id) else 'u'}{t.size_or_type}"), 1)
            return _raw(t.size_or_type) if t.size_or_type else _Layout(None, 1)
        if t.kind == "float":
            if t.size_or_type in (2, 4, 8):
                return _Layout(np.dtype(f"<f{t.size_or_type}"), 1)
            return _raw(t.size_or_type) if t.size_or_type else _Layout(None, 1)
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
                return _raw(t.size_or_type)  # bitfields: numpy has no field of a few bits; kept raw
            names, formats, offsets = [], [], []
            fields = 1
            for i, (name, mtype, off) in enumerate(t.extra):
                if off % 8 or self._narrow(mtype):
                    return _raw(t.size_or_type)  # bitfields in the encoding before kind_flag
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
            return _raw(t.size_or_type)  # one numpy field cannot be several; value() decodes each
        return _Layout(None, 1)

    def enum_signed(self, type_id: int) -> bool:
        """Whether an enum's values are signed.

        The kind_flag says so where it exists (Linux 6.0, clang 15, pahole 1.24). BTF older than that has
        no such mark, and libbpf clears it when loading into a kernel older than 6.0; there an enumerator
        is the ``__s32 val`` of the BTF of its time, and an enum is signed when one of its enumerators is
        negative, the rule C compilers follow for an enum's type (and libbpf's ``btf__add_enum_value``).
        A blob that marks any enum signed, or holds an enum64, was written with the mark: its unmarked
        enums are unsigned.
        """
        t = self.resolve(type_id)
        if t.kind not in ("enum", "enum64"):
            raise BtfError(f"BTF type {type_id} ({t.kind}) is not an enum", type_id=type_id)
        if t.kind_flag:
            return True
        if self._marks_signedness():
            return False
        top = 31 if t.kind == "enum" else 63
        return any(int(v) >> top & 1 for _n, v in t.extra)

    def _marks_signedness(self) -> bool:
        if self._signedness_marked is None:
            mine = any(t.kind == "enum64" or (t.kind == "enum" and t.kind_flag) for t in self._types)
            self._signedness_marked = mine or (self.base is not None and self.base._marks_signedness())
        return self._signedness_marked

    def enum_values(self, type_id: int) -> dict[int, str]:
        """{value: enumerator name} of an enum type (empty for other kinds), values signed as
        :meth:`enum_signed` says; where two enumerators share a value, the first is its name."""
        t = self.resolve(type_id)
        if t.kind not in ("enum", "enum64"):
            return {}
        known = self._enums.get(t.id)
        if known is not None:
            return known
        bits = 32 if t.kind == "enum" else 64
        signed = self.enum_signed(t.id)
        out: dict[int, str] = {}
        for name, stored in t.extra:
            v = int(stored) & ((1 << bits) - 1)
            if signed and v >> (bits - 1):
                v -= 1 << bits
            out.setdefault(v, name)
        self._enums[t.id] = out
        return out

    # --- exact decoding -------------------------------------------------------------------------------

    def value(self, type_id: int, raw: bytes) -> Any:
        """Decode ``raw``, the bytes of one value of ``type_id``, exactly as C reads them.

        Structs and unions become dicts of every member (anonymous ones ``_anon<i>``, as in
        :meth:`dtype`); bitfields their bits, sign-extended where the type is signed; arrays lists; char
        arrays :class:`CharArray` (all their bytes); enums :class:`EnumValue` (an int with its
        enumerator's name); ints ints (``_Bool`` True/False when it holds 0 or 1); floats floats
        (:class:`NanValue` keeps a NaN's bits); what has no meaning of its own (an empty struct of
        non-zero size, a float of 10 or 16 bytes) :class:`RawBytes`.

        Raises :class:`BtfError` for a malformed type, one that has no value (a function), one that would
        decode into more than ``MAX_FIELDS`` objects, or ``raw`` shorter than the type.
        """
        return self.decoder(type_id)(raw)

    def decoder(self, type_id: int) -> Callable[[bytes], Any]:
        """:meth:`value` for one type, built once: raises :class:`BtfError` now rather than per value."""
        dec = self._decoder(type_id, 0, set())
        size = self.size(type_id)
        name = self._safe_name(type_id)

        def decode(raw: bytes) -> Any:
            buf = bytes(raw)
            if len(buf) < size:
                raise BtfError(
                    f"{len(buf)} bytes given for a value of BTF type {type_id} ({name}), which has {size}",
                    type_id=type_id,
                )
            return dec.fn(buf, 0)

        return decode

    def _decoder(self, type_id: int, depth: int, busy: set[int]) -> _Dec:
        known = self._decoders.get(type_id)
        if known is not None:
            return known
        if type_id in busy:
            raise _cycle(type_id)
        if depth > _MAX_DEPTH:
            raise _too_deep(type_id)
        busy.add(type_id)
        try:
            out = self._build_decoder(type_id, depth, busy)
        finally:
            busy.discard(type_id)
        if out.items > MAX_FIELDS:
            raise BtfError(
                f"BTF type {type_id} ({self._safe_name(type_id)}) decodes into more than {MAX_FIELDS:,} "
                "values, more than percpu decodes one by one",
                type_id=type_id,
            )
        self._decoders[type_id] = out
        return out

    def _build_decoder(self, type_id: int, depth: int, busy: set[int]) -> _Dec:
        t = self.resolve(type_id)
        if t.id != type_id:
            return self._decoder(t.id, depth + 1, busy)
        size = t.size_or_type
        if t.kind == "int":
            (enc,) = t.extra
            bits, first = enc & 0xFF, (enc >> 16) & 0xFF
            signed, is_bool = bool(enc >> 24 & _INT_SIGNED), bool(enc >> 24 & _INT_BOOL)
            if first + bits > size * 8:
                raise _int_overflows(t, first, bits)
            if bits == size * 8 and not first:
                return _Dec(_whole_int(size, signed, is_bool), 1)
            return _Dec(_bits_at(first, bits, signed, is_bool, None), 1)
        if t.kind in ("enum", "enum64"):
            names = self.enum_values(t.id)
            return _Dec(_bits_at(0, size * 8, self.enum_signed(t.id), False, names), 1)
        if t.kind == "ptr":
            return _Dec(_whole_int(8, False, False), 1)
        if t.kind == "float":
            return _Dec(_float_at(size), 1)
        if t.kind == "array":
            return self._array_decoder(t, depth, busy)
        if t.kind in ("struct", "union"):
            return self._record_decoder(t, depth, busy)
        raise BtfError(f"BTF type {type_id} ({t.kind}) has no value to decode", type_id=type_id)

    def _array_decoder(self, t: BtfType, depth: int, busy: set[int]) -> _Dec:
        elem, _index, n = t.extra
        step = self.size(elem)
        if step == 1 and self.is_char(elem):
            return _Dec(lambda buf, at: CharArray(buf[at : at + n]), 1)
        e = self.resolve(elem)
        if e.kind == "int" and e.extra[0] & 0xFF == step * 8 and step in (1, 2, 4, 8):
            (enc,) = e.extra
            if not (enc >> 16) & 0xFF and not enc >> 24 & _INT_BOOL:
                dt = np.dtype(f"<{'i' if enc >> 24 & _INT_SIGNED else 'u'}{step}")
                return _Dec(lambda buf, at: np.frombuffer(buf, dt, n, at).tolist(), 1 + n)
        inner = self._decoder(elem, depth + 1, busy)
        items = 1 + n * inner.items
        if items > MAX_FIELDS:  # before anything is built: an array of 2^32 empty structs has size 0
            return _Dec(_refused, items)
        fn = inner.fn
        return _Dec(lambda buf, at: [fn(buf, at + i * step) for i in range(n)], items)

    def _record_decoder(self, t: BtfType, depth: int, busy: set[int]) -> _Dec:
        size = t.size_or_type
        if not t.extra and size:
            # No member says what the bytes are (libbpf puts such a struct where a kernel before 5.13
            # has no BTF float): shown as they are, not as {}.
            return _Dec(lambda buf, at: RawBytes(buf[at : at + size]), 1)
        parts: dict[str, _Decode] = {}
        items = 1
        for i, (name, mtype, off) in enumerate(t.extra):
            key = name or f"_anon{i}"
            if key in parts:
                raise BtfError(f"BTF type {t.id} ({self.type_name(t.id)}) has two members named {key!r}")
            bitfield = off >> 24 if t.kind_flag else 0
            bit = off & 0xFFFFFF if t.kind_flag else off
            parts[key], n = self._member(t, key, mtype, bit, bitfield, depth, busy)
            items += n
            if items > MAX_FIELDS:
                return _Dec(_refused, items)
        members = list(parts.items())
        return _Dec(lambda buf, at: {k: f(buf, at) for k, f in members}, items)

    def _member(
        self, t: BtfType, key: str, mtype: int, bit: int, bitfield: int, depth: int, busy: set[int]
    ) -> tuple[_Decode, int]:
        """One member's decoder (bytes at the record's offset -> value) and how many values it makes."""
        where = f"BTF type {t.id} ({self.type_name(t.id)}) member {key!r}"
        if not bitfield and not bit % 8 and not self._narrow(mtype):
            msize = self.size(mtype)
            if bit // 8 + msize > t.size_or_type:
                raise BtfError(f"{where} ({msize} bytes at byte {bit // 8}) lies past the {t.size_or_type} "
                               "bytes of its type", type_id=t.id)  # fmt: skip
            inner = self._decoder(mtype, depth + 1, busy)
            fn, start = inner.fn, bit // 8
            return (lambda buf, at: fn(buf, at + start)), inner.items
        # Bits: a kind_flag bitfield, an int narrower than its bytes (the older bitfield encoding), or
        # an int or enum at a bit offset.
        m = self.resolve(mtype)
        names: dict[int, str] | None = None
        if m.kind == "int":
            (enc,) = m.extra
            width, first = enc & 0xFF, bit + ((enc >> 16) & 0xFF)
            signed, is_bool = bool(enc >> 24 & _INT_SIGNED), bool(enc >> 24 & _INT_BOOL)
        elif m.kind in ("enum", "enum64"):
            width, first = m.size_or_type * 8, bit
            signed, is_bool, names = self.enum_signed(m.id), False, self.enum_values(m.id)
        else:
            raise BtfError(
                f"{where} is a bitfield or lies at bit {bit}, but its type is {m.kind}, not an int or enum",
                type_id=t.id,
            )
        if bitfield:
            width = bitfield
        if first + width > t.size_or_type * 8:
            raise BtfError(
                f"{where} ({width} bits at bit {first}) lies past the {t.size_or_type} bytes of its type",
                type_id=t.id,
            )
        return _bits_at(first, width, signed, is_bool, names), 1

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
    return Btf(types, strings if base is None else base._strings + strings, base)


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
        if base is not None and off < len(base._strings):
            text = _cstr(base._strings, off)
        else:
            local = off - len(base._strings) if base is not None else off
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


@functools.lru_cache(maxsize=32)
def _btf_by_id(btf_id: int) -> Btf:
    from . import _machine

    return parse_btf(_machine.current().libbpf().btf_raw(btf_id))


def load_btf(btf_id: int) -> Btf:
    """The parsed BTF object the kernel holds under ``btf_id`` (cached)."""
    with _cache_lock:
        return _btf_by_id(btf_id)


_BYTES = (bytes, bytearray, memoryview)


class BtfCodec(NumpyCodec):
    """A key or value typed by a map's BTF.

    ``dtype`` is its numpy layout, which the library reads, writes and sums in bulk; where numpy cannot
    hold the type exactly (a union, a struct with bitfields) it is the raw storage, ``np.void`` of the
    type's size, and values are given and returned as bytes. :meth:`value` decodes one value exactly,
    whatever its kind (:meth:`Btf.value`): what ``percpu dump`` prints.
    """

    def __init__(self, btf: Btf, type_id: int, dtype: np.dtype[Any]) -> None:
        super().__init__(dtype)
        self.btf = btf
        self.type_id = type_id
        self.name = btf.type_name(type_id)

    def value(self, raw: bytes) -> Any:
        """The exact decoding of one value's bytes. Raises :class:`BtfError` where BTF cannot say."""
        return self.btf.value(self.type_id, raw)

    def encode(self, value: Any) -> bytes:
        if isinstance(value, str) and self.btf.resolve(self.type_id).kind in ("enum", "enum64"):
            by_name = {n: v for v, n in self.btf.enum_values(self.type_id).items()}
            if value not in by_name:
                raise PercpuError(f"{value!r} is not an enumerator of {self.name} ({', '.join(by_name)})")
            value = by_name[value]
        elif self.dtype.names is None and self.dtype.kind == "V" and not isinstance(value, _BYTES):
            raise PercpuError(
                f"cannot store {value!r} as {self.name}: numpy has no exact layout for it (a union or "
                f"bitfields), so give its {self.size} bytes"
            )
        return super().encode(value)


def codec_from_btf(btf_id: int, type_id: int, size: int) -> Codec | None:
    """A codec for a map's key or value from its BTF, or None when BTF cannot give a layout (the map
    then reads as raw bytes). Whatever the BTF holds, this returns in time linear in its size."""
    try:
        btf = load_btf(btf_id)
        return btf_codec(btf, type_id, size)
    except (PercpuError, OSError):
        return None


def btf_codec(btf: Btf, type_id: int, size: int) -> BtfCodec | None:
    """The codec of ``type_id`` in ``btf`` for a key or value of ``size`` bytes, or None where its size
    differs or it has no layout at all (a function, a forward declaration). Raises :class:`BtfError` for a
    malformed type."""
    if btf.size(type_id) != size:  # before any layout: the map's own size bounds what is built
        return None
    dt = btf.dtype(type_id)
    if dt is None or dt.itemsize != size:
        return None
    return BtfCodec(btf, type_id, dt)
