"""Encoding: a map's keys and values to and from the raw buffers its :class:`~percpu.layout.Layout` sizes
(whole per-CPU elements, one unpadded value for BPF_F_CPU), and the codec BTF describes for a map."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..cpus import CpuList
from ..errors import SizeMismatch
from ..layout import BPF_F_CPU, Layout
from ..values import Codec, PerCpuValue


class Encoding:
    """One map's key and value codecs over its layout; ``cpus`` name the slots of per-CPU values."""

    def __init__(self, name: str, key: Codec, value: Codec, layout: Layout, cpus: CpuList) -> None:
        self.name = name
        self.key_codec = key
        self.value_codec = value
        self.layout = layout
        self.cpus = cpus

    def slot(self, cpu: int) -> int:
        """The slot of CPU id ``cpu`` in this map's values (:meth:`CpuList.slot`, the one rule for CPU
        ids). Raises :class:`~percpu.errors.CpuNotPossible` naming the map."""
        return self.cpus.slot(cpu, map_name=self.name)

    def key(self, key: Any) -> np.ndarray:
        try:
            raw = self.key_codec.encode(key)
        except SizeMismatch as exc:
            raise SizeMismatch(
                f"map {self.name!r}: key {key!r}: {exc}",
                what="key",
                expected=self.layout.key_size,
                actual=exc.actual,
                map_name=self.name,
            ) from exc
        out = self.layout.key_buffer()
        out[:] = np.frombuffer(raw, dtype=np.uint8)
        return out

    def decode_key(self, raw: np.ndarray) -> Any:
        # The constructor, not view(): numpy cannot view() bytes as a sub-array type (u32[2] keys).
        return self.key_codec.decode(
            np.ndarray((), dtype=self.key_codec.dtype, buffer=np.ascontiguousarray(raw))
        )

    def typed(self, buf: np.ndarray, n: int) -> np.ndarray:
        """(n, slots) of the value dtype over a raw buffer of n whole elements."""
        return self.layout.typed(buf, n, self.value_codec.dtype)

    def decode_value(self, buf: np.ndarray) -> Any:
        arr = self.typed(buf, 1)[0]
        if self.layout.percpu:
            return PerCpuValue(arr, self.cpus, self.value_codec)
        return self.value_codec.decode(arr[0])

    def decode_one(self, buf: np.ndarray) -> Any:
        """One unpadded value (a BPF_F_CPU read)."""
        size = self.value_codec.size
        return self.value_codec.decode(buf[:size].view(self.value_codec.dtype).reshape(()))

    def encode_one(self, value: Any) -> np.ndarray:
        """One unpadded value (a BPF_F_CPU / BPF_F_ALL_CPUS write)."""
        buf = self.layout.value_buffer(1, BPF_F_CPU)
        buf[:] = np.frombuffer(self.value_codec.encode(value), np.uint8)
        return buf

    def encode_value(self, value: Any) -> np.ndarray:
        """One whole element: per-CPU maps take one value per possible CPU."""
        if self.layout.percpu:
            if not isinstance(value, PerCpuValue | Mapping | list | tuple | np.ndarray):
                raise TypeError(
                    f"map {self.name!r} is per-CPU: give one value per possible CPU ({len(self.cpus)}: "
                    f"{self.cpus}) as a list, a {{cpu: value}} mapping or a PerCpuValue; "
                    "update_all() writes one value to every CPU, update_cpu() one CPU's value"
                )
            pv = PerCpuValue.from_values(value, self.cpus, self.value_codec)
            return self.layout.pack(pv.to_numpy().view(np.uint8).reshape(-1), 1)
        return self.layout.pack(np.frombuffer(self.value_codec.encode(value), np.uint8), 1)


def btf_codec(btf_id: int, type_id: int, size: int) -> Codec | None:
    """The codec BTF describes for a map's key or value, or None where BTF cannot say."""
    if not btf_id or not type_id:
        return None
    try:
        from ..btf import codec_from_btf
    except ImportError:  # pragma: no cover - btf support is part of the package
        return None
    return codec_from_btf(btf_id, type_id, size)
