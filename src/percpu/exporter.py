"""Prometheus metrics from the syscall counter, formatted by percpu itself.

Each scrape reads the BPF maps once (batch reads, no reset, no lock the programs wait on) and turns the
absolute counts into metric families, which :class:`Exposition` renders in the Prometheus text format or
OpenMetrics. prometheus_client is not needed to serve; :meth:`SyscallCollector.collect` still makes the
collector usable in a prometheus_client registry where that package is installed. Cardinality is bounded
by options:

* ``cpu_label=False`` (or ``"none"``) sums over CPUs; ``"core"``, ``"package"`` or ``"node"`` sums CPUs into
  those groups (from the sysfs topology read when the collector is made) under a label of that name;
* ``top_syscalls=N`` names the N busiest syscalls and puts the rest in ``syscall="other"``. A syscall
  once named stays named, and one that later enters the top N (by calls since the previous scrape) is
  named too, until 2N are named; see :meth:`SyscallCollector._update_kept` for why every exported counter,
  "other" included, stays monotonic;
* per-process series carry ``comm`` only (never pid; escaped as ``stat`` shows it, see
  :func:`percpu._text.printable`), at most ``max_comms`` of them (default 20) plus ``comm="other"``: half
  the names go to names as they appear, the busiest first, the other half to names among the busiest
  half since the previous scrape (:meth:`SyscallCollector._name_comms`). The series are accumulated
  from deltas, and a name's series counts from the scrape that named it, so every series only grows and
  the comm series of a syscall, "other" included, add up to its per-process calls; the rows of exited
  processes, which the counter sums by name (``syscount.ProcessTable``), are subtracted where they went.
  Memory stays bounded whatever names processes give themselves: the named set is at most
  ``max_comms``, every other name is folded into "other" without being remembered, and the per-key
  state is bounded by the counter's tables.

Every series of the kernel's counts (the syscall matrix, errors, latency histograms, per-process counts,
dropped, lost, skipped, program runs) is served at 0 the first time it is served, and at its value from
the next scrape on. Prometheus's ``increase()`` and ``rate()`` start from a series' first sample: a series
born at its full value hides every call counted before it (400,000 calls of a syscall new since the last
scrape were invisible to ``increase()``), while a series born at 0 shows them as its first increase.
OpenMetrics ``_created`` samples would say the same thing, but Prometheus 2.42 (Debian 12's) stores them
as series of their own that ``increase()`` ignores, and they double the series count; see
docs/exporter.md.
"""

from __future__ import annotations

import gzip as _gzip
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from . import _machine
from ._contract import PROC_KEY, ROW_BUCKETS, ROW_FIRST_BUCKET
from ._text import printable
from ._version import __version__
from .cpus import cpu_lists
from .errors import PercpuError
from .syscount._data import FOLDED_TGID, SnapshotSource, SyscallSnapshot, errno_name, folded_keys, slot_name
from .topo import CpuGroups, CpuTopology, group_rows

__all__ = ["Exposition", "Family", "Sample", "SyscallCollector", "render"]

OTHER = "other"
BPF_STATS_SYSCTL = "kernel.bpf_stats_enabled"
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

Labels = tuple[tuple[str, str], ...]
_FOLDED = FOLDED_TGID.to_bytes(4, "little")


def _raw_keys(keys: np.ndarray) -> list[bytes]:
    """Each per-process key's bytes (one copy of the array, then slices)."""
    raw = np.ascontiguousarray(keys).tobytes()
    n = PROC_KEY.itemsize
    return [raw[i : i + n] for i in range(0, len(raw), n)]


class Sample(NamedTuple):
    suffix: str  # "_total", "_bucket", "" ...
    labels: Labels
    value: float


@dataclass
class Family:
    """One metric family. ``name`` is the base name (no ``_total``); ``kind`` counter, gauge or histogram.

    ``text`` holds chunks of sample lines already formatted (the per-CPU matrix, formatted in bulk, one
    chunk per row, joined only once with the rest of the body), identical in both exposition formats;
    ``cells`` then yields the same samples one by one for other consumers.
    """

    name: str
    kind: str
    help: str
    samples: list[Sample] = field(default_factory=list)
    text: list[bytes] = field(default_factory=list)
    cells: Callable[[], Iterator[Sample]] | None = None
    count: int = 0  # samples in ``text``

    def add(self, labels: Labels, value: float, suffix: str | None = None) -> None:
        self.samples.append(
            Sample("_total" if suffix is None and self.kind == "counter" else suffix or "", labels, value)
        )

    def all_samples(self) -> Iterator[Sample]:
        yield from self.samples
        if self.cells is not None:
            yield from self.cells()

    def __len__(self) -> int:
        return len(self.samples) + self.count


def _escape_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels_text(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels) + "}"


