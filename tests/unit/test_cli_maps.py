"""``percpu maps`` against the fake kernel: every map listed, per-CPU ones with the bytes a lookup writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

import percpu
from percpu.cli import build_parser, main

from .fake_kernel import FakeKernel, installed

N = len(percpu.cpu_lists().possible)  # maps sizes a lookup from the real sysfs list


def test_maps_lists_the_bytes_a_lookup_writes(capsys: pytest.CaptureFixture[str]) -> None:
    with (
        installed(FakeKernel(N)),
        percpu.PerCpuHash.create(np.uint32, np.dtype((np.void, 12)), 4, name="per_cpu") as pc,
        percpu.Array.create(np.uint64, 2, name="plain") as plain,
    ):
        assert main(["maps", "--json"]) == 0
        rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
        assert main(["maps", "--percpu", "-j"]) == 0
        only = [r["name"] for r in json.loads(capsys.readouterr().out)]
        assert main(["maps"]) == 0
        text = capsys.readouterr().out
    assert rows["per_cpu"]["id"] == pc.info.id and rows["plain"]["id"] == plain.info.id
    assert rows["per_cpu"]["percpu"] is True and rows["per_cpu"]["type"] == "percpu_hash"
    assert rows["per_cpu"]["lookup_writes"] == 16 * N  # round_up(12, 8) x possible CPUs
    assert rows["plain"]["percpu"] is False and rows["plain"]["lookup_writes"] == 8
    assert only == ["per_cpu"]
    # what each map takes in the kernel when full: a per-CPU value per possible CPU for every entry
    full = percpu.maps.memory_bytes(percpu.MapType.PERCPU_HASH, 4, 12, 4, N)
    assert rows["per_cpu"]["memory_bytes"] == full
    assert rows["per_cpu"]["memory_bytes"] > 4 * 16 * N and rows["plain"]["memory_bytes"] == 312 + 2 * 8
    line = next(ln for ln in text.splitlines() if "per_cpu" in ln)
    assert "percpu_hash" in line and "*" in line and line.endswith(f"{16 * N:,}")
    assert f"x {N} possible CPUs" in text


def test_json_has_a_short_form() -> None:
    assert build_parser().parse_args(["maps", "-j"]).json is True
