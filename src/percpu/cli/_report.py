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
from ..syscount._data import FOLDED_TGID, Lost, SyscallDelta, errno_name

__all__ = [
    "CSV_HEADER",
    "SORTS",
    "Caveat",
    "caveat_lines",
    "caveats",
    "csv_rows",
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
    if d.selected is None:
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


def table(
    d: SyscallDelta,
    *,
    top: int | None = None,
    sum_cpus: bool = False,
    rates: bool = False,
    sort: str = "total",
) -> str:
    """A fixed-width table: syscall, total, share, one column per possible CPU (unless ``sum_cpus``);
    rows in ``sort`` order (see :func:`order_slots`; ``cpu`` means the first possible CPU)."""
    per_sys = d.per_syscall()
    grand = int(per_sys.sum())
    scale = 1.0 / d.seconds if rates else 1.0
    cpus = [] if sum_cpus else columns(d)
    unit = "calls/s" if rates else "calls"
    out = io.StringIO()
    out.write(
        f"{grand:,} system calls in {d.seconds:.2f} s ({human(grand / d.seconds)}/s) on {_where(d)}\n\n"
    )
    head = f"{'syscall':<22} {unit:>10} {'%':>6}" + "".join(f" {c:>8}" for c in cpus)
    out.write(head + "\n")
    rows = _rows(d, top, sort)
    for slot in rows:
        tot = int(per_sys[slot])
        pct = 100.0 * tot / grand if grand else 0.0
        cells = "".join(f" {human(float(d.counts[i, slot]) * scale):>8}" for i in range(len(cpus)))
        out.write(f"{d.name(int(slot)):<22} {human(tot * scale):>10} {pct:>6.1f}{cells}\n")
    shown = len(rows)
    hidden = len(d.active_slots()) - shown
    if hidden > 0:
        out.write(f"... {hidden} more syscalls (use --top 0 for all)\n")
    if cpus:
        per_cpu = d.per_cpu()
        cells = "".join(f" {human(float(v) * scale):>8}" for v in per_cpu)
        out.write(f"{'all':<22} {human(grand * scale):>10} {100.0 if grand else 0.0:>6.1f}{cells}\n")
        what = "CPU" if d.groups is None else d.groups.by
        out.write(f"\nimbalance (busiest {what} / mean): {d.imbalance():.2f}\n")
    if d.dropped:
        out.write(f"{d.dropped} calls had numbers outside the counter table (counted as dropped)\n")
    out.write(lost_note(d))
    if d.procs is not None:
        out.write("\n" + procs_table(d, top=top or 20))
    if d.errors is not None:
        out.write("\n" + errors_table(d, top=top or 20))
    if d.latency is not None:
        out.write("\n" + latency_table(d, top=top or 20))
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


def procs_table(d: SyscallDelta, *, top: int = 20) -> str:
    assert d.procs is not None
    keys, counts = d.procs
    cols = columns(d)
    out = io.StringIO()
    what = "CPU" if d.groups is None else d.groups.by
    out.write(f"{'pid':>8} {'comm':<16} {'syscall':<22} {'calls':>10}  busiest {what}\n")
    for n, (k, row, tot) in enumerate(_by_total(keys, counts)):
        if n >= top:
            out.write(f"... {len(keys) - top} more (pid, syscall) pairs\n")
            break
        busiest = cols[int(np.argmax(row))]
        comm = printable(_comm_bytes(k["comm"]))
        pid = _pid(k)
        out.write(
            f"{'-' if pid is None else pid:>8} {comm:<16} {d.name(int(k['slot'])):<22} {human(tot):>10}  "
            f"{busiest}\n"
        )
    return out.getvalue()


def _pid(k: Any) -> int | None:
    """A row's pid; None for the rows that sum exited processes by name (or, with no name, by syscall)."""
    tgid = int(k["tgid"])
    return None if tgid == FOLDED_TGID else tgid


def errors_table(d: SyscallDelta, *, top: int = 20) -> str:
    assert d.errors is not None
    keys, counts = d.errors
    out = io.StringIO()
    out.write(f"{'syscall':<22} {'error':<14} {'calls':>10}\n")
    if len(keys) == 0:
        out.write("(no failed calls)\n")
    for n, (k, _row, tot) in enumerate(_by_total(keys, counts)):
        if n >= top:
            out.write(f"... {len(keys) - top} more\n")
            break
        out.write(f"{d.name(int(k['slot'])):<22} {errno_name(int(k['err'])):<14} {human(tot):>10}\n")
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


def latency_table(d: SyscallDelta, *, top: int = 20) -> str:
    by = latency_by_slot(d)
    out = io.StringIO()
    out.write(f"{'syscall':<22} {'calls':>10} {'p50 <=':>8} {'p99 <=':>8}  log2 histogram (ns)\n")
    order = sorted(by, key=lambda s: -int(by[s].sum()))
    for slot in order[:top]:
        b = by[slot]
        p50, p99 = latency_quantiles(b)
        nz = np.nonzero(b)[0]
        lo, hi = (int(nz[0]), int(nz[-1])) if nz.size else (0, 0)
        peak = float(b.max()) or 1.0
        bars = "".join(" .:-=+*#%@"[min(9, math.ceil(9 * float(x) / peak))] for x in b[lo : hi + 1])
        out.write(
            f"{d.name(slot):<22} {human(int(b.sum())):>10} {_ns(p50):>8} {_ns(p99):>8}  "
            f"2^{lo} [{bars}] 2^{hi + 1}\n"
        )
    return out.getvalue()


def to_json(
    d: SyscallDelta,
    *,
    end_time: float,
    attach: str | None,
    top: int | None = None,
    run_caveats: Sequence[Caveat] = (),
) -> dict[str, Any]:
    """One JSON-ready object for an interval. With ``top``, ``syscalls`` lists the busiest ``top`` and
    ``other`` sums the rest (present only when some were left out), so the rows always add up to
    ``total``. ``warnings`` lists every caveat on the numbers: the delta's own (:func:`caveats`) and the
    run's (``run_caveats``, e.g. a command counted without its children)."""
    per_sys = d.per_syscall()
    # Keys of the per-row objects: CPU ids ("per_cpu": {"3": n}), or group labels ("per_node": {"node1": n}).
    per = "per_cpu" if d.groups is None else f"per_{d.groups.by}"
    keys_ = [str(c) for c in d.cpus] if d.groups is None else list(d.groups.labels)
    obj: dict[str, Any] = {
        "time": end_time,
        "interval_s": round(d.seconds, 6),
        "attach": attach,
        "cpus": list(d.cpus),
    }
    if d.selected is not None:
        obj["selected"] = d.selected
    if d.groups is not None:
        obj["by"] = d.groups.by
        obj["groups"] = {lab: list(m) for lab, m in zip(d.groups.labels, d.groups.members, strict=True)}
    obj.update(
        {
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
    )
    rest = order_slots(d)[top:] if top else []
    if rest:
        obj["other"] = {
            "syscalls": len(rest),
            "total": int(per_sys[rest].sum()),
            per: {k: int(v) for k, v in zip(keys_, d.counts[:, rest].sum(axis=1), strict=True)},
        }
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
    obj["warnings"] = [dataclasses.asdict(c) for c in (*caveats(d), *run_caveats)]
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
#   group     cpu (its label), text (its CPUs) total     cpu, calls (all syscalls on that CPU)
#   syscall   cpu, syscall, calls              other     cpu, calls, text (the syscalls -n left out)
#   process   cpu, syscall, pid, comm, calls   error     syscall, errno, error, calls (all CPUs)
#   latency   syscall, log2_ns, calls (all CPUs: calls of 2^log2_ns to 2^(log2_ns+1) ns)
#   lost      code (the table), calls          dropped   calls
#   warning   code, text, calls (its count, if any)
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
)
# The JSON object's keys and the CSV records that carry them; keys that are not counts (imbalance, a ratio
# of the total rows) are derived by the reader. A test holds every key of to_json() to this table.
CSV_RECORDS = {
    "time": "every record",
    "interval_s": "every record",
    "attach": "attach",
    "cpus": "total",
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
}


def csv_rows(
    d: SyscallDelta,
    *,
    end_time: float,
    header: bool,
    attach: str | None = None,
    top: int | None = None,
    run_caveats: Sequence[Caveat] = (),
) -> str:
    """Long-format CSV of everything :func:`to_json` holds for the interval, one count a row, each row
    marked by its ``record`` (see :data:`CSV_HEADER`): read it with ``pandas.read_csv`` and select a
    record, ``df[df.record == "process"]``. Syscall, process and total rows are per CPU (per group in a
    grouped view) and only non-zero, but for the total rows, which list every CPU."""
    obj = to_json(d, end_time=end_time, attach=attach, top=top, run_caveats=run_caveats)
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
    for c in obj["warnings"]:
        row("warning", code=c["code"], text=c["text"], calls=c["count"])
    return buf.getvalue()


def heat_level(v: float, vmax: float) -> float:
    """0..1 on a log scale, so one hot syscall does not wash out the rest."""
    if v <= 0 or vmax <= 0:
        return 0.0
    return min(1.0, math.log1p(v) / math.log1p(vmax))
