"""Pictures of syscall counts per CPU, drawn with matplotlib (the optional extra ``percpu[plots]``).

* :func:`heatmap`: CPU x syscall, a log colour scale with a colour bar, CPUs ordered and labelled by
  NUMA node / package / core when the topology is known, offline CPUs hatched;
* :func:`timeseries`: calls per second over the intervals of ``percpu stat -i``, per CPU (or group).

The format follows the file name: ``.png``, ``.svg`` or ``.pdf``. matplotlib is imported when a picture is
drawn, never at import time, and only through the Agg canvas (no GUI backend, no pyplot state). SVG text
is kept as text (``svg.fonttype: none``), so labels can be searched and tested.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from .errors import PercpuError
from .syscount._data import SyscallDelta

if TYPE_CHECKING:
    from .topo import CpuTopology

__all__ = ["FORMATS", "check_path", "heatmap", "require_matplotlib", "timeseries"]

FORMATS = (".png", ".svg", ".pdf")
EXTRA = "pip install 'percpu[plots]'"
_NO_CALLS = "#ffffff"
_OFFLINE = "#d9d9d9"
_ISOLATED = "#d62728"
_WARNING = "#a00000"


def require_matplotlib(option: str = "pictures") -> None:
    """Raise a one-line :class:`PercpuError` naming the extra when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PercpuError(f"{option} needs matplotlib, which is not installed: {EXTRA}") from None


