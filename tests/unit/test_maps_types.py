"""maps/_types.py: the typed classes, their default key codecs, and open_map's choice of class."""

from __future__ import annotations

import numpy as np
import pytest

import percpu
from percpu.cpus import CpuLists
from percpu.maps import MapType, open_map

from .fake_kernel import FakeKernel

Fake = tuple[FakeKernel, CpuLists]


@pytest.mark.parametrize(
    ("create", "cls", "map_type"),
    [
        (lambda: percpu.PerCpuArray.create(np.uint64, 4), percpu.PerCpuArray, MapType.PERCPU_ARRAY),
        (lambda: percpu.PerCpuHash.create(np.uint32, np.uint64, 4), percpu.PerCpuHash, MapType.PERCPU_HASH),
        (
            lambda: percpu.LruPerCpuHash.create(np.uint32, np.uint64, 4),
            percpu.LruPerCpuHash,
            MapType.LRU_PERCPU_HASH,
        ),
        (lambda: percpu.Array.create(np.uint64, 4), percpu.Array, MapType.ARRAY),
        (lambda: percpu.Hash.create(np.uint32, np.uint64, 4), percpu.Hash, MapType.HASH),
    ],
)
def test_open_map_picks_the_class_of_the_map_type(
    fake: Fake, create: object, cls: type, map_type: MapType
) -> None:
    _ = fake
    with create() as made:  # type: ignore[operator]
        assert made.type == map_type
        for spec in (made.info.id, str(made.info.id)):
            with open_map(spec, value=np.uint64) as m:
                assert type(m) is cls and m.info.id == made.info.id
                assert m.percpu == map_type.percpu


def test_arrays_have_integer_keys_and_a_length(fake: Fake) -> None:
    _, topo = fake
    with percpu.PerCpuArray.create(np.uint64, 3) as a, percpu.Array.create(np.uint64, 2) as b:
        assert len(a) == 3 and len(b) == 2
        a.update_all(2, 7)
        assert sorted(a.keys()) == [0, 1, 2] and a[2].to_dict() == dict.fromkeys(topo.possible, 7)
        b[1] = 9
        assert [b[0], b[1]] == [0, 9]


def test_open_map_by_a_name_no_map_has(fake: Fake) -> None:
    _ = fake
    with pytest.raises(percpu.MapNotFound):
        open_map("no_such_map_x")


@pytest.mark.parametrize("cls", [percpu.PerCpuHash, percpu.LruPerCpuHash, percpu.Hash])
def test_a_hash_has_no_len_but_a_count(fake: Fake, cls: type[percpu.PerCpuHash]) -> None:
    """len() worked on PerCpuArray but not on PerCpuHash; a hash's count needs a walk of its keys, so
    len() says so and names the walk."""
    _ = fake
    with cls.create(np.uint32, np.uint64, 16) as m:
        for k in (3, 1, 2):
            m[k] = [1] * len(m.cpus) if m.percpu else 1
        with pytest.raises(percpu.MapTypeError, match=r"len\(\) of a .*HASH map would walk every key") as e:
            len(m)
        assert isinstance(e.value, TypeError)
        assert "m.count()" in str(e.value) and "len(m.snapshot())" in str(e.value)
        assert m.count() == 3 == len(m.snapshot())
        assert bool(m) and sorted(list(m)) == [1, 2, 3]  # list() takes no length from len()
