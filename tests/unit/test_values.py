"""values.py: codecs and PerCpuValue, without a map."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import numpy as np
import pandas as pd
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
    assert v[2] == 2 and next(iter(v.items())) == (0, 1)
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


# --- a per-CPU value is a mapping from CPU id to value, iterated as a Series is -----------------------

GAPS = percpu.CpuList([0, 2, 3])


def test_dict_and_pandas_key_a_value_by_cpu_id() -> None:
    """On possible CPUs 0,2-3, dict(v) failed, and pd.Series(v) was indexed 0, 1, 2: slots, not CPUs."""
    v = PerCpuValue.from_values([1, 2, 3], GAPS, codec_for(np.uint64))
    assert dict(v) == {0: 1, 2: 2, 3: 3}
    assert list(pd.Series(v).index) == [0, 2, 3] and list(pd.Series(v)) == [1, 2, 3]
    s = v.to_pandas()
    assert s.index.name == "cpu" and list(s.index) == [0, 2, 3] and s.dtype == np.uint64
    assert s[2] == 2


def test_iteration_stays_over_values_in_cpu_order() -> None:
    v = PerCpuValue.from_values([1, 2, 3], GAPS, codec_for(np.uint64))
    assert list(v) == [1, 2, 3] and sum(v) == 6 and max(v) == 3
    assert list(reversed(v)) == [3, 2, 1]  # was Sequence's: v[2], v[1] by CPU id, CpuNotPossible
    assert list(v.keys()) == [0, 2, 3] and list(v.values()) == [1, 2, 3]
    assert list(v.items()) == [(0, 1), (2, 2), (3, 3)]
    assert 2 in v and 1 not in v and True not in v and "2" not in v
    assert v.get(1) is None and v.get(3) == 3
    assert v.index(2) == 2 and v.index(3) == 3 and v.count(2) == 1
    with pytest.raises(ValueError, match="no CPU holds 9"):
        v.index(9)


def test_as_an_array_a_value_is_its_values_in_cpu_order() -> None:
    v = PerCpuValue.from_values([1, 2, 3], GAPS, codec_for(np.uint64))
    a = np.asarray(v)
    assert a.dtype == np.uint64 and a.tolist() == [1, 2, 3] and not a.flags.writeable
    assert np.array(v).flags.writeable and np.asarray(v, dtype=float).tolist() == [1.0, 2.0, 3.0]
    odd = PerCpuValue.from_values([1, 2**23, 5], GAPS, codec_for(percpu.Int(3)))
    assert np.asarray(odd).tolist() == [1, 2**23, 5]  # decoded, not 3 raw bytes each
    stacked = np.asarray([v, v])  # what update_batch takes: (n, possible CPUs)
    assert stacked.shape == (2, 3)


def test_a_record_value_is_a_frame_of_its_fields() -> None:
    dt = np.dtype([("calls", "<u8"), ("comm", "S4"), ("h", "<u2", (2,)), ("in", [("a", "<i4")])])
    rows = [(1, b"a", [1, 2], (5,)), (2, b"b", [3, 4], (6,)), (3, b"", [5, 6], (7,))]
    v = PerCpuValue(np.array(rows, dtype=dt), GAPS, codec_for(dt))
    f = v.to_pandas()
    assert list(f.columns) == ["calls", "comm", "h[0]", "h[1]", "in.a"]
    assert list(f.index) == [0, 2, 3] and f.loc[2, "h[1]"] == 4 and f.loc[3, "in.a"] == 7
    assert f.loc[0, "comm"] == b"a"


def test_without_pandas_the_error_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    v = PerCpuValue.from_values([1, 2, 3], GAPS, codec_for(np.uint64))
    with pytest.raises(
        percpu.PercpuError, match=r"PerCpuValue.to_pandas\(\) needs pandas, .*pip install pandas"
    ):
        v.to_pandas()


def test_importing_percpu_does_not_import_pandas() -> None:
    code = "import sys, percpu, percpu.maps; print(sorted({'pandas', 'xarray'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- one rule for CPU ids (issue 26) ------------------------------------------------------------------------


def test_one_rule_for_cpu_ids_names_the_cpu_and_the_possible_list() -> None:
    """Floats and booleans were CPU ids in some places (v[1.0], v[True], snap.cpu(1.0)) and raised
    TypeError "unsupported operand type(s) for <<" in others; PerCpuValue.only([5]) dropped a CPU that is
    not possible without a word. Every place asks CpuList.slot."""
    from percpu.errors import CpuNotPossible

    v = PerCpuValue.from_values([1, 2, 3], GAPS, codec_for(np.uint64))
    with pytest.raises(CpuNotPossible) as e:
        v.only([0, 5])
    assert str(e.value) == "CPU 5 is not a possible CPU on this system; possible CPUs: 0,2-3"
    assert e.value.cpu == 5 and e.value.possible == "0,2-3"
    for bad, kind in ((1.0, "float"), (True, "bool"), ("2", "str"), (None, "NoneType")):
        for ask in (lambda c=bad: v[c], lambda c=bad: v.only([c]), lambda c=bad: GAPS.slot(c)):
            with pytest.raises(CpuNotPossible) as e:
                ask()
            assert str(e.value) == (
                f"CPU {bad!r} is not a CPU id: CPU ids are integers, not {kind}; give one of the possible "
                "CPUs: 0,2-3"
            )
        assert bad not in v and v.get(bad) is None  # type: ignore[call-overload]
    with pytest.raises(CpuNotPossible, match=r"^CPU 1 is not a possible CPU on this system \(map 'm'\); "):
        GAPS.slot(1, map_name="m")
    assert v.only([3, np.int64(0), 3]).to_dict() == {0: 1, 3: 3}  # in CPU order, once each
    assert [GAPS.slot(c) for c in (0, np.uint8(2), 3)] == [0, 1, 2]


def test_signed_int_codecs_are_named_as_numpy_names_them() -> None:
    """Int(16, signed=True) was named "iint128"."""
    assert codec_for(percpu.Int(16, signed=True)).name == "int128"
    assert codec_for(percpu.Int(3)).name == "uint24"
    assert codec_for(percpu.Int(8, signed=True)).name == "int64" == np.dtype(np.int64).name


def test_per_cpu_values_compare_by_cpus_type_and_value() -> None:
    """Equal when they hold the same values of the same type for the same CPUs; unhashable, as the
    arrays they hold."""
    u64 = codec_for(np.uint64)
    v = PerCpuValue.from_values([1, 2, 3], GAPS, u64)
    assert v == PerCpuValue.from_values({0: 1, 2: 2, 3: 3}, GAPS, u64)
    assert v != PerCpuValue.from_values([1, 2, 4], GAPS, u64)
    assert v != PerCpuValue.from_values([1, 2, 3], percpu.CpuList([0, 1, 2]), u64)
    assert v != PerCpuValue.from_values([1, 2, 3], GAPS, codec_for(np.int64))  # another type
    minus = PerCpuValue.from_values([-1, 0, 0], GAPS, codec_for(np.int32))
    assert minus != PerCpuValue.from_values([2**32 - 1, 0, 0], GAPS, codec_for(np.uint32))  # same bytes
    assert v != {0: 1, 2: 2, 3: 3} and dict(v) == {0: 1, 2: 2, 3: 3}
    with pytest.raises(TypeError, match="unhashable"):
        hash(v)
