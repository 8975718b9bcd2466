"""Codecs: a declared key or value type turned into the bytes the kernel holds, and back.

* numpy dtypes (``np.uint64``, ``"<u4"``, structured dtypes, sub-arrays),
* ctypes types (``ctypes.c_uint32``, ``Structure`` subclasses, arrays),
* :class:`Int` for integers of any width and signedness (3 bytes, 16 bytes, ...),
* ``bytes`` for raw values.

Every codec knows its size, and a map refuses a codec whose size differs from the kernel's key or value
size before any syscall. Types written as C text are parsed into these codecs by :mod:`percpu.typespec`;
:func:`percpu.values.codec_for` takes any of the spellings.
"""

from __future__ import annotations

import ctypes
import functools
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import PercpuError, SizeMismatch, TypeSpecError

__all__ = [
    "BytesCodec",
    "Codec",
    "CtypesCodec",
    "Int",
    "IntCodec",
    "NumpyCodec",
    "TypeSpec",
    "as_integer",
    "check_size",
    "integer_array",
    "is_numeric",
]

TypeSpec = Any  # np.dtype-like, ctypes type, Int, bytes, a Codec, or text ("u64", "struct {u32 a; u64 b}")


def as_integer(value: Any, type_name: str) -> int:
    """``value`` as a Python int; a float only when it is integral (1.0 yes, 1.7 no: never truncate)."""
    if isinstance(value, bool | np.bool_):
        return int(value)
    try:
        return operator.index(value)
    except TypeError:
        pass
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return int(value)
    raise PercpuError(f"{value!r} is not an integer for {type_name}")


def integer_array(value: Any, dtype: np.dtype[Any], type_name: str) -> np.ndarray:
    """``value`` (a scalar or array-like) as an array of the integer ``dtype``, refusing what numpy's own
    cast would store as a different number: out of range (numpy wraps ``np.int64(-1)`` to ``4294967295``
    silently) or fractional (1.7). Converted once, checked, then cast."""
    info = np.iinfo(dtype)
    if np.ndim(value) == 0 and not isinstance(value, np.ndarray):
        n = as_integer(value, type_name)
        if not info.min <= n <= info.max:
            raise PercpuError(f"{value} does not fit in {type_name} ({info.min}..{info.max})")
        return np.asarray(n, dtype=dtype)
    try:
        arr = np.asarray(value)
    except OverflowError as exc:
        raise PercpuError(f"a value does not fit in {type_name} ({info.min}..{info.max})") from exc
    if arr.dtype.kind == "f" and not isinstance(value, np.ndarray):
        # numpy reads a list holding an int of 2**63 or more as float64, where 2**64 - 1 is 2**64 and
        # 2**53 + 1 is 2**53: integers given are taken as the integers they are.
        given = np.asarray(value, dtype=object)
        if any(isinstance(v, int | np.integer) for v in given.ravel()):
            arr = given
    if arr.dtype == object:  # Python ints beyond 64 bits, or mixed objects
        ints = [as_integer(v, type_name) for v in arr.ravel()]
        if not all(info.min <= v <= info.max for v in ints):
            raise PercpuError(f"a value does not fit in {type_name} ({info.min}..{info.max})")
        return np.array(ints, dtype=dtype).reshape(arr.shape)
    if arr.dtype.kind not in "biuf":
        # numpy would parse strings ("7") and drop imaginary parts (1+2j -> 1) on the cast
        raise PercpuError(f"{arr.dtype} values given for {type_name}; give integers")
    if arr.size and arr.dtype.kind in "iuf":
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (np.floor(arr) == arr)):
            raise PercpuError(f"non-integral values given for {type_name}")
        lo, hi = arr.min(), arr.max()
        if lo < info.min or hi > info.max:
            bad = lo if lo < info.min else hi
            raise PercpuError(f"{bad} does not fit in {type_name} ({info.min}..{info.max})")
    return arr.astype(dtype, copy=False)


