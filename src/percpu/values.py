"""Key and value types, and the per-CPU value users get back.

A *codec* turns a declared type into bytes the kernel understands and back:

* numpy dtypes (``np.uint64``, ``"<u4"``, structured dtypes, sub-arrays),
* ctypes types (``ctypes.c_uint32``, ``Structure`` subclasses, arrays),
* :class:`Int` for integers of any width and signedness (3 bytes, 16 bytes, ...),
* ``bytes`` for raw values,
* text in C's spelling with the kernel's names: ``"u64"``, ``"char[16]"``, ``"struct {u32 pid; u64 n}"``
  (see :mod:`percpu.typespec`; ``"u8"`` is one byte there, numpy's ``"<u8"`` eight).

Every codec knows its size, and a map refuses a codec whose size differs from the kernel's key or value
size before any syscall. Per-CPU values are laid out by the kernel with a stride of
``round_up(size, 8)``; :func:`stride` computes it and :class:`PerCpuValue` hides it.
"""

from __future__ import annotations

import ctypes
import functools
import operator
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .cpus import CpuList, Topology
from .errors import CpuNotPossible, PercpuError, SizeMismatch, TypeSpecError

__all__ = ["Codec", "Int", "PerCpuValue", "codec_for", "stride"]

TypeSpec = Any  # np.dtype-like, ctypes type, Int, bytes, a Codec, or text ("u64", "struct {u32 a; u64 b}")


def stride(size: int) -> int:
    """Bytes between two CPUs' values in a per-CPU buffer: ``round_up(size, 8)``."""
    return (size + 7) & ~7


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
        self.name = f"{'i' if spec.signed else 'u'}int{spec.size * 8}"
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


def codec_for(spec: TypeSpec, size: int | None = None) -> Codec:
    """The codec for a declared type. ``bytes``, ``int`` and ``None`` take their width from ``size``."""
    if isinstance(spec, Codec):
        return spec
    if spec is None or spec is bytes:
        if size is None:
            raise TypeError("raw bytes need a size")
        return BytesCodec(size)
    if spec is int:
        if size is None:
            raise TypeError("int needs a size")
        return IntCodec(Int(size))
    if isinstance(spec, Int):
        return IntCodec(spec)
    if isinstance(spec, str):
        return _codec_of_text(spec)
    if isinstance(spec, type) and issubclass(
        spec, ctypes._SimpleCData | ctypes.Structure | ctypes.Union | ctypes.Array
    ):
        return CtypesCodec(spec)
    try:
        dt = np.dtype(spec)
    except TypeError as exc:
        raise TypeError(
            f"cannot use {spec!r} as a key or value type: give a numpy dtype, a ctypes type, "
            "percpu.Int(size, signed), or bytes"
        ) from exc
    return NumpyCodec(dt)


def _codec_of_text(text: str) -> Codec:
    """percpu's C-like spelling first ("u64", "char[16]", "struct {...}"), then numpy's ("<u4", "f8")."""
    from .typespec import parse_type

    try:
        return parse_type(text)
    except TypeSpecError as exc:
        try:
            # numpy parses some strings with ast.literal_eval (SyntaxError) and warns on deprecated
            # aliases: any complaint of its own means the text is not a type.
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                dt = np.dtype(text)
        except Exception:
            raise exc from None
        if dt.hasobject:
            raise exc from None
        return NumpyCodec(dt)


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