def _value_text(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v.is_integer() and abs(v) < 2**53:
        return str(int(v))
    return repr(v)


def render(families: Iterable[Family], openmetrics: bool) -> bytes:
    """Families as Prometheus text format 0.0.4 or OpenMetrics 1.0 (which ends with ``# EOF``)."""
    parts: list[bytes] = []
    for fam in families:
        head = fam.name + "_total" if fam.kind == "counter" and not openmetrics else fam.name
        doc = fam.help.replace("\\", "\\\\").replace("\n", "\\n")
        if openmetrics:
            doc = doc.replace('"', '\\"')
        lines = [f"# HELP {head} {doc}\n# TYPE {head} {fam.kind}\n"]
        lines += [
            f"{fam.name}{s.suffix}{_labels_text(s.labels)} {_value_text(s.value)}\n" for s in fam.samples
        ]
        parts.append("".join(lines).encode())
        parts += fam.text
    if openmetrics:
        parts.append(b"# EOF\n")
    return b"".join(parts)


class Exposition:
    """One scrape's families, rendered on demand and at most once per format and encoding.

    Concurrent requests served from the same scrape share these bytes: one copy of the body per format,
    however many clients read it.
    """

    def __init__(self, families: list[Family], taken: float) -> None:
        self.families = families
        self.taken = taken  # time.monotonic() when the maps were read
        self.series = sum(len(f) for f in families)
        self._bodies: dict[tuple[bool, bool], bytes] = {}
        self._lock = threading.Lock()

    def body(self, openmetrics: bool, gzipped: bool = False) -> bytes:
        key = (openmetrics, gzipped)
        with self._lock:
            b = self._bodies.get(key)
            if b is None:
                if gzipped:
                    plain = self._bodies.get((openmetrics, False)) or render(self.families, openmetrics)
                    self._bodies[(openmetrics, False)] = plain
                    # Level 1: the exposition is repetitive text that compresses about 10x even so, and
                    # the time is the scrape's.
                    b = _gzip.compress(plain, compresslevel=1, mtime=0)
                else:
                    b = render(self.families, openmetrics)
                self._bodies[key] = b
            return b


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
        self._comms: set[str] = set()
        self._proc_last: dict[bytes, int] = {}
        self._proc_totals: dict[tuple[str, str], int] = {}
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
        return len(self._comms)

    @property
    def tracked_process_keys(self) -> int:
        """Per-process keys remembered between scrapes: the counter's rows (its kernel table's, and those of
        exited processes summed by name), bounded whatever processes do."""
        return len(self._proc_last)

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
            comms.add((), len(self._comms))
            keys = Family(
                "percpu_exporter_tracked_process_keys",
                "gauge",
                "Per-process keys remembered between scrapes (the kernel table's, and exited processes' "
                "summed by name: bounded by --proc-entries).",
            )
            keys.add((), len(self._proc_last))
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
                name = _escape_label(OTHER if col < 0 else self._name(col))
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
            yield self._procs(*snap.procs)
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

    def _procs(self, keys: np.ndarray, counts: np.ndarray) -> Family:
        m = Family(
            "percpu_process_syscalls",
            "counter",
            "System calls by command name (comm) and syscall; "
            f'at most {self.max_comms} comms, the rest as comm="other".',
        )
        now = dict(zip(_raw_keys(keys), counts.sum(axis=1, dtype=np.uint64).tolist(), strict=True))
        delta: dict[bytes, int] = {}
        for raw, t in now.items():
            before = self._proc_last.get(raw, 0)
            delta[raw] = t - before if t >= before else t  # smaller: evicted and counted again from zero
        for raw, before in self._proc_last.items():
            if raw in now:
                continue
            # Gone from the snapshot: its process exited and its counts were summed by name, into the
            # first of these the snapshot has (see syscount.ProcessTable). That row's growth holds what
            # this key had already exported: taken off, or it would be counted twice.
            dest = next((d for d in folded_keys(raw) if d in now), None)
            if dest is not None:
                delta[dest] = max(delta[dest] - before, 0)
        self._proc_last = now  # the keys of this snapshot: bounded by the counter's tables
        rows: list[tuple[str, int, int]] = []
        by_comm: dict[str, int] = {}
        for raw, d in delta.items():
            if not d:
                continue
            name = raw[8:].split(b"\0", 1)[0]
            if not name and raw[:4] == _FOLDED:
                comm = OTHER  # exited processes whose names were not kept
            else:
                # Escaped as stat and top show it: a name is another user's choice, and control characters
                # or bytes that are not UTF-8 must not reach whoever reads the scrape (a terminal, a browser).
                comm = printable(name) or "?"
                by_comm[comm] = by_comm.get(comm, 0) + d
            rows.append((comm, int.from_bytes(raw[4:8], "little"), d))
        self._name_comms(by_comm)
        for comm, slot, d in rows:
            key = (comm if comm in self._comms else OTHER, self._label(slot))
            self._proc_totals[key] = self._proc_totals.get(key, 0) + d
        for (comm, sc), v in sorted(self._proc_totals.items()):
            m.add((("comm", comm), ("syscall", sc)), v)
        return m

    def _name_comms(self, calls: dict[str, int]) -> None:
        """Give names their series: the first half of the ``max_comms`` slots to names as they appear (the
        busiest first), the rest to names among the busiest half since the previous scrape.

        A name keeps its series for good, so no series disappears and each only grows; a name's series
        counts from the scrape that named it (its calls before are in "other", which keeps them), so the
        comm series of a syscall, "other" included, always add up to its per-process calls.
        """
        half = (self.max_comms + 1) // 2
        busiest = sorted(calls, key=lambda c: -calls[c])
        for c in busiest:
            if len(self._comms) >= half:
                break
            self._comms.add(c)
        for c in busiest[:half]:
            if len(self._comms) >= self.max_comms:
                break
            self._comms.add(c)

    def _prog_stats(self) -> Iterable[Family]:
        """Run count and run time of percpu's programs, while the kernel counts them.

        The kernel counts both only while BPF stats are on: ``kernel.bpf_stats_enabled=1``, or while any
        process holds a BPF_ENABLE_STATS fd (which leaves the sysctl at 0). Once exported they stay
        exported (frozen while stats are off: the kernel keeps the values), so no series vanishes.
        """
        if not self._prog_stats_on:
            self._prog_stats_on = self.bpf_stats or _machine.current().sysctl_int(BPF_STATS_SYSCTL) == 1
        if not self._prog_stats_on:
            return []
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
        for p in self.source.programs():
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
