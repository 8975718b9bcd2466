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


TWO = percpu.CpuList([0, 1])


@pytest.mark.parametrize(
    ("dtype", "values", "total"),
    [
        (np.int64, [2**63 - 1, 2**63 - 1], 2**64 - 2),  # wrapped to -2
        (np.int64, [-(2**63), -1], -(2**63) - 1),  # wrapped to +9223372036854775807
        (np.uint64, [2**64 - 1, 2**64 - 1], 2**65 - 2),  # wrapped to 2**64 - 2
        (np.uint64, [2**63, 2**63 - 1], 2**64 - 1),  # the largest sum 64 bits hold
        (np.int64, [-(2**63), 2**63 - 1], -1),
        (np.uint32, [2**32 - 1, 2**32 - 1], 2**33 - 2),
        (np.int8, [-128, -128], -256),
    ],
)
def test_sums_are_exact_past_64_bits(dtype: type, values: list[int], total: int) -> None:
    """The docs said sums never wrap; int64 and uint64 sums did, at 64 bits."""
    v = PerCpuValue.from_values(values, TWO, codec_for(dtype))
    s = v.sum()
    assert s == total and type(s) is int


def test_record_sums_are_exact_field_by_field() -> None:
    rec = np.dtype([("n", "<u8"), ("d", "<i8"), ("small", "<u2"), ("arr", "<u8", (2,))])
    big = 2**64 - 1

    def r(n: int, d: int, small: int, arr: tuple[int, int]) -> dict[str, object]:
        return {"n": n, "d": d, "small": small, "arr": arr}

    v = PerCpuValue.from_values(
        [r(big, 2**63 - 1, 65535, (big, 1)), r(big, 2**63 - 1, 65535, (1, 1))], TWO, codec_for(rec)
    )
    s = v.sum()
    assert s["n"] == 2 * big and s["d"] == 2**64 - 2 and s["small"] == 131070
    assert list(s["arr"]) == [2**64, 2]
    fits = PerCpuValue.from_values([r(1, -1, 1, (1, 1)), r(2, -2, 2, (2, 2))], TWO, codec_for(rec)).sum()
    # where 64 bits hold every sum, the record is the widened numpy record, as before
    assert fits.dtype == np.dtype([("n", "<u8"), ("d", "<i8"), ("small", "<u8"), ("arr", "<u8", (2,))])
    assert (int(fits["n"]), int(fits["d"])) == (3, -3)


def test_a_cpu_id_is_an_integer_not_what_hashes_like_one() -> None:
    """v[True] and v[1.0] were CPU 1's value (they hash like 1); the maps refuse them, and so do values."""
    from percpu.errors import CpuNotPossible

    v = PerCpuValue.from_values([5, 6], TWO, codec_for(np.uint64))
    assert v[np.uint32(1)] == 6 and v[1] == 6
    for bad in (True, 1.0, "1"):
        with pytest.raises(CpuNotPossible):
            v[bad]  # type: ignore[index]
