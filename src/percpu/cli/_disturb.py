"""Rendering of "who disturbs CPU N": the text tables, the JSON object and the CSV records of a
:class:`~percpu.disturb.Disturbance` (pictures: :mod:`percpu.disturb_plot`).

Pure functions of a Disturbance, shared by ``percpu stat`` and ``percpu top``. The JSON object goes under
the report's ``disturbance`` key; the CSV records share the report's header, with the ``ns`` column for
times; the caveats join the report's ``warnings`` (JSON and CSV) and footer lines (table).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .._text import printable
from ..disturb._who import COUNT_OF, DISTURBANCE_KINDS, KINDS, Caveat, Disturbance, Source, caveats

__all__ = ["CSV_RECORDS", "caveat_list", "csv_records", "fmt_ns", "interval_caveats", "table", "to_json"]

# The CSV records of a disturbance and the columns each fills (beside time, interval_s and record):
CSV_RECORDS = {
    "expected": "text (the expected workload as given)",
    "disturb_total": "cpu, code (the kind, or switches), calls (its count), ns (its time, when measured)",
    "source": "cpu, code (the kind), pid, comm (a task's or process's name), text (a handler's), calls, ns",
    "source_other": "cpu, code (the kind), calls, ns, text (the sources -n left out)",
    "disturb_lost": "cpu, code (the kind), calls (what its table could not take)",
    "disturb_untimed": "cpu, code (the kind), calls (runs or stints without a time)",
}


def fmt_ns(ns: float) -> str:
    """9.912 s, 12.1 ms, 850 us, 300 ns."""
    for unit, div in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= div:
            v = ns / div
            return f"{v:.3f} {unit}" if unit == "s" else f"{v:.1f} {unit}"
    return f"{ns:.0f} ns"


def _count(n: float, rates: bool) -> str:
    if not rates:
        return f"{int(n):,}"
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:.1f}" if n and n < 10 else f"{n:.0f}"


def _where(v: Disturbance) -> str:
    many = len(v.cpus) > 1
    what = f"CPU{'s' if many else ''} {v.cpus}"
    if v.selected is not None and v.selected != str(v.cpus):
        what += f" ({v.selected})"
    if v.groups is not None:
        what += f", by {v.groups.by}"
    return what


def _head(v: Disturbance, rates: bool) -> str:
    line = f"who disturbs {_where(v)}: {v.seconds:.2f} s"
    line += (
        f"; expected workload: {v.expected}"
        if v.expected
        else "; no expected workload (-E): every task counts"
    )
    return line + (" (counts per second; times as a share of each CPU's time)\n" if rates else "\n")


def _share(ns: np.ndarray, v: Disturbance) -> np.ndarray:
    """Each column's time as a fraction of its wall time (a group has one wall time per CPU)."""
    wall = v.seconds * 1e9 * v.width()
    out: np.ndarray = ns.astype(np.float64) / np.maximum(wall, 1.0)
    return out


