"""What the kernel calls maps and what a whole-map read returns: map types, the per-CPU ones, limits,
what a map of a given geometry costs in kernel memory (:func:`memory_bytes`), and :class:`Snapshot`."""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, overload

import numpy as np

from .._uapi import BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, MapType

__all__ = [
    "ARRAY_TYPES",
    "CGROUP_STORAGE_KEY",
    "HASH_TYPES",
    "MAX_HASH_ENTRIES",
    "MAX_VALUE_SIZE",
    "PERCPU_TYPES",
    "SNAPSHOT_PREALLOC",
    "MapType",
    "Row",
    "Snapshot",
    "human_bytes",
    "memory_bytes",
    "user_value_bytes",
]
from .. import _frames
from ..cpus import CpuList
from ..errors import (
    KeyNotFound,
    PercpuError,
)
from ..layout import Layout, round8
from ..values import (
    Codec,
    IntCodec,
    NumpyCodec,
    PerCpuValue,
    is_numeric,
    reduce_cpus,
    same_array,
)

MAX_VALUE_SIZE = 32768  # per-CPU values: round_up(value_size, 8) <= PCPU_MIN_UNIT_SIZE
MAX_HASH_ENTRIES = 1 << 31  # htab_map_alloc(): the buckets, a power of two, must fit 32 bits
SNAPSHOT_PREALLOC = 64 << 20  # bytes a snapshot allocates before it knows how many elements there are


PERCPU_TYPES = frozenset(t for t in MapType if t.percpu)

# struct bpf_cgroup_storage_key { __u64 cgroup_inode_id; __u32 attach_type; } (16 bytes with padding)
CGROUP_STORAGE_KEY = np.dtype(
    {
        "names": ["cgroup_inode_id", "attach_type"],
        "formats": ["<u8", "<u4"],
        "offsets": [0, 8],
        "itemsize": 16,
    }
)


# What the kernel's own accounting (the ``memlock`` line of a map fd's fdinfo: map_mem_usage(), Linux 6.4)
# adds to the values, as measured on Linux 6.18 (x86_64): struct bpf_array, struct bpf_htab, the header
# of struct htab_elem before its key, struct bucket, and HASHTAB_MAP_LOCK_COUNT ints per possible CPU.
# Other kernels and configs size the two map headers differently by some bytes; the per-element terms,
# which are what grows, follow the kernel's formula.
_ARRAY_HEADER = 312
_HTAB_HEADER = 832
_HTAB_ELEM = 48
_BUCKET = 16
_HTAB_LOCKS = 8 * 4
_POINTER = 8
_PAGE = 4096

ARRAY_TYPES = frozenset({MapType.ARRAY, MapType.PERCPU_ARRAY})
HASH_TYPES = frozenset({MapType.HASH, MapType.PERCPU_HASH, MapType.LRU_HASH, MapType.LRU_PERCPU_HASH})
_LRU = frozenset({MapType.LRU_HASH, MapType.LRU_PERCPU_HASH})