class PerCpuValue(Sequence[Any]):
    """One key's value on every possible CPU, indexed by CPU id.

    ``v[cpu]`` is CPU ``cpu``'s value (CPU id, not slot index: on a system whose possible CPUs are
    ``0,2-3``, ``v[2]`` is the second slot). Iterating yields values in CPU order; :meth:`items` yields
    ``(cpu, value)``. Offline CPUs keep their slot and their value. The object is immutable.
    """

    __slots__ = ("_array", "_codec", "_cpus", "_slot")

    def __init__(self, array: np.ndarray, cpus: CpuList, codec: Codec) -> None:
        if array.shape[:1] != (len(cpus),):
            raise SizeMismatch(
                f"{array.shape[0] if array.ndim else 0} per-CPU values for {len(cpus)} CPUs",
                what="value",
                expected=len(cpus),
                actual=array.shape[0] if array.ndim else 0,
            )
        array = array.copy() if array.flags.writeable else array
        array.flags.writeable = False
        self._array = array
        self._cpus = cpus
        self._codec = codec
        self._slot = {c: i for i, c in enumerate(cpus)}

    @classmethod
    def from_values(
        cls, values: Sequence[Any] | Mapping[int, Any] | np.ndarray, cpus: CpuList, codec: Codec
    ) -> PerCpuValue:
        """Build from one value per CPU: a sequence in CPU order, or a mapping that names every CPU."""
        if isinstance(values, PerCpuValue):
            if values.cpus != cpus:
                raise SizeMismatch(
                    f"value is for CPUs {values.cpus}, the map is for CPUs {cpus}",
                    what="value",
                    expected=len(cpus),
                    actual=len(values.cpus),
                )
            return values
        arr = np.zeros(len(cpus), dtype=codec.dtype)
        if isinstance(values, Mapping):
            missing = [c for c in cpus if c not in values]
            extra = [c for c in values if c not in cpus]
            if extra:
                raise SizeMismatch(
                    f"CPU {extra[0]} is not a possible CPU (possible: {cpus})",
                    what="value",
                    expected=len(cpus),
                    actual=len(values),
                    cpu=extra[0],
                )
            if missing:
                raise SizeMismatch(
                    f"no value for CPU {missing[0]}: give a value for every possible CPU ({cpus}), "
                    "or use update_cpu() to change one",
                    what="value",
                    expected=len(cpus),
                    actual=len(values),
                    cpu=missing[0],
                )
            items = [values[c] for c in cpus]
        else:
            items = list(values) if not isinstance(values, np.ndarray) else values  # type: ignore[assignment]
            if len(items) != len(cpus):
                raise SizeMismatch(
                    f"{len(items)} values given for {len(cpus)} possible CPUs ({cpus}); "
                    "per-CPU maps hold one value per possible CPU, not per online CPU",
                    what="value",
                    expected=len(cpus),
                    actual=len(items),
                )
        raw = arr.view(np.uint8).reshape(len(cpus), codec.size)
        for i, v in enumerate(items):
            raw[i] = np.frombuffer(codec.encode(v), dtype=np.uint8)
        return cls(arr, cpus, codec)

    @property
    def cpus(self) -> CpuList:
        """The possible CPUs, one per slot, in slot order."""
        return self._cpus

    def __len__(self) -> int:
        return len(self._cpus)

    def __getitem__(self, cpu: int) -> Any:  # type: ignore[override]
        try:
            if isinstance(cpu, bool):  # True and 1.0 hash like CPU 1: a CPU id is an integer
                raise TypeError(cpu)
            slot = self._slot[operator.index(cpu)]
        except (KeyError, TypeError):
            raise CpuNotPossible(cpu, str(self._cpus)) from None
        return self._codec.decode(self._array[slot])

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self._cpus)):
            yield self._codec.decode(self._array[i])

    def items(self) -> Iterator[tuple[int, Any]]:
        """``(cpu id, value)`` pairs in CPU order."""
        return zip(self._cpus, iter(self), strict=True)

    def to_dict(self) -> dict[int, Any]:
        return dict(self.items())

    def to_numpy(self) -> np.ndarray:
        """A copy of the values, shape ``(possible CPUs, ...)``; row i is CPU ``cpus[i]``."""
        out: np.ndarray = self._array.copy()
        return out

    def only(self, cpus: Sequence[int]) -> PerCpuValue:
        """The values of the given CPUs only."""
        idx = [self._slot[c] for c in cpus if c in self._slot]
        return PerCpuValue(self._array[idx], CpuList(self._cpus[i] for i in idx), self._codec)

    def online(self, topology: Topology | None = None) -> PerCpuValue:
        """The values of the CPUs online now (offline CPUs keep slots and may hold counts)."""
        from .cpus import topology as _topology

        topo = topology or _topology()
        return self.only(topo.online)

    def _reduce(self, fn: str) -> Any:
        if not self._codec.numeric:
            raise TypeError(f"{fn}() needs numeric values; {self._codec.name} is not")
        if isinstance(self._codec, IntCodec) and self._codec.dtype.kind == "V":
            ints = list(self)
            return {"sum": sum, "min": min, "max": max, "mean": lambda x: sum(x) / len(x)}[fn](ints)  # type: ignore[operator]
        r = reduce_cpus(self._array, fn)
        return r.item() if isinstance(r, np.generic) and not r.dtype.names else r

    def sum(self) -> Any:
        """The exact sum over all possible CPUs: a Python int for integers (never wrapped at 64 bits:
        int64 ``[2**63 - 1, 2**63 - 1]`` sums to ``2**64 - 2``), a float for floats, and for records a
        numpy record of the fields' sums (``uint64``/``int64`` fields, or Python ints in ``object``
        fields where a sum needs more than 64 bits). See :func:`reduce_cpus`."""
        return self._reduce("sum")

    def min(self) -> Any:
        return self._reduce("min")

    def max(self) -> Any:
        return self._reduce("max")

    def mean(self) -> Any:
        return self._reduce("mean")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PerCpuValue):
            return self._cpus == other._cpus and self._array.tobytes() == other._array.tobytes()
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(f"{c}: {v!r}" for c, v in list(self.items())[:8])
        more = ", ..." if len(self) > 8 else ""
        return f"PerCpuValue({{{shown}{more}}})"