def table(
    v: Disturbance, *, top: int | None = 20, rates: bool = False, notes: Sequence[Caveat] | None = None
) -> str:
    """The kinds per column (count, and time with its share of the column's time), then the busiest
    sources; footer lines for ``notes`` (default: every caveat of ``v``; a report that prints the run's
    caveats itself passes :func:`interval_caveats`)."""
    out = io.StringIO()
    out.write(_head(v, rates))
    labels = v.labels
    scale = 1.0 / v.seconds if rates else 1.0
    out.write("\n" + f"{'kind':<10} {'':<11}" + "".join(f" {c:>18}" for c in labels) + "\n")
    for kind in KINDS:
        if kind not in _kinds(v):
            continue
        counts, ns = v.totals(kind)
        unit = COUNT_OF[kind] + ("/s" if rates else "")
        out.write(
            f"{kind:<10} {unit:<11}"
            + "".join(f" {_count(float(n) * scale, rates):>18}" for n in counts)
            + "\n"
        )
        if v.timed_kind(kind):
            share = _share(ns, v)
            cells = (f"{fmt_ns(float(t))} {100 * s:5.1f}%" for t, s in zip(ns, share, strict=True))
            out.write(f"{'':<10} {'time':<11}" + "".join(f" {c:>18}" for c in cells) + "\n")
    if "task" in v.counted:
        unit = "switch-ins" + ("/s" if rates else "")
        total = "".join(f" {_count(float(n) * scale, rates):>18}" for n in v.switch_ins())
        out.write(f"{'all tasks':<10} {unit:<11}{total}\n")
    rows = v.order()
    shown = rows[:top] if top else rows
    if rows:
        what = "CPU" if v.groups is None else v.groups.by
        out.write(f"\n{'source':<34} {'kind':<8} {'count':>10} {'time':>11}  busiest {what}\n")
        for i in shown:
            s = v.sources[i]
            n = float(v.counts[i].sum()) * scale
            t = fmt_ns(float(v.ns[i].sum())) if v.timed[i] else "-"
            busiest = labels[int(np.argmax(v.ns[i] if v.timed[i] and v.ns[i].any() else v.counts[i]))]
            name = printable(s.label().encode())[:34]
            out.write(f"{name:<34} {s.kind:<8} {_count(n, rates):>10} {t:>11}  {busiest}\n")
        if len(rows) > len(shown):
            out.write(f"... {len(rows) - len(shown)} more sources (use --top 0 for all)\n")
    for c in caveat_list(v) if notes is None else notes:
        out.write(f"warning: {c.text}\n")
    return out.getvalue()


def _kinds(v: Disturbance) -> set[str]:
    """The kinds counted here: each handler kind counted, and the task kinds with the switches."""
    out = {k for k in v.counted if k != "task"}
    if "task" in v.counted:
        out |= {"task", "kthread", "idle"} | ({"expected"} if v.expected else set())
    return out


def caveat_list(v: Disturbance) -> list[Caveat]:
    return caveats(v)


def interval_caveats(v: Disturbance) -> list[Caveat]:
    """The caveats of one interval: all but what the kernel cannot count (``disturb.unsupported.*``),
    which the commands say once for the whole run."""
    return [c for c in caveats(v) if not c.code.startswith("disturb.unsupported.")]


def _keys(v: Disturbance) -> tuple[str, list[str]]:
    """The per-column key (``per_cpu`` or ``per_<group>``) and the columns' names in it."""
    if v.groups is None:
        return "per_cpu", [str(c) for c in v.cpus]
    return f"per_{v.groups.by}", list(v.groups.labels)


def _ident(s: Source) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": s.kind, "name": s.name}
    if s.kind == "irq":
        out["irq"] = s.number
    elif s.kind == "softirq":
        out["vector"] = s.number
    elif s.kind == "vector":
        out["row"] = s.row
    elif s.kind == "syscall":
        out["pid"] = s.tgid
    else:
        out["pid"] = s.pid
        out["tgid"] = s.tgid
    return out


def _rest(v: Disturbance, rows: list[int], keys: list[str]) -> dict[str, Any]:
    """The rows -n left out, summed per column and kind."""
    per: dict[str, dict[str, dict[str, int]]] = {k: {} for k in keys}
    for i in rows:
        kind = v.sources[i].kind
        for j, k in enumerate(keys):
            cell = per[k].setdefault(kind, {"count": 0, "ns": 0})
            cell["count"] += int(v.counts[i, j])
            cell["ns"] += int(v.ns[i, j])
    return per


