"""Batch writes (``BPF_MAP_UPDATE_BATCH``, ``BPF_MAP_DELETE_BATCH``): many keys and values packed into one
buffer each, sized by the map's :class:`~percpu.layout.Layout`, and the one-element fallback where the
kernel has no batch operation for the map's type. They call the kernel through the map's
:class:`~percpu.maps._handle.MapHandle`, which translates errors."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import features
from .._libbpf import BPF_ANY
from ..errors import NotSupported, PercpuError, SizeMismatch
from ..values import integer_array
from ._errors import Op, batch_flags_refused, no_delete, nth_key
from ._handle import MapParts


class BatchWriter:
    """Writes or deletes many elements of one map: one syscall where the kernel can, else one per key."""

    def __init__(self, m: MapParts) -> None:
        self.map = m
        self.handle = m.handle
        self.enc = m.enc
        self.layout = m.handle.layout

    def update(self, keys: Any, values: Any, flags: int = BPF_ANY) -> None:
        h, lay = self.handle, self.layout
        refused = batch_flags_refused(h.info, flags)
        if refused is not None:
            raise refused
        kbuf, arr = self._keys(keys)
        n = len(arr)
        vbuf = self._values(values, n)
        if n == 0:
            return
        if features.known(features.BATCH_OPS, h.info.type) is not False:
            try:
                op = Op("update_batch", key=arr, batch=n)
                h.call(op, h.kernel.map_update_batch, kbuf, vbuf, n, lay, flags)
                features.record(features.BATCH_OPS, h.info.type, True)
                return
            except NotSupported:
                features.record(features.BATCH_OPS, h.info.type, False)
        ks, el = lay.key_size, lay.element_bytes
        for i in range(n):
            k = kbuf[i * ks : (i + 1) * ks]
            op = Op("update", key=nth_key(arr, i), flags=flags)
            h.call(op, h.kernel.map_update, k, vbuf[i * el : (i + 1) * el], lay, flags)

    def delete(self, keys: Any) -> None:
        h, lay = self.handle, self.layout
        refused = no_delete(h.info, "delete_batch")
        if refused is not None:
            raise refused
        kbuf, arr = self._keys(keys)
        n = len(arr)
        if n == 0:
            return
        if features.known(features.BATCH_OPS, h.info.type) is not False:
            try:
                h.call(Op("delete_batch", key=arr, batch=n), h.kernel.map_delete_batch, kbuf, n, lay)
                return
            except NotSupported:
                pass  # one delete each
        ks = lay.key_size
        for i in range(n):
            k = kbuf[i * ks : (i + 1) * ks]
            h.call(Op("delete", key=nth_key(arr, i)), h.kernel.map_delete, k, lay)

    def _keys(self, keys: Any) -> tuple[np.ndarray, np.ndarray]:
        """The keys packed into a buffer of ``key_size`` bytes each, and as the typed array they were
        given as (what messages name)."""
        name, kc = self.handle.name, self.enc.key_codec
        try:
            if kc.dtype.kind in "iu":
                arr = np.ascontiguousarray(integer_array(keys, kc.dtype, kc.name))
            else:
                arr = np.ascontiguousarray(np.asarray(keys, dtype=kc.dtype))
        except PercpuError as exc:
            raise PercpuError(f"map {name!r}: keys: {exc}", map_name=name) from exc
        except (TypeError, ValueError, OverflowError) as exc:
            raise PercpuError(f"map {name!r}: keys are not {kc.name}: {exc}") from exc
        if arr.ndim != 1:
            raise PercpuError(f"map {name!r}: keys must be one-dimensional, got shape {arr.shape}")
        n = int(arr.shape[0])
        buf = self.layout.key_buffer(n)
        buf[:] = arr.view(np.uint8).reshape(-1)
        return buf, arr

    def _values(self, values: Any, n: int) -> np.ndarray:
        """Raw buffer of n whole elements from (n, slots) per-CPU values, or (n,) values for every CPU."""
        name, vc, lay = self.handle.name, self.enc.value_codec, self.layout
        slots = lay.slots
        try:
            if vc.dtype.kind in "iu":
                arr = integer_array(values, vc.dtype, vc.name)
            else:
                arr = np.asarray(values, dtype=vc.dtype)
        except PercpuError as exc:
            raise PercpuError(f"map {name!r}: values: {exc}", map_name=name) from exc
        except (TypeError, ValueError, OverflowError) as exc:
            raise PercpuError(f"map {name!r}: values are not {vc.name}: {exc}") from exc
        sub = vc.dtype.shape if vc.dtype.subdtype else ()
        base = arr.shape[: arr.ndim - len(sub)]
        if lay.percpu and base == (n,):
            arr = np.repeat(arr[:, None], slots, axis=1)
        elif base != ((n, slots) if lay.percpu else (n,)):
            want = f"({n}, {slots}) or ({n},)" if lay.percpu else f"({n},)"
            raise SizeMismatch(
                f"map {name!r}: values have shape {base}, expected {want}",
                what="value",
                expected=n * slots,
                actual=int(np.prod(base)),
                map_name=name,
            )
        return lay.pack(np.ascontiguousarray(arr).view(np.uint8), n)
