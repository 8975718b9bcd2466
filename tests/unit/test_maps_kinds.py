"""maps/_kinds.py: map types, the rule's user-facing size, and Snapshot's columns by CPU id."""

from __future__ import annotations

import numpy as np
import pytest

from percpu.cpus import CpuList
from percpu.errors import CpuNotPossible
from percpu.maps import PERCPU_TYPES, MapType, Snapshot, user_value_bytes


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