def reduce_cpus(a: np.ndarray, fn: str = "sum", axis: int = 0) -> Any:
    """Reduce over the CPU axis (``axis``); records field by field, nested records included.

    Sums are exact. Integers (and bools, as counts) are summed as ``uint64`` or ``int64`` wherever that
    provably holds every sum, and the result is that numpy type; where a sum needs more than 64 bits
    (``[2**64 - 1, 2**64 - 1]``), the result holds Python ints (an ``object`` array, or an ``object``
    field of the record) with the exact total. Records come back as a record of such fields (``uint32``
    fields become ``uint64``), since the sum of a 32-bit counter over CPUs needs more than 32 bits. Floats
    are summed as ``float64``. ``min``/``max`` keep the values' own type; ``mean`` gives floats (a dict of
    them for records).
    """
    if fn == "sum":
        return _sum(a, axis)[()]
    if a.dtype.names:
        if fn == "mean":
            return {n: reduce_cpus(a[n], fn, axis) for n in a.dtype.names}
        shape = a.shape[:axis] + a.shape[axis + 1 :]
        out = np.zeros(shape, dtype=a.dtype)
        for n in a.dtype.names:
            out[n] = reduce_cpus(a[n], fn, axis)
        return out[()]
    if fn == "mean":
        return a.mean(axis=axis)
    return getattr(a, fn)(axis=axis)


def _sum(a: np.ndarray, axis: int) -> np.ndarray:
    """The exact sum over ``axis``, always as an array (0-d for one value); see :func:`reduce_cpus`."""
    if a.dtype.names:
        shape = a.shape[:axis] + a.shape[axis + 1 :]
        parts = [(n, _sum(a[n], axis)) for n in a.dtype.names]
        # A field's own sub-array shape follows the reduced axes; its type is what its sum needs.
        fields = [
            (n, np.dtype((p.dtype, p.shape[len(shape) :])) if p.ndim > len(shape) else p.dtype)
            for n, p in parts
        ]
        out = np.zeros(shape, dtype=np.dtype([(n, dt) for n, dt in fields]))
        for n, p in parts:
            out[n] = p
        return out
    if a.dtype.kind in "biu":
        return _exact_int_sum(a, axis)
    if a.dtype.kind == "f":
        return np.asarray(a.sum(axis=axis, dtype=np.float64))
    return np.asarray(a.sum(axis=axis))


def _exact_int_sum(a: np.ndarray, axis: int) -> np.ndarray:
    """Integers summed over ``axis``: 64-bit where it provably cannot wrap, else exactly in Python ints.

    Values of 4 bytes or less cannot wrap a 64-bit sum over fewer than 2**31 CPUs. For 8-byte values the
    largest magnitude bounds the sum; only when that bound passes 64 bits are the values split into 32-bit
    halves, each half summed exactly in 64 bits, and the halves joined in Python ints (work per key, not
    per key and CPU). The result is 64-bit again when every sum fits.
    """
    signed = a.dtype.kind == "i"
    wide = np.dtype(np.int64 if signed else np.uint64)
    info = np.iinfo(wide)
    n = a.shape[axis]
    if a.size == 0 or n <= 1 or a.dtype.itemsize < 8:
        return np.asarray(a.sum(axis=axis, dtype=wide))
    lo, hi = int(a.min()), int(a.max())
    if info.min <= lo * n and hi * n <= info.max:
        return np.asarray(a.sum(axis=axis, dtype=wide))
    t = a.dtype.type
    # astype(object) makes Python ints of the elements (asarray(..., dtype=object) keeps numpy scalars).
    high = np.asarray((a >> t(32)).sum(axis=axis, dtype=wide)).astype(object)
    low = np.asarray((a & t(0xFFFFFFFF)).sum(axis=axis, dtype=np.uint64)).astype(object)
    total = np.asarray(high * (1 << 32) + low).astype(object)
    if all(info.min <= v <= info.max for v in total.ravel()):
        return total.astype(wide)
    return total
