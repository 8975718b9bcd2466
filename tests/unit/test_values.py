"""values.py: codecs and PerCpuValue, without a map."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import percpu
from percpu.values import PerCpuValue, codec_for


def test_codecs() -> None:
    for size in range(1, 17):
        for signed in (False, True):
            c = codec_for(percpu.Int(size, signed=signed))
            lo, hi = (-(2 ** (8 * size - 1)), 2 ** (8 * size - 1) - 1) if signed else (0, 2 ** (8 * size) - 1)
            for v in (lo, hi, 0 if not signed else -1):
                raw = c.encode(v)
                assert len(raw) == size
                assert c.decode(np.frombuffer(raw, dtype=c.dtype).reshape(())) == v
            with pytest.raises(percpu.PercpuError):
                c.encode(hi + 1)
    assert codec_for(ctypes.c_uint16).encode(7) == b"\x07\x00"
    with pytest.raises(percpu.PercpuError, match="256 does not fit in uint8"):
        codec_for(np.uint8).encode(256)
    with pytest.raises(TypeError, match="cannot use"):
        codec_for(object())


def test_percpu_value_from_values_is_immutable() -> None:
    cpus = percpu.CpuList([0, 2, 3])
    v = PerCpuValue.from_values([1, 2, 3], cpus, codec_for(np.uint64))
    assert v[2] == 2 and v.items().__next__() == (0, 1)
    arr = v.to_numpy()
    arr[0] = 99
    assert v[0] == 1
    with pytest.raises(ValueError):
        v._array[0] = 5
