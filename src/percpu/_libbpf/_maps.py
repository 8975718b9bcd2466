"""The map calls of the binding: creating and finding maps, their info, and every element and batch
operation, each refusing a buffer smaller than its :class:`~percpu.layout.Layout` says the kernel copies,
and a layout whose CPU count is not the kernel's, before the syscall."""

from __future__ import annotations

import ctypes
import errno as _errno
import os
from typing import NamedTuple

import numpy as np

from .._libc import c_text, checked
from .._uapi import BpfMapInfo, MapBatchOpts, MapCreateOpts
from ..layout import Layout
from ._library import _U32, Library, _check, _ptr, _require, _require_key, _struct


class MapInfo(NamedTuple):
    """What the kernel says about a map (``struct bpf_map_info``)."""

    id: int
    type: int
    name: str
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    btf_id: int
    btf_key_type_id: int
    btf_value_type_id: int
    map_extra: int


class PartialBatch(OSError):
    """A batch update/delete failed after ``done`` elements went through."""

    def __init__(self, err: int, done: int) -> None:
        super().__init__(err, os.strerror(err))
        self.done = done


class MapCalls(Library):
    """What percpu asks libbpf about maps (the :class:`~percpu._machine.Kernel` protocol)."""

    # --- lifetime -------------------------------------------------------------------------------------

    def map_create(
        self,
        map_type: int,
        name: str,
        key_size: int,
        value_size: int,
        max_entries: int,
        flags: int = 0,
        btf_fd: int = 0,
        btf_key_type_id: int = 0,
        btf_value_type_id: int = 0,
    ) -> int:
        opts = MapCreateOpts(sz=ctypes.sizeof(MapCreateOpts), map_flags=checked(flags, "map flags"))
        if btf_fd:
            opts.btf_fd = checked(btf_fd, "BTF fd", "fd")
            opts.btf_key_type_id = checked(btf_key_type_id, "BTF key type id")
            opts.btf_value_type_id = checked(btf_value_type_id, "BTF value type id")
        cname = c_text(name, "map name", limit=15) if name else None
        return _check(
            self.fn("bpf_map_create")(
                checked(map_type, "map type", "i32"),
                cname,
                checked(key_size, "key size"),
                checked(value_size, "value size"),
                checked(max_entries, "max_entries"),
                ctypes.byref(opts),
            )
        )

    def map_get_fd_by_id(self, map_id: int) -> int:
        return _check(self.fn("bpf_map_get_fd_by_id")(checked(map_id, "map id")))

    def map_get_next_id(self, start: int) -> int | None:
        out = _U32(0)
        ret = self.fn("bpf_map_get_next_id")(checked(start, "map id"), ctypes.byref(out))
        if ret == -_errno.ENOENT:
            return None
        _check(ret)
        return int(out.value)

    def map_info(self, fd: int) -> MapInfo:
        i = _struct(BpfMapInfo)
        self._info(fd, i)
        return MapInfo(
            id=i.id,
            type=i.type,
            name=i.name.decode(errors="replace"),
            key_size=i.key_size,
            value_size=i.value_size,
            max_entries=i.max_entries,
            flags=i.map_flags,
            btf_id=i.btf_id,
            btf_key_type_id=i.btf_key_type_id,
            btf_value_type_id=i.btf_value_type_id,
            map_extra=i.map_extra,
        )

    # --- elements -------------------------------------------------------------------------------------

    def _sized(self, layout: Layout) -> Layout:
        """``layout``, refused unless its CPU count is the kernel's own: every size guard below then checks
        against what the kernel copies, whatever the caller believed."""
        if layout.percpu and layout.possible_cpus != self.num_possible_cpus():
            raise ValueError(
                f"layout for {layout.possible_cpus} possible CPUs; the kernel has {self.num_possible_cpus()}"
            )
        return layout

    def map_lookup(self, fd: int, key: np.ndarray, value: np.ndarray, layout: Layout, flags: int = 0) -> None:
        lay = self._sized(layout)
        _require_key(key, lay.key_size, "lookup")
        flags = checked(flags, "flags", "u64")
        _require(value, lay.value_bytes(flags), "lookup")
        _check(self.fn("bpf_map_lookup_elem_flags")(checked(fd, "fd", "fd"), _ptr(key), _ptr(value), flags))

    def map_update(self, fd: int, key: np.ndarray, value: np.ndarray, layout: Layout, flags: int = 0) -> None:
        lay = self._sized(layout)
        _require_key(key, lay.key_size, "update")
        flags = checked(flags, "flags", "u64")
        need = lay.value_bytes(flags)
        if value.nbytes < need:
            raise ValueError(f"update: value buffer of {value.nbytes} bytes, the kernel reads {need}")
        _check(self.fn("bpf_map_update_elem")(checked(fd, "fd", "fd"), _ptr(key), _ptr(value), flags))

    def map_delete(self, fd: int, key: np.ndarray, layout: Layout) -> None:
        _require_key(key, layout.key_size, "delete")
        _check(self.fn("bpf_map_delete_elem")(checked(fd, "fd", "fd"), _ptr(key)))

    def map_lookup_and_delete(
        self, fd: int, key: np.ndarray, value: np.ndarray, layout: Layout, flags: int = 0
    ) -> None:
        lay = self._sized(layout)
        _require_key(key, lay.key_size, "lookup_and_delete")
        flags = checked(flags, "flags", "u64")
        _require(value, lay.value_bytes(flags), "lookup_and_delete")
        _check(
            self.fn("bpf_map_lookup_and_delete_elem_flags")(
                checked(fd, "fd", "fd"), _ptr(key), _ptr(value), flags
            )
        )

    def map_get_next_key(self, fd: int, key: np.ndarray | None, next_key: np.ndarray, layout: Layout) -> bool:
        if key is not None:
            _require_key(key, layout.key_size, "get_next_key")
        _require(next_key, layout.key_size, "get_next_key next_key")
        ret = self.fn("bpf_map_get_next_key")(checked(fd, "fd", "fd"), _ptr(key), _ptr(next_key))
        if ret == -_errno.ENOENT:
            return False
        _check(ret)
        return True

    # --- batches --------------------------------------------------------------------------------------

    def map_lookup_batch(
        self,
        fd: int,
        in_batch: np.ndarray | None,
        out_batch: np.ndarray,
        keys: np.ndarray,
        values: np.ndarray,
        count: int,
        layout: Layout,
        delete: bool = False,
        elem_flags: int = 0,
    ) -> tuple[int, bool]:
        """One batch call. Returns (elements read, reached the end).

        ``out_batch`` receives the kernel's position token (a u32 bucket index for hashes, a key for
        arrays); ``in_batch`` is the previous call's.
        """
        lay = self._sized(layout)
        fd = checked(fd, "fd", "fd")
        count = checked(count, "count")
        elem_flags = checked(elem_flags, "elem_flags", "u64")
        _require(values, lay.values_bytes(count, elem_flags), "lookup_batch values")
        _require(keys, lay.keys_bytes(count), "lookup_batch keys")
        _require(out_batch, lay.token_bytes, "lookup_batch out_batch")
        if in_batch is not None:
            _require_key(in_batch, lay.token_bytes, "lookup_batch in_batch")
        n = _U32(count)
        opts = MapBatchOpts(sz=ctypes.sizeof(MapBatchOpts), elem_flags=elem_flags)
        name = "bpf_map_lookup_and_delete_batch" if delete else "bpf_map_lookup_batch"
        ret = self.fn(name)(
            fd, _ptr(in_batch), _ptr(out_batch), _ptr(keys), _ptr(values), ctypes.byref(n), ctypes.byref(opts)
        )
        if ret == -_errno.ENOENT:
            return int(n.value), True
        _check(ret)
        return int(n.value), False

    def map_update_batch(
        self, fd: int, keys: np.ndarray, values: np.ndarray, count: int, layout: Layout, elem_flags: int = 0
    ) -> int:
        lay = self._sized(layout)
        fd = checked(fd, "fd", "fd")
        count = checked(count, "count")
        elem_flags = checked(elem_flags, "elem_flags", "u64")
        _require_key(keys, lay.keys_bytes(count), "update_batch keys")
        if values.nbytes < lay.values_bytes(count, elem_flags):
            raise ValueError("update_batch: value buffer smaller than the kernel reads")
        n = _U32(count)
        opts = MapBatchOpts(sz=ctypes.sizeof(MapBatchOpts), elem_flags=elem_flags)
        ret = self.fn("bpf_map_update_batch")(
            fd, _ptr(keys), _ptr(values), ctypes.byref(n), ctypes.byref(opts)
        )
        if ret < 0:
            raise PartialBatch(-ret, int(n.value))
        return int(n.value)

    def map_delete_batch(self, fd: int, keys: np.ndarray, count: int, layout: Layout) -> int:
        fd = checked(fd, "fd", "fd")
        count = checked(count, "count")
        _require_key(keys, layout.keys_bytes(count), "delete_batch keys")
        n = _U32(count)
        opts = MapBatchOpts(sz=ctypes.sizeof(MapBatchOpts))
        ret = self.fn("bpf_map_delete_batch")(fd, _ptr(keys), ctypes.byref(n), ctypes.byref(opts))
        if ret < 0:
            raise PartialBatch(-ret, int(n.value))
        return int(n.value)

    # --- probes ---------------------------------------------------------------------------------------

    def probe_map_type(self, map_type: int) -> bool:
        ret = int(self.fn("libbpf_probe_bpf_map_type")(checked(map_type, "map type", "i32"), None))
        if ret < 0:
            raise OSError(-ret, os.strerror(-ret))
        return ret == 1
