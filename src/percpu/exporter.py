"""Prometheus metrics from the syscall counter, as a prometheus_client Collector.

Each scrape reads the BPF maps once (batch reads, no reset, no lock the programs wait on) and turns the
absolute counts into metric families. Cardinality is bounded by options:

* ``cpu_label=False`` sums over CPUs;
* ``top_syscalls=N`` keeps N syscalls by name and puts the rest in ``syscall="other"``. The kept set is
  sticky and "other" only ever gains syscalls, so every exported counter is monotonic;
* per-process series carry ``comm`` only (never pid), at most ``max_comms`` of them plus ``comm="other"``,
  accumulated from deltas so an LRU eviction in the kernel never makes a counter go down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__
from .cpus import CpuList
from .syscount import SyscallSnapshot, errno_name, slot_name

__all__ = ["SyscallCollector"]

OTHER = "other"


class CounterSource(Protocol):
    """What the collector needs from a :class:`~percpu.syscount.SyscallCounter` (tests use a fake)."""

    attach_mode: str | None
    arch: str

    @property
    def cpus(self) -> CpuList: ...
    def snapshot(self) -> SyscallSnapshot: ...
    def programs(self) -> list[Any]: ...


class SyscallCollector(Collector):
    def __init__(
        self,
        counter: CounterSource,
        *,
        cpu_label: bool = True,
        top_syscalls: int = 0,
        max_comms: int = 20,
        libbpf_version: str = "",
    ) -> None:
        self.counter = counter
        self.cpu_label = cpu_label
        self.top = top_syscalls
        self.max_comms = max_comms
        self.libbpf_version = libbpf_version
        self._lock = threading.Lock()  # concurrent scrapes share the sticky state below
        self._kept: set[int] = set()
        self._in_other: set[int] = set()
        self._comms: set[str] = set()
        self._comm_other: set[str] = set()
        self._proc_last: dict[bytes, int] = {}
        self._proc_totals: dict[tuple[str, str], int] = {}
        self._last_duration = 0.0
        self._names: dict[int, str] = {}
        self._cpu_labels = [str(c) for c in counter.cpus]
        self._prefixes: dict[tuple[int, int], str] = {}
        self._prefix_key: tuple[int, ...] = ()
        self._prefix_matrix = np.zeros((0, 0), dtype=object)

    def _name(self, slot: int) -> str:
        n = self._names.get(slot)
        if n is None:
            n = self._names[slot] = slot_name(slot, self.counter.arch)
        return n

    def _label(self, slot: int) -> str:
        """The syscall label a slot is exported under (its name, or "other" beyond the top N)."""
        if not self.top or slot in self._kept:
            return self._name(slot)
        return OTHER

    def _update_kept(self, totals: np.ndarray) -> None:
        if not self.top:
            return
        active = np.nonzero(totals)[0]
        new = [int(s) for s in active if int(s) not in self._kept and int(s) not in self._in_other]
        new.sort(key=lambda s: -int(totals[s]))
        for s in new:
            if len(self._kept) < self.top:
                self._kept.add(s)  # first seen while there is room: named for good
            else:
                self._in_other.add(s)  # counted in "other" from its first call on, for good

    def collect(self) -> Iterator[Metric]:
        start = time.perf_counter()
        with self._lock:
            snap = self.counter.snapshot()
            yield from self._families(snap)
            self._last_duration = time.perf_counter() - start
        g = GaugeMetricFamily(
            "percpu_scrape_duration_seconds",
            "Time the last scrape took to read the maps and build the metrics.",
        )
        g.add_metric([], self._last_duration)
        yield g

    def expose(self, openmetrics: bool) -> bytes:
        """One scrape as exposition text, the fast way.

        prometheus_client formats every family but one. The per-CPU matrix (``percpu_syscalls_total`` with
        a ``cpu`` label: up to CPUs x syscalls samples, 92,000 for 256 CPUs) is formatted here with
        numpy from cached label strings, because prometheus_client's per-sample formatting takes about
        half a second for that many. Both paths produce the same samples (tests/unit/test_exporter.py).
        """
        from prometheus_client import CollectorRegistry
        from prometheus_client import generate_latest as text_latest
        from prometheus_client.openmetrics.exposition import generate_latest as om_latest

        start = time.perf_counter()
        with self._lock:
            snap = self.counter.snapshot()
            matrix: list[str] = []
            fams = list(self._families(snap, matrix_text=matrix if self.cpu_label else None))
            self._last_duration = time.perf_counter() - start
        g = GaugeMetricFamily(
            "percpu_scrape_duration_seconds",
            "Time the last scrape took to read the maps and build the metrics.",
        )
        g.add_metric([], self._last_duration)
        fams.append(g)
        reg = CollectorRegistry(auto_describe=False)
        reg.register(_Fixed(fams))
        body = (om_latest if openmetrics else text_latest)(reg)
        if not matrix:
            return body
        name = "percpu_syscalls" if openmetrics else "percpu_syscalls_total"
        head = f"# HELP {name} System calls entered, by CPU and syscall.\n# TYPE {name} counter\n"
        text = (head + "".join(matrix)).encode()
        if openmetrics:
            assert body.endswith(b"# EOF\n")
            return body[: -len(b"# EOF\n")] + text + b"# EOF\n"
        return body + text

    def _matrix_text(self, counts: np.ndarray, kept: list[int], other_slots: list[int]) -> str:
        """``percpu_syscalls_total{cpu=..,syscall=..} N`` lines for non-zero cells, built with numpy."""
        cols = [*kept, -1] if other_slots else kept
        if not cols:
            return ""
        sub = counts[:, kept] if kept else np.zeros((counts.shape[0], 0), np.uint64)
        if other_slots:
            sub = np.concatenate([sub, counts[:, other_slots].sum(axis=1, dtype=np.uint64)[:, None]], axis=1)
        cells = sub.T  # (syscalls, cpus), the order prometheus_client would print
        nz = cells != 0
        key = tuple(cols)
        if self._prefix_key != key:  # the set of active syscalls changes rarely: cache its label strings
            self._prefix_matrix = np.array(
                [[self._prefix(c, s) for c in range(counts.shape[0])] for s in cols], dtype=object
            ).reshape(len(cols), counts.shape[0])
            self._prefix_key = key
        prefixes = self._prefix_matrix[nz].tolist()
        values = cells[nz].tolist()
        return "".join([f"{p}{v}\n" for p, v in zip(prefixes, values, strict=True)])

    def _prefix(self, cpu_index: int, slot: int) -> str:
        key = (cpu_index, slot)
        p = self._prefixes.get(key)
        if p is None:
            name = OTHER if slot < 0 else self._name(slot)
            p = f'percpu_syscalls_total{{cpu="{self._cpu_labels[cpu_index]}",syscall="{name}"}} '
            self._prefixes[key] = p
        return p

    def _families(self, snap: SyscallSnapshot, matrix_text: list[str] | None = None) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "percpu_build_info",
            "percpu version, libbpf version and the hook in use.",
            labels=["version", "libbpf", "attach"],
        )
        info.add_metric([__version__, self.libbpf_version, self.counter.attach_mode or ""], 1)
        yield info
        counts = snap.counts
        totals = counts.sum(axis=0, dtype=np.uint64)
        self._update_kept(totals)
        if matrix_text is None:
            yield self._syscalls(counts, totals)
        else:
            active = [int(x) for x in np.nonzero(totals)[0]]
            kept = [x for x in active if not self.top or x in self._kept]
            other = [x for x in active if self.top and x not in self._kept]
            matrix_text.append(self._matrix_text(counts, kept, other))
        dropped = CounterMetricFamily(
            "percpu_dropped_syscalls",
            "System calls whose number is outside the counter table (x32 calls, bogus numbers).",
        )
        dropped.add_metric([], snap.dropped)
        yield dropped
        if snap.errors is not None:
            yield self._errors(*snap.errors)
        if snap.latency is not None:
            yield self._latency(*snap.latency)
        if snap.procs is not None:
            yield self._procs(*snap.procs)
        yield from self._prog_stats()

    def _syscalls(self, counts: np.ndarray, totals: np.ndarray) -> Metric:
        labels = ["cpu", "syscall"] if self.cpu_label else ["syscall"]
        m = CounterMetricFamily("percpu_syscalls", "System calls entered, by CPU and syscall.", labels=labels)
        active = np.nonzero(totals)[0]
        if self.top:
            kept = [int(s) for s in active if int(s) in self._kept]
            other_slots = [int(s) for s in active if int(s) not in self._kept]
        else:
            kept, other_slots = [int(s) for s in active], []
        if self.cpu_label:
            sub = counts[:, kept].T  # (slots, cpus)
            for s, row in zip(kept, sub.tolist(), strict=True):
                name = self._name(s)
                for cpu, v in zip(self._cpu_labels, row, strict=True):
                    if v:
                        m.add_metric([cpu, name], v)
            if other_slots:
                for cpu, v in zip(self._cpu_labels, counts[:, other_slots].sum(axis=1).tolist(), strict=True):
                    m.add_metric([cpu, OTHER], v)
        else:
            for s in kept:
                m.add_metric([self._name(s)], int(totals[s]))
            if other_slots:
                m.add_metric([OTHER], int(totals[other_slots].sum()))
        return m

    def _errors(self, keys: np.ndarray, counts: np.ndarray) -> Metric:
        m = CounterMetricFamily(
            "percpu_syscall_errors", "Failed system calls, by syscall and errno.", labels=["syscall", "errno"]
        )
        agg: dict[tuple[str, str], int] = {}
        for k, t in zip(keys.tolist(), counts.sum(axis=1).tolist(), strict=True):
            key = (self._label(int(k[0])), errno_name(int(k[1])))
            agg[key] = agg.get(key, 0) + int(t)
        for (sc, err), v in sorted(agg.items()):
            m.add_metric([sc, err], v)
        return m

    def _latency(self, keys: np.ndarray, counts: np.ndarray) -> Metric:
        m = HistogramMetricFamily(
            "percpu_syscall_latency_seconds",
            "System call latency from log2 nanosecond buckets; the sum is estimated from bucket midpoints.",
            labels=["syscall"],
        )
        by: dict[str, np.ndarray] = {}
        for k, t in zip(keys.tolist(), counts.sum(axis=1).tolist(), strict=True):
            label = self._label(int(k[0]))
            by.setdefault(label, np.zeros(64, np.uint64))[min(int(k[1]), 63)] += t
        for label in sorted(by):
            b = by[label]
            cum = np.cumsum(b)
            buckets = [(_le(i), float(cum[i])) for i in range(64) if b[i] or (i and b[i - 1])]
            buckets = [(le, v) for le, v in buckets if le != "+Inf"]
            buckets.append(("+Inf", float(cum[-1])))
            est = float(sum(int(b[i]) * 1.5 * 2.0**i for i in range(64))) / 1e9
            m.add_metric([label], buckets, sum_value=est)
        return m

    def _procs(self, keys: np.ndarray, counts: np.ndarray) -> Metric:
        m = CounterMetricFamily(
            "percpu_process_syscalls",
            "System calls by command name (comm) and syscall; "
            f'at most {self.max_comms} comms, the rest as comm="other".',
            labels=["comm", "syscall"],
        )
        totals = counts.sum(axis=1).tolist()
        seen: dict[bytes, int] = {}
        for k, t in zip(keys, totals, strict=True):
            raw = k.tobytes()
            before = self._proc_last.get(raw, 0)
            delta = t - before if t >= before else t  # smaller: evicted and counted again from zero
            seen[raw] = t
            if not delta:
                continue
            comm = bytes(k["comm"]).split(b"\0", 1)[0].decode(errors="replace") or "?"
            if comm not in self._comms and comm not in self._comm_other:
                (self._comms if len(self._comms) < self.max_comms else self._comm_other).add(comm)
            label = comm if comm in self._comms else OTHER
            key = (label, self._label(int(k["slot"])))
            self._proc_totals[key] = self._proc_totals.get(key, 0) + int(delta)
        self._proc_last = seen
        for (comm, sc), v in sorted(self._proc_totals.items()):
            m.add_metric([comm, sc], v)
        return m

    def _prog_stats(self) -> Iterable[Metric]:
        if _read_int("/proc/sys/kernel/bpf_stats_enabled") != 1:
            return []
        cnt = CounterMetricFamily(
            "percpu_bpf_prog_run_count",
            "Runs of percpu's BPF programs (kernel.bpf_stats_enabled=1).",
            labels=["program"],
        )
        tim = CounterMetricFamily(
            "percpu_bpf_prog_run_time_seconds",
            "Time spent in percpu's BPF programs (kernel.bpf_stats_enabled=1).",
            labels=["program"],
        )
        for p in self.counter.programs():
            try:
                info = p.info()
            except Exception:
                continue
            cnt.add_metric([p.name], info.run_cnt)
            tim.add_metric([p.name], info.run_time_ns / 1e9)
        return [cnt, tim]


class _Fixed(Collector):
    """Hands already-built families to a throwaway registry for formatting."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _le(i: int) -> str:
    """Upper bound, in seconds, of log2 bucket i ([2^i, 2^(i+1)) ns)."""
    return "+Inf" if i >= 63 else repr(2.0 ** (i + 1) / 1e9)


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None
