"""What the kernel calls maps and what a whole-map read returns: map types, the per-CPU ones, limits,
what a map of a given geometry costs in kernel memory (:func:`memory_bytes`), and :class:`Snapshot`."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._uapi import BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, MapType

__all__ = [
    "CGROUP_STORAGE_KEY",
    "MAX_VALUE_SIZE",
    "PERCPU_TYPES",
    "SNAPSHOT_PREALLOC",
    "MapType",
    "Snapshot",
    "human_bytes",
    "memory_bytes",
    "user_value_bytes",
]
from ..cpus import CpuList
from ..errors import (
    CpuNotPossible,
)
from ..layout import Layout, round8
from ..values import (
    is_numeric,
    reduce_cpus,
)

MAX_VALUE_SIZE = 32768  # per-CPU values: round_up(value_size, 8) <= PCPU_MIN_UNIT_SIZE
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

_ARRAYS = frozenset({MapType.ARRAY, MapType.PERCPU_ARRAY})
_HASHES = frozenset({MapType.HASH, MapType.PERCPU_HASH, MapType.LRU_HASH, MapType.LRU_PERCPU_HASH})
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
    if map_type in _ARRAYS:
        if percpu:
            return _ARRAY_HEADER + n * _POINTER + n * stride * possible_cpus
        if flags & BPF_F_MMAPABLE:
            return -(-_ARRAY_HEADER // _PAGE) * _PAGE + -(-n * stride // _PAGE) * _PAGE
        return _ARRAY_HEADER + n * stride
    if map_type in _HASHES:
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


@dataclass(frozen=True)
class Snapshot:
    """A whole map read at once: ``keys`` (n,) and ``values`` (n, possible CPUs, ...) numpy arrays.

    Column i of ``values`` is CPU ``cpus[i]``. For maps that are not per-CPU, ``values`` is (n, ...).
    The arrays are read-only.
    """

    keys: np.ndarray
    values: np.ndarray
    cpus: CpuList
    percpu: bool

    def __len__(self) -> int:
        return int(self.keys.shape[0])

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
        try:
            if isinstance(cpu, bool):  # True and 1.0 compare equal to CPU 1: a CPU id is an integer
                raise TypeError(cpu)
            return self.values[:, self.cpus.ids.index(operator.index(cpu))]
        except (ValueError, TypeError):
            raise CpuNotPossible(cpu, str(self.cpus)) from None

    def to_dict(self) -> dict[Any, Any]:
        """``{key: values row}``, keys as Python scalars where they are scalars (small maps only)."""
        out: dict[Any, Any] = {}
        for k, v in zip(self.keys, self.values, strict=True):
            kk = k.item() if self.keys.dtype.kind in "iu" else bytes(np.asarray(k).tobytes())
            out[kk] = v
        return out
