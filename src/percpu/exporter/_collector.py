"""The metric families of the syscall counter (:class:`SyscallCollector`), and how they are served."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np

from .. import _machine
from .._contract import ROW_BUCKETS, ROW_FIRST_BUCKET
from .._version import __version__
from ..cpus import cpu_lists
from ..errors import PercpuError
from ..syscount._data import SnapshotSource, SyscallSnapshot, errno_name, slot_name
from ..topo import CpuGroups, CpuTopology, group_rows
from ._comms import OTHER, CommSeries
from ._exposition import Exposition, Family, Labels, Sample, escape_label

BPF_STATS_SYSCTL = "kernel.bpf_stats_enabled"


class _Row(NamedTuple):
    mask: bytes  # which CPUs of the row are non-zero (the template's shape)
    template: bytes  # one "name{labels} %d\n" per non-zero CPU
    values: bytes  # the row's counts when ``text`` was rendered
    text: bytes
    shown: list[int]  # the values ``text`` shows, of the non-zero CPUs: 0 for a cell served first
    fresh: bool  # a cell of the row was served for the first time (at 0): not reusable as it is


class SyscallCollector:
    """The metric families of a source of snapshots (:class:`~percpu.syscount._data.SnapshotSource`):
    ``percpu exporter`` gives it the running counter, tests a fake. :meth:`scrape` reads the source once
    and renders; :meth:`collect` serves prometheus_client's registry."""

    def __init__(
        self,
        source: SnapshotSource,
        *,
        cpu_label: bool | str = True,
        topology: CpuTopology | None = None,
        top_syscalls: int = 0,
        max_comms: int = 20,
        libbpf_version: str = "",
        bpf_stats: bool = False,
        extra: Callable[[], list[Family]] | None = None,
    ) -> None:
        """``bpf_stats=True`` says the caller holds a BPF_ENABLE_STATS fd for as long as it uses this
        collector (``percpu exporter --enable-bpf-stats``): that turns run counting on without changing
        ``kernel.bpf_stats_enabled``, so the sysctl alone cannot tell. ``extra`` adds families of the
        caller's own (the HTTP server's request counts) to every scrape."""
        if top_syscalls < 0 or max_comms < 1:
            raise ValueError(
                f"top_syscalls must be 0 (all) or more, max_comms 1 or more: {top_syscalls}, {max_comms}"
            )
        self.source = source
        # Rows of the exported matrix: CPUs, or groups of them (the label is then named after the grouping).
        self._groups: CpuGroups | None = None
        self._label_name = "cpu"
        if cpu_label in ("cpu", "none") or isinstance(cpu_label, bool):
            self.cpu_label = cpu_label in (True, "cpu")
            self._cpu_labels = [str(c) for c in source.cpus]
        elif cpu_label in ("core", "package", "node"):
            self.cpu_label = True
            topo = topology if topology is not None else cpu_lists().topology()
            self._groups = topo.groups(str(cpu_label), source.cpus)
            self._label_name = str(cpu_label)
            self._cpu_labels = list(self._groups.labels)
        else:
            raise ValueError(f"cpu_label {cpu_label!r}: choose cpu, core, package, node or none")
        self.top = top_syscalls
        self.max_named = 2 * top_syscalls
        self.max_comms = max_comms
        self.libbpf_version = libbpf_version
        self.bpf_stats = bpf_stats
        self.extra = extra
        self._lock = threading.Lock()  # concurrent scrapes share the sticky state below
        self._kept: set[int] = set()
        self._in_other: set[int] = set()
        self._promoted: list[int] = []  # moved from "other" to a name by this scrape
        self._prev_totals = np.zeros(0, np.uint64)
        ncpu = len(self._cpu_labels)
        # What promoted syscalls had contributed to "other" when they left it, so "other" keeps it.
        self._frozen_other = np.zeros(ncpu, np.uint64)
        self._frozen_errors: dict[str, int] = {}
        self._frozen_latency = np.zeros(64, np.uint64)
        self._prog_stats_on = False
        self._by_comm = CommSeries(max_comms)
        self._last_duration = 0.0
        self._scrapes = 0
        self._names: dict[int, str] = {}
        self._rows: dict[int, _Row] = {}
        self._has_procs = False  # the last snapshot had per-process counts (-P)
        # Series already served, so served at their value (see the module's docstring): the matrix's by
        # column (syscall slot, -1 for "other") as a mask over its rows, the others by family name and
        # labels (without "le": a histogram is born whole). Bounded like the series themselves.
        self._born_cells: dict[int, bytes] = {}
        self._born: set[tuple[str, Labels]] = set()

    @property
    def tracked_comms(self) -> int:
        """Command names held in memory (at most ``max_comms``, whatever processes call themselves)."""
        return self._by_comm.tracked_comms

    @property
    def tracked_process_keys(self) -> int:
        """Per-process keys remembered between scrapes: the counter's rows (its kernel table's, and those of
        exited processes summed by name), bounded whatever processes do."""
        return self._by_comm.tracked_keys

    def _name(self, slot: int) -> str:
        n = self._names.get(slot)
        if n is None:
            n = self._names[slot] = slot_name(slot, self.source.arch)
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
        (``rate()`` and ``increase()`` are unaffected: its own series is born at its value, unlike every
        other new series, so it contributes from its first sample).
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
                    # Its calls so far are in "other": its own series start at their value, not at 0
                    # (increase() then counts each call once). A CPU it has not called on yet is born at
                    # 0 later, as usual.
                    self._born_cells[s] = (counts[:, s] != 0).tobytes()
                    self._born.add(("percpu_syscalls", (("syscall", self._name(s)),)))
                else:
                    rest.discard(s)
                self._kept.add(s)
        self._in_other |= rest  # counted in "other" from its first call on, unless promoted later

    def scrape(self) -> Exposition:
        """Read the maps once and build every family; render with :meth:`Exposition.body`."""
        start = time.perf_counter()
        with self._lock:
            snap = self.source.snapshot()
            fams = [self._first_at_zero(f) for f in self._families(snap)]
            self._last_duration = time.perf_counter() - start
            self._scrapes += 1
            fams += self._own_families()
        if self.extra is not None:
            fams += self.extra()
        series = Family("percpu_exporter_series", "gauge", "Samples in this scrape, this one included.")
        series.add((), sum(len(f) for f in fams) + 1)
        fams.append(series)
        return Exposition(fams, snap.time)

    def _first_at_zero(self, fam: Family) -> Family:
        """Serve the family's series that were never served before at 0 (counters and histograms; the
        matrix, formatted in bulk, does the same in :meth:`_matrix`). A histogram is born whole: every
        bucket, its count and sum at 0, so it stays a valid histogram."""
        if fam.kind == "gauge":
            return fam
        new: set[tuple[str, Labels]] = set()
        for i, smp in enumerate(fam.samples):
            key = (fam.name, tuple(kv for kv in smp.labels if kv[0] != "le"))
            if key not in self._born:
                new.add(key)
                fam.samples[i] = smp._replace(value=0)
        self._born |= new
        return fam

    def expose(self, openmetrics: bool) -> bytes:
        """One scrape as exposition text (what ``percpu exporter`` serves)."""
        return self.scrape().body(openmetrics)

    def collect(self) -> Iterator[Any]:
        """The same scrape as prometheus_client metric families, for use in a prometheus_client registry
        (``registry.register(collector)``); needs the prometheus_client package."""
        from prometheus_client.core import Metric

        for fam in self.scrape().families:
            m = Metric(fam.name, fam.help, fam.kind)
            for s in fam.all_samples():
                m.add_sample(fam.name + s.suffix, dict(s.labels), float(s.value))
            yield m

    def _own_families(self) -> list[Family]:
        dur = Family(
            "percpu_scrape_duration_seconds",
            "gauge",
            "Time the last scrape took to read the maps and build the metrics.",
        )
        dur.add((), self._last_duration)
        scrapes = Family(
            "percpu_exporter_snapshots",
            "counter",
            "Map reads (snapshots) taken; concurrent requests share one, so this can be below the requests.",
        )
        scrapes.add((), self._scrapes)
        out = [dur, scrapes]
        if self._has_procs:
            comms = Family(
                "percpu_exporter_tracked_comms",
                "gauge",
                f"Command names kept for per-process series (at most --max-comms, here {self.max_comms}).",
            )
            comms.add((), self._by_comm.tracked_comms)
            keys = Family(
                "percpu_exporter_tracked_process_keys",
                "gauge",
                "Per-process keys remembered between scrapes (the kernel table's, and exited processes' "
                "summed by name: bounded by --proc-entries).",
            )
            keys.add((), self._by_comm.tracked_keys)
            out += [comms, keys]
        return out

    def _matrix(self, counts: np.ndarray, kept: list[int], other: np.ndarray | None) -> Family:
        """``percpu_syscalls_total{cpu=..,syscall=..} N`` for the non-zero cells, formatted in bulk.

        A row (one syscall over all CPUs) is one ``bytes % tuple`` with a cached template of its
        non-zero cells; a row whose counts did not change since the previous scrape is reused as is.
        """
        fam = Family("percpu_syscalls", "counter", "System calls entered, by CPU and syscall.")
        cols = [*kept, -1] if other is not None else list(kept)
        if not cols:
            return fam
        sub = counts[:, kept].T if kept else np.zeros((0, counts.shape[0]), np.uint64)
        if other is not None:
            sub = np.concatenate([sub, other[None, :]], axis=0)
        sub = np.ascontiguousarray(sub)
        nz = sub != 0
        texts: list[bytes] = []
        rows: dict[int, _Row] = {}
        for col, counted, mask in zip(cols, sub, nz, strict=True):
            values = counted.tobytes()
            cached = self._rows.get(col)
            if cached is not None and cached.values == values and not cached.fresh:
                rows[col] = cached
                texts.append(cached.text)
                continue
            mb = mask.tobytes()
            born = self._born_cells.get(col)
            fresh = False
            if born != mb:  # (a count never falls back to 0: once every cell is born, born is the mask)
                old = np.zeros_like(mask) if born is None else np.frombuffer(born, np.bool_)
                new = mask & ~old
                fresh = bool(new.any())
                self._born_cells[col] = (old | mask).tobytes()
            # Cells served for the first time are served at 0 (see the module's docstring).
            row = np.where(new, np.uint64(0), counted) if fresh else counted
            if cached is not None and cached.mask == mb:
                template = cached.template
            else:
                name = escape_label(OTHER if col < 0 else self._name(col))
                row_label = self._label_name
                template = "".join(
                    f'percpu_syscalls_total{{{row_label}="{self._cpu_labels[i]}",syscall="{name}"}} %d\n'
                    for i in np.nonzero(mask)[0].tolist()
                ).encode()
            shown = row[mask].tolist()
            text = template % tuple(shown)
            rows[col] = _Row(mb, template, values, text, shown, fresh)
            texts.append(text)
        self._rows = rows  # rows no longer exported are forgotten: the cache holds this scrape's only
        fam.text = texts
        fam.count = int(nz.sum())
        labels = self._cpu_labels
        label_name = self._label_name
        served = [(OTHER if c < 0 else self._name(c), rows[c]) for c in cols]

        def cells() -> Iterator[Sample]:
            for name, r in served:
                cpus = [labels[i] for i in np.nonzero(np.frombuffer(r.mask, np.bool_))[0].tolist()]
                for cpu, v in zip(cpus, r.shown, strict=True):
                    yield Sample("_total", ((label_name, cpu), ("syscall", name)), v)

        fam.cells = cells
        return fam

    def _families(self, snap: SyscallSnapshot) -> Iterator[Family]:
        info = Family("percpu_build_info", "gauge", "percpu version, libbpf version and the hook in use.")
        info.add(
            (
                ("version", __version__),
                ("libbpf", self.libbpf_version),
                ("attach", self.source.attach_mode or ""),
            ),
            1,
        )
        yield info
        counts = snap.counts if self._groups is None else group_rows(snap.counts, self._groups)
        totals = counts.sum(axis=0, dtype=np.uint64)
        self._update_kept(counts, totals)
        active = [int(x) for x in np.nonzero(totals)[0]]
        kept = [x for x in active if not self.top or x in self._kept]
        other: np.ndarray | None = None  # per CPU; None when nothing has ever been counted as "other"
        if self.top:
            in_other = [x for x in active if x in self._in_other]
            if in_other or self._frozen_other.any():
                other = counts[:, in_other].sum(axis=1, dtype=np.uint64) + self._frozen_other
        if self.cpu_label:
            yield self._matrix(counts, kept, other)
        else:
            m = Family("percpu_syscalls", "counter", "System calls entered, by CPU and syscall.")
            for s, v in zip(kept, totals[kept].tolist(), strict=True):
                m.add((("syscall", self._name(s)),), v)
            if other is not None:
                m.add((("syscall", OTHER),), int(other.sum(dtype=np.uint64)))
            yield m
        dropped = Family(
            "percpu_dropped_syscalls",
            "counter",
            "System calls whose number is outside the counter table (x32 calls, bogus numbers).",
        )
        dropped.add((), snap.dropped)
        yield dropped
        lost = Family(
            "percpu_lost_syscalls",
            "counter",
            "System calls an opt-in table (processes, errors, latency) could not take because it was full.",
        )
        for table, n in snap.lost._asdict().items():
            if table != "skipped":  # not a table: runs the kernel skipped (in JSON and the text footer)
                lost.add((("table", table),), n)
        yield lost
        skipped = Family(
            "percpu_skipped_program_runs",
            "counter",
            "Runs of the counter's programs the kernel skipped (its per-CPU recursion guard, e.g. a "
            "preempted run on a preemptible kernel): a skipped entry run is a call not counted, a skipped "
            "exit run a call whose errno or latency was not recorded. Linux 5.12+; 0 before.",
        )
        skipped.add((), snap.lost.skipped)
        yield skipped
        if snap.errors is not None:
            yield self._errors(*snap.errors)
        if snap.latency is not None:
            yield self._latency(*snap.latency)
        self._has_procs = snap.procs is not None
        if snap.procs is not None:
            yield self._by_comm.family(*snap.procs, self._label)
        yield from self._prog_stats()

    def _errors(self, keys: np.ndarray, counts: np.ndarray) -> Family:
        m = Family("percpu_syscall_errors", "counter", "Failed system calls, by syscall and errno.")
        promoted = set(self._promoted)
        agg: dict[tuple[str, str], int] = {}
        for k, t in zip(keys.tolist(), counts.sum(axis=1).tolist(), strict=True):
            slot, err = int(k[0]), errno_name(int(k[1]))
            if slot in promoted:  # what "other" held for it stays there (see _update_kept)
                self._frozen_errors[err] = self._frozen_errors.get(err, 0) + int(t)
                self._born.add((m.name, (("syscall", self._label(slot)), ("errno", err))))
            key = (self._label(slot), err)
            agg[key] = agg.get(key, 0) + int(t)
        for err, v in self._frozen_errors.items():
            agg[(OTHER, err)] = agg.get((OTHER, err), 0) + v
        for (sc, err), v in sorted(agg.items()):
            m.add((("syscall", sc), ("errno", err)), v)
        return m

    def _latency(self, keys: np.ndarray, counts: np.ndarray) -> Family:
        m = Family(
            "percpu_syscall_latency_seconds",
            "histogram",
            "System call latency from log2 nanosecond buckets; the sum is estimated from bucket midpoints.",
        )
        promoted = set(self._promoted)
        by: dict[str, np.ndarray] = {}
        for k, t in zip(keys.tolist(), counts.sum(axis=1).tolist(), strict=True):
            slot, bucket = int(k[0]), min(int(k[1]), 63)
            if slot in promoted:  # what "other" held for it stays there (see _update_kept)
                self._frozen_latency[bucket] += np.uint64(t)
                self._born.add((m.name, (("syscall", self._label(slot)),)))
            by.setdefault(self._label(slot), np.zeros(64, np.uint64))[bucket] += np.uint64(t)
        if self._frozen_latency.any():
            by[OTHER] = by.get(OTHER, np.zeros(64, np.uint64)) + self._frozen_latency
        for label in sorted(by):
            b = by[label]
            cum = np.cumsum(b).tolist()
            lab = (("syscall", label),)
            for i in range(63):
                # The row buckets (16 ns to 68 s) always, so no bucket is born later at a value holding
                # earlier calls (see the module's docstring); outside them, only where calls are.
                if ROW_FIRST_BUCKET <= i < ROW_FIRST_BUCKET + ROW_BUCKETS or b[i] or (i and b[i - 1]):
                    m.add((*lab, ("le", _le(i))), cum[i], "_bucket")
            m.add((*lab, ("le", "+Inf")), cum[-1], "_bucket")
            m.add(lab, cum[-1], "_count")
            m.add(lab, float(sum(int(b[i]) * 1.5 * 2.0**i for i in range(64))) / 1e9, "_sum")
        return m

    def _prog_stats(self) -> Iterable[Family]:
        """Run count and run time of percpu's programs, once the kernel counts them (see
        :func:`program_families`): from then on they stay exported, frozen while stats are off."""
        if not self._prog_stats_on:
            self._prog_stats_on = self.bpf_stats or _machine.current().sysctl_int(BPF_STATS_SYSCTL) == 1
        return program_families(self.source) if self._prog_stats_on else []


