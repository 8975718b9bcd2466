"""Synthetic syscall data for the unit tests and the benchmarks: snapshots for syscount and the report
rendering, and a fake counter for the exporter (benchmarks/bench_exporter.py scrapes one too).

Imported as ``tests.unit.synthetic`` by the benchmarks: it imports percpu only, never a test module."""

from __future__ import annotations

from typing import Any

import numpy as np

from percpu._libbpf import ProgInfo
from percpu.cpus import CpuList
from percpu.errors import PercpuError
from percpu.exporter import SyscallCollector
from percpu.syscount import NR_SLOTS, Lost, SyscallSnapshot

CPUS = CpuList([0, 2, 3])  # a possible list with a gap: column 1 is CPU 2


def snap(t: float, pairs: dict[tuple[int, int], int], **kw: object) -> SyscallSnapshot:
    """A snapshot at time t whose counts are zero but for {(row, slot): count}."""
    counts = np.zeros((len(CPUS), NR_SLOTS), dtype=np.uint64)
    for (row, slot), v in pairs.items():
        counts[row, slot] = v
    return SyscallSnapshot(time=t, cpus=CPUS, counts=counts, arch="x86_64", **kw)  # type: ignore[arg-type]


class FakeProgram:
    def __init__(self, name: str, run_cnt: int = 0, run_time_ns: int = 0, gone: bool = False) -> None:
        self.name, self.run_cnt, self.run_time_ns, self.gone = name, run_cnt, run_time_ns, gone

    def info(self) -> ProgInfo:
        if self.gone:
            raise PercpuError(f"program {self.name} is not loaded")
        return ProgInfo(1, 26, self.name, "00" * 8, self.run_time_ns, self.run_cnt, 0, (), 0)


class FakeCounter:
    attach_mode = "tp_btf"
    arch = "x86_64"

    def __init__(self, ncpu: int, seed: int = 0) -> None:
        self._cpus = CpuList(range(ncpu))
        self.counts = np.zeros((ncpu, NR_SLOTS), np.uint64)
        self.rng = np.random.default_rng(seed)
        self.procs: tuple[np.ndarray, np.ndarray] | None = None
        self.errors: tuple[np.ndarray, np.ndarray] | None = None
        self.latency: tuple[np.ndarray, np.ndarray] | None = None
        self.progs: list[FakeProgram] = []
        self.lost = Lost()
        self.online: CpuList | None = None  # the CPUs online at each snapshot (None: unknown)

    @property
    def cpus(self) -> CpuList:
        return self._cpus

    def programs(self) -> list[Any]:
        return list(self.progs)

    def tick(self, slots: list[int]) -> None:
        for s in slots:
            self.counts[:, s] += self.rng.integers(0, 50, len(self._cpus), dtype=np.uint64)

    def snapshot(self) -> SyscallSnapshot:
        return SyscallSnapshot(
            0.0,
            self._cpus,
            self.counts.copy(),
            procs=self.procs,
            errors=self.errors,
            latency=self.latency,
            arch=self.arch,
            online=self.online,
            lost=self.lost,
        )


def served(c: SyscallCollector) -> SyscallCollector:
    """The collector after one scrape: each series it had was served once, at 0 (a series is born at 0,
    so that increase() sees its first calls), and is served at its value from now on."""
    c.scrape()
    return c
