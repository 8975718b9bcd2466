"""Exact decoding of a BTF-typed value: every kind from its bytes, bit by bit where it must.

A :class:`ValueDecoder` builds one decoder per type id of a :class:`~percpu.btf.Btf` and keeps it; a
value then costs one call per part, and a type that would decode into more than ``MAX_FIELDS`` objects
is refused when its decoder is built, not per value.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import numpy as np

from ..errors import BtfError
from ._model import (
    _INT_BOOL,
    _INT_SIGNED,
    MAX_FIELDS,
    BtfType,
    CharArray,
    EnumValue,
    NanValue,
    RawBytes,
    guarded,
    int_overflows,
)


class Types(Protocol):
    """What decoding asks of a blob's types: :class:`~percpu.btf.Btf` answers it. A protocol here, so that
    ``_btf`` imports this module and nothing imports back."""

    def resolve(self, type_id: int) -> BtfType: ...
    def size(self, type_id: int) -> int: ...
    def type_name(self, type_id: int) -> str: ...
    def safe_name(self, type_id: int) -> str: ...
    def is_char(self, type_id: int) -> bool: ...
    def narrow(self, type_id: int) -> bool: ...
    def enum_signed(self, type_id: int) -> bool: ...
    def enum_values(self, type_id: int) -> dict[int, str]: ...


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


class ValueDecoder:
    """The exact decoders of one BTF blob's types, each built once (see :meth:`Btf.value`)."""

    def __init__(self, btf: Types) -> None:
        self.btf = btf
        # Results only: a race between two threads builds the same decoder twice, never a wrong one.
        self._known: dict[int, _Dec] = {}

    def value(self, type_id: int, raw: bytes) -> Any:
        """Decode ``raw``, the bytes of one value of ``type_id``, exactly as C reads them: what each kind
        becomes and what is refused is said once, at :meth:`Btf.value <percpu.btf.Btf.value>`."""
        return self.decoder(type_id)(raw)

    def decoder(self, type_id: int) -> Callable[[bytes], Any]:
        """:meth:`value` for one type, built once: raises :class:`BtfError` now rather than per value."""
        dec = self._decoder(type_id, 0, set())
        size = self.btf.size(type_id)
        name = self.btf.safe_name(type_id)

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
        known = self._known.get(type_id)
        if known is not None:
            return known
        out = guarded(type_id, depth, busy, lambda: self._build_decoder(type_id, depth, busy))
        if out.items > MAX_FIELDS:
            raise BtfError(
                f"BTF type {type_id} ({self.btf.safe_name(type_id)}) decodes into more than {MAX_FIELDS:,} "
                "values, more than percpu decodes one by one",
                type_id=type_id,
            )
        self._known[type_id] = out
        return out

    def _build_decoder(self, type_id: int, depth: int, busy: set[int]) -> _Dec:
        t = self.btf.resolve(type_id)
        if t.id != type_id:
            return self._decoder(t.id, depth + 1, busy)
        size = t.size_or_type
        if t.kind == "int":
            (enc,) = t.extra
            bits, first = enc & 0xFF, (enc >> 16) & 0xFF
            signed, is_bool = bool(enc >> 24 & _INT_SIGNED), bool(enc >> 24 & _INT_BOOL)
            if first + bits > size * 8:
                raise int_overflows(t, first, bits)
            if bits == size * 8 and not first:
                return _Dec(_whole_int(size, signed, is_bool), 1)
            return _Dec(_bits_at(first, bits, signed, is_bool, None), 1)
        if t.kind in ("enum", "enum64"):
            names = self.btf.enum_values(t.id)
            return _Dec(_bits_at(0, size * 8, self.btf.enum_signed(t.id), False, names), 1)
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
        step = self.btf.size(elem)
        if step == 1 and self.btf.is_char(elem):
            return _Dec(lambda buf, at: CharArray(buf[at : at + n]), 1)
        e = self.btf.resolve(elem)
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
                raise BtfError(f"BTF type {t.id} ({self.btf.type_name(t.id)}) has two members named {key!r}")
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
        where = f"BTF type {t.id} ({self.btf.type_name(t.id)}) member {key!r}"
        if not bitfield and not bit % 8 and not self.btf.narrow(mtype):
            msize = self.btf.size(mtype)
            if bit // 8 + msize > t.size_or_type:
                raise BtfError(f"{where} ({msize} bytes at byte {bit // 8}) lies past the {t.size_or_type} "
                               "bytes of its type", type_id=t.id)  # fmt: skip
            inner = self._decoder(mtype, depth + 1, busy)
            fn, start = inner.fn, bit // 8
            return (lambda buf, at: fn(buf, at + start)), inner.items
        # Bits: a kind_flag bitfield, an int narrower than its bytes (the older bitfield encoding), or
        # an int or enum at a bit offset.
        m = self.btf.resolve(mtype)
        names: dict[int, str] | None = None
        if m.kind == "int":
            (enc,) = m.extra
            width, first = enc & 0xFF, bit + ((enc >> 16) & 0xFF)
            signed, is_bool = bool(enc >> 24 & _INT_SIGNED), bool(enc >> 24 & _INT_BOOL)
        elif m.kind in ("enum", "enum64"):
            width, first = m.size_or_type * 8, bit
            signed, is_bool, names = self.btf.enum_signed(m.id), False, self.btf.enum_values(m.id)
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
