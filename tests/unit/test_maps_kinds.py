"""maps/_kinds.py: map types, the rule's user-facing size, and Snapshot's columns by CPU id."""

from __future__ import annotations

import numpy as np
import pytest

from percpu.cpus import CpuList
from percpu.errors import CpuNotPossible, KeyNotFound
from percpu.maps import PERCPU_TYPES, MapType, Row, Snapshot, user_value_bytes
from percpu.values import Int, IntCodec, PerCpuValue


def test_map_type_names_and_per_cpu_kinds() -> None:
    assert MapType.name_of(5) == "percpu_hash" and MapType.name_of(999) == "type_999"
    assert {t for t in MapType if t.percpu} == set(PERCPU_TYPES)
    assert MapType.PERCPU_CGROUP_STORAGE.percpu and not MapType.HASH.percpu


@pytest.mark.parametrize(
    ("map_type", "value_size", "possible", "expected"),
    [
        (MapType.PERCPU_ARRAY, 4, 3, 24),  # round_up(4, 8) x 3
        (MapType.PERCPU_HASH, 12, 4, 64),
        (MapType.LRU_PERCPU_HASH, 16, 256, 4096),
        (MapType.HASH, 12, 4, 12),  # not per-CPU: one value
    ],
)
def test_user_value_bytes_is_the_rule(
    map_type: MapType, value_size: int, possible: int, expected: int
) -> None:
    assert user_value_bytes(map_type, value_size, possible) == expected


def _snap(percpu: bool = True) -> Snapshot:
    cpus = CpuList([0, 2, 3, 5])
    keys = np.array([7, 9], np.uint32)
    values = np.array([[1, 2, 3, 4], [10, 20, 30, 40]], np.uint64) if percpu else np.array([5, 6], np.uint64)
    keys.flags.writeable = values.flags.writeable = False  # as a map's snapshot() makes them
    return Snapshot(keys=keys, values=values, cpus=cpus, percpu=percpu)


def test_snapshot_columns_are_cpu_ids_not_slots() -> None:
    s = _snap()
    assert len(s) == 2
    assert list(s.cpu(5)) == [4, 40] and list(s.cpu(2)) == [2, 20]
    with pytest.raises(CpuNotPossible):
        s.cpu(1)
    assert list(s.sum()) == [10, 100]
    assert {k: list(v) for k, v in s.to_dict().items()} == {7: [1, 2, 3, 4], 9: [10, 20, 30, 40]}


def test_a_snapshot_of_a_plain_map_has_no_cpu_axis() -> None:
    s = _snap(percpu=False)
    assert list(s.sum()) == [5, 6]
    with pytest.raises(TypeError, match="not of a per-CPU map"):
        s.cpu(0)


def test_snapshot_sums_are_exact_and_64_bit_where_they_fit() -> None:
    """Snapshot.sum() wrapped like PerCpuValue.sum(): [2**64-1, 2**64-1] gave 2**64-2."""
    cpus = CpuList([0, 2])
    big = 2**64 - 1
    values = np.array([[big, big], [1, 2], [2**63, 2**63 - 1]], np.uint64)
    s = Snapshot(keys=np.arange(3, dtype=np.uint32), values=values, cpus=cpus, percpu=True).sum()
    assert s.tolist() == [2**65 - 2, 3, 2**64 - 1]
    ok = Snapshot(keys=np.arange(2, dtype=np.uint32), values=values[1:], cpus=cpus, percpu=True).sum()
    assert ok.dtype == np.uint64 and ok.tolist() == [3, 2**64 - 1]  # every sum fits: 64-bit numpy
    signed = np.array([[-(2**63), -1], [2**62, 2**62]], np.int64)
    s = Snapshot(keys=np.arange(2, dtype=np.uint32), values=signed, cpus=cpus, percpu=True).sum()
    assert s.tolist() == [-(2**63) - 1, 2**63]


def test_a_snapshot_column_is_taken_by_an_integer_cpu_id() -> None:
    s = _snap()
    assert list(s.cpu(np.int64(5))) == [4, 40]  # type: ignore[arg-type]
    for bad in (True, 2.0, "2"):
        with pytest.raises(CpuNotPossible):
            s.cpu(bad)  # type: ignore[arg-type]


# --- a snapshot is a sequence of (key, value) rows -------------------------------------------------------


def test_a_snapshot_iterates_and_indexes_its_rows() -> None:
    s = _snap()
    rows = list(s)
    assert [r.key for r in rows] == [7, 9] and isinstance(rows[0], Row)
    key, v = rows[1]
    assert key == 9 and isinstance(v, PerCpuValue) and dict(v) == {0: 10, 2: 20, 3: 30, 5: 40}
    assert s[0] == rows[0] and s[-1] == rows[1]
    with pytest.raises(IndexError, match="row 2 of a snapshot of 2 rows"):
        s[2]
    for bad in (True, (0, 1)):
        with pytest.raises(TypeError, match="index a snapshot by row"):
            s[bad]  # type: ignore[call-overload]
    plain = _snap(percpu=False)
    assert list(plain) == [(7, 5), (9, 6)]


