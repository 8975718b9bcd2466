"""A parsed BTF blob: its types, their sizes and names, and their numpy layouts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..errors import BtfError, PercpuError
from ._decode import ValueDecoder
from ._model import (
    _CHAR_NAMES,
    _INT_CHAR,
    _MAX_DEPTH,
    _MODIFIERS,
    _QUALIFIERS,
    MAX_FIELDS,
    BtfType,
    guarded,
    int_overflows,
    too_deep,
)


class _Layout(NamedTuple):
    dtype: np.dtype[Any] | None
    fields: int  # nodes of the flattened field tree (an array counts its element once)


def _raw(size: int) -> _Layout:
    """The raw storage of a type numpy cannot hold exactly: its bytes, which Btf.value() decodes."""
    return _Layout(np.dtype((np.void, size)), 1)


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
        self._values: ValueDecoder | None = None
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
            raise too_deep(type_id)
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
            raise too_deep(type_id)
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

    def narrow(self, type_id: int) -> bool:
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
                f"BTF type {type_id} ({self.safe_name(type_id)}) cannot be laid out: {exc}", type_id=type_id
            ) from None

    def safe_name(self, type_id: int) -> str:
        """The type's name, or ``unnamed`` where the type is malformed: for messages."""
        try:
            return self.type_name(type_id)
        except PercpuError:
            return "unnamed"

    def _layout(self, type_id: int, depth: int, busy: set[int]) -> _Layout:
        known = self._layouts.get(type_id)
        if known is not None:
            return known
        out = guarded(type_id, depth, busy, lambda: self._build(type_id, depth, busy))
        if out.fields > MAX_FIELDS:
            raise BtfError(
                f"BTF type {type_id} ({self.safe_name(type_id)}) has more than {MAX_FIELDS:,} fields "
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
                raise int_overflows(t, first, bits)
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
                if off % 8 or self.narrow(mtype):
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

    # --- exact decoding (percpu.btf._decode) -------------------------------------------------------------

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
        if self._values is None:
            self._values = ValueDecoder(self)
        return self._values.decoder(type_id)

    @property
    def strings(self) -> bytes:
        """The string section (with a base, the base's strings first, as type records count offsets)."""
        return self._strings

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
