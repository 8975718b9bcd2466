"""Prometheus metrics from the syscall counter, as a prometheus_client Collector.

Each scrape reads the BPF maps once (batch reads, no reset, no lock the programs wait on) and turns the
absolute counts into metric families. Cardinality is bounded by options:

* ``cpu_label=False`` sums over CPUs;
* ``top_syscalls=N`` names the N busiest syscalls and puts the rest in ``syscall="other"``. A syscall
  once named stays named, and one that later enters the top N (by calls since the previous scrape) is
  named too, until 2N are named; see :meth:`SyscallCollector._update_kept` for why every exported counter,
  "other" included, stays monotonic;
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
from .errors import PercpuError
from .syscount import SyscallSnapshot, errno_name, slot_name

__all__ = ["SyscallCollector"]

OTHER = "other"
BPF_STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"


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
        bpf_stats: bool = False,
        bpf_stats_sysctl: str = BPF_STATS_SYSCTL,
    ) -> None:
        """``bpf_stats=True`` says the caller holds a BPF_ENABLE_STATS fd for as long as it uses this
        collector (``percpu exporter --enable-bpf-stats``): that turns run counting on without changing
        ``kernel.bpf_stats_enabled``, so the sysctl alone cannot tell."""
        if top_syscalls < 0 or max_comms < 1:
            raise ValueError(
                f"top_syscalls must be 0 (all) or more, max_comms 1 or more: {top_syscalls}, {max_comms}"
            )
        self.counter = counter
        self.cpu_label = cpu_label
        self.top = top_syscalls
        self.max_named = 2 * top_syscalls
        self.max_comms = max_comms
        self.libbpf_version = libbpf_version
        self.bpf_stats = bpf_stats
        self.bpf_stats_sysctl = bpf_stats_sysctl
        self._lock = threading.Lock()  # concurrent scrapes share the sticky state below
        self._kept: set[int] = set()
        self._in_other: set[int] = set()
        self._promoted: list[int] = []  # moved from "other" to a name by this scrape
        self._prev_totals = np.zeros(0, np.uint64)
        ncpu = len(counter.cpus)
        # What promoted syscalls had contributed to "other" when they left it, so "other" keeps it.
        self._frozen_other = np.zeros(ncpu, np.uint64)
        self._frozen_errors: dict[str, int] = {}
        self._frozen_latency = np.zeros(64, np.uint64)
        self._prog_stats_on = False
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
        if slot not in self._in_other:
            # Only in the errors or latency map: its first call ran between the reads of the counts and
            # of that map. Place it as if the counts had shown it, so its label never changes later.
            (self._kept if len(self._kept) < self.top else self._in_other).add(slot)
            return self._label(slot)
        return OTHER

    def _update_kept(self, counts: np.ndarray, totals: np.ndarray) -> None:
        """Decide which syscalls are named, keeping every exported counter monotonic.

        The rule: a syscall seen for the first time is named while fewer than N are. After that, any
        syscall among the N busiest since the previous scrape is named as well, as long as fewer than 2N
        are named (so a syscall that gets busy later is not hidden in "other" for good, and the series
        count stays bounded). A named syscall stays named and exports its full count, like without
        --top-syscalls. "other" is, per CPU, the full counts of the syscalls in it now plus, for each
        syscall that left it, its count at the scrape it left ("frozen"): every term only grows, so
        "other" never goes down, even though a promoted syscall's earlier calls now show in both series
        (``rate()`` and ``increase()`` are unaffected: the new series contributes from its first sample).
        """
        self._promoted = []
        if not self.top:
            return
        prev = self._prev_totals if len(self._prev_totals) == len(totals) else np.zeros_like(totals)
        self._prev_totals = totals.copy()
        active = [int(s) for s in np.nonzero(totals)[0]]
        unseen = [s for s in active if s not in self._kept and s not in self._in_other]
        unseen.sort(key=lambda s: -int(totals[s]))
        room = max(self.top - len(self._kept), 0)
        self._kept.update(unseen[:room])  # first seen while there is room: named, never in "other"
        rest = set(unseen[room:])
        if len(self._kept) < self.max_named:
            delta = totals - np.minimum(prev, totals)
            busiest = [int(s) for s in np.argsort(-delta.astype(np.float64), kind="stable")[: self.top]]
            for s in busiest:
                if len(self._kept) >= self.max_named or not delta[s] or s in self._kept:
                    continue
                if s in self._in_other:  # its count so far stays in "other" (frozen), the rest is its own
                    self._in_other.discard(s)
                    self._frozen_other += counts[:, s]
                    self._promoted.append(s)
                else:
                    rest.discard(s)
                self._kept.add(s)
        self._in_other |= rest  # counted in "other" from its first call on, unless promoted later

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

    def _matrix_text(self, counts: np.ndarray, kept: list[int], other: np.ndarray | None) -> str:
        """``percpu_syscalls_total{cpu=..,syscall=..} N`` lines for non-zero cells, built with numpy."""
        cols = [*kept, -1] if other is not None else kept
        if not cols:
            return ""
        sub = counts[:, kept] if kept else np.zeros((counts.shape[0], 0), np.uint64)
        if other is not None:
            sub = np.concatenate([sub, other[:, None]], axis=1)
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
        self._update_kept(counts, totals)
        active = [int(x) for x in np.nonzero(totals)[0]]
        kept = [x for x in active if not self.top or x in self._kept]
        other: np.ndarray | None = None  # per CPU; None when nothing has ever been counted as "other"
        if self.top:
            in_other = [x for x in active if x in self._in_other]
            if in_other or self._frozen_other.any():
                other = counts[:, in_other].sum(axis=1, dtype=np.uint64) + self._frozen_other
        if matrix_text is None:
            yield self._syscalls(counts, kept, other)
        else:
            matrix_text.append(self._matrix_text(counts, kept, other))
        dropped = CounterMetricFamily(
            "percpu_dropped_syscalls",
            "System calls whose number is outside the counter table (x32 calls, bogus numbers).",
        )
        dropped.add_metric([], snap.dropped)
        yield dropped
        lost = CounterMetricFamily(
            "percpu_lost_syscalls",
            "System calls an opt-in table (processes, errors, latency) could not take because it was full.",
            labels=["table"],
        )
        for table, n in snap.lost._asdict().items():
            lost.add_metric([table], n)
        yield lost
        if snap.errors is not None:
            yield self._errors(*snap.errors)
        if snap.latency is not None:
            yield self._latency(*snap.latency)
        if snap.procs is not None:
            yield self._procs(*snap.procs)
        yield from self._prog_stats()

    def _syscalls(self, counts: np.ndarray, kept: list[int], other: np.ndarray | None) -> Metric:
        labels = ["cpu", "syscall"] if self.cpu_label else ["syscall"]
        m = CounterMetricFamily("percpu_syscalls", "System calls entered, by CPU and syscall.", labels=labels)
        if self.cpu_label:
            sub = counts[:, kept].T  # (slots, cpus)
            for s, row in zip(kept, sub.tolist(), strict=True):
                name = self._name(s)
                for cpu, v in zip(self._cpu_labels, row, strict=True):
                    if v:
                        m.add_metric([cpu, name], v)
            if other is not None:
                for cpu, v in zip(self._cpu_labels, other.tolist(), strict=True):
                    if v:
                        m.add_metric([cpu, OTHER], v)
        else:
            for s in kept:
                m.add_metric([self._name(s)], int(counts[:, s].sum(dtype=np.uint64)))
            if other is not None:
                m.add_metric([OTHER], int(other.sum(dtype=np.uint64)))
        return m

    def _errors(self, keys: np.ndarray, counts: np.ndarray) -> Metric:
        m = CounterMetricFamily(
            "percpu_syscall_errors", "Failed system calls, by syscall and errno.", labels=["syscall", "errno"]
        )
        promoted = set(self._promoted)
        agg: dict[tuple[str, str], int] = {}
        for k, t in zip(keys.tolist(), counts.sum(axis=1).tolist(), strict=True):
            slot, err = int(k[0]), errno_name(int(k[1]))
            if slot in promoted:  # what "other" held for it stays there (see _update_kept)
                self._frozen_errors[err] = self._frozen_errors.get(err, 0) + int(t)
            key = (self._label(slot), err)
            agg[key] = agg.get(key, 0) + int(t)
        for err, v in self._frozen_errors.items():
            agg[(OTHER, err)] = agg.get((OTHER, err), 0) + v
        for (sc, err), v in sorted(agg.items()):
            m.add_metric([sc, err], v)
        return m

    def _latency(self, keys: np.ndarray, counts: np.ndarray) -> Metric:
        m = HistogramMetricFamily(
            "percpu_syscall_latency_seconds",
            "System call latency from log2 nanosecond buckets; the sum is estimated from bucket midpoints.",
            labels=["syscall"],
        )
        promoted = set(self._promoted)
        by: dict[str, np.ndarray] = {}
        for k, t in zip(keys.tolist(), counts.sum(axis=1).tolist(), strict=True):
            slot, bucket = int(k[0]), min(int(k[1]), 63)
            if slot in promoted:  # what "other" held for it stays there (see _update_kept)
                self._frozen_latency[bucket] += np.uint64(t)
            by.setdefault(self._label(slot), np.zeros(64, np.uint64))[bucket] += np.uint64(t)
        if self._frozen_latency.any():
            by[OTHER] = by.get(OTHER, np.zeros(64, np.uint64)) + self._frozen_latency
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
        """Run count and run time of percpu's programs, while the kernel counts them.

        The kernel counts both only while BPF stats are on: ``kernel.bpf_stats_enabled=1``, or while any
        process holds a BPF_ENABLE_STATS fd (which leaves the sysctl at 0). Once exported they stay
        exported (frozen while stats are off: the kernel keeps the values), so no series vanishes.
        """
        if not self._prog_stats_on:
            self._prog_stats_on = self.bpf_stats or _read_int(self.bpf_stats_sysctl) == 1
        if not self._prog_stats_on:
            return []
        cnt = CounterMetricFamily(
            "percpu_bpf_prog_run_count",
            "Runs of percpu's BPF programs, counted only while BPF stats are enabled "
            "(kernel.bpf_stats_enabled=1 or --enable-bpf-stats).",
            labels=["program"],
        )
        tim = CounterMetricFamily(
            "percpu_bpf_prog_run_time_seconds",
            "Time spent in percpu's BPF programs, counted only while BPF stats are enabled "
            "(kernel.bpf_stats_enabled=1 or --enable-bpf-stats).",
            labels=["program"],
        )
        for p in self.counter.programs():
            try:
                info = p.info()
            except PercpuError:
                continue  # a program that went away is not a scrape failure
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
