"""BTF's records and what a decoded value is made of: the kinds, the limits a reader keeps, one type
record (:class:`BtfType`), and the value types :meth:`Btf.value <percpu.btf.Btf.value>` returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import BtfError

_T = TypeVar("_T")

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


def too_deep(type_id: int) -> BtfError:
    return BtfError(
        f"BTF type {type_id} nests more than {_MAX_DEPTH} levels deep (a reference cycle?)", type_id=type_id
    )


def cycle(type_id: int) -> BtfError:
    return BtfError(f"BTF type {type_id} contains itself (a reference cycle?)", type_id=type_id)


def guarded(type_id: int, depth: int, busy: set[int], build: Callable[[], _T]) -> _T:
    """``build()`` what a type needs (its layout, its decoder), refusing a type that contains itself or
    nests past ``_MAX_DEPTH``: ``busy`` holds the types being built further up."""
    if type_id in busy:
        raise cycle(type_id)
    if depth > _MAX_DEPTH:
        raise too_deep(type_id)
    busy.add(type_id)
    try:
        return build()
    finally:
        busy.discard(type_id)


def int_overflows(t: BtfType, first: int, bits: int) -> BtfError:
    return BtfError(
        f"BTF type {t.id} ({t.name or 'int'}) holds {bits} bits from bit {first}, past its "
        f"{t.size_or_type} bytes",
        type_id=t.id,
    )


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
