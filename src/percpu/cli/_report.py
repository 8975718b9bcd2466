"""Rendering of syscall deltas: text tables, JSON objects and CSV rows (pictures: :mod:`percpu.plots`).

Pure functions of a :class:`~percpu.syscount.SyscallDelta`, shared by ``percpu stat`` and ``percpu top``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .._text import printable
from ..disturb._who import Disturbance
from ..syscount._data import FOLDED_TGID, Lost, SyscallDelta, errno_name
from ..views import not_shown_line
from . import _disturb

__all__ = [
    "CSV_HEADER",
    "DEFAULT_ROWS",
    "HISTOGRAM_LEGEND",
    "SORTS",
    "Caveat",
    "caveat_lines",
    "caveats",
    "csv_rows",
    "histogram",
    "latency_quantiles",
    "order_slots",
    "table",
    "to_json",
]

SORTS = ("total", "name", "nr", "cpu")


def _comm_bytes(field: Any) -> bytes:
    """A task name from a key's ``S16`` field: the bytes before the first NUL."""
    return bytes(field).split(b"\0", 1)[0]


def comm_json(field: Any) -> dict[str, str]:
    """A task name for JSON: ``comm`` as text (bytes that are not UTF-8 as U+FFFD; JSON escapes the
    control characters), and ``comm_hex``, the exact bytes, when the text is not faithful to them."""
    raw = _comm_bytes(field)
    try:
        return {"comm": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"comm": raw.decode("utf-8", errors="replace"), "comm_hex": raw.hex()}


