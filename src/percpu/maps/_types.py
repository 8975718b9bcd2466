"""The typed maps, one class per kernel map type, and :func:`open_map`, which picks the class the
kernel's type calls for."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import MapTypeError
from ..values import (
    Codec,
    Int,
    TypeSpec,
    codec_for,
)
from ._base import Map, register
from ._bulk import BulkReader, walk_keys
from ._kinds import CGROUP_STORAGE_KEY, MapType
from ._percpu import PerCpuMap


class PerCpuArray(PerCpuMap):
    """BPF_MAP_TYPE_PERCPU_ARRAY: ``max_entries`` slots indexed by a 32-bit integer."""

    map_types = (MapType.PERCPU_ARRAY,)

    def _default_key_codec(self) -> Codec:
        return codec_for(Int(4), 4) if self.info.key_size == 4 else super()._default_key_codec()

    @classmethod
    def create(
        cls,
        value: TypeSpec,
        max_entries: int,
        *,
        name: str = "",
        flags: int = 0,
        check_memory: bool = True,
    ) -> PerCpuArray:
        """Create a per-CPU array of ``max_entries`` values of type ``value``.

        The kernel allocates ``max_entries x round_up(size, 8) x possible CPUs`` bytes at once
        (:func:`percpu.maps.memory_bytes`); more than this process can have (MemAvailable, or its memory
        cgroup's limit) raises :class:`~percpu.errors.MapTooLarge` before the syscall, unless
        ``check_memory=False``."""
        return cls._create(
            MapType.PERCPU_ARRAY,
            np.uint32,
            value,
            max_entries,
            name=name,
            flags=flags,
            check_memory=check_memory,
        )

    def __len__(self) -> int:
        return self.info.max_entries

    def reader(self, *, cpu: int | None = None) -> ArrayReader:
        """An :class:`ArrayReader` of this array: every element at each read (or, with ``cpu``, CPU
        ``cpu``'s values alone, BPF_F_CPU), into buffers it sizes from the map's info and keeps."""
        return ArrayReader(self, cpu)


class ArrayReader:
    """Reads of a whole per-CPU array, again and again, into buffers sized from the map's info and kept
    from one read to the next, with the lookup's arguments worked out once: :meth:`PerCpuArray.snapshot`
    allocates, zeroes and types its own at every read, which for a large map read often (a counter's)
    costs a fair part of the read. Each :meth:`read` is one batch lookup of every element: whole elements
    (every possible CPU's values), or one CPU's values where the kernel has BPF_F_CPU (Linux 7.0).

    ``keys`` are the array's keys (the same at every read). What :meth:`read` returns is this reader's
    own memory, read-only, and the next read changes it: copy what is kept past it."""

    def __init__(self, m: PerCpuArray, cpu: int | None) -> None:
        self.cpu = cpu
        self.n = n = m.info.max_entries
        flags = 0 if cpu is None else m._cpu_flags(cpu)
        lay, enc = m.layout, m.enc
        raw_keys, self._raw = lay.key_buffer(n), lay.value_buffer(n, flags)
        # An array's keys are its indexes, u32 (each batch lookup writes the same ones again).
        raw_keys[: n * 4].view(np.uint32)[:] = np.arange(n, dtype=np.uint32)
        self.keys: np.ndarray = _read_only(raw_keys[: n * lay.key_size].view(m.key_codec.dtype))
        self._view: np.ndarray | None = None
        if cpu is not None:
            self._view = _read_only(self._raw[: n * lay.value_size].view(m.value_codec.dtype))
        else:
            typed = enc.typed(self._raw, n)
            if np.shares_memory(typed, self._raw):  # a copy at every read only where the kernel pads
                self._view = _read_only(typed)
        self._typed = enc.typed
        self._lookup = BulkReader(m, elem_flags=flags).bound(raw_keys, self._raw, n)

    def read(self) -> np.ndarray:
        """Read the array as it is now: its values, (n, CPUs, ...) whole or (n, ...) for one CPU, n the
        elements the kernel read (every key of an array). :class:`~percpu.errors.NotSupported` where the
        kernel has no batch lookup of arrays (before 5.13), or none that takes one CPU."""
        n = self._lookup()
        if self._view is not None:
            return self._view[:n]
        return _read_only(self._typed(self._raw, n))


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


class _Walked(Map):
    """A hash map: the kernel keeps no count of its elements, so there is no cheap ``len()``."""

    def __len__(self) -> int:
        raise MapTypeError(
            f"map {self.name!r}: len() of a {self.type_name} map would walk every key (the kernel keeps no "
            "count): m.count() counts them in one walk (O(n)), len(m.snapshot()) reads them all",
            expected="a map with a fixed number of elements (an array)",
            actual=self.type_name,
            map_name=self.name,
        )

    def __bool__(self) -> bool:
        return True  # a map object is a handle, true whether or not it holds elements (as before)

    def count(self) -> int:
        """The number of keys, counted in one walk of the map: ``get_next_key`` once per key (O(n)),
        bounded by ``max_entries``. Writers may add or delete keys during the walk: the count is of a
        moment, as ``len(m.snapshot())`` is."""
        return sum(1 for _ in walk_keys(self.handle))


class PerCpuHash(_Walked, PerCpuMap):
    """BPF_MAP_TYPE_PERCPU_HASH. ``len()`` is refused: :meth:`count` walks the keys."""

    map_types = (MapType.PERCPU_HASH,)
    _create_type = MapType.PERCPU_HASH

    @classmethod
    def create(
        cls,
        key: TypeSpec,
        value: TypeSpec,
        max_entries: int,
        *,
        name: str = "",
        flags: int = 0,
        check_memory: bool = True,
    ) -> PerCpuHash:
        """Create a per-CPU hash; its elements, each with a value per possible CPU, are allocated at once
        unless ``flags`` has BPF_F_NO_PREALLOC (1). ``check_memory``: see :meth:`PerCpuArray.create`."""
        return cls._create(
            cls._create_type, key, value, max_entries, name=name, flags=flags, check_memory=check_memory
        )


class LruPerCpuHash(PerCpuHash):
    """BPF_MAP_TYPE_LRU_PERCPU_HASH: the least recently used elements are evicted when full."""

    map_types = (MapType.LRU_PERCPU_HASH,)
    _create_type = MapType.LRU_PERCPU_HASH


class PerCpuCgroupStorage(PerCpuMap):
    """BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE: one element per (cgroup, attach type), made by the kernel when
    a program using the map is attached to a cgroup. User space can look up and update existing
    elements; it cannot create or delete them. Deprecated upstream in favour of cgroup local storage,
    which is not per-CPU."""

    map_types = (MapType.PERCPU_CGROUP_STORAGE,)

    def _default_key_codec(self) -> Codec:
        if self.info.key_size == 16:
            return codec_for(CGROUP_STORAGE_KEY)
        if self.info.key_size == 8:
            return codec_for(np.uint64)
        return super()._default_key_codec()

    @classmethod
    def create(
        cls,
        value: TypeSpec,
        *,
        key: TypeSpec = CGROUP_STORAGE_KEY,
        name: str = "",
    ) -> PerCpuCgroupStorage:
        """Create the map (max_entries is 0: the kernel sizes it by attachments)."""
        return cls._create(MapType.PERCPU_CGROUP_STORAGE, key, value, 0, name=name)


class Array(Map):
    """BPF_MAP_TYPE_ARRAY (shared by all CPUs), for comparison with the per-CPU array."""

    map_types = (MapType.ARRAY,)

    def _default_key_codec(self) -> Codec:
        return codec_for(Int(4), 4) if self.info.key_size == 4 else super()._default_key_codec()

    @classmethod
    def create(
        cls, value: TypeSpec, max_entries: int, *, name: str = "", flags: int = 0, check_memory: bool = True
    ) -> Array:
        return cls._create(
            MapType.ARRAY, np.uint32, value, max_entries, name=name, flags=flags, check_memory=check_memory
        )

    def __len__(self) -> int:
        return self.info.max_entries


class Hash(_Walked, Map):
    """BPF_MAP_TYPE_HASH (shared by all CPUs), for comparison with the per-CPU hash."""

    map_types = (MapType.HASH,)

    @classmethod
    def create(
        cls,
        key: TypeSpec,
        value: TypeSpec,
        max_entries: int,
        *,
        name: str = "",
        flags: int = 0,
        check_memory: bool = True,
    ) -> Hash:
        return cls._create(
            MapType.HASH, key, value, max_entries, name=name, flags=flags, check_memory=check_memory
        )


register(PerCpuArray, PerCpuHash, LruPerCpuHash, PerCpuCgroupStorage, Array, Hash)


def open_map(spec: int | str | os.PathLike[str], **kw: Any) -> Map:
    """Open a map by id (``42``, ``"42"``), pinned path (``"/sys/fs/bpf/x"``) or name, as its typed class.

    An id the kernel's 32-bit map ids cannot hold (``2**32 + 42``, ``-1``) is refused with
    :class:`~percpu.errors.InvalidArgument`, not truncated into another map's id."""
    if isinstance(spec, int | np.integer):
        return Map.from_id(spec, **kw)
    s = os.fspath(spec)
    if s.isdigit():
        return Map.from_id(int(s), **kw)
    if "/" in s:
        return Map.from_pin(s, **kw)
    return Map.from_name(s, **kw)
