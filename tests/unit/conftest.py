"""Fixtures for tests that run anywhere: a fake kernel seam, sysfs CPU lists with gaps, and a machine's
topology (fake_topology.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from percpu.cpus import CpuList, CpuLists
from percpu.topo import CpuTopology, read_topology

from .fake_kernel import FakeKernel, installed
from .fake_topology import fake_sysfs


def make_sysfs(root: str, possible: str, online: str, present: str | None = None) -> str:
    os.makedirs(root, exist_ok=True)
    for name, text in (("possible", possible), ("online", online), ("present", present or possible)):
        with open(os.path.join(root, name), "w", encoding="ascii") as f:
            f.write(text + "\n")
    return root


@pytest.fixture
def sysfs(tmp_path: object) -> Callable[..., CpuLists]:
    def make(possible: str, online: str, present: str | None = None) -> CpuLists:
        return CpuLists(
            make_sysfs(os.path.join(str(tmp_path), possible.replace(",", "_")), possible, online, present)
        )

    return make


@pytest.fixture(params=[("0,2-3", "0,2"), ("0-255", "0-3")], ids=["gaps-0,2-3", "256-possible-4-online"])
def fake(request: pytest.FixtureRequest) -> Iterator[tuple[FakeKernel, CpuLists]]:
    """A fake machine, whole: with gapped CPU ids, and with 256 possible CPUs of which 4 are online. Its
    CPU lists (``topo``) are the ones percpu reads through the seam, so they agree with its count."""
    possible, online = (CpuList.parse(x).ids for x in request.param)
    kernel = FakeKernel(len(possible), cpu_ids=possible, online=online)
    with installed(kernel):
        yield kernel, CpuLists(kernel.machine.cpu_root)


@pytest.fixture
def topology(tmp_path: Path) -> CpuTopology:
    """fake_topology's machine as percpu reads it: possible 0-3,6-9; cores {0,2} {1,3} {6}; nodes {0-3}
    {6,7}; CPU 7 offline, 8-9 absent; isolated 2 (cpuset partition), 3 (isolcpus) and 6 (nohz_full)."""
    cpu, node, cg = fake_sysfs(tmp_path)
    return read_topology(cpu, node_root=node, cgroup_root=cg)
