"""CPU lists from sysfs, gaps included."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from percpu.cpus import CpuList, CpuLists, format_cpu_list, parse_cpu_list
from percpu.errors import PercpuError


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("0", (0,)),
        ("0-3", (0, 1, 2, 3)),
        ("0,2-3", (0, 2, 3)),
        ("0-1,8,10-11\n", (0, 1, 8, 10, 11)),
        (" 3 , 1 ", (1, 3)),
        ("", ()),
    ],
)
def test_parse(text: str, ids: tuple[int, ...]) -> None:
    assert parse_cpu_list(text) == ids
    assert parse_cpu_list(format_cpu_list(ids)) == ids


@pytest.mark.parametrize("bad", ["a", "3-1", "1-", "-2", "0,,x"])
def test_malformed(bad: str) -> None:
    with pytest.raises(PercpuError, match="malformed CPU list"):
        parse_cpu_list(bad)


def test_slots_with_gaps(sysfs: Callable[..., CpuLists]) -> None:
    t = sysfs("0,2-3,8", "0,3")
    assert t.possible == CpuList([0, 2, 3, 8]) and str(t.possible) == "0,2-3,8"
    assert [t.slot(c) for c in (0, 2, 3, 8)] == [0, 1, 2, 3]
    assert t.cpu(3) == 8
    assert t.online == (0, 3)
    with pytest.raises(ValueError, match="not a possible CPU"):
        t.slot(1)


def test_256_possible(sysfs: Callable[..., CpuLists]) -> None:
    t = sysfs("0-255", "0-3")
    assert t.num_possible == 256 and len(t.online) == 4 and t.slot(255) == 255


def test_missing_sysfs_is_a_clear_error(tmp_path: object) -> None:
    with pytest.raises(PercpuError, match="is sysfs mounted"):
        _ = CpuLists(str(tmp_path)).possible
