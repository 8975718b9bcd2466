"""Traversals of a whole map: :class:`BulkReader` (cilium's MapBatchCursor: batch reads with their growth
policy, into a :class:`Snapshot`) and the bounded key walk (:func:`walk_keys`, :func:`walk_items`) that
iteration uses and the reader falls back to where the kernel has no batch operation for the map's type."""

from __future__ import annotations

import errno as _errno
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import features
from ..errors import (
    NOT_SUPPORTED_ERRNOS,
    NotSupported,
    PercpuError,
)
from ._kinds import SNAPSHOT_PREALLOC, Snapshot

if TYPE_CHECKING:
    from ._base import Map


def walk_keys(m: Map) -> Iterator[np.ndarray]:
    """Keys as raw buffers, at most once each and at most ``max_entries`` of them.

    ``get_next_key`` on a hash restarts from the first bucket when the current key was deleted meanwhile,
    so a naive loop can repeat keys or never end under concurrent deletes. Keys already seen are skipped
    and the walk is bounded, so iteration always ends and never repeats a key; keys added or removed
    during the walk may or may not be seen.
    """
    bound = m.info.max_entries or 65536
    seen: set[bytes] = set()
    cur: np.ndarray | None = None
    steps = 0
    while len(seen) < bound and steps < 4 * bound + 16:
        nxt = m.layout.key_buffer()
        try:
            with m._held() as fd:
                more = m._b.map_get_next_key(fd, cur, nxt, m.layout)
        except OSError as exc:
            raise m._error(exc, "get_next_key") from exc
        if not more:
            return
        steps += 1
        b = nxt.tobytes()
        cur = nxt
        if b in seen:
            continue
        seen.add(b)
        yield nxt


def walk_items(m: Map) -> Iterator[tuple[Any, Any]]:
    """``(key, value)`` for every key of the walk, one lookup each; keys deleted meanwhile are skipped."""
    buf = m.layout.value_buffer()
    for raw in walk_keys(m):
        try:
            with m._held() as fd:
                m._b.map_lookup(fd, raw, buf, m.layout)
        except OSError as exc:
            if exc.errno == _errno.ENOENT:
                continue
            raise m._error(exc, "lookup") from exc
        yield m.enc.decode_key(raw), m.enc.decode_value(buf)


