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
``round_up(size, 8)`` (:func:`percpu.layout.round8`); :class:`PerCpuValue` hides it.
"""

from __future__ import annotations

import ctypes
import warnings
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, Sequence, ValuesView
from typing import Any

import numpy as np

from .codecs import (
    BytesCodec,
    Codec,
    CtypesCodec,
    Int,
    IntCodec,
    NumpyCodec,
    TypeSpec,
    as_integer,
    check_size,
    integer_array,
    is_numeric,
)
from .cpus import CpuList, CpuLists
from .errors import CpuNotPossible, SizeMismatch, TypeSpecError
from .typespec import parse_type

__all__ = [
    "BytesCodec",
    "Codec",
    "CtypesCodec",
    "Int",
    "IntCodec",
    "NumpyCodec",
    "PerCpuValue",
    "TypeSpec",
    "as_integer",
    "check_size",
    "codec_for",
    "integer_array",
    "is_numeric",
    "same_array",
]


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


class PerCpuValue(Mapping[int, Any]):
    """One key's value on every possible CPU, indexed by CPU id.

    ``v[cpu]`` is CPU ``cpu``'s value (CPU id, not slot index: on a system whose possible CPUs are
    ``0,2-3``, ``v[2]`` is the second slot). Offline CPUs keep their slot and their value. The object is
    immutable.

    It is a mapping from CPU id to value, as a ``pandas.Series`` indexed by CPU is: :meth:`keys` are the
    CPU ids, :meth:`items` ``(cpu, value)`` pairs, ``cpu in v`` asks whether ``cpu`` is a possible CPU,
    and ``dict(v)`` and ``pd.Series(v)`` are keyed by CPU id. Like a Series, and unlike a dict, iterating
    yields the values, in CPU order (``list(v)``, ``sum(v)`` and ``max(v)`` are over values, as they
    always were). ``np.asarray(v)`` is the values array, shape (possible CPUs, ...), row i CPU
    ``cpus[i]``; :meth:`to_pandas` the Series (or a DataFrame of a record's fields).
    """

    __slots__ = ("_array", "_codec", "_cpus")

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

    def __getitem__(self, cpu: int) -> Any:
        """CPU ``cpu``'s value: ``cpu`` an integer CPU id (:meth:`CpuList.slot`, the one rule for CPU
        ids); :class:`~percpu.errors.CpuNotPossible` for any other."""
        return self._codec.decode(self._array[self._cpus.slot(cpu)])

    def __iter__(self) -> Iterator[Any]:
        """The values in CPU order (a Series' iteration, not a dict's: the keys are :meth:`keys`)."""
        for i in range(len(self._cpus)):
            yield self._codec.decode(self._array[i])

    def __reversed__(self) -> Iterator[Any]:
        for i in reversed(range(len(self._cpus))):
            yield self._codec.decode(self._array[i])

    def __contains__(self, cpu: object) -> bool:
        """Whether ``cpu`` is one of the possible CPUs (``v[cpu]`` works), as ``in`` is for a Series."""
        try:
            self._cpus.slot(cpu)
        except CpuNotPossible:
            return False
        return True

    def keys(self) -> KeysView[int]:
        """The possible CPU ids, in slot order."""
        return dict.fromkeys(self._cpus).keys()

    def values(self) -> ValuesView[Any]:
        """The values, in CPU order."""
        return self.to_dict().values()

    def items(self) -> ItemsView[int, Any]:
        """``(cpu id, value)`` pairs in CPU order."""
        return self.to_dict().items()

    def get(self, cpu: int, default: Any = None) -> Any:
        """CPU ``cpu``'s value, or ``default`` when ``cpu`` is not a possible CPU."""
        if cpu not in self:
            return default
        return self[cpu]

    def count(self, value: Any) -> int:
        """How many CPUs hold ``value``."""
        return sum(1 for v in self if v is value or v == value)

    def index(self, value: Any) -> int:
        """The first CPU (in CPU order) that holds ``value``; ValueError if none does."""
        for cpu, v in self.items():
            if v is value or v == value:
                return cpu
        raise ValueError(f"no CPU holds {value!r}")

    def to_dict(self) -> dict[int, Any]:
        return dict(zip(self._cpus, self, strict=True))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """The values, shape (possible CPUs, ...), row i CPU ``cpus[i]`` (NumPy's array protocol, ``copy``
        as NumPy 2 passes it): read-only unless a copy is asked for. Integers numpy has no type for
        (``Int(3)``) come as Python ints in an object array."""
        a = self._array
        if isinstance(self._codec, IntCodec) and a.dtype.kind == "V":
            if copy is False:
                raise ValueError(f"{self._codec.name} values are decoded into a new array: a copy is needed")
            a = np.empty(len(self), dtype=object)
            a[:] = list(self)
            copy = False
        if dtype is not None and np.dtype(dtype) != a.dtype:
            if copy is False:
                raise ValueError(f"{a.dtype} values cannot be {np.dtype(dtype)} without a copy")
            out: np.ndarray = a.astype(dtype)
            return out
        return a.copy() if copy else a

    def to_pandas(self) -> Any:
        """A ``pandas.Series`` of the values indexed by CPU id (index ``cpu``), or a ``DataFrame`` with a
        column per field (``a.b`` nested, ``h[0]`` for an array's elements) for records and arrays. Needs
        pandas (``pip install pandas``)."""
        from . import _frames

        pd = _frames.pandas("PerCpuValue.to_pandas()")
        cols = _frames.flat_columns(self._array, 1, _frames.VALUE, self._codec)
        index = _frames.cpu_index(self._cpus)
        if len(cols) == 1 and cols[0][0] == _frames.VALUE:
            return pd.Series(cols[0][1], index=index, name=_frames.VALUE)
        return pd.DataFrame(dict(cols), index=index)

    def to_numpy(self) -> np.ndarray:
        """A copy of the values, shape ``(possible CPUs, ...)``; row i is CPU ``cpus[i]``."""
        out: np.ndarray = self._array.copy()
        return out

    def only(self, cpus: Iterable[int]) -> PerCpuValue:
        """The values of the given CPUs only, in CPU order. A CPU this value has no slot for is refused
        (:class:`~percpu.errors.CpuNotPossible`, naming it and the CPUs there are), never dropped."""
        idx = sorted({self._cpus.slot(c) for c in cpus})
        return PerCpuValue(self._array[idx], CpuList(self._cpus[i] for i in idx), self._codec)

    def online(self, topology: CpuLists | None = None) -> PerCpuValue:
        """The values of the CPUs online now (offline CPUs keep slots and may hold counts)."""
        from .cpus import cpu_lists as _topology

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
        """Whether ``other`` is a PerCpuValue for the same CPUs holding the same values: the same type,
        byte for byte (see :func:`same_array`). A dict compares with ``dict(v) == d``."""
        if isinstance(other, PerCpuValue):
            return self._cpus == other._cpus and same_array(self._array, other._array)
        return NotImplemented

    # Unhashable, as numpy arrays and pandas objects are: equal values would need equal hashes, and the
    # values live in an array.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(f"{c}: {v!r}" for c, v in list(self.items())[:8])
        more = ", ..." if len(self) > 8 else ""
        return f"PerCpuValue({{{shown}{more}}})"


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a`` and ``b`` hold the same values: the same dtype and shape, and the same bytes. The
    equality of :class:`PerCpuValue` and :class:`~percpu.maps.Snapshot`: exact and reflexive (a NaN equals
    the same NaN, as in ``pandas.DataFrame.equals``; ``0.0`` and ``-0.0`` differ), never a numpy array
    whose truth is ambiguous, and never equal across types (``int32`` -1 is not ``uint32`` 4294967295,
    though their bytes are)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    x, y = np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1)
    return bool(np.array_equal(x.view(np.uint8), y.view(np.uint8)))


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