@dataclass(frozen=True)
class Int:
    """An integer of ``size`` bytes (any width), little-endian unless ``byteorder="big"``."""

    size: int
    signed: bool = False
    byteorder: str = "little"

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 1:
            raise TypeSpecError(f"Int size must be a whole number of bytes, at least 1 (got {self.size!r})")
        if self.byteorder not in ("little", "big"):
            raise TypeSpecError(f"Int byteorder must be 'little' or 'big' (got {self.byteorder!r})")


class Codec:
    """Converts between Python values and the bytes of one key or value.

    ``dtype`` is the numpy type holding one element in bulk arrays (its itemsize is ``size``).
    """

    size: int
    dtype: np.dtype[Any]
    name: str

    def encode(self, value: Any) -> bytes:
        raise NotImplementedError

    def decode(self, raw: np.ndarray) -> Any:
        """Decode one element from an array of shape () with this codec's dtype."""
        raise NotImplementedError

    @property
    def numeric(self) -> bool:
        return is_numeric(self.dtype)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} ({self.size} bytes)>"


@functools.lru_cache(maxsize=256)
def is_numeric(dt: np.dtype[Any]) -> bool:
    # Remembered per dtype: a record may hold tens of thousands of fields and is asked on every sum.
    if dt.fields:
        return all(is_numeric(f[0]) for f in dt.fields.values())
    if dt.subdtype is not None:
        return is_numeric(dt.subdtype[0])
    return dt.kind in "biuf"


class NumpyCodec(Codec):
    def __init__(self, dtype: np.dtype[Any]) -> None:
        if dtype.hasobject:
            raise TypeError(f"dtype {dtype} holds Python objects; it has no fixed byte layout")
        self.dtype = dtype
        self.size = dtype.itemsize
        self.name = str(dtype)

    def encode(self, value: Any) -> bytes:
        if isinstance(value, bytes | bytearray | memoryview):
            b = bytes(value)
            if len(b) != self.size:
                raise SizeMismatch(
                    f"{len(b)} bytes given for a {self.size}-byte {self.name}",
                    what="value",
                    expected=self.size,
                    actual=len(b),
                )
            return b
        try:
            # A float too large for its field would be stored as inf: refuse it, as integers are.
            with np.errstate(over="raise", invalid="raise"):
                if self.dtype.kind in "iu":
                    arr = integer_array(value, self.dtype, self.name)
                elif self.dtype.fields and isinstance(value, Mapping):
                    arr = np.zeros((), dtype=self.dtype)
                    for k, v in value.items():
                        arr[k] = _field_value(v, self.dtype.fields[k][0], f"{self.name}.{k}")
                else:
                    if self.dtype.kind != "c" and np.iscomplexobj(value):
                        raise PercpuError(
                            f"complex values given for {self.name}: the imaginary part would be lost"
                        )
                    arr = np.asarray(value, dtype=self.dtype)
        except (ValueError, TypeError, OverflowError, KeyError, FloatingPointError) as exc:
            raise PercpuError(f"cannot store {value!r} as {self.name}: {exc}") from exc
        if arr.shape != ():
            raise PercpuError(f"{value!r} is not one {self.name} value (shape {arr.shape})")
        return arr.tobytes()

    def decode(self, raw: np.ndarray) -> Any:
        if self.dtype.fields is not None:
            # A numpy record (fields by name, still numpy-typed), copied: raw may be a view of a buffer
            # that the next lookup overwrites.
            return raw.copy()[()]
        if self.dtype.subdtype is not None:
            return np.array(raw)
        if self.dtype.kind == "V":
            return bytes(raw.tobytes())
        return raw.item()