class BulkReader:
    """One traversal of a whole map: batch reads with their growth policy, or a key walk where the kernel
    has no batch operation for the map's type. Returns raw key and value buffers and the element count."""

    def __init__(self, m: Map, elem_flags: int = 0) -> None:
        self.map = m
        self.layout = m.layout
        self.elem_flags = elem_flags  # BPF_F_CPU | cpu << 32: one CPU's values, unpadded

    def snapshot(self, *, delete: bool, batch: bool | None) -> Snapshot:
        """The whole map as read-only numpy arrays, ``values`` (n, slots, ...) for per-CPU maps."""
        m = self.map
        keys, vals, n = self.read(delete=delete, batch=batch)
        ks = self.layout.key_size
        if n * 3 < keys.nbytes // max(ks, 1) * 2:  # mostly unused capacity: do not keep it alive
            keys = keys[: n * ks].copy()
            vals = vals[: self.layout.values_bytes(n)].copy()
        k = keys[: n * ks].view(m.key_codec.dtype)
        v = m.enc.typed(vals, n)
        if not m.percpu:
            v = v.reshape((n, *v.shape[2:]))
        k.flags.writeable = False
        v.flags.writeable = False
        return Snapshot(
            keys=k, values=v, cpus=m.cpus, percpu=m.percpu, key_codec=m.key_codec, value_codec=m.value_codec
        )

    def read(self, *, delete: bool, batch: bool | None) -> tuple[np.ndarray, np.ndarray, int]:
        m = self.map
        if batch is True or (batch is None and features.known(features.BATCH_OPS, m.info.type) is not False):
            try:
                return self._batched(delete)
            except NotSupported:
                # What failed says "no batch lookups for this map type" only when it was a plain batch
                # lookup: lookup-and-delete, and one CPU's values (BPF_F_CPU in elem_flags), can be missing
                # where plain batch lookups work.
                if not delete and not self.elem_flags:
                    features.record(features.BATCH_OPS, m.info.type, False)
                if batch:
                    raise
        if delete:
            raise NotSupported(
                f"map {m.name!r}: this kernel has no batch lookup-and-delete for {m.type_name} maps",
                feature="lookup_and_delete_batch",
                min_kernel="5.6",
                map_name=m.name,
            )
        return self._walk()

    def _per_element(self) -> int:
        return self.layout.keys_bytes(1) + self.layout.value_bytes(self.elem_flags)

    def initial_capacity(self) -> int:
        """Elements to allocate room for before the first read: all of max_entries when that is at most
        :data:`SNAPSHOT_PREALLOC` bytes (one exact allocation, no copy), else that much, grown as needed:
        a sparse map with a large max_entries must not cost max_entries x possible CPUs up front."""
        return max(1, min(self.map.info.max_entries, SNAPSHOT_PREALLOC // self._per_element()))

    def _alloc(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            return self.layout.key_buffer(n), self.layout.value_buffer(n, self.elem_flags)
        except MemoryError as exc:
            per = self._per_element()
            raise PercpuError(
                f"map {self.map.name!r}: not enough memory for {n} elements of {per} bytes "
                f"({n * per / 2**20:.0f} MiB)",
                map_name=self.map.name,
            ) from exc

    def _grow_to(self, keys: np.ndarray, vals: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        k2, v2 = self._alloc(n)
        k2[: keys.size] = keys
        v2[: vals.size] = vals
        return k2, v2

    def _batched(self, delete: bool) -> tuple[np.ndarray, np.ndarray, int]:
        m, lay = self.map, self.layout
        ks = lay.key_size
        vb = lay.value_bytes(self.elem_flags)
        limit = max(m.info.max_entries, 1)
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
                with m._held() as fd:
                    n, done = m._b.map_lookup_batch(
                        fd,
                        tok_in,
                        tok_out,
                        keys[total * ks :],
                        vals[total * vb :],
                        want,
                        lay,
                        delete,
                        self.elem_flags,
                    )
            except OSError as exc:
                if exc.errno == _errno.ENOSPC:
                    # One hash bucket holds more elements than we asked for; nothing was copied.
                    probe = max(probe, want) * 2
                    cap = total + probe
                    keys, vals = self._grow_to(keys, vals, cap)
                    continue
                if total == 0 and tok_in is None and exc.errno in NOT_SUPPORTED_ERRNOS:
                    raise NotSupported(
                        f"map {m.name!r}: no batch operations for {m.type_name} on this kernel "
                        "(hashes need Linux 5.6, per-CPU arrays 5.13)",
                        feature="map batch operations",
                        min_kernel="5.6",
                        errno=exc.errno,
                        map_name=m.name,
                    ) from exc
                raise m._error(exc, "lookup_batch") from exc
            if not delete and not self.elem_flags:
                features.record(features.BATCH_OPS, m.info.type, True)
            total += n
            if done or (m._is_array and total >= m.info.max_entries):
                return keys, vals, total
            tok_in, tok_out = tok_out, (tok_in if tok_in is not None else lay.token_buffer())

    def _walk(self) -> tuple[np.ndarray, np.ndarray, int]:
        m, lay = self.map, self.layout
        ks = lay.key_size
        vb = lay.value_bytes(self.elem_flags)
        cap = self.initial_capacity()
        keys, vals = self._alloc(cap)
        n = 0
        for raw in walk_keys(m):
            if n == cap:
                cap *= 2
                keys, vals = self._grow_to(keys, vals, cap)
            one = vals[n * vb : (n + 1) * vb]
            try:
                with m._held() as fd:
                    m._b.map_lookup(fd, raw, one, lay, self.elem_flags)
            except OSError as exc:
                if exc.errno == _errno.ENOENT:
                    continue
                raise m._error(exc, "lookup") from exc
            keys[n * ks : (n + 1) * ks] = raw
            n += 1
        return keys, vals, n