def test_slices_masks_and_row_numbers_are_snapshots() -> None:
    s = _snap()
    for part in (s[1:], s[np.array([False, True])], s[[1]]):
        assert isinstance(part, Snapshot) and list(part.keys) == [9] and part.cpus == s.cpus
        assert not part.keys.flags.writeable and not part.values.flags.writeable
    assert len(s[:0]) == 0 and list(s[::-1].keys) == [9, 7]
    assert s[np.array(1)] == s[1] and len(s[:0].sorted()) == 0
    wide = Snapshot(np.zeros((0, 2), np.uint32), np.zeros((0, 4), np.uint64), s.cpus, True)
    assert len(wide.sorted()) == 0  # a key that is an array, no rows


def test_lookup_and_in_are_by_key() -> None:
    s = _snap()
    assert dict(s.lookup(9)) == {0: 10, 2: 20, 3: 30, 5: 40}
    assert 7 in s and 8 not in s and "seven" not in s
    assert s[0] in s and Row(7, s.lookup(9)) not in s
    with pytest.raises(KeyNotFound, match="no key 8"):
        s.lookup(8)


def test_sorted_orders_by_key_as_numbers() -> None:
    cpus = CpuList([0, 1])
    keys = np.array([300, 2, 70000, 1], np.uint32)
    s = Snapshot(keys, np.arange(8, dtype=np.uint64).reshape(4, 2), cpus, True)
    assert list(s.sorted().keys) == [1, 2, 300, 70000]
    assert list(s.sorted().sum()) == [13, 5, 1, 9]
    # A 3-byte key is held as bytes, little-endian: ordered as the numbers it decodes to, not as bytes.
    u24 = IntCodec(Int(3))
    raw = np.frombuffer(b"".join(n.to_bytes(3, "little") for n in (256, 1, 65536)), dtype=u24.dtype)
    odd = Snapshot(raw, np.zeros((3, 2), np.uint64), cpus, True, key_codec=u24)
    assert [r.key for r in odd.sorted()] == [1, 256, 65536]
    rec = np.array([(2, b"a"), (1, b"z"), (1, b"b")], dtype=[("pid", "<u4"), ("comm", "S4")])
    by_field = Snapshot(rec, np.zeros((3, 2), np.uint64), cpus, True).sorted()
    assert [(int(k["pid"]), bytes(k["comm"])) for k in by_field.keys] == [(1, b"b"), (1, b"z"), (2, b"a")]
    arr = Snapshot(np.array([[2, 1], [1, 9], [1, 2]], np.uint32), np.zeros((3, 2), np.uint64), cpus, True)
    assert arr.sorted().keys.tolist() == [[1, 2], [1, 9], [2, 1]]


def test_as_an_array_a_snapshot_is_its_values() -> None:
    s = _snap()
    a = np.asarray(s)
    assert a is s.values and a.shape == (2, 4) and not a.flags.writeable
    c = np.array(s)  # a copy is asked for
    assert c.flags.writeable and np.array_equal(c, s.values) and c is not s.values
    assert np.asarray(s, dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError, match="without a copy"):
        s.__array__(np.float64, copy=False)


def test_a_snapshot_says_what_it_holds() -> None:
    assert repr(_snap()) == "<Snapshot 2 keys x 4 CPUs (0,2-3,5), key uint32, value uint64>"
    assert repr(_snap(percpu=False)) == "<Snapshot 2 keys (not per-CPU), key uint32, value uint64>"


def test_snapshots_compare_as_a_whole() -> None:
    """snap1 == snap2 raised numpy's "The truth value of an array with more than one element is
    ambiguous"; two snapshots are now equal when they hold the same rows for the same CPUs."""
    a, b = _snap(), _snap()
    assert a == b and (a != b) is False and a == a[:]
    assert a != _snap(percpu=False) and a != a[:1] and a != a[::-1] and a.sorted() == a[::-1].sorted()
    other = Snapshot(keys=a.keys, values=a.values, cpus=CpuList([0, 1, 2, 3]), percpu=True)
    assert a != other  # the same numbers for other CPUs
    wider = Snapshot(keys=a.keys.astype(np.uint64), values=a.values, cpus=a.cpus, percpu=True)
    assert a != wider  # keys of another type
    nan = np.array([[np.nan, 1.0]])
    f = Snapshot(keys=np.array([1], np.uint32), values=nan, cpus=CpuList([0, 1]), percpu=True)
    assert f == Snapshot(keys=np.array([1], np.uint32), values=nan.copy(), cpus=CpuList([0, 1]), percpu=True)
    assert a != "snapshot" and a != [tuple(r) for r in a]
    with pytest.raises(TypeError, match="unhashable"):
        hash(a)
    assert (a.values == b.values).all()  # element-wise, as numpy compares
