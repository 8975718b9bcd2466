"""The Prometheus collector on synthetic snapshots: names, labels, bounds, and counters that never fall."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from percpu.cpus import CpuList
from percpu.exporter import SyscallCollector
from percpu.syscount import ERR_KEY, LAT_KEY, NR_SLOTS, PROC_KEY, SyscallSnapshot


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

    @property
    def cpus(self) -> CpuList:
        return self._cpus

    def programs(self) -> list[Any]:
        return []

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
        )


def scrape(c: SyscallCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(c)
    out = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_names_and_labels() -> None:
    f = FakeCounter(4)
    f.counts[2, 110] = 7
    f.counts[0, 0] = 3
    got = scrape(SyscallCollector(f, libbpf_version="v1.1"))
    assert got[("percpu_syscalls_total", (("cpu", "2"), ("syscall", "getppid")))] == 7
    assert got[("percpu_syscalls_total", (("cpu", "0"), ("syscall", "read")))] == 3
    assert got[("percpu_build_info", (("attach", "tp_btf"), ("libbpf", "v1.1"), ("version", "0.1.0")))] == 1
    assert ("percpu_scrape_duration_seconds", ()) in got


def test_no_cpu_label_sums() -> None:
    f = FakeCounter(3)
    f.counts[:, 1] = [1, 2, 3]
    got = scrape(SyscallCollector(f, cpu_label=False))
    assert got[("percpu_syscalls_total", (("syscall", "write"),))] == 6


def test_top_n_is_sticky_and_other_never_decreases() -> None:
    f = FakeCounter(8, seed=1)
    c = SyscallCollector(f, top_syscalls=5)
    last: dict[Any, float] = {}
    names_seen: set[str] = set()
    for i in range(60):
        # new syscalls keep appearing, and the busiest change over time
        f.tick([0, 1, 2, *range(3, 3 + i // 3)])
        got = scrape(c)
        for k, v in got.items():
            if k[0].endswith("_total"):
                assert v >= last.get(k, 0), f"{k} went down"
        for k in last:
            if k[0] == "percpu_syscalls_total":
                assert k in got, f"series {k} disappeared"
        last = got
        names = {dict(k[1])["syscall"] for k in got if k[0] == "percpu_syscalls_total"}
        names_seen |= names
        assert len(names - {"other"}) <= 5
    assert "other" in names_seen


def test_full_matrix_256_cpus() -> None:
    f = FakeCounter(256)
    f.counts[:, :460] = 1
    got = scrape(SyscallCollector(f))
    assert sum(1 for k in got if k[0] == "percpu_syscalls_total") == 256 * 460


def test_processes_bounded_comm_only_and_monotonic_under_eviction() -> None:
    f = FakeCounter(2)
    keys = np.zeros(4, PROC_KEY)
    keys["tgid"] = [10, 11, 12, 13]
    keys["slot"] = 0
    keys["comm"] = [b"a", b"b", b"c", b"d"]
    f.procs = (keys, np.array([[5, 0], [1, 1], [2, 0], [9, 9]], np.uint64))
    c = SyscallCollector(f, max_comms=2)
    first = scrape(c)
    comms = {dict(k[1])["comm"] for k in first if k[0] == "percpu_process_syscalls_total"}
    assert comms == {"a", "b", "other"}
    assert all("pid" not in dict(k[1]) for k in first)
    # the kernel's LRU evicts pid 13 and pid 10 starts over (a new incarnation with a smaller count)
    f.procs = (keys[:3], np.array([[1, 0], [2, 1], [2, 0]], np.uint64))
    second = scrape(c)
    for k, v in first.items():
        if k[0] == "percpu_process_syscalls_total":
            assert second[k] >= v


def test_errors_and_latency_histogram() -> None:
    f = FakeCounter(2)
    ek = np.zeros(1, ERR_KEY)
    ek["slot"], ek["err"] = 2, 2
    f.errors = (ek, np.array([[3, 4]], np.uint64))
    lk = np.zeros(2, LAT_KEY)
    lk["slot"], lk["bucket"] = 0, [10, 12]
    f.latency = (lk, np.array([[5, 0], [0, 5]], np.uint64))
    got = scrape(SyscallCollector(f))
    assert got[("percpu_syscall_errors_total", (("errno", "ENOENT"), ("syscall", "open")))] == 7
    assert got[("percpu_syscall_latency_seconds_count", (("syscall", "read"),))] == 10
    le = {dict(k[1])["le"]: v for k, v in got.items() if k[0] == "percpu_syscall_latency_seconds_bucket"}
    assert le["+Inf"] == 10
    assert le[repr(2.0**11 / 1e9)] == 5  # bucket 10 holds [1024, 2048) ns
    assert got[("percpu_syscall_latency_seconds_sum", (("syscall", "read"),))] == pytest.approx(
        (5 * 1.5 * 2**10 + 5 * 1.5 * 2**12) / 1e9
    )


def _parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

    parse = om_parse if text.rstrip().endswith("# EOF") else text_string_to_metric_families
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in parse(text)
        for s in fam.samples
        if s.name != "percpu_scrape_duration_seconds"
    }


@pytest.mark.parametrize("openmetrics", [False, True])
@pytest.mark.parametrize("kw", [{}, {"top_syscalls": 7}, {"cpu_label": False}])
def test_fast_exposition_equals_prometheus_client(openmetrics: bool, kw: dict[str, Any]) -> None:
    f = FakeCounter(16, seed=3)
    f.tick(list(range(40)))
    slow = SyscallCollector(f, **kw)
    fast = SyscallCollector(f, **kw)
    for _ in range(3):
        f.tick(list(range(0, 60, 3)))
        a = scrape(slow)
        a.pop(("percpu_scrape_duration_seconds", ()))
        b = _parse(fast.expose(openmetrics=openmetrics).decode())
        assert a == b
