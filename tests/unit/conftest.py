"""Fixtures for tests that run anywhere: a fake kernel seam and sysfs CPU lists with gaps."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from percpu.cpus import CpuList, Topology

from .fake_kernel import FakeKernel, installed


def make_sysfs(root: str, possible: str, online: str, present: str | None = None) -> str:
    os.makedirs(root, exist_ok=True)
    for name, text in (("possible", possible), ("online", online), ("present", present or possible)):
        with open(os.path.join(root, name), "w", encoding="ascii") as f:
            f.write(text + "\n")
    return root


@pytest.fixture
def sysfs(tmp_path: object) -> Callable[..., Topology]:
    def make(possible: str, online: str, present: str | None = None) -> Topology:
        return Topology(
            make_sysfs(os.path.join(str(tmp_path), possible.replace(",", "_")), possible, online, present)
        )

    return make


@pytest.fixture(params=[("0,2-3", "0,2"), ("0-255", "0-3")], ids=["gaps-0,2-3", "256-possible-4-online"])
def fake(request: pytest.FixtureRequest) -> Iterator[tuple[FakeKernel, Topology]]:
    """A fake machine, whole: with gapped CPU ids, and with 256 possible CPUs of which 4 are online. Its
    CPU lists (``topo``) are the ones percpu reads through the seam, so they agree with its count."""
    possible, online = (CpuList.parse(x).ids for x in request.param)
    kernel = FakeKernel(len(possible), cpu_ids=possible, online=online)
    with installed(kernel):
        yield kernel, Topology(kernel.machine.cpu_root)
