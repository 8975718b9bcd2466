"""Traversals of a whole map: :class:`BulkReader` (cilium's MapBatchCursor: batch reads with their growth
policy, into a :class:`Snapshot`) and the bounded key walk (:func:`walk_keys`, :func:`walk_items`) that
iteration uses and the reader falls back to where the kernel has no batch operation for the map's type
(an array, whose keys are known, is looked up at each index instead).
They call the kernel through the map's :class:`~percpu.maps._handle.MapHandle`, which translates errors."""

from __future__ import annotations

import errno as _errno
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .. import features
from ..errors import BpfError, KeyNotFound, NotSupported, PercpuError
from ._errors import Op, no_batch
from ._handle import MapHandle, MapParts
from ._kinds import SNAPSHOT_PREALLOC, Snapshot

_NEXT_KEY = Op("get_next_key")
_LOOKUP = Op("lookup")  # a walk's lookup: a key deleted meanwhile is skipped, not named


def walk_keys(h: MapHandle) -> Iterator[np.ndarray]:
    """Keys as raw buffers, at most once each and at most ``max_entries`` of them.

    ``get_next_key`` on a hash restarts from the first bucket when the current key was deleted meanwhile,
    so a naive loop can repeat keys or never end under concurrent deletes. Keys already seen are skipped
    and the walk is bounded, so iteration always ends and never repeats a key; keys added or removed
    during the walk may or may not be seen.
    """
    bound = h.info.max_entries or 65536
    seen: set[bytes] = set()
    cur: np.ndarray | None = None
    steps = 0
    while len(seen) < bound and steps < 4 * bound + 16:
        nxt = h.layout.key_buffer()
        if not h.call(_NEXT_KEY, h.kernel.map_get_next_key, cur, nxt, h.layout):
            return
        steps += 1
        b = nxt.tobytes()
        cur = nxt
        if b in seen:
            continue
        seen.add(b)
        yield nxt


def walk_items(m: MapParts) -> Iterator[tuple[Any, Any]]:
    """``(key, value)`` for every key of the walk, one lookup each; keys deleted meanwhile are skipped."""
    h, enc = m.handle, m.enc
    buf = h.layout.value_buffer()
    for raw in walk_keys(h):
        try:
            h.call(_LOOKUP, h.kernel.map_lookup, raw, buf, h.layout)
        except KeyNotFound:
            continue
        yield enc.decode_key(raw), enc.decode_value(buf)


