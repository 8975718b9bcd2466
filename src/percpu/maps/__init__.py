"""Typed BPF maps, per-CPU ones first.

The kernel copies ``round_up(value_size, 8) * possible CPUs`` bytes on every user-space lookup of a per-CPU
map. Every buffer here is allocated by this module from the kernel's own map info and the possible-CPU
count, so no call can hand the kernel a buffer smaller than what it writes. Values come back as
:class:`~percpu.values.PerCpuValue`, indexed by CPU id; bulk reads come back as numpy arrays
(:class:`Snapshot`).

The package, one idea a file, each importing only the ones before it: ``_kinds`` (map types,
:class:`Snapshot`), ``_encoding`` (keys and values to and from layout-sized buffers), ``_system``
(:func:`list_maps`, :func:`check_pin_path`), ``_open`` (opening and creating, the kernel's side: fds and
infos), ``_errors`` (what a failed operation's errno means for a map, every message it ends in),
``_handle`` (``MapHandle``: a map's fd, lock and kernel, and ``call``, through which every kernel call
goes and is translated once), ``_bulk`` (:class:`BulkReader`, the key walk), ``_batch`` (batch writes),
``_base`` (:class:`Map`: construction, lifetime and element operations), ``_percpu``
(:class:`PerCpuMap`), ``_types`` (the typed classes, :func:`open_map`).
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
from ._types import (
    Array,
    ArrayReader,
    Hash,
    LruPerCpuHash,
    PerCpuArray,
    PerCpuCgroupStorage,
    PerCpuHash,
    open_map,
)

__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_NOEXIST",
    "CGROUP_STORAGE_KEY",
    "MAX_VALUE_SIZE",
    "PERCPU_TYPES",
    "SNAPSHOT_PREALLOC",
    "Array",
    "ArrayReader",
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
