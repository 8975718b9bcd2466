"""_frames.py: snapshots as pandas (and on to xarray) objects, labelled with real CPU ids, on fake machines
whose possible CPUs have gaps (0,2-3) or far outnumber the online ones (0-255)."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

import percpu
from percpu.cpus import CpuLists

from .fake_kernel import FakeKernel

Fake = tuple[FakeKernel, CpuLists]
STAT = np.dtype([("calls", "<u8"), ("comm", "S8"), ("h", "<u2", (2,))])


def _filled(n: int = 5) -> percpu.PerCpuHash:
    m = percpu.PerCpuHash.create(np.uint32, np.uint64, 64)
    for k in (40, 3, 17, 0, 9)[:n]:  # not in key order: the fake, like the kernel, keeps its own
        m[k] = [k * 100 + i for i in range(len(m.cpus))]
    return m


def test_to_pandas_is_key_by_cpu_with_real_cpu_ids(fake: Fake) -> None:
    """pd.DataFrame(snapshot) failed, and nothing labelled the CPU axis with CPU ids."""
    _, topo = fake
    with _filled() as m:
        snap = m.snapshot().sorted()
    df = snap.to_pandas()
    assert df.index.name == "key" and list(df.index) == [0, 3, 9, 17, 40]
    assert df.columns.name == "cpu" and list(df.columns) == list(topo.possible)
    last = topo.possible[-1]
    assert df.loc[17, last] == 1700 + len(topo.possible) - 1 and df.dtypes.unique().tolist() == [np.uint64]
    assert (df.sum(axis=1).to_numpy() == snap.sum()).all()


def test_to_dataframe_is_long_with_a_key_and_cpu_index(fake: Fake) -> None:
    _, topo = fake
    with _filled(3) as m:
        df = m.snapshot().to_dataframe()
    assert df.index.names == ["key", "cpu"] and list(df.columns) == ["value"]
    assert len(df) == 3 * len(topo.possible)
    cpu = topo.possible[1]
    assert df.loc[(3, cpu), "value"] == 301
    by_cpu = df.groupby(level="cpu")["value"].sum()
    assert list(by_cpu.index) == list(topo.possible) and by_cpu[cpu] == 40 * 100 + 1 + 301 + 1701


def test_the_long_form_becomes_xarray_dimensions(fake: Fake) -> None:
    _, topo = fake
    with _filled(3) as m:
        ds = m.snapshot().sorted().to_dataframe().to_xarray()
    assert dict(ds.sizes) == {"key": 3, "cpu": len(topo.possible)}
    assert list(ds["cpu"].values) == list(topo.possible) and list(ds["key"].values) == [3, 17, 40]
    assert int(ds["value"].sel(key=17, cpu=topo.possible[-1])) == 1700 + len(topo.possible) - 1


def test_records_and_record_keys_become_columns_and_levels(fake: Fake) -> None:
    _, topo = fake
    key = np.dtype([("pid", "<u4"), ("cpu", "<u4")])  # a field called cpu: the levels say key.cpu
    with percpu.PerCpuHash.create(key, STAT, 8) as m:
        for pid in (2, 1):
            m.update_all({"pid": pid, "cpu": 7}, {"calls": pid, "comm": b"sh", "h": [pid, 9]})
        snap = m.snapshot().sorted()
    wide = snap.to_pandas()
    assert wide.index.names == ["key.pid", "key.cpu"] and list(wide.index) == [(1, 7), (2, 7)]
    assert wide.columns.names == ["field", "cpu"]
    assert list(wide["calls"].columns) == list(topo.possible)
    assert (
        wide.loc[(2, 7), ("h[1]", topo.possible[0])] == 9
        and wide.loc[(1, 7), ("comm", topo.possible[-1])] == b"sh"
    )
    long = snap.to_dataframe()
    assert long.index.names == ["key.pid", "key.cpu", "cpu"]
    assert list(long.columns) == ["calls", "comm", "h[0]", "h[1]"]
    assert long.loc[(2, 7, topo.possible[-1]), "h[0]"] == 2


def test_odd_integers_and_raw_bytes_are_python_objects(fake: Fake) -> None:
    _ = fake
    with percpu.PerCpuHash.create(percpu.Int(3), np.dtype((np.void, 2)), 4) as m:
        m.update_all(2**20, b"\x01\x02")
        df = m.snapshot().to_pandas()
    assert list(df.index) == [2**20]  # the 3-byte key decoded, not b"\x00\x00\x10"
    assert set(df.iloc[0]) == {b"\x01\x02"}


def test_plain_maps_and_one_cpu_snapshots(fake: Fake) -> None:
    _, topo = fake
    with percpu.Hash.create(np.uint32, np.uint64, 4) as h:
        h[5] = 50
        s = h.snapshot().to_pandas()
        assert isinstance(s, pd.Series) and s.index.name == "key" and s[5] == 50
        assert list(h.snapshot().to_dataframe().columns) == ["value"]
    with _filled(2) as m:
        cpu = topo.possible[-1]
        one = m.snapshot(cpu=cpu).sorted().to_pandas()
    assert list(one.columns) == [cpu] and one.loc[40, cpu] == 4000 + len(topo.possible) - 1


def test_empty_snapshots_give_empty_frames(fake: Fake) -> None:
    _, topo = fake
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 4) as m:
        snap = m.snapshot()
    assert snap.to_pandas().shape == (0, len(topo.possible))
    assert snap.to_dataframe().shape == (0, 1)


def test_without_pandas_the_error_says_how_to_get_it(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    _ = fake
    with _filled(1) as m:
        snap = m.snapshot()
    monkeypatch.setitem(sys.modules, "pandas", None)
    for convert, name in ((snap.to_pandas, "to_pandas"), (snap.to_dataframe, "to_dataframe")):
        with pytest.raises(
            percpu.PercpuError, match=rf"Snapshot.{name}\(\) needs pandas.*pip install pandas"
        ):
            convert()