def program_families(source: SnapshotSource) -> list[Family]:
    """Run count and run time of the source's programs.

    The kernel counts both only while BPF stats are on: ``kernel.bpf_stats_enabled=1``, or while any
    process holds a BPF_ENABLE_STATS fd (which leaves the sysctl at 0). Once exported they stay exported
    (the kernel keeps the values while stats are off), so no series vanishes.
    """
    cnt = Family(
        "percpu_bpf_prog_run_count",
        "counter",
        "Runs of percpu's BPF programs, counted only while BPF stats are enabled "
        "(kernel.bpf_stats_enabled=1 or --enable-bpf-stats).",
    )
    tim = Family(
        "percpu_bpf_prog_run_time_seconds",
        "counter",
        "Time spent in percpu's BPF programs, counted only while BPF stats are enabled "
        "(kernel.bpf_stats_enabled=1 or --enable-bpf-stats).",
    )
    for p in source.programs():
        try:
            info = p.info()
        except PercpuError:
            continue  # a program that went away is not a scrape failure
        cnt.add((("program", p.name),), info.run_cnt)
        tim.add((("program", p.name),), info.run_time_ns / 1e9)
    return [cnt, tim]


def _le(i: int) -> str:
    """Upper bound, in seconds, of log2 bucket i ([2^i, 2^(i+1)) ns)."""
    return "+Inf" if i >= 63 else repr(2.0 ** (i + 1) / 1e9)