class BulkReader:
    """One traversal of a whole map: batch reads with their growth policy, or where the kernel has no batch
    operation for the map's type, a key walk (a hash) or a lookup at each index (an array). Returns raw
    key and value buffers and the element count."""

    def __init__(self, m: MapParts, elem_flags: int = 0) -> None:
        self.map = m
        self.handle = m.handle
        self.enc = m.enc
        self.layout = m.handle.layout
        self.elem_flags = elem_flags  # BPF_F_CPU | cpu << 32: one CPU's values, unpadded

    def snapshot(self, *, delete: bool, batch: bool | None) -> Snapshot:
        """The whole map as read-only numpy arrays, ``values`` (n, slots, ...) for per-CPU maps."""
        enc, lay = self.enc, self.layout
        keys, vals, n = self.read(delete=delete, batch=batch)
        ks = lay.key_size
        if n * 3 < keys.nbytes // max(ks, 1) * 2:  # mostly unused capacity: do not keep it alive
            keys = keys[: n * ks].copy()
            vals = vals[: lay.values_bytes(n)].copy()
        k = keys[: n * ks].view(enc.key_codec.dtype)
        v = enc.typed(vals, n)
        if not lay.percpu:
            v = v.reshape((n, *v.shape[2:]))
        k.flags.writeable = False
        v.flags.writeable = False
        return Snapshot(
            keys=k,
            values=v,
            cpus=enc.cpus,
            percpu=lay.percpu,
            key_codec=enc.key_codec,
            value_codec=enc.value_codec,
        )

    def read(self, *, delete: bool, batch: bool | None) -> tuple[np.ndarray, np.ndarray, int]:
        info = self.handle.info
        if batch is True or (batch is None and features.known(features.BATCH_OPS, info.type) is not False):
            try:
                return self._batched(delete)
            except NotSupported:
                self._learn_batch_ops(delete, False)
                if batch:
                    raise
        if delete:
            raise no_batch(info, "batch lookup-and-delete")
        return self._walk()

    def _learn_batch_ops(self, delete: bool, works: bool) -> None:
        # What a batch lookup did says whether the kernel has them for this map type only when it was a
        # plain one: lookup-and-delete, and one CPU's values (BPF_F_CPU in elem_flags), can be missing
        # where plain batch lookups work.
        if not delete and not self.elem_flags:
            features.record(features.BATCH_OPS, self.handle.info.type, works)

    def _per_element(self) -> int:
        return self.layout.keys_bytes(1) + self.layout.value_bytes(self.elem_flags)

    def initial_capacity(self) -> int:
        """Elements to allocate room for before the first read: all of max_entries when that is at most
        :data:`SNAPSHOT_PREALLOC` bytes (one exact allocation, no copy), else that much, grown as needed:
        a sparse map with a large max_entries must not cost max_entries x possible CPUs up front."""
        return max(1, min(self.handle.info.max_entries, SNAPSHOT_PREALLOC // self._per_element()))

    def _alloc(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            return self.layout.key_buffer(n), self.layout.value_buffer(n, self.elem_flags)
        except MemoryError as exc:
            per = self._per_element()
            name = self.handle.name
            raise PercpuError(
                f"map {name!r}: not enough memory for {n} elements of {per} bytes "
                f"({n * per / 2**20:.0f} MiB)",
                map_name=name,
            ) from exc

    def _grow_to(self, keys: np.ndarray, vals: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        k2, v2 = self._alloc(n)
        k2[: keys.size] = keys
        v2[: vals.size] = vals
        return k2, v2

    def _batched(self, delete: bool) -> tuple[np.ndarray, np.ndarray, int]:
        h, lay = self.handle, self.layout
        ks = lay.key_size
        vb = lay.value_bytes(self.elem_flags)
        limit = max(h.info.max_entries, 1)
        cap = self.initial_capacity()
        keys, vals = self._alloc(cap)
        tok_in: np.ndarray | None = None
        tok_out = lay.token_buffer()
        total = 0
        probe = 16  # extra room asked for once max_entries are read and the kernel has not said "end"
        while True:
            if total >= cap:
                # Full, and the kernel has not said "end": double up to max_entries, then a little more
                # at a time (a hash walked under concurrent inserts and deletes can return more than
                # max_entries elements).
                cap = min(cap * 2, limit) if cap < limit else cap + probe
                keys, vals = self._grow_to(keys, vals, cap)
            want = cap - total
            try:
                n, done = h.call(
                    Op("lookup_batch", first=tok_in is None),
                    h.kernel.map_lookup_batch,
                    tok_in,
                    tok_out,
                    keys[total * ks :],
                    vals[total * vb :],
                    want,
                    lay,
                    delete,
                    self.elem_flags,
                )
            except BpfError as exc:
                if exc.errno != _errno.ENOSPC:
                    raise
                # One hash bucket holds more elements than we asked for; nothing was copied.
                probe = max(probe, want) * 2
                cap = total + probe
                keys, vals = self._grow_to(keys, vals, cap)
                continue
            self._learn_batch_ops(delete, True)
            total += n
            if done or (h.is_array and total >= h.info.max_entries):
                return keys, vals, total
            tok_in, tok_out = tok_out, (tok_in if tok_in is not None else lay.token_buffer())

    def bound(self, keys: np.ndarray, vals: np.ndarray, count: int) -> Callable[[], int]:
        """One batch lookup of ``count`` elements from the first into raw buffers kept between calls
        (:class:`~percpu.maps.ArrayReader`'s, sized from the map's info; the binding's size guards check
        them again), with its arguments bound once: each call reads again and returns the elements read.
        Where the kernel has no batch lookup for the map's type, or none with these flags,
        :class:`NotSupported` (learnt as a snapshot's batch read learns it)."""
        h, lay, flags = self.handle, self.layout, self.elem_flags
        op, token = Op("lookup_batch", first=True), lay.token_buffer()

        def read() -> int:
            try:
                n, _ = h.call(
                    op, h.kernel.map_lookup_batch, None, token, keys, vals, count, lay, False, flags
                )
            except NotSupported:
                self._learn_batch_ops(False, False)
                raise
            return n

        return read

    def _walk(self) -> tuple[np.ndarray, np.ndarray, int]:
        h, lay = self.handle, self.layout
        ks = lay.key_size
        vb = lay.value_bytes(self.elem_flags)
        if h.is_array:
            return self._by_index(ks, vb)
        cap = self.initial_capacity()
        keys, vals = self._alloc(cap)
        n = 0
        for raw in walk_keys(h):
            if n == cap:
                cap *= 2
                keys, vals = self._grow_to(keys, vals, cap)
            one = vals[n * vb : (n + 1) * vb]
            try:
                h.call(_LOOKUP, h.kernel.map_lookup, raw, one, lay, self.elem_flags)
            except KeyNotFound:
                continue
            keys[n * ks : (n + 1) * ks] = raw
            n += 1
        return keys, vals, n

    def _by_index(self, ks: int, vb: int) -> tuple[np.ndarray, np.ndarray, int]:
        """An array's elements without a batch operation: a lookup at each index. Its keys are 0 to
        max_entries - 1 and none is ever missing, so there is no key to walk (a walk's ``get_next_key``
        would double the system calls: per-CPU arrays have batch reads only since Linux 5.13)."""
        h, lay = self.handle, self.layout
        n = h.info.max_entries
        keys, vals = self._alloc(n)
        keys.view(np.uint32)[:n] = np.arange(n, dtype=np.uint32)  # an array's key is a u32
        for i in range(n):
            h.call(
                _LOOKUP,
                h.kernel.map_lookup,
                keys[i * ks : (i + 1) * ks],
                vals[i * vb : (i + 1) * vb],
                lay,
                self.elem_flags,
            )
        return keys, vals, n