def _field_value(value: Any, dt: np.dtype[Any], name: str) -> Any:
    """A record field's value, checked like a whole integer value: numpy would store 1.7 as 1 and
    wrap out-of-range numbers in a record silently."""
    base = dt.base if dt.subdtype is not None else dt
    if base.kind != "c" and np.iscomplexobj(value):
        raise PercpuError(f"complex values given for {name}: the imaginary part would be lost")
    if base.kind in "iu":
        arr = integer_array(value, base, name)
        if dt.subdtype is not None and arr.shape not in ((), dt.shape):  # a scalar fills the array
            raise PercpuError(f"{name} holds {dt.shape} values, {arr.shape} given")
        return arr
    return value


class IntCodec(Codec):
    """Integers of any width: numpy types for 1, 2, 4 and 8 bytes, ``int.from_bytes`` for the rest."""

    def __init__(self, spec: Int) -> None:
        self.spec = spec
        self.size = spec.size
        self.name = f"{'' if spec.signed else 'u'}int{spec.size * 8}"  # numpy's names: int128, uint24
        if spec.size in (1, 2, 4, 8):
            order = "<" if spec.byteorder == "little" else ">"
            self.dtype = np.dtype(f"{order}{'i' if spec.signed else 'u'}{spec.size}")
        else:
            self.dtype = np.dtype((np.void, spec.size))

    def encode(self, value: Any) -> bytes:
        if isinstance(value, bytes | bytearray):
            return NumpyCodec(np.dtype((np.void, self.size))).encode(value)
        n = as_integer(value, self.name)
        try:
            return n.to_bytes(self.size, self.spec.byteorder, signed=self.spec.signed)  # type: ignore[arg-type]
        except OverflowError as exc:
            raise PercpuError(f"{value} does not fit in {self.name}") from exc

    def decode(self, raw: np.ndarray) -> Any:
        if self.dtype.kind in "iu":
            # numpy has applied the byte order; a scalar's tobytes() is in native order, not the dtype's
            return int(raw)
        return int.from_bytes(raw.tobytes(), self.spec.byteorder, signed=self.spec.signed)  # type: ignore[arg-type]

    @property
    def numeric(self) -> bool:
        return True


class CtypesCodec(Codec):
    def __init__(self, ctype: type[ctypes._CData]) -> None:
        self.ctype = ctype
        self.size = ctypes.sizeof(ctype)
        self.name = ctype.__name__
        try:
            dt = np.dtype(ctype)
        except (TypeError, ValueError, NotImplementedError):
            dt = np.dtype((np.void, self.size))
        if dt.itemsize != self.size:
            dt = np.dtype((np.void, self.size))
        self.dtype = dt

    def encode(self, value: Any) -> bytes:
        if isinstance(value, self.ctype):
            return bytes(value)
        if isinstance(value, bytes | bytearray):
            return NumpyCodec(np.dtype((np.void, self.size))).encode(value)
        if issubclass(self.ctype, ctypes._SimpleCData):
            try:
                return bytes(self.ctype(value))
            except TypeError as exc:
                raise PercpuError(f"cannot store {value!r} as {self.name}: {exc}") from exc
        raise PercpuError(f"expected a {self.name} instance or {self.size} bytes, got {type(value).__name__}")

    def decode(self, raw: np.ndarray) -> Any:
        obj = self.ctype.from_buffer_copy(raw.tobytes())  # type: ignore[attr-defined]
        if isinstance(obj, ctypes._SimpleCData):
            return obj.value
        return obj


class BytesCodec(NumpyCodec):
    def __init__(self, size: int) -> None:
        super().__init__(np.dtype((np.void, size)))
        self.name = f"bytes[{size}]"


def check_size(codec: Codec, expected: int, what: str, map_name: str | None) -> None:
    if codec.size != expected:
        raise SizeMismatch(
            f"map {map_name or '?'}: {what} type {codec.name} is {codec.size} bytes, "
            f"the map's {what} size is {expected} bytes",
            what=what,
            expected=expected,
            actual=codec.size,
            map_name=map_name,
        )
