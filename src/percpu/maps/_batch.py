"""Batch writes (``BPF_MAP_UPDATE_BATCH``, ``BPF_MAP_DELETE_BATCH``): many keys and values packed into one
buffer each, sized by the map's :class:`~percpu.layout.Layout`, and the one-element fallback where the
kernel has no batch operation for the map's type."""

from __future__ import annotations

import errno as _errno
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _libbpf, features
from .._libbpf import BPF_ANY
from ..errors import NOT_SUPPORTED_ERRNOS, KeyNotFound, PercpuError, SizeMismatch
from ..values import integer_array
from ._errors import lookup_error

if TYPE_CHECKING:
    from ._base import Map


class BatchWriter:
    """Writes or deletes many elements of one map: one syscall where the kernel can, else one per key."""

    def __init__(self, m: Map) -> None:
        self.map = m
        self.layout = m.layout

    def update(self, keys: Any, values: Any, flags: int = BPF_ANY) -> None:
        m = self.map
        kbuf, n = self._keys(keys)
        vbuf = self._values(values, n)
        if n == 0:
            return
        if features.known(features.BATCH_OPS, m.info.type) is not False:
            try:
                with m._held() as fd:
                    m._b.map_update_batch(fd, kbuf, vbuf, n, self.layout, flags)
                features.record(features.BATCH_OPS, m.info.type, True)
                return
            except _libbpf.PartialBatch as exc:
                if not _nothing_done_unsupported(exc):
                    raise m._error(exc, f"update_batch (after {exc.done} of {n} elements)") from exc
                features.record(features.BATCH_OPS, m.info.type, False)
        ks, el = self.layout.key_size, self.layout.element_bytes
        for i in range(n):
            k = kbuf[i * ks : (i + 1) * ks]
            m._update_raw(k, vbuf[i * el : (i + 1) * el], flags, k.tobytes())

    def delete(self, keys: Any) -> None:
        m = self.map
        kbuf, n = self._keys(keys)
        if n == 0:
            return
        if features.known(features.BATCH_OPS, m.info.type) is not False:
            try:
                with m._held() as fd:
                    m._b.map_delete_batch(fd, kbuf, n, self.layout)
                return
            except _libbpf.PartialBatch as exc:
                if exc.errno == _errno.ENOENT:
                    raise KeyNotFound(
                        f"map {m.name!r}: delete_batch: key {exc.done} of {n} is not in the map",
                        errno=exc.errno,
                        map_name=m.name,
                    ) from exc
                if not _nothing_done_unsupported(exc):
                    raise m._error(exc, f"delete_batch (after {exc.done} of {n} keys)") from exc
        ks = self.layout.key_size
        for i in range(n):
            k = kbuf[i * ks : (i + 1) * ks]
            try:
                with m._held() as fd:
                    m._b.map_delete(fd, k, self.layout)
            except OSError as exc:
                raise lookup_error(m, exc, k.tobytes()) from exc

    def _keys(self, keys: Any) -> tuple[np.ndarray, int]:
        m = self.map
        kc = m.key_codec
        try:
            if kc.dtype.kind in "iu":
                arr = np.ascontiguousarray(integer_array(keys, kc.dtype, kc.name))
            else:
                arr = np.ascontiguousarray(np.asarray(keys, dtype=kc.dtype))
        except PercpuError as exc:
            raise PercpuError(f"map {m.name!r}: keys: {exc}", map_name=m.name) from exc
        except (TypeError, ValueError, OverflowError) as exc:
            raise PercpuError(f"map {m.name!r}: keys are not {kc.name}: {exc}") from exc
        if arr.ndim != 1:
            raise PercpuError(f"map {m.name!r}: keys must be one-dimensional, got shape {arr.shape}")
        n = int(arr.shape[0])
        buf = self.layout.key_buffer(n)
        buf[:] = arr.view(np.uint8).reshape(-1)
        return buf, n

    def _values(self, values: Any, n: int) -> np.ndarray:
        """Raw buffer of n whole elements from (n, slots) per-CPU values, or (n,) values for every CPU."""
        m = self.map
        vc = m.value_codec
        slots = self.layout.slots
        try:
            if vc.dtype.kind in "iu":
                arr = integer_array(values, vc.dtype, vc.name)
            else:
                arr = np.asarray(values, dtype=vc.dtype)
        except PercpuError as exc:
            raise PercpuError(f"map {m.name!r}: values: {exc}", map_name=m.name) from exc
        except (TypeError, ValueError, OverflowError) as exc:
            raise PercpuError(f"map {m.name!r}: values are not {vc.name}: {exc}") from exc
        sub = vc.dtype.shape if vc.dtype.subdtype else ()
        base = arr.shape[: arr.ndim - len(sub)]
        if m.percpu and base == (n,):
            arr = np.repeat(arr[:, None], slots, axis=1)
        elif base != ((n, slots) if m.percpu else (n,)):
            want = f"({n}, {slots}) or ({n},)" if m.percpu else f"({n},)"
            raise SizeMismatch(
                f"map {m.name!r}: values have shape {base}, expected {want}",
                what="value",
                expected=n * slots,
                actual=int(np.prod(base)),
                map_name=m.name,
            )
        return self.layout.pack(np.ascontiguousarray(arr).view(np.uint8), n)


def _nothing_done_unsupported(exc: _libbpf.PartialBatch) -> bool:
    """The kernel refused the batch operation itself, so the one-element fallback may run.

    EOPNOTSUPP or ENOTSUPP (524): the map type has no batch operation at all (per-CPU arrays before 5.13);
    the kernel returns before touching the count, which still holds the number asked for. Any other
    "not supported" errno counts only when nothing was done."""
    return exc.errno in (_errno.EOPNOTSUPP, 524) or (exc.done == 0 and exc.errno in NOT_SUPPORTED_ERRNOS)