def human(n: float) -> str:
    """Compact count: 999, 1.2k, 34.5k, 1.20M."""
    a = abs(n)
    if a < 1000:
        return f"{n:.0f}" if float(n).is_integer() else f"{n:.1f}"
    for unit, div in (("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12)):
        if a < div * 1000:
            v = n / div
            return f"{v:.1f}{unit}" if abs(v) < 100 else f"{v:.0f}{unit}"
    return f"{n:.2e}"


def order_slots(d: SyscallDelta, sort: str = "total", cpu_row: int = 0) -> list[int]:
    """Slots with calls, in ``sort`` order: total (most first), name, nr (syscall number), or cpu (most
    calls on the CPU in row ``cpu_row`` first, then by total)."""
    tot = d.per_syscall()
    slots = [int(s) for s in d.active_slots()]  # already most calls first; the sorts below are stable
    if sort == "name":
        slots.sort(key=d.name)
    elif sort == "nr":
        slots.sort()
    elif sort == "cpu":
        slots.sort(key=lambda s: (-int(d.counts[cpu_row, s]), -int(tot[s])))
    elif sort != "total":
        raise ValueError(f"unknown sort key {sort!r}: choose one of {', '.join(SORTS)}")
    return slots


def columns(d: SyscallDelta) -> list[str]:
    """Labels of ``d``'s rows: ``cpu3`` for a CPU, the group's label (``node1``) in a grouped view."""
    if d.groups is not None:
        return list(d.groups.labels)
    return [f"cpu{c}" for c in d.cpus]


def _where(d: SyscallDelta) -> str:
    """Which CPUs a report covers, for its first line."""
    if d.selected is None and d.not_shown:
        what = f"{len(d.cpus)} of {len(d.cpus) + len(d.not_shown)} possible CPUs ({d.cpus})"
    elif d.selected is None:
        what = f"{len(d.cpus)} possible CPUs ({d.cpus})"
    else:
        what = f"CPU{'s' if len(d.cpus) > 1 else ''} {d.cpus}"
        if d.selected != str(d.cpus):
            what += f" ({d.selected})"
    if d.groups is not None:
        what += f", by {d.groups.by}"
    return what


def _rows(d: SyscallDelta, top: int | None, sort: str = "total") -> list[int]:
    slots = order_slots(d, sort)
    return slots[:top] if top else slots


# Rows of the per-process, errno and latency tables when -n is not given (all syscalls are listed then).
DEFAULT_ROWS = 20
# What one more "... N more" line tells the reader to do to see every row of a table.
SHOW_ALL = "use --top 0 for all"


def _limit(top: int | None) -> int | None:
    """The rows an opt-in table shows for ``top`` (-n): None (not given) is :data:`DEFAULT_ROWS`, 0 is
    no limit (None here), N is N."""
    if top is None:
        return DEFAULT_ROWS
    return top or None


def _counts(values: Sequence[float], exact: bool, width: int) -> tuple[list[str], int]:
    """``values`` as a table shows them: exact (``6,153``) or humanized (``6.2k``); and the width of
    the column, at least ``width``, wide enough for every one."""
    cells = [f"{int(v):,}" if exact else human(v) for v in values]
    return cells, max([width, *(len(c) for c in cells)])


def table(
    d: SyscallDelta,
    *,
    top: int | None = None,
    sum_cpus: bool = False,
    rates: bool = False,
    sort: str = "total",
    exact: bool = False,
) -> str:
    """A fixed-width table: syscall, total, share, one column per possible CPU (unless ``sum_cpus``);
    rows in ``sort`` order (see :func:`order_slots`; ``cpu`` means the first possible CPU).

    ``top`` (-n): None lists every syscall and :data:`DEFAULT_ROWS` rows of each opt-in table (-P, -e,
    -L); 0 lists every row of every table; N at most N rows of each. Counts are humanized (``6.2k``),
    or with ``exact`` (a one-shot report) written out in full (``6,153``); ``rates`` (calls per second,
    ``top``) are always humanized. A table that leaves rows out says how many and how to see them."""
    exact = exact and not rates
    per_sys = d.per_syscall()
    grand = int(per_sys.sum())
    scale = 1.0 / d.seconds if rates else 1.0
    labels = [] if sum_cpus else columns(d)
    unit = "calls/s" if rates else "calls"
    rows = _rows(d, top, sort)
    names = [d.name(int(slot)) for slot in rows]
    tots, tot_w = _counts([float(per_sys[s]) * scale for s in rows] + [grand * scale], exact, 10)
    per_cpu = d.per_cpu()
    grid = [[float(d.counts[i, s]) * scale for i in range(len(labels))] for s in rows]
    grid.append([float(v) * scale for v in per_cpu] if labels else [])
    flat, cell_w = _counts([v for line in grid for v in line], exact, 8)
    cells = [flat[i * len(labels) : (i + 1) * len(labels)] for i in range(len(grid))]
    out = io.StringIO()
    out.write(f"{grand:,} system calls in {d.seconds:.2f} s ({human(grand / d.seconds)}/s) on {_where(d)}\n")
    left_out = not_shown_line(d)
    out.write(f"{left_out}\n\n" if left_out else "\n")
    out.write(f"{'syscall':<22} {unit:>{tot_w}} {'%':>6}" + "".join(f" {c:>{cell_w}}" for c in labels) + "\n")
    for n, slot in enumerate(rows):
        pct = 100.0 * int(per_sys[slot]) / grand if grand else 0.0
        line = "".join(f" {c:>{cell_w}}" for c in cells[n])
        out.write(f"{names[n]:<22} {tots[n]:>{tot_w}} {pct:>6.1f}{line}\n")
    hidden = len(d.active_slots()) - len(rows)
    if hidden > 0:
        out.write(f"... {hidden} more syscalls ({SHOW_ALL})\n")
    if labels:
        line = "".join(f" {c:>{cell_w}}" for c in cells[-1])
        out.write(f"{'all':<22} {tots[-1]:>{tot_w}} {100.0 if grand else 0.0:>6.1f}{line}\n")
        what = "CPU" if d.groups is None else d.groups.by
        out.write(f"\nimbalance (busiest {what} / mean): {d.imbalance():.2f}\n")
    if d.dropped:
        out.write(f"{d.dropped} calls had numbers outside the counter table (counted as dropped)\n")
    out.write(lost_note(d))
    limit = _limit(top)
    if d.procs is not None:
        out.write("\n" + procs_table(d, top=limit, exact=exact))
    if d.errors is not None:
        out.write("\n" + errors_table(d, top=limit, exact=exact))
    if d.latency is not None:
        out.write("\n" + latency_table(d, top=limit, exact=exact))
    return out.getvalue()


_LOST_TABLES = {
    "processes": ("per-process table", "--proc-entries"),
    "errors": ("errno table", "--errors-entries"),
    "latency": ("latency table", "--latency-entries"),
}


def lost_note(d: SyscallDelta) -> str:
    """Lines saying which opt-in table was full and how many calls it could not take ("" if none)."""
    out = []
    for name, n in d.lost._asdict().items():
        if n and name == "skipped":
            out.append(
                f"{n:,} program runs skipped by the kernel: a run preempted on its CPU blocked the program "
                "there (this kernel runs syscall tracepoint programs preemptibly); counts are short by up to "
                "that many\n"
            )
        elif n:
            table, remedy = _LOST_TABLES[name]
            out.append(f"{n:,} calls not counted in the {table}: it was full (see {remedy})\n")
    return "".join(out)


def _by_total(keys: np.ndarray, counts: np.ndarray) -> Iterator[tuple[Any, np.ndarray, int]]:
    totals = counts.sum(axis=1, dtype=np.uint64) if len(counts) else np.zeros(0, np.uint64)
    for i in np.argsort(-totals.astype(np.int64), kind="stable"):
        yield keys[i], counts[i], int(totals[i])


def _more(n: int, what: str) -> str:
    return f"... {n} more {what} ({SHOW_ALL})\n"


def procs_table(d: SyscallDelta, *, top: int | None = DEFAULT_ROWS, exact: bool = False) -> str:
    """The per-process table (-P): a row per (process, syscall), most calls first, at most ``top`` rows
    (None: all), each with its busiest CPU (group)."""
    assert d.procs is not None
    keys, counts = d.procs
    cols = columns(d)
    rows = list(_by_total(keys, counts))[:top]
    calls, width = _counts([tot for _k, _row, tot in rows], exact, 10)
    out = io.StringIO()
    what = "CPU" if d.groups is None else d.groups.by
    out.write(f"{'pid':>8} {'comm':<16} {'syscall':<22} {'calls':>{width}}  busiest {what}\n")
    for (k, row, _tot), n in zip(rows, calls, strict=True):
        busiest = cols[int(np.argmax(row))]
        comm = printable(_comm_bytes(k["comm"]))
        pid = _pid(k)
        syscall = d.name(int(k["slot"]))
        out.write(f"{'-' if pid is None else pid:>8} {comm:<16} {syscall:<22} {n:>{width}}  {busiest}\n")
    if len(keys) > len(rows):
        out.write(_more(len(keys) - len(rows), "(pid, syscall) pairs"))
    return out.getvalue()


def _pid(k: Any) -> int | None:
    """A row's pid; None for the rows that sum exited processes by name (or, with no name, by syscall)."""
    tgid = int(k["tgid"])
    return None if tgid == FOLDED_TGID else tgid


def errors_table(d: SyscallDelta, *, top: int | None = DEFAULT_ROWS, exact: bool = False) -> str:
    """The errno table (-e): a row per (syscall, errno), most failures first, at most ``top`` rows."""
    assert d.errors is not None
    keys, counts = d.errors
    rows = list(_by_total(keys, counts))[:top]
    calls, width = _counts([tot for _k, _row, tot in rows], exact, 10)
    out = io.StringIO()
    out.write(f"{'syscall':<22} {'error':<14} {'calls':>{width}}\n")
    if len(keys) == 0:
        out.write("(no failed calls)\n")
    for (k, _row, _tot), n in zip(rows, calls, strict=True):
        out.write(f"{d.name(int(k['slot'])):<22} {errno_name(int(k['err'])):<14} {n:>{width}}\n")
    if len(keys) > len(rows):
        out.write(_more(len(keys) - len(rows), "(syscall, errno) pairs"))
    return out.getvalue()


def latency_quantiles(buckets: np.ndarray, qs: tuple[float, ...] = (0.5, 0.99)) -> list[float]:
    """Quantiles in ns from log2 buckets (bucket b holds [2^b, 2^(b+1)) ns; upper bound reported)."""
    total = buckets.sum()
    out: list[float] = []
    for q in qs:
        if total == 0:
            out.append(math.nan)
            continue
        idx = int(np.searchsorted(np.cumsum(buckets), q * total))
        out.append(float(2 ** (idx + 1)))
    return out


def latency_by_slot(d: SyscallDelta) -> dict[int, np.ndarray]:
    """{slot: 64 log2 buckets summed over CPUs}."""
    assert d.latency is not None
    keys, counts = d.latency
    out: dict[int, np.ndarray] = {}
    totals = counts.sum(axis=1, dtype=np.uint64) if len(counts) else np.zeros(0, np.uint64)
    for k, t in zip(keys, totals, strict=True):
        out.setdefault(int(k["slot"]), np.zeros(64, np.uint64))[min(int(k["bucket"]), 63)] += t
    return out


def _ns(v: float) -> str:
    if math.isnan(v):
        return "-"
    for unit, div in (("ns", 1), ("us", 1e3), ("ms", 1e6), ("s", 1e9)):
        if v < div * 1000 or unit == "s":
            return f"{v / div:.0f}{unit}" if v / div >= 10 else f"{v / div:.1f}{unit}"
    return f"{v}ns"


# A latency histogram's glyphs: a bucket's calls as a share of its row's busiest bucket, in ninths.
HISTOGRAM_GLYPHS = " .:-=+*#%@"
HISTOGRAM_LEGEND = (
    "histogram: a column per log2 ns bucket, its calls against the row's busiest:\n"
    "  ' ' 0 . <=1/9 : <=2/9 - <=3/9 = <=4/9 + <=5/9 * <=6/9 # <=7/9 % <=8/9 @ <=9/9\n"
)


def histogram(buckets: np.ndarray) -> tuple[int, int, str]:
    """A row's log2 buckets as glyphs (:data:`HISTOGRAM_LEGEND`), from its first non-zero bucket to its
    last: (lo, hi + 1, glyphs), the row spanning 2^lo to 2^(hi+1) ns."""
    nz = np.nonzero(buckets)[0]
    lo, hi = (int(nz[0]), int(nz[-1])) if nz.size else (0, 0)
    peak = float(buckets.max()) or 1.0
    glyphs = "".join(HISTOGRAM_GLYPHS[min(9, math.ceil(9 * float(x) / peak))] for x in buckets[lo : hi + 1])
    return lo, hi + 1, glyphs


def latency_table(d: SyscallDelta, *, top: int | None = DEFAULT_ROWS, exact: bool = False) -> str:
    """The latency table (-L): a row per syscall, most calls first, at most ``top`` rows, with p50, p99
    and a histogram whose glyphs the table's last lines explain."""
    by = latency_by_slot(d)
    order = sorted(by, key=lambda s: -int(by[s].sum()))
    shown = order[:top]
    calls, width = _counts([int(by[s].sum()) for s in shown], exact, 10)
    out = io.StringIO()
    out.write(f"{'syscall':<22} {'calls':>{width}} {'p50 <=':>8} {'p99 <=':>8}  log2 histogram (ns)\n")
    for slot, n in zip(shown, calls, strict=True):
        p50, p99 = latency_quantiles(by[slot])
        lo, hi, bars = histogram(by[slot])
        out.write(f"{d.name(slot):<22} {n:>{width}} {_ns(p50):>8} {_ns(p99):>8}  2^{lo} [{bars}] 2^{hi}\n")
    if len(order) > len(shown):
        out.write(_more(len(order) - len(shown), "syscalls"))
    if shown:
        out.write(HISTOGRAM_LEGEND)
    return out.getvalue()


def to_json(
    d: SyscallDelta,
    *,
    end_time: float,
    attach: str | None,
    top: int | None = None,
    run_caveats: Sequence[Caveat] = (),
    disturbance: Disturbance | None = None,
) -> dict[str, Any]:
    """One JSON-ready object for an interval. With ``top``, ``syscalls`` lists the busiest ``top`` and
    ``other`` sums the rest (present only when some were left out), so the rows always add up to
    ``total``. ``warnings`` lists every caveat on the numbers: the delta's own (:func:`caveats`), the
    disturbance view's, and the run's (``run_caveats``, e.g. a command counted without its children).
    With a ``disturbance`` view (-I -V -S -T), the ``disturbance`` key holds it (``_disturb.to_json``)."""
    # Keys of the per-row objects: CPU ids ("per_cpu": {"3": n}), or group labels ("per_node": {"node1": n}).
    per = "per_cpu" if d.groups is None else f"per_{d.groups.by}"
    keys_ = [str(c) for c in d.cpus] if d.groups is None else list(d.groups.labels)
    obj: dict[str, Any] = {
        "time": end_time,
        "interval_s": round(d.seconds, 6),
        "attach": attach,
        "cpus": list(d.cpus),
    }
    if d.online is not None:
        obj["online"] = list(d.online)
    if d.not_shown:
        obj["not_shown"] = list(d.not_shown)
    if d.selected is not None:
        obj["selected"] = d.selected
    if d.groups is not None:
        obj["by"] = d.groups.by
        obj["groups"] = {lab: list(m) for lab, m in zip(d.groups.labels, d.groups.members, strict=True)}
    obj.update(_json_syscalls(d, per, keys_, top))
    obj.update(_json_tables(d, per, keys_))
    own = caveats(d)
    if disturbance is not None:
        obj["disturbance"] = _disturb.to_json(disturbance, top=top)
        own += [Caveat(c.code, c.text, c.count) for c in _disturb.interval_caveats(disturbance)]
    obj["warnings"] = [dataclasses.asdict(c) for c in (*own, *run_caveats)]
    return obj


def _json_syscalls(d: SyscallDelta, per: str, keys_: list[str], top: int | None) -> dict[str, Any]:
    """The syscall matrix of :func:`to_json`: totals, the busiest ``top`` rows and ``other`` for the rest."""
    per_sys = d.per_syscall()
    obj: dict[str, Any] = {
        "total": int(per_sys.sum()),
        per: {k: int(v) for k, v in zip(keys_, d.per_cpu(), strict=True)},
        "imbalance": round(d.imbalance(), 4),
        "dropped": d.dropped,
        "lost": d.lost._asdict(),
        "syscalls": [
            {
                "name": d.name(int(s)),
                "slot": int(s),
                "total": int(per_sys[s]),
                per: {k: int(d.counts[i, s]) for i, k in enumerate(keys_)},
            }
            for s in _rows(d, top)
        ],
    }
    rest = order_slots(d)[top:] if top else []
    if rest:
        obj["other"] = {
            "syscalls": len(rest),
            "total": int(per_sys[rest].sum()),
            per: {k: int(v) for k, v in zip(keys_, d.counts[:, rest].sum(axis=1), strict=True)},
        }
    return obj


def _json_tables(d: SyscallDelta, per: str, keys_: list[str]) -> dict[str, Any]:
    """The opt-in tables of :func:`to_json` (``-P``, ``-e``, ``-L``), each only when it was counted."""
    obj: dict[str, Any] = {}
    if d.procs is not None:
        keys, counts = d.procs
        obj["processes"] = [
            {
                "pid": _pid(k),
                **comm_json(k["comm"]),
                "syscall": d.name(int(k["slot"])),
                "total": tot,
                per: {c: int(v) for c, v in zip(keys_, row, strict=True)},
            }
            for k, row, tot in _by_total(keys, counts)
        ]
    if d.errors is not None:
        keys, counts = d.errors
        obj["errors"] = [
            {
                "syscall": d.name(int(k["slot"])),
                "errno": int(k["err"]),
                "error": errno_name(int(k["err"])),
                "total": tot,
            }
            for k, _row, tot in _by_total(keys, counts)
        ]
    if d.latency is not None:
        obj["latency"] = [
            {
                "syscall": d.name(slot),
                "calls": int(b.sum()),
                "log2_ns_buckets": {str(i): int(v) for i, v in enumerate(b) if v},
                "p50_ns_le": latency_quantiles(b)[0],
                "p99_ns_le": latency_quantiles(b)[1],
            }
            for slot, b in sorted(latency_by_slot(d).items())
        ]
    return obj


@dataclasses.dataclass(frozen=True)
class Caveat:
    """Something a report's numbers leave out: ``code`` for programs (stable), ``text`` for people,
    ``count`` the number it is about (calls, processes), or None."""

    code: str
    text: str
    count: int | None = None


def caveats(d: SyscallDelta) -> list[Caveat]:
    """The caveats a delta carries itself: calls an opt-in table could not take (``lost.<table>``), runs
    the kernel skipped (``lost.skipped``), calls with numbers outside the counter table (``dropped``).
    The texts are the table's footer lines."""
    out = []
    for name, n in d.lost._asdict().items():
        if n:
            text = lost_note(dataclasses.replace(d, lost=Lost(**{name: n}))).strip()
            out.append(Caveat(f"lost.{name}", text, n))
    if d.dropped:
        text = f"{d.dropped} calls had numbers outside the counter table (counted as dropped)"
        out.append(Caveat("dropped", text, d.dropped))
    return out


def caveat_lines(run_caveats: Sequence[Caveat]) -> str:
    """A table's footer for the run's caveats (the delta's own are in :func:`table` already)."""
    return "".join(f"warning: {c.text}\n" for c in run_caveats)


# One header for every record of a CSV report (long format: one count a row). Which columns a record fills:
#   attach    code (the hook)                  selected  code (--cpus as given), text (the CPUs)
#   online    text (the CPUs online at the end) not-shown calls (0), text (CPUs not online, without calls)
#   group     cpu (its label), text (its CPUs) total     cpu, calls (all syscalls on that CPU)
#   syscall   cpu, syscall, calls              other     cpu, calls, text (the syscalls -n left out)
#   process   cpu, syscall, pid, comm, calls   error     syscall, errno, error, calls (all CPUs)
#   latency   syscall, log2_ns, calls (all CPUs: calls of 2^log2_ns to 2^(log2_ns+1) ns)
#   lost      code (the table), calls          dropped   calls
#   warning   code, text, calls (its count, if any)
#   and with -I -V -S -T the disturbance records (percpu.cli._disturb.CSV_RECORDS), whose times are in ns
# In a grouped view (--by node) the cpu column is named after the grouping and holds the group labels.
CSV_HEADER = (
    "time",
    "interval_s",
    "record",
    "cpu",
    "syscall",
    "pid",
    "comm",
    "errno",
    "error",
    "log2_ns",
    "calls",
    "code",
    "text",
    "ns",
)
# The JSON object's keys and the CSV records that carry them; keys that are not counts (imbalance, a ratio
# of the total rows) are derived by the reader. A test holds every key of to_json() to this table.
CSV_RECORDS = {
    "time": "every record",
    "interval_s": "every record",
    "attach": "attach",
    "cpus": "total",
    "online": "online",
    "not_shown": "not-shown",
    "selected": "selected",
    "by": "the cpu column's name",
    "groups": "group",
    "total": "total",
    "per_cpu": "total",
    "imbalance": "(derived from total)",
    "dropped": "dropped",
    "lost": "lost",
    "syscalls": "syscall",
    "other": "other",
    "processes": "process",
    "errors": "error",
    "latency": "latency",
    "warnings": "warning",
    "disturbance": "expected, disturb_total, source, source_other, disturb_lost, disturb_untimed",
}


def csv_rows(
    d: SyscallDelta,
    *,
    end_time: float,
    header: bool,
    attach: str | None = None,
    top: int | None = None,
    run_caveats: Sequence[Caveat] = (),
    disturbance: Disturbance | None = None,
) -> str:
    """Long-format CSV of everything :func:`to_json` holds for the interval, one count a row, each row
    marked by its ``record`` (see :data:`CSV_HEADER`): read it with ``pandas.read_csv`` and select a
    record, ``df[df.record == "process"]``. Syscall, process and total rows are per CPU (per group in a
    grouped view) and only non-zero, but for the total rows, which list every CPU."""
    obj = to_json(
        d, end_time=end_time, attach=attach, top=top, run_caveats=run_caveats, disturbance=disturbance
    )
    by = obj.get("by")
    per = "per_cpu" if by is None else f"per_{by}"
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(CSV_HEADER if by is None else (*CSV_HEADER[:3], by, *CSV_HEADER[4:]))
    when = (f"{end_time:.3f}", f"{d.seconds:.3f}")

    def row(record: str, **cells: Any) -> None:
        w.writerow((*when, record, *("" if cells.get(c) is None else cells[c] for c in CSV_HEADER[3:])))

    if attach is not None:
        row("attach", code=attach)
    if "online" in obj:
        row("online", text=str(d.online))
    if "not_shown" in obj:
        row("not-shown", calls=0, text=str(d.not_shown))
    if "selected" in obj:
        row("selected", code=obj["selected"], text=str(d.cpus))
    for label, members in obj.get("groups", {}).items():
        row("group", cpu=label, text=",".join(str(c) for c in members))
    for cpu, n in obj[per].items():
        row("total", cpu=cpu, calls=n)
    for s in obj["syscalls"]:
        for cpu, n in s[per].items():
            if n:
                row("syscall", cpu=cpu, syscall=s["name"], calls=n)
    if "other" in obj:
        for cpu, n in obj["other"][per].items():
            if n:
                row("other", cpu=cpu, calls=n, text=f"{obj['other']['syscalls']} more syscalls (-n)")
    for p in obj.get("processes", []):
        comm = printable(bytes.fromhex(p["comm_hex"]) if "comm_hex" in p else p["comm"].encode())
        for cpu, n in p[per].items():
            if n:
                row("process", cpu=cpu, syscall=p["syscall"], pid=p["pid"], comm=comm, calls=n)
    for e in obj.get("errors", []):
        row("error", syscall=e["syscall"], errno=e["errno"], error=e["error"], calls=e["total"])
    for lat in obj.get("latency", []):
        for bucket, n in lat["log2_ns_buckets"].items():
            row("latency", syscall=lat["syscall"], log2_ns=bucket, calls=n)
    for table_, n in obj["lost"].items():
        row("lost", code=table_, calls=n)
    row("dropped", calls=obj["dropped"])
    if disturbance is not None:
        _disturb.csv_records(disturbance, obj["disturbance"], row)
    for c in obj["warnings"]:
        row("warning", code=c["code"], text=c["text"], calls=c["count"])
    return buf.getvalue()


def heat_level(v: float, vmax: float) -> float:
    """0..1 on a log scale, so one hot syscall does not wash out the rest."""
    if v <= 0 or vmax <= 0:
        return 0.0
    return min(1.0, math.log1p(v) / math.log1p(vmax))