def check_path(path: str, option: str) -> str:
    """The format (``png``, ``svg``, ``pdf``) named by ``path``'s extension; refuses others."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise PercpuError(f"{option} {path}: name the file .png, .svg or .pdf (the format follows the name)")
    require_matplotlib(option)
    return ext[1:]


def human(n: float) -> str:
    """1, 12, 999, 1.2k, 34k, 1M: one style for every number on a picture."""
    a = abs(n)
    if a < 999.5:
        return f"{n:.0f}" if a >= 9.95 or float(n).is_integer() else f"{n:.1f}"
    for unit, div in (("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12)):
        v = n / div
        if abs(v) < 9.95:
            return f"{v:.1f}".removesuffix(".0") + unit
        if abs(v) < 999.5:
            return f"{v:.0f}{unit}"
    return f"{n:.1e}"


class _Columns:
    """The picture's columns: CPUs in topology order (or a grouped view's groups), with their labels,
    the bands (NUMA nodes, else packages) they fall in, and which are offline."""

    def __init__(self, d: SyscallDelta, topology: CpuTopology | None) -> None:
        online = set(d.online) if d.online is not None else None
        self.bands: list[tuple[str, int, int]] = []  # (label, first column, last column)
        self.cores: list[int] = []  # column indices where a new core starts (SMT machines only)
        self.isolated: list[int] = []  # columns of isolated CPUs
        self.smt = 1
        if d.groups is not None:
            self.order = list(range(len(d.groups.labels)))
            self.labels = list(d.groups.labels)
            self.offline = [online is not None and not any(c in online for c in m) for m in d.groups.members]
            self.what = d.groups.by
            return
        self.what = "CPU"
        cpus = list(d.cpus)
        infos = None
        if topology is not None:
            try:
                infos = [topology[c] for c in cpus]
            except PercpuError:
                infos = None  # counted on another machine's topology: plain CPU order
        big = 1 << 30
        if infos is not None:
            key = [
                (
                    big if i.node is None else i.node,
                    big if i.package is None else i.package,
                    i.die or 0,
                    big if i.core is None else i.core,
                    i.cpu,
                )
                for i in infos
            ]
            self.order = sorted(range(len(cpus)), key=lambda j: key[j])
        else:
            self.order = list(range(len(cpus)))
        self.labels = [str(cpus[j]) for j in self.order]
        self.offline = [online is not None and cpus[j] not in online for j in self.order]
        if infos is None:
            return
        self.isolated = [col for col, j in enumerate(self.order) if infos[j].is_isolated]
        self.smt = max((len(i.siblings) for i in infos), default=1) or 1
        nodes = {i.node for i in infos if i.node is not None}
        pkgs = {i.package for i in infos if i.package is not None}
        by_node = len(nodes) > 1
        if by_node or len(pkgs) > 1:
            for col, j in enumerate(self.order):
                i = infos[j]
                v = i.node if by_node else i.package
                lab = "no topology" if v is None else (f"node {v}" if by_node else f"package {v}")
                if self.bands and self.bands[-1][0] == lab:
                    self.bands[-1] = (lab, self.bands[-1][1], col)
                else:
                    self.bands.append((lab, col, col))
        if any(len(i.siblings) > 1 for i in infos):
            prev = None
            for col, j in enumerate(self.order):
                i = infos[j]
                core = (i.node, i.package, i.die, i.core) if i.known else None
                if col and core != prev:
                    self.cores.append(col)
                prev = core


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained", dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str, file: IO[bytes] | None) -> None:
    import matplotlib

    fmt = check_path(path, "picture")
    with matplotlib.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):
        try:
            fig.savefig(
                path if file is None else file,
                format=fmt,
                bbox_inches="tight",
                pad_inches=0.15,
                metadata=_metadata(fmt),
            )
        except OSError as exc:
            raise PercpuError(f"cannot write {path}: {exc.strerror}", errno=exc.errno) from exc


def _notes(fig: Any, notes: Sequence[str]) -> None:
    """The report's caveats (calls a full table lost, a command counted without its children) under the
    picture, so it does not travel without them."""
    if not notes:
        return
    import textwrap

    lines = [line for n in notes for line in textwrap.wrap(f"warning: {n}", 90, subsequent_indent="  ")]
    fig.text(0.0, 0.0, "\n".join(lines), ha="left", va="top", fontsize=8, color=_WARNING, gid="warnings")


def _metadata(fmt: str) -> dict[str, Any]:
    # No creation date: the same counts give the same file.
    if fmt == "svg":
        return {"Date": None}
    if fmt == "pdf":
        return {"CreationDate": None}
    return {}


def _log_norm(data: np.ndarray) -> Any:
    """A log scale from the decade below the smallest non-zero value to the largest (one decade at least)."""
    from matplotlib.colors import LogNorm

    pos = data[data > 0]
    if not pos.size:
        return LogNorm(vmin=1.0, vmax=10.0)
    vmin = 10.0 ** math.floor(math.log10(float(pos.min())))
    return LogNorm(vmin=vmin, vmax=max(float(pos.max()), vmin * 10))


def _colorbar(fig: Any, mappable: Any, ax: Any, label: str) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator

    cb = fig.colorbar(mappable, ax=ax, label=label, shrink=0.9, pad=0.02, aspect=30)
    cb.ax.yaxis.set_major_locator(LogLocator(base=10))
    cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: human(v)))
    cb.ax.yaxis.set_minor_formatter(FuncFormatter(lambda _v, _pos: ""))


def _tick_step(cols: _Columns, n: int, most: int) -> int:
    """Label every step-th column: at most ``most`` labels, on the same SMT thread of each core (CPUs are
    ordered by core, so a step that is not a multiple of the threads per core would zig-zag)."""
    step = max(1, math.ceil(n / most))
    if step > 1 and cols.smt > 1:
        step = math.ceil(step / cols.smt) * cols.smt
    return step


def _x_ticks(ax: Any, cols: _Columns, n: int) -> None:
    idx = list(range(0, n, _tick_step(cols, n, 48)))
    ax.set_xticks(idx)
    ax.set_xticklabels([cols.labels[i] for i in idx], rotation=90 if n > 16 else 0)
    ax.tick_params(axis="x", labelsize=8 if n <= 64 else 7, length=2)


def _bands(ax: Any, cols: _Columns, rows: int) -> None:
    """Node (or package) names above the columns, with a line between bands; thin lines between cores."""
    for c in cols.cores:
        ax.axvline(c - 0.5, color="white", linewidth=0.6 if len(cols.labels) <= 64 else 0.2)
    from matplotlib.patches import Rectangle
    from matplotlib.transforms import blended_transform_factory

    above = blended_transform_factory(ax.transData, ax.transAxes)
    for c in cols.isolated:
        ax.add_patch(Rectangle((c - 0.5, 1.003), 1, 0.014, transform=above, color=_ISOLATED, clip_on=False))
    for k, (lab, lo, hi) in enumerate(cols.bands):
        if k:
            ax.axvline(lo - 0.5, color="black", linewidth=1.2)
        ax.annotate(
            lab,
            xy=((lo + hi) / 2, -0.5),
            xytext=(0, 9),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
            fontweight="bold",
            annotation_clip=False,
        )


def heatmap(
    d: SyscallDelta,
    path: str,
    *,
    topology: CpuTopology | None = None,
    top: int = 30,
    title: str | None = None,
    file: IO[bytes] | None = None,
    notes: Sequence[str] = (),
) -> None:
    """Write a CPU x syscall heat map of ``d`` to ``path`` (.png, .svg or .pdf; into ``file`` instead,
    when given, in the format ``path`` names); ``notes`` (what the counts leave out) are printed under it.

    The ``top`` busiest syscalls are rows (most calls first); columns are ``d``'s CPUs, ordered by NUMA
    node, package and core when ``topology`` is given, or its groups in a grouped view. Zero cells are
    white, offline CPUs hatched; at most 40 x 30 cells, each cell shows its count.
    """
    check_path(path, "--heatmap")
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    cols = _Columns(d, topology)
    per_sys = d.per_syscall()
    slots = [int(s) for s in d.active_slots()[:top]]
    n, m = len(cols.labels), max(len(slots), 1)
    data = np.zeros((m, n), dtype=np.float64)
    if slots:
        data[: len(slots)] = d.counts[cols.order][:, slots].T.astype(np.float64)
    width = min(max(4.5 + 0.3 * n, 6.0), 22.0)
    height = min(max(1.8 + 0.24 * m, 3.2), 13.0)
    fig = _figure(width, height)
    ax = fig.add_subplot()
    import matplotlib

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=_NO_CALLS)
    im = ax.imshow(
        np.ma.masked_less_equal(data, 0),
        cmap=cmap,
        norm=_log_norm(data),
        aspect="auto",
        interpolation="nearest",
    )
    off = np.array(cols.offline, dtype=bool)
    if off.any():
        shade = np.ma.masked_array(np.ones_like(data), mask=np.broadcast_to(~off, data.shape) | (data > 0))
        ax.imshow(shade, cmap=ListedColormap([_OFFLINE]), aspect="auto", interpolation="nearest")
    names = [d.name(s) for s in slots] or ["(no calls)"]
    ax.set_yticks(range(m))
    ax.set_yticklabels(names, fontsize=8 if m <= 40 else 7)
    _x_ticks(ax, cols, n)
    ax.set_xlabel(
        {"CPU": "CPU", "core": "core (package.core)", "package": "package", "node": "NUMA node"}[cols.what]
        + (f" ({d.selected})" if d.selected else "")
        + (", ordered by node, package and core: SMT siblings side by side" if cols.cores else "")
    )
    ax.tick_params(axis="y", length=2)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(m - 0.5, -0.5)
    if n <= 40 and m <= 30 and slots:
        norm = im.norm
        for r in range(len(slots)):
            for c in range(n):
                v = data[r, c]
                if v <= 0:
                    continue
                light = norm(v) > 0.6
                ax.text(
                    c,
                    r,
                    human(v),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if light else "white",
                    gid=f"cell-{cols.labels[c] if cols.what != 'CPU' else 'cpu' + cols.labels[c]}-{names[r]}",
                )
    _bands(ax, cols, m)
    total = int(per_sys.sum())
    shown = (
        "" if len(slots) >= len(d.active_slots()) else f" (busiest {len(slots)} of {len(d.active_slots())})"
    )
    ax.set_title(
        title or f"System calls per {cols.what}: {total:,} calls in {d.seconds:.2f} s",
        loc="left",
        fontsize=11,
        pad=20 if cols.bands else (8 if cols.isolated else 6),
    )
    ax.set_ylabel(f"system call{shown}")
    _colorbar(fig, im, ax, "calls (log scale)")
    legend = [Patch(facecolor=_NO_CALLS, edgecolor="0.6", label="no calls")]
    if off.any():
        legend.append(Patch(facecolor=_OFFLINE, edgecolor="0.6", label="offline / never online"))
    if cols.isolated:
        legend.append(Patch(facecolor=_ISOLATED, label="isolated CPU (mark above its column)"))
    fig.legend(handles=legend, loc="outside lower right", fontsize=8, ncols=len(legend), frameon=False)
    _notes(fig, notes)
    _save(fig, path, file)


def timeseries(
    deltas: Sequence[SyscallDelta],
    path: str,
    *,
    topology: CpuTopology | None = None,
    lines_up_to: int = 12,
    title: str | None = None,
    file: IO[bytes] | None = None,
    notes: Sequence[str] = (),
) -> None:
    """Write calls per second over consecutive intervals (``percpu stat -i``) to ``path``; ``notes`` (what
    the counts leave out) are printed under it.

    Top: all CPUs together. Below: one line per CPU (or group) when there are at most ``lines_up_to``
    of them, else a CPU x time image with a log colour bar, CPUs in topology order.
    """
    check_path(path, "--timeseries")
    if not deltas:
        raise PercpuError("--timeseries: no interval was reported, so there is nothing to draw")
    cols = _Columns(deltas[0], topology)
    ends = np.cumsum([d.seconds for d in deltas])
    starts = ends - np.array([d.seconds for d in deltas])
    rates = np.stack([d.per_cpu().astype(np.float64) / d.seconds for d in deltas])[:, cols.order]  # (t, cols)
    n = rates.shape[1]
    active = [c for c in range(n) if rates[:, c].any() or not cols.offline[c]]
    many = len(active) > lines_up_to
    fig = _figure(11.0, 7.0 if many else 6.0)
    top_ax, ax = fig.subplots(2, 1, sharex=True, height_ratios=(1, 3 if many else 2))
    mid = (starts + ends) / 2
    top_ax.plot(mid, rates.sum(axis=1), color="black", marker="o" if len(deltas) <= 40 else None, ms=3)
    top_ax.set_ylabel("all CPUs\ncalls/s")
    top_ax.set_ylim(bottom=0)
    top_ax.grid(alpha=0.3)
    top_ax.yaxis.set_major_formatter(_human_formatter())
    if many:
        edges = np.concatenate([[0.0], ends])
        import matplotlib

        cmap = matplotlib.colormaps["viridis"].with_extremes(bad=_NO_CALLS)
        img = rates.T
        mesh = ax.pcolormesh(
            edges, np.arange(n + 1) - 0.5, np.ma.masked_less_equal(img, 0), cmap=cmap, norm=_log_norm(img)
        )
        off = np.array(cols.offline, dtype=bool)
        if off.any():
            from matplotlib.colors import ListedColormap

            shade = np.ma.masked_array(
                np.ones_like(img), mask=np.broadcast_to(~off[:, None], img.shape) | (img > 0)
            )
            ax.pcolormesh(edges, np.arange(n + 1) - 0.5, shade, cmap=ListedColormap([_OFFLINE]))
        from matplotlib.patches import Rectangle
        from matplotlib.transforms import blended_transform_factory

        right = blended_transform_factory(ax.transAxes, ax.transData)
        for c in cols.isolated:
            ax.add_patch(
                Rectangle((1.003, c - 0.5), 0.008, 1, transform=right, color=_ISOLATED, clip_on=False)
            )
        ax.set_ylim(n - 0.5, -0.5)
        step = _tick_step(cols, n, 40)
        ax.set_yticks(range(0, n, step))
        ax.set_yticklabels([cols.labels[i] for i in range(0, n, step)], fontsize=7)
        ax.set_ylabel(cols.what)
        for k, (lab, lo, _hi) in enumerate(cols.bands):
            if k:
                ax.axhline(lo - 0.5, color="black", linewidth=1.0)
            ax.annotate(
                lab,
                xy=(1.0, lo - 0.5),
                xycoords=("axes fraction", "data"),
                xytext=(10, -2),
                textcoords="offset points",
                va="top",
                fontsize=8,
                fontweight="bold",
                annotation_clip=False,
            )
        _colorbar(fig, mesh, [top_ax, ax], "calls/s (log scale)")
    else:
        import matplotlib

        palette = matplotlib.colormaps["tab10" if len(active) <= 10 else "tab20"]
        prefix = "cpu" if cols.what == "CPU" else ""
        for k, c in enumerate(active):
            ax.plot(
                mid,
                rates[:, c],
                label=f"{prefix}{cols.labels[c]}",
                color=palette(k % palette.N),
                marker="o" if len(deltas) <= 40 else None,
                ms=3,
                linewidth=1.4,
            )
        ax.set_ylabel(f"calls/s per {cols.what}")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.yaxis.set_major_formatter(_human_formatter())
        fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize=8, frameon=False)
    ax.set_xlabel(f"seconds since the start ({len(deltas)} intervals of {deltas[0].seconds:.3g} s)")
    ax.set_xlim(0, float(ends[-1]))
    total = int(sum(int(d.per_syscall().sum()) for d in deltas))
    sel = f" on CPUs {deltas[0].cpus} ({deltas[0].selected})" if deltas[0].selected else ""
    top_ax.set_title(
        title or f"System calls per second{sel}: {total:,} calls in {float(ends[-1]):.1f} s",
        loc="left",
        fontsize=11,
    )
    _notes(fig, notes)
    _save(fig, path, file)


def _human_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: human(v))