def memory_bytes(
    map_type: int,
    key_size: int,
    value_size: int,
    max_entries: int,
    possible_cpus: int,
    flags: int = 0,
    *,
    at_creation: bool = False,
) -> int:
    """Bytes of kernel memory a map of this geometry takes when full (``at_creation``: as soon as it is
    created), by the kernel's own accounting (the ``memlock`` line of its fdinfo since Linux 6.4).

    Per-CPU maps hold one ``round_up(value_size, 8)`` value per possible CPU for every entry:
    ``max_entries x round_up(value_size, 8) x possible CPUs``, plus a pointer per entry (arrays) or an
    element with its key (hashes), plus the map's buckets and header. Arrays and hashes without
    ``BPF_F_NO_PREALLOC`` allocate all of it when they are created. A ``PERCPU_CGROUP_STORAGE`` element is
    made per attached cgroup, so its map costs nothing up front. Other types are estimated as
    ``max_entries x (key + value)``.
    """
    n, stride = max_entries, round8(value_size)
    percpu = map_type in PERCPU_TYPES
    if map_type in ARRAY_TYPES:
        if percpu:
            return _ARRAY_HEADER + n * _POINTER + n * stride * possible_cpus
        if flags & BPF_F_MMAPABLE:
            return -(-_ARRAY_HEADER // _PAGE) * _PAGE + -(-n * stride // _PAGE) * _PAGE
        return _ARRAY_HEADER + n * stride
    if map_type in HASH_TYPES:
        lru = map_type in _LRU
        buckets = 1 << max(n - 1, 0).bit_length()
        usage = _HTAB_HEADER + _BUCKET * buckets + _HTAB_LOCKS * possible_cpus
        elem = _HTAB_ELEM + round8(key_size) + (_POINTER if percpu else stride)
        if lru or not flags & BPF_F_NO_PREALLOC:
            # Plain hashes keep one spare element per possible CPU for updates in flight.
            entries = n + (possible_cpus if not (percpu or lru) else 0)
            usage += elem * entries
            usage += stride * possible_cpus * entries if percpu else 0 if lru else _POINTER * possible_cpus
            return usage
        if at_creation:
            return usage
        # Elements allocated as they come, each on a free list (llist_node) and, if per-CPU, its pointer.
        usage += (elem + _POINTER) * n
        return usage + ((2 * _POINTER + stride * possible_cpus) * n if percpu else 0)
    if map_type == MapType.PERCPU_CGROUP_STORAGE:
        return 0 if at_creation else n * stride * possible_cpus
    return n * (round8(key_size) + stride)


def human_bytes(n: int) -> str:
    """``n`` bytes as people read them: ``48.0 GiB``, ``16.4 KiB``, ``312 bytes``."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def user_value_bytes(map_type: int, value_size: int, possible: int) -> int:
    """Bytes one user-space lookup of an element writes: the rule a correct reader follows."""
    return Layout(0, value_size, possible, map_type in PERCPU_TYPES).element_bytes


class Row(NamedTuple):
    """One element of a :class:`Snapshot`: its key, and its value (a :class:`PerCpuValue` for per-CPU
    maps)."""

    key: Any
    value: Any


@dataclass(frozen=True, repr=False, eq=False)
class Snapshot(Sequence[Row]):
    """A whole map read at once: ``keys`` (n,) and ``values`` (n, possible CPUs, ...) numpy arrays.

    Column i of ``values`` is CPU ``cpus[i]``. For maps that are not per-CPU, ``values`` is (n, ...); a
    snapshot of one CPU's values (``snapshot(cpu=5)``) is (n, ...) with ``cpus`` that one CPU. The
    arrays are read-only, in the order the kernel walked the map (a hash's buckets): :meth:`sorted`
    orders them by key.

    A snapshot is a sequence of :class:`Row` ``(key, value)``, decoded as a lookup decodes them:
    ``len(snap)``, ``for key, v in snap``, ``snap[0]`` (the first row), ``snap[:5]``, ``snap[mask]`` and
    ``snap[[3, 1]]`` (snapshots of those rows), ``key in snap`` and :meth:`lookup` (by key).

    ``np.asarray(snap)`` is ``values``, the (n, possible CPUs, ...) array, read-only unless a copy is
    asked for (``np.array(snap)``); its columns are slots, CPU ``cpus[i]`` in column i, not CPU ids.
    :meth:`to_pandas` and :meth:`to_dataframe` label them with the real CPU ids (pandas is optional).
    ``pd.DataFrame(snap)`` sees the sequence, a frame of ``key`` and ``value`` objects: the conversions
    are the way to numbers by CPU.

    ``a == b`` is a bool, as for other sequences: the same rows in the same order, for the same CPUs,
    keys and values of the same types byte for byte (:func:`percpu.values.same_array`, as
    ``DataFrame.equals``). Two reads of a hash come in the kernel's bucket order: ``a.sorted() ==
    b.sorted()`` compares what they held. ``a.values == b.values`` is the element-wise comparison. A
    snapshot is not hashable (it holds arrays).
    """

    keys: np.ndarray
    values: np.ndarray
    cpus: CpuList
    percpu: bool
    # How the map's lookups decode a key and a value; without them, numpy's own scalars and records.
    key_codec: Codec | None = field(default=None, compare=False)
    value_codec: Codec | None = field(default=None, compare=False)
    _rows_by_key: dict[bytes, int] | None = field(default=None, init=False, compare=False)

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        return (
            self.percpu == other.percpu
            and self.cpus == other.cpus
            and same_array(self.keys, other.keys)
            and same_array(self.values, other.values)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        what = (
            f"x {len(self.cpus)} CPUs ({self.cpus})"
            if self.percpu
            else (f"on CPU {self.cpus}" if len(self.cpus) == 1 else "(not per-CPU)")
        )
        return f"<Snapshot {len(self)} keys {what}, key {self._kc.name}, value {self._vc.name}>"

    # --- rows -----------------------------------------------------------------------------------------

    @staticmethod
    def _row_dtype(a: np.ndarray, lead: int) -> np.dtype[Any]:
        """The dtype of one element of ``a`` past its first ``lead`` dimensions (sub-array types included:
        numpy spreads a ``u32[2]`` key over a dimension of its own)."""
        return np.dtype((a.dtype, a.shape[lead:])) if a.ndim > lead else a.dtype

    @property
    def _kc(self) -> Codec:
        return self.key_codec or NumpyCodec(self._row_dtype(self.keys, 1))

    @property
    def _vc(self) -> Codec:
        return self.value_codec or NumpyCodec(self._row_dtype(self.values, 2 if self.percpu else 1))

    def _row(self, i: int) -> Row:
        # ``a[i, ...]``: a 0-d view of the element (or the array of a sub-array type), as codecs decode
        key = self._kc.decode(self.keys[i, ...])
        if self.percpu:
            return Row(key, PerCpuValue(self.values[i], self.cpus, self._vc))
        return Row(key, self._vc.decode(self.values[i, ...]))

    @overload
    def __getitem__(self, index: int) -> Row: ...
    @overload
    def __getitem__(self, index: slice | Sequence[int] | np.ndarray) -> Snapshot: ...
    def __getitem__(self, index: Any) -> Row | Snapshot:
        """Row ``index`` (an int), or a snapshot of the rows a slice, row numbers or a mask select."""
        if isinstance(index, np.ndarray) and index.ndim == 0:
            index = index.item()
        if isinstance(index, bool | np.bool_ | tuple):
            raise TypeError(
                f"index a snapshot by row: an int, a slice, row numbers or a mask, not {index!r}; "
                "snap.cpu(cpu_id) is one CPU's column, snap.lookup(key) one key's value"
            )
        if isinstance(index, int | np.integer):
            n = len(self)
            i = operator.index(index)
            if not -n <= i < n:
                raise IndexError(f"row {i} of a snapshot of {n} rows")
            return self._row(i % n)
        keys, values = self.keys[index], self.values[index]
        for a in (keys, values):
            a.flags.writeable = False
        return Snapshot(keys, values, self.cpus, self.percpu, self.key_codec, self.value_codec)

    def __iter__(self) -> Iterator[Row]:
        for i in range(len(self)):
            yield self._row(i)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """``values`` (NumPy's array protocol, ``copy`` as NumPy 2 passes it): the same read-only array
        when no copy is asked for, a copy when one is, or when ``dtype`` differs."""
        if dtype is not None and np.dtype(dtype) != self.values.dtype:
            if copy is False:
                raise ValueError(
                    f"a snapshot's {self.values.dtype} values cannot be {np.dtype(dtype)} without a copy"
                )
            out: np.ndarray = self.values.astype(dtype)
            return out
        return self.values.copy() if copy else self.values

    # --- by key ---------------------------------------------------------------------------------------

    def _key_bytes(self, key: Any) -> bytes:
        return self._kc.encode(key)

    def _rows(self) -> dict[bytes, int]:
        known = self._rows_by_key
        if known is None:
            raw = np.ascontiguousarray(self.keys).view(np.uint8).reshape(len(self), -1)
            known = {raw[i].tobytes(): i for i in range(len(self))}
            object.__setattr__(self, "_rows_by_key", known)  # built once, on the first lookup
        return known

    def lookup(self, key: Any) -> Any:
        """The value of ``key`` when the map was read (a :class:`PerCpuValue` for per-CPU maps); raises
        :class:`~percpu.KeyNotFound`. The first lookup indexes the keys (O(n)), later ones are O(1)."""
        i = self._rows().get(self._key_bytes(key))
        if i is None:
            raise KeyNotFound(f"the snapshot has no key {key!r} ({len(self)} keys)")
        return self._row(i).value

    def __contains__(self, item: object) -> bool:
        """``key in snap``: whether the map held ``key``; ``(key, value) in snap`` compares the row too."""
        if isinstance(item, Row):
            try:
                value = self.lookup(item.key)
            except (PercpuError, TypeError, ValueError):
                return False
            if isinstance(value, np.ndarray):  # a sub-array value: compared whole
                return bool(np.array_equal(value, item.value))
            return bool(value == item.value)
        try:
            return self._key_bytes(item) in self._rows()
        except (PercpuError, TypeError, ValueError):
            return False

    def sorted(self) -> Snapshot:
        """The same rows ordered by key: integers as numbers (odd widths included), records field by
        field, bytes and C strings as bytes. Hash maps come back in the kernel's bucket order."""
        kc, keys = self._kc, self.keys
        if not len(self):
            return self
        if isinstance(kc, IntCodec) and keys.dtype.kind == "V":  # 3-byte, 16-byte integers: as numbers
            order = np.array(sorted(range(len(self)), key=lambda i: kc.decode(keys[i, ...])), dtype=np.intp)
        elif keys.ndim > 1:  # a key that is an array: its elements, first to last
            order = np.lexsort(keys.reshape(len(self), -1).T[::-1])
        else:
            order = np.argsort(keys, kind="stable")
        return self[order]

    # --- reductions -----------------------------------------------------------------------------------

    def sum(self) -> np.ndarray:
        """Per-key totals over all CPUs, exact: a ``uint64``/``int64`` array (``float64`` for floats) when
        every total fits in 64 bits, else an ``object`` array of Python ints; records summed field by field
        into a record of such fields (see :func:`percpu.values.reduce_cpus`)."""
        if not self.percpu:
            return self.values
        if not is_numeric(self.values.dtype):
            raise TypeError(f"sum() needs numeric values; {self.values.dtype} is not")
        out: np.ndarray = np.asarray(reduce_cpus(self.values, "sum", axis=1))
        return out

    def cpu(self, cpu: int) -> np.ndarray:
        """Every key's value on CPU id ``cpu``."""
        if not self.percpu:
            raise TypeError("this snapshot is not of a per-CPU map")
        return self.values[:, self.cpus.slot(cpu)]

    def to_dict(self) -> dict[Any, Any]:
        """``{key: values row}``, keys as Python scalars where they are scalars (small maps only)."""
        out: dict[Any, Any] = {}
        for k, v in zip(self.keys, self.values, strict=True):
            kk = k.item() if self.keys.dtype.kind in "iu" else bytes(np.asarray(k).tobytes())
            out[kk] = v
        return out

    # --- pandas ---------------------------------------------------------------------------------------

    def _by_cpu(self) -> tuple[np.ndarray, CpuList | None]:
        """Values with a CPU axis, and its CPU ids (None for a map that is not per-CPU)."""
        if self.percpu:
            return self.values, self.cpus
        if len(self.cpus) == 1:  # one CPU's values (snapshot(cpu=...)): that CPU's column
            return self.values[:, np.newaxis, ...], self.cpus
        return self.values, None

    def to_pandas(self) -> Any:
        """The snapshot as a pandas ``DataFrame``: one row per key (index ``key``, or a level per field of
        a record key), one column per CPU labelled with its real CPU id (columns ``cpu``).

        Values that are records or arrays give a column per field and CPU, ``(field, cpu)`` (``df["calls"]``
        is then the key x CPU table of one field). A map that is not per-CPU gives a ``Series`` (a
        ``DataFrame`` of fields for records) indexed by key. Needs pandas (``pip install pandas``)."""
        pd = _frames.pandas("Snapshot.to_pandas()")
        index = _frames.key_index(self.keys, self.key_codec)
        values, cpus = self._by_cpu()
        if cpus is None:
            cols = _frames.flat_columns(values, 1, _frames.VALUE, self.value_codec)
            if len(cols) == 1 and cols[0][0] == _frames.VALUE:
                return pd.Series(cols[0][1], index=index, name=_frames.VALUE)
            return pd.DataFrame(dict(cols), index=index)
        cols = _frames.flat_columns(values, 2, _frames.VALUE, self.value_codec)
        if len(cols) == 1 and cols[0][0] == _frames.VALUE:
            return pd.DataFrame(cols[0][1], index=index, columns=_frames.cpu_index(cpus))
        data = {(name, cpu): col[:, j] for name, col in cols for j, cpu in enumerate(cpus)}
        frame = pd.DataFrame(data, index=index)
        frame.columns = pd.MultiIndex.from_tuples(list(data), names=["field", _frames.CPU])
        return frame

    def to_dataframe(self) -> Any:
        """The snapshot in long form: one row per (key, CPU), indexed by ``key`` (a level per field of a
        record key) and ``cpu`` (real CPU ids), with a ``value`` column, or one per field of a record.

        The form for ``groupby`` (``df.groupby(level="cpu").sum()``), for plotting libraries, and for
        xarray: ``df.to_xarray()`` is a Dataset with ``key`` and ``cpu`` dimensions. Needs pandas."""
        pd = _frames.pandas("Snapshot.to_dataframe()")
        values, cpus = self._by_cpu()
        if cpus is None:
            cols = _frames.flat_columns(values, 1, _frames.VALUE, self.value_codec)
            return pd.DataFrame(dict(cols), index=_frames.key_index(self.keys, self.key_codec))
        m = len(cpus)
        levels = _frames.key_levels(self.keys, self.key_codec)
        index = pd.MultiIndex.from_arrays(
            [*(np.repeat(col, m) for _, col in levels), np.tile(np.asarray(list(cpus)), len(self))],
            names=[*(name for name, _ in levels), _frames.CPU],
        )
        cols = _frames.flat_columns(values, 2, _frames.VALUE, self.value_codec)
        return pd.DataFrame({name: col.reshape(-1) for name, col in cols}, index=index)
