"""Typed BPF maps, per-CPU ones first.

The kernel copies ``round_up(value_size, 8) * possible CPUs`` bytes on every user-space lookup of a per-CPU
map. Every buffer here is allocated by this module from the kernel's own map info and the possible-CPU
count, so no call can hand the kernel a buffer smaller than what it writes. Values come back as
:class:`~percpu.values.PerCpuValue`, indexed by CPU id; bulk reads come back as numpy arrays
(:class:`Snapshot`).

The package, one idea a file: ``_kinds`` (map types, :class:`Snapshot`), ``_open`` (opening and
creating), ``_base`` (:class:`Map`: lifetime and element operations), ``_encoding`` (keys and values to
and from layout-sized buffers), ``_errors`` (what an element operation's errno means for a map), ``_bulk``
(:class:`BulkReader`, the key walk), ``_batch`` (batch writes), ``_percpu`` (:class:`PerCpuMap`),
``_types`` (the typed classes, :func:`open_map`), ``_system`` (:func:`list_maps`, :func:`check_pin_path`).
"""

from __future__ import annotations

from .._libbpf import BPF_ANY, BPF_EXIST, BPF_NOEXIST
from ._base import Map, cpu_flag_supported
from ._bulk import BulkReader
from ._kinds import (
    CGROUP_STORAGE_KEY,
    MAX_VALUE_SIZE,
    PERCPU_TYPES,
    SNAPSHOT_PREALLOC,
    MapType,
    Row,
    Snapshot,
    memory_bytes,
    user_value_bytes,
)
from ._percpu import PerCpuMap
from ._system import check_pin_path, list_maps
from ._types import Array, Hash, LruPerCpuHash, PerCpuArray, PerCpuCgroupStorage, PerCpuHash, open_map

__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_NOEXIST",
    "CGROUP_STORAGE_KEY",
    "MAX_VALUE_SIZE",
    "PERCPU_TYPES",
    "SNAPSHOT_PREALLOC",
    "Array",
    "BulkReader",
    "Hash",
    "LruPerCpuHash",
    "Map",
    "MapType",
    "PerCpuArray",
    "PerCpuCgroupStorage",
    "PerCpuHash",
    "PerCpuMap",
    "Row",
    "Snapshot",
    "check_pin_path",
    "cpu_flag_supported",
    "list_maps",
    "memory_bytes",
    "open_map",
    "user_value_bytes",
]
