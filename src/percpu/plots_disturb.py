"""The picture of who disturbs each CPU: CPU x source, drawn with matplotlib (the optional extra ``plots``).

:func:`heatmap` draws a :class:`~percpu.disturb.Disturbance`: one column per CPU (or ``--by`` group), one
row per source (an IRQ line, a vector, a softirq, a task, a process's system calls), the busiest first.
Sources whose time was measured are coloured by the share of the column's time they took (a log scale,
each cell labelled with its time); those only counted (system calls, TLB shootdowns) are in a panel of
their own, coloured by count, since a count and a time share no scale. The expected workload's row, when
one was named, comes first in the time panel: what the CPU was for, beside what took it away.

The format follows the file name (.png, .svg or .pdf), as :mod:`percpu.plots`'s pictures do; matplotlib is
imported when a picture is drawn, never at import time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO, Any

import numpy as np

from .disturb._who import DISTURBANCE_KINDS, Disturbance
from .plots import _colorbar, _figure, _log_norm, _notes, _save, check_path, human

__all__ = ["heatmap"]

_EMPTY = "#ffffff"
_EXPECTED = "#1f77b4"


def _fmt_ns(ns: float) -> str:
    for unit, div in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= div:
            v = ns / div
            return f"{v:.2f} {unit}" if v < 10 else f"{v:.1f} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{ns:.0f} ns"


def _rows(v: Disturbance, top: int) -> tuple[list[int], list[int]]:
    """(timed rows, counted-only rows), each busiest first, ``top`` in all; the expected workload's first."""
    timed = [i for i in v.order(DISTURBANCE_KINDS) if v.timed[i] and v.ns[i].any()]
    counted = [i for i in v.order(DISTURBANCE_KINDS) if i not in set(timed)]
    expected = [i for i in v.order(("expected",)) if v.timed[i] and v.ns[i].any()][:3]
    timed = expected + timed
    keep_t = min(len(timed), max(top - min(len(counted), top // 3), 0))
    return timed[:keep_t], counted[: max(top - keep_t, 0)]


def _label(v: Disturbance, i: int) -> str:
    s = v.sources[i]
    label = s.label()
    return f"{s.kind}: {label[:40]}"


def _panel(fig: Any, ax: Any, v: Disturbance, rows: list[int], *, share: bool, cmap: Any, title: str) -> None:
    n = len(v.labels)
    if share:
        wall = v.seconds * 1e9 * v.width().astype(np.float64)
        data = v.ns[rows].astype(np.float64) / np.maximum(wall, 1.0) * 100.0
    else:
        data = v.counts[rows].astype(np.float64)
    im = ax.imshow(
        np.ma.masked_less_equal(data, 0),
        cmap=cmap,
        norm=_log_norm(data),
        aspect="auto",
        interpolation="nearest",
    )
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([_label(v, i) for i in rows], fontsize=8)
    for k, i in enumerate(rows):
        if v.sources[i].kind == "expected":
            ax.get_yticklabels()[k].set_color(_EXPECTED)
            ax.get_yticklabels()[k].set_fontweight("bold")
    ax.set_xticks(range(n))
    ax.set_xticklabels(v.labels, rotation=90 if n > 16 else 0, fontsize=8)
    ax.tick_params(length=2)
    ax.set_title(title, loc="left", fontsize=10)
    if n <= 40 and len(rows) <= 40:
        norm = im.norm
        for r, i in enumerate(rows):
            for c in range(n):
                if data[r, c] <= 0:
                    continue
                text = _fmt_ns(float(v.ns[i, c])) if share else human(float(data[r, c]))
                ax.text(
                    c,
                    r,
                    text,
                    ha="center",
                    va="center",
                    fontsize=7,
                    # light text on the dark end of each colour map: magma_r's high, viridis' low
                    color="white" if (norm(data[r, c]) > 0.55) == share else "black",
                    gid=f"cell-{v.labels[c]}-{v.sources[i].kind}-{v.sources[i].label()}",
                )
    if share:
        _share_colorbar(fig, im, ax)
    else:
        _colorbar(fig, im, ax, "count (log)")


def _share_colorbar(fig: Any, mappable: Any, ax: Any) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator

    cb = fig.colorbar(mappable, ax=ax, label="% of the CPU's time (log)", shrink=0.9, pad=0.02, aspect=30)
    cb.ax.yaxis.set_major_locator(LogLocator(base=10))
    cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}%"))
    cb.ax.yaxis.set_minor_formatter(FuncFormatter(lambda _v, _pos: ""))


def heatmap(
    v: Disturbance,
    path: str,
    *,
    top: int = 25,
    title: str | None = None,
    file: IO[bytes] | None = None,
    notes: Sequence[str] = (),
) -> None:
    """Write the CPU x source picture of ``v`` to ``path`` (.png, .svg or .pdf; into ``file`` instead, when
    given, in the format ``path`` names); ``notes`` (what the numbers leave out) go under it."""
    check_path(path, "--heatmap")
    import matplotlib

    timed, counted = _rows(v, top)
    n = len(v.labels)
    heights = [max(len(timed), 1), len(counted)] if counted else [max(len(timed), 1)]
    width = min(max(6.0 + 0.55 * n, 8.0), 22.0)
    height = min(max(2.2 + 0.26 * sum(heights), 3.4), 14.0)
    fig = _figure(width, height)
    axes = fig.subplots(len(heights), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    cmap = matplotlib.colormaps["magma_r"].with_extremes(bad=_EMPTY)
    where = f" ({v.selected})" if v.selected and v.selected != str(v.cpus) else ""
    head = title or (
        f"Who disturbs {'CPU' if v.groups is None else v.groups.by} {v.cpus}{where}: {v.seconds:.2f} s"
        + (f"; expected: {v.expected}" if v.expected else "")
    )
    if timed:
        _panel(fig, axes[0], v, timed, share=True, cmap=cmap, title=head + "\ntime taken, by source")
    else:
        axes[0].set_axis_off()
        axes[0].set_title(head + "\n(no source with a measured time)", loc="left", fontsize=10)
    if counted:
        counts_cmap = matplotlib.colormaps["viridis"].with_extremes(bad=_EMPTY)
        _panel(
            fig, axes[1], v, counted, share=False, cmap=counts_cmap, title="counted only (no time measured)"
        )
    _notes(fig, notes)
    _save(fig, path, file)