def to_json(v: Disturbance, *, top: int | None = None) -> dict[str, Any]:
    """The JSON object of a disturbance. Every count adds up: per column, the task-kind totals plus
    ``lost.task`` equal ``switch_ins`` (and ``switches``, the kernel's count, once counting stopped); with
    ``top``, ``sources`` lists the busiest ``top`` and ``other``
    sums the rest per column and kind, so the sources and ``other`` add up to the kinds' totals."""
    per, keys = _keys(v)
    kinds = sorted(_kinds(v), key=KINDS.index)
    cols: dict[str, Any] = {}
    for j, k in enumerate(keys):
        cell: dict[str, Any] = {"switches": int(v.switches[j]), "gaps": int(v.gaps[j])}
        if "task" in v.counted:
            cell["switch_ins"] = int(v.switch_ins()[j])
        for kind in kinds:
            counts, ns = v.totals(kind)
            cell[kind] = {"count": int(counts[j]), "ns": int(ns[j]) if v.timed_kind(kind) else None}
        cell["lost"] = {kind: int(a[j]) for kind, a in v.lost.items()}
        cell["untimed"] = {kind: int(a[j]) for kind, a in v.untimed_runs.items()}
        task_untimed = sum(int(v.untimed[v.of(t)][:, j].sum()) for t in ("task", "kthread", "expected"))
        if "task" in v.counted:
            cell["untimed"]["task"] = task_untimed
        cols[k] = cell
    rows = v.order(KINDS)
    shown = rows[:top] if top else rows
    sources = []
    for i in shown:
        src = _ident(v.sources[i])
        src["total"] = int(v.counts[i].sum())
        src["ns"] = int(v.ns[i].sum()) if v.timed[i] else None
        src[per] = {k: int(n) for k, n in zip(keys, v.counts[i], strict=True)}
        if v.timed[i]:
            src[f"ns_{per}"] = {k: int(n) for k, n in zip(keys, v.ns[i], strict=True)}
        if v.untimed[i].any():
            src[f"untimed_{per}"] = {k: int(n) for k, n in zip(keys, v.untimed[i], strict=True)}
        sources.append(src)
    obj: dict[str, Any] = {
        "expected": v.expected,
        "counted": list(v.counted),
        per: cols,
        "sources": sources,
    }
    if len(rows) > len(shown):
        obj["other"] = {"sources": len(rows) - len(shown), per: _rest(v, rows[len(shown) :], keys)}
    obj["skipped"] = v.skipped
    obj["unsupported"] = dict(v.unsupported)
    return obj


def csv_records(v: Disturbance, obj: dict[str, Any], row: Callable[..., None]) -> None:
    """The CSV records of ``obj`` (:func:`to_json` of ``v``), written through ``row(record, **cells)``."""
    per, keys = _keys(v)
    if v.expected:
        row("expected", text=v.expected)
    for k in keys:
        cell = obj[per][k]
        row("disturb_total", cpu=k, code="switches", calls=cell["switches"])
        if "switch_ins" in cell:
            row("disturb_total", cpu=k, code="switch_ins", calls=cell["switch_ins"])
        for kind in KINDS:
            if kind in cell:
                row("disturb_total", cpu=k, code=kind, calls=cell[kind]["count"], ns=cell[kind]["ns"])
        for kind, n in cell["lost"].items():
            row("disturb_lost", cpu=k, code=kind, calls=n)
        for kind, n in cell["untimed"].items():
            row("disturb_untimed", cpu=k, code=kind, calls=n)
    for src in obj["sources"]:
        for k, n in src[per].items():
            if not n and not src.get(f"ns_{per}", {}).get(k):
                continue
            ns = src.get(f"ns_{per}", {}).get(k)
            task = src["kind"] not in ("irq", "vector", "softirq")
            row(
                "source",
                cpu=k,
                code=src["kind"],
                pid=src.get("pid") if task else None,
                comm=printable(src["name"].encode()) if task else None,
                text=None if task else _handler_text(src),
                calls=n,
                ns=ns,
            )
    if "other" in obj:
        for k, kinds in obj["other"][per].items():
            for kind, cell in kinds.items():
                if cell["count"] or cell["ns"]:
                    more = f"{obj['other']['sources']} more sources (-n)"
                    row("source_other", cpu=k, code=kind, calls=cell["count"], ns=cell["ns"], text=more)


def _handler_text(src: dict[str, Any]) -> str:
    if src["kind"] == "irq":
        return f"{src['irq']} {src['name']}"
    if src["kind"] == "vector":
        return f"{src['name']} ({src['row']})" if src.get("row") else str(src["name"])
    return str(src["name"])


def sources_by_kind(v: Disturbance) -> Iterator[tuple[str, list[int]]]:
    """Rows of each disturbance kind with counts, busiest first (for a view that lists them by kind)."""
    for kind in DISTURBANCE_KINDS:
        rows = v.order((kind,))
        if rows:
            yield kind, rows
