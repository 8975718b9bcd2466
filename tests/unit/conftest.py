"""Fixtures for tests that run anywhere: a fake kernel seam and sysfs CPU lists with gaps."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from percpu import _libbpf
from percpu.cpus import Topology

from .fake_kernel import FakeKernel


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
def fake(
    request: pytest.FixtureRequest, sysfs: Callable[..., Topology]
) -> Iterator[tuple[FakeKernel, Topology]]:
    """A fake kernel whose possible CPUs match a sysfs fixture: with gaps, and with 256 possible."""
    possible, online = request.param
    topo = sysfs(possible, online)
    kernel = FakeKernel(len(topo.possible))
    with _libbpf.use_backend(kernel):
        yield kernel, topo
