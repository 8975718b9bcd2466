"""The full-screen view behind ``percpu top`` (curses).

One view per table the counter fills: the syscall x CPU table always, and the per-process (-P), errno (-e)
and latency (-L) tables and who disturbs each CPU (-I -V -S -T, -D) when asked for; Tab (or 1-5) switches
between them, as htop's Tab switches its screens. Every view is rates per second over the last interval,
sorted by one of :data:`SORTS`; ``cpu`` sorts by one CPU column, which ``c`` moves along the columns. Rows
past the window scroll (up/down, PgUp/PgDn); ``?`` shows every key and what each mark on the screen means.
"""

from __future__ import annotations

import contextlib
import curses
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from .._text import printable
from ..disturb._data import DisturbDelta, DisturbSnapshot
from ..disturb._who import KINDS, Caveat, Disturbance
from ..errors import PercpuError
from ..syscount._data import SnapshotSource, SyscallDelta, errno_name
from ..views import not_shown_line
from ._disturb import fmt_ns, interval_caveats
from ._report import (
    HISTOGRAM_LEGEND,
    SORTS,
    _comm_bytes,
    _ns,
    _pid,
    columns,
    heat_level,
    histogram,
    human,
    latency_by_slot,
    latency_quantiles,
)
from ._view import View

NAME_W, TOTAL_W, CELL_W = 18, 9, 8
# Below this the view has no room for one syscall row with one CPU column: it says so instead.
MIN_COLS, MIN_ROWS = NAME_W + TOTAL_W + CELL_W + 1, 8
_HEAT_256 = (236, 24, 31, 37, 71, 107, 142, 178, 208, 196)
_HEAT_8 = (
    curses.COLOR_BLUE,
    curses.COLOR_CYAN,
    curses.COLOR_GREEN,
    curses.COLOR_YELLOW,
    curses.COLOR_RED,
    curses.COLOR_MAGENTA,
)
# The views, in Tab order, and the counter switch each needs (the syscall table is always there).
PANES = ("syscalls", "processes", "errors", "latency", "disturbances")
_NEEDS = {"processes": "per_process", "errors": "errors", "latency": "latency"}
KEYS = "q quit  s sort  c sort by CPU (again: next)  </> CPUs  +/- interval  ? help"
KEYS_PANES = "q quit  Tab view  s sort  c sort by CPU (again: next)  </> CPUs  ? help"
_TAB = 9

# What ? shows: every key, and every mark the screen draws. Lines fit 80 columns.
HELP = (
    "percpu top: keys",
    "  q, Esc, Ctrl-C   quit",
    "  Tab, Shift-Tab   next, previous view: syscalls; processes (-P), errors (-e),",
    "                   latency (-L), disturbances (-I -V -S -T, -D); 1-5 that",
    "                   view, as numbered on the view line",
    "  s                next sort key: total, name, nr (syscall number; pid), cpu",
    "  c, C             sort by a CPU column: the first shown, then at each press",
    "                   the next (C: the one before); the sorted column is *marked",
    "  <, >, h, l       scroll the CPU columns (left and right arrows too)",
    "  up, down, j, k   scroll the rows; PgUp, PgDn a page; Home the first row",
    "  +, -             refresh interval x2, /2",
    "  p                pause: the screen holds, counting goes on",
    "  ?, F1            this help; any key returns",
    "",
    "What the screen shows",
    "  numbers          calls per second over the last interval (k 10^3, M 10^6)",
    "  .                no calls in the interval",
    "  colours          a cell's rate against the busiest cell shown, on a log scale",
    "  LOST n           calls a full -P, -e or -L table could not take",
    "  disturbances     a row per source (irq, vector, softirq, task, kthread,",
    "                   syscall, expected): per CPU runs, switch-ins or calls per",
    "                   second; TIME% its time's share of the CPUs' time",
    "  ... N more       rows past the window (scroll) or past -n",
    "  " + HISTOGRAM_LEGEND.splitlines()[0],
    HISTOGRAM_LEGEND.splitlines()[1],
)


class Disturbances(Protocol):
    """What the disturbance view needs of the run's disturbance session (cli/_disturbances.py)."""

    def snapshot(self) -> DisturbSnapshot: ...
    def view(self, d: DisturbDelta, syscalls: SyscallDelta | None = None) -> Disturbance: ...
    def run_caveats(self) -> list[Caveat]: ...


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a view: its text before the CPU cells, and what it is sorted by."""

    left: str
    total: float  # calls per second, all CPUs
    values: np.ndarray  # calls per second per column (CPU or group)
    name: str  # what "sort name" orders by
    nr: int  # what "sort nr" orders by


@dataclasses.dataclass(frozen=True)
class Table:
    """A view's rows: ``head`` names the left columns (``width`` wide), ``what`` a row ("syscalls"),
    ``cells`` whether per-CPU cells follow, ``footer`` lines under the rows (a legend)."""

    head: str
    width: int
    rows: list[Row]
    what: str
    cells: bool = True
    footer: tuple[str, ...] = ()


def _keyed_rows(
    d: SyscallDelta,
    keyed: tuple[np.ndarray, np.ndarray] | None,
    make: Callable[[Any, str], tuple[str, str, int]],
) -> list[Row]:
    """Rows from a keyed table (processes or errors), most calls first: ``make(key, rate)`` gives a
    row's text, its ``name`` and its ``nr``."""
    if keyed is None:
        return []
    keys, counts = keyed
    rates = counts / d.seconds if len(counts) else np.zeros((0, len(columns(d))))
    totals = rates.sum(axis=1)
    out = []
    for i in np.argsort(-totals, kind="stable"):
        left, name, nr = make(keys[i], human(float(totals[i])))
        out.append(Row(left, float(totals[i]), rates[i], name, nr))
    return out


# Each view's header of its left columns (their width is the header's).
HEADS = {
    "syscalls": f"{'SYSCALL':<{NAME_W}}{'CALLS/s':>{TOTAL_W}}",
    "processes": f"{'PID':>7} {'COMM':<15} {'SYSCALL':<16}{'CALLS/s':>{TOTAL_W}}",
    "errors": f"{'SYSCALL':<{NAME_W}}{'ERROR':<13}{'CALLS/s':>{TOTAL_W}}",
    "latency": f"{'SYSCALL':<{NAME_W}}{'CALLS/s':>{TOTAL_W}} {'P50<=':>7} {'P99<=':>7}  LOG2 HISTOGRAM (NS)",
    "disturbances": f"{'SOURCE':<26}{'KIND':<9}{'TIME%':>6}{'/s':>{TOTAL_W}}",
}


def syscall_table(d: SyscallDelta) -> Table:
    rates = d.counts / d.seconds
    rows = []
    for s in (int(x) for x in d.active_slots()):
        total = float(rates[:, s].sum())
        left = f"{d.name(s)[: NAME_W - 1]:<{NAME_W}}{human(total):>{TOTAL_W}}"
        rows.append(Row(left, total, rates[:, s], d.name(s), s))
    return Table(HEADS["syscalls"], NAME_W + TOTAL_W, rows, "syscalls")


def process_table(d: SyscallDelta) -> Table:
    def make(k: Any, rate: str) -> tuple[str, str, int]:
        comm = printable(_comm_bytes(k["comm"]))
        syscall = d.name(int(k["slot"]))[:15]
        pid = _pid(k)  # None: exited processes summed by name
        left = f"{'-' if pid is None else pid:>7} {comm[:15]:<15} {syscall:<16}{rate:>{TOTAL_W}}"
        return left, comm, -1 if pid is None else pid

    head = HEADS["processes"]
    return Table(head, len(head), _keyed_rows(d, d.procs, make), "(pid, syscall) pairs")


def error_table(d: SyscallDelta) -> Table:
    def make(k: Any, rate: str) -> tuple[str, str, int]:
        name = d.name(int(k["slot"]))
        error = errno_name(int(k["err"]))[:12]
        return f"{name[: NAME_W - 1]:<{NAME_W}}{error:<13}{rate:>{TOTAL_W}}", name, int(k["slot"])

    head = HEADS["errors"]
    return Table(head, len(head), _keyed_rows(d, d.errors, make), "(syscall, errno) pairs")


def latency_table(d: SyscallDelta) -> Table:
    by = latency_by_slot(d) if d.latency is not None else {}
    per_col: dict[int, np.ndarray] = {}
    if d.latency is not None:
        keys, counts = d.latency
        for k, row in zip(keys, counts, strict=True):
            per_col.setdefault(int(k["slot"]), np.zeros(len(row)))[:] += row / d.seconds
    rows = []
    for slot in sorted(by, key=lambda s: -int(by[s].sum())):
        rate = float(by[slot].sum()) / d.seconds
        p50, p99 = latency_quantiles(by[slot])
        lo, hi, bars = histogram(by[slot])
        name = d.name(slot)[: NAME_W - 1]
        left = f"{name:<{NAME_W}}{human(rate):>{TOTAL_W}} {_ns(p50):>7} {_ns(p99):>7}  2^{lo} [{bars}] 2^{hi}"
        rows.append(Row(left, rate, per_col[slot], d.name(slot), slot))
    legend = tuple(HISTOGRAM_LEGEND.splitlines())
    return Table(HEADS["latency"], NAME_W + TOTAL_W, rows, "syscalls", cells=False, footer=legend)


def disturb_table(v: Disturbance, notes: Sequence[Caveat] = ()) -> Table:
    """Who disturbed each column in the interval: a row per source (the expected workload's too, not the
    idle task), the most time first; cells are its runs, switch-ins or calls per second; TIME% is its time
    as a share of the columns' time ("-": not measured). The footer: the expected workload, why times must
    not be added, and the caveats (``notes``: the run's, then the interval's)."""
    wall = v.seconds * 1e9 * float(v.width().sum())
    rows = []
    for i in v.order([k for k in KINDS if k != "idle"]):
        src = v.sources[i]
        rate = v.counts[i] / v.seconds
        share = f"{100 * float(v.ns[i].sum()) / max(wall, 1.0):5.1f}%" if v.timed[i] else "-"
        name = printable(src.label().replace("(pid ", "(").encode())  # the pid kept in 25 columns
        total = float(rate.sum())
        left = f"{name[:25]:<26}{src.kind:<9}{share:>6}{human(total):>{TOTAL_W}}"
        nr = src.number if src.number is not None else src.pid if src.pid is not None else -1
        rows.append(Row(left, total, rate, name, nr))
    who = f"expected workload: {v.expected}" if v.expected else "no expected workload (-E): every task counts"
    busiest = max((float(v.ns[i].sum()), i) for i in range(len(v.sources))) if v.timed.any() else None
    if busiest is not None and busiest[0]:
        who += f"; most time: {printable(v.sources[busiest[1]].label().encode())} {fmt_ns(busiest[0])}"
    footer = (who, *(f"warning: {c.text}" for c in [*notes, *interval_caveats(v)]))
    return Table(HEADS["disturbances"], len(HEADS["disturbances"]), rows, "sources", footer=footer)


TABLES: dict[str, Callable[[SyscallDelta], Table]] = {
    "syscalls": syscall_table,
    "processes": process_table,
    "errors": error_table,
    "latency": latency_table,
}


def sort_rows(rows: Sequence[Row], sort: str, col: int) -> list[Row]:
    """``rows`` (most calls first) in ``sort`` order; ``cpu`` is column ``col``'s calls, most first."""
    if sort == "name":
        return sorted(rows, key=lambda r: r.name)
    if sort == "nr":
        return sorted(rows, key=lambda r: r.nr)
    if sort == "cpu":
        return sorted(rows, key=lambda r: -float(r.values[col]) if col < len(r.values) else 0.0)
    return list(rows)


class _View:
    def __init__(
        self,
        counter: SnapshotSource,
        interval: float,
        sort: str,
        top: int,
        view: View | None = None,
        disturb: Disturbances | None = None,
    ) -> None:
        self.counter = counter
        self.disturb = disturb  # -I -V -S -T: who disturbs each CPU, a view of its own
        self.view = view  # --cpus / --by: applied to every interval's counts
        self.interval = interval
        self.sort = sort
        self.sort_col = 0  # the column "sort cpu" orders by (a row of the delta's counts)
        self.top = top
        self.cpu_offset = 0
        self.row_offset = 0
        self.ncols = 0  # columns in the last frame drawn, for the keys that move along them
        self.fit = 1  # CPU columns the last frame had room for
        self.room = 1  # rows the last frame had room for
        self.panes = [p for p in PANES[:4] if p == "syscalls" or getattr(counter, _NEEDS[p], False)]
        self.panes += ["disturbances"] if disturb is not None else []
        self.notes = disturb.run_caveats() if disturb is not None else []  # what the run cannot count
        self.dview: Disturbance | None = None
        self.pane = "syscalls"
        self.help = False
        self.paused = False
        self.delta: SyscallDelta | None = None
        self.levels = 0

    def init_colors(self) -> None:
        if not curses.has_colors():
            return
        curses.start_color()
        try:
            curses.use_default_colors()
            bg = -1
        except curses.error:
            bg = curses.COLOR_BLACK
        palette = _HEAT_256 if curses.COLORS >= 256 else _HEAT_8
        for i, c in enumerate(palette):
            curses.init_pair(i + 1, c, bg)
        self.levels = len(palette)

    def heat(self, v: float, vmax: float) -> int:
        if not self.levels or v <= 0:
            return 0
        lvl = min(self.levels - 1, int(heat_level(v, vmax) * (self.levels - 1) + 0.5))
        return curses.color_pair(lvl + 1) | (curses.A_BOLD if lvl >= self.levels - 2 else 0)

    def labels(self) -> list[str]:
        if self.pane == "disturbances" and self.dview is not None:
            return list(self.dview.labels)
        return columns(self.delta) if self.delta is not None else [f"cpu{x}" for x in self.counter.cpus]

    def table(self) -> Table | None:
        if self.pane == "disturbances":
            return None if self.dview is None else disturb_table(self.dview, self.notes)
        return None if self.delta is None else TABLES[self.pane](self.delta)

    def draw(self, scr: Any) -> None:
        scr.erase()
        rows, cols = scr.getmaxyx()
        if rows < MIN_ROWS or cols < MIN_COLS:
            msg = f"window {cols}x{rows} too small: top needs {MIN_COLS}x{MIN_ROWS} (q quits)"
            for y in range(min(rows, 3)):
                self.put(scr, y, 0, msg[y * (cols - 1) : (y + 1) * (cols - 1)])
        elif self.help:
            for y, line in enumerate(HELP[: rows - 1]):
                self.put(scr, y, 0, line, curses.A_BOLD if line and not line.startswith(" ") else 0)
        else:
            self.draw_view(scr, rows, cols)
        scr.refresh()

    def draw_view(self, scr: Any, rows: int, cols: int) -> None:
        labels = self.labels()
        table = self.table()
        head = HEADS[self.pane]
        cells = self.pane != "latency"  # the latency view has p50, p99 and a histogram instead
        width = len(head) if cells else NAME_W + TOTAL_W
        self.ncols = len(labels)
        self.fit = max(1, (cols - width - 1) // CELL_W)
        self.cpu_offset = max(0, min(self.cpu_offset, self.ncols - self.fit))
        shown = range(self.cpu_offset, min(self.ncols, self.cpu_offset + self.fit)) if cells else range(0)
        self.draw_title(scr, labels, shown)
        keys = KEYS_PANES if len(self.panes) > 1 else KEYS
        self.put(scr, rows - 1, 0, keys, curses.A_DIM)
        self.put(scr, 3, 0, head + "".join(self.col_head(labels[i], i) for i in shown), curses.A_REVERSE)
        if table is None:
            self.put(scr, 4, 0, "collecting...")
            return
        footer = table.footer if rows - 9 - len(table.footer) >= 1 else ()
        all_row = 1 if self.pane == "syscalls" else 0
        self.room = max(0, rows - 4 - 2 - all_row - len(footer))
        y = self.draw_rows(scr, table, shown, self.room)
        if self.pane == "syscalls":
            self.draw_all_cpus(scr, y, shown)
        for i, line in enumerate(footer):
            self.put(scr, rows - 1 - len(footer) + i, 0, line, curses.A_DIM)

    def col_head(self, label: str, i: int) -> str:
        """A CPU column's header; the one ``sort cpu`` orders by is marked (``*cpu1``)."""
        mark = "*" if self.sort == "cpu" and i == self.sort_col else ""
        return f"{(mark + label)[: CELL_W - 1]:>{CELL_W}}"

    def draw_title(self, scr: Any, labels: list[str], shown: range) -> None:
        """Lines 0-2: what is counted, the sort and what the columns are, the views."""
        c, d = self.counter, self.delta
        rate = 0.0 if d is None else float(d.per_syscall().sum()) / d.seconds
        title = f"percpu top  {c.attach_mode}  {human(rate)} calls/s  every {self.interval:g}s"
        self.put(scr, 0, 0, title + ("  PAUSED" if self.paused else ""), curses.A_BOLD)
        sort = labels[self.sort_col] if self.sort == "cpu" and self.sort_col < len(labels) else self.sort
        # What the columns mean comes first: on a narrow terminal the line is cut from the right.
        line2 = f"sort {sort}  imbalance {0.0 if d is None else d.imbalance():.2f}"
        lost = 0 if d is None else sum(d.lost)
        if lost:  # before the CPU range: a narrow terminal must still show it
            line2 += f"  LOST {human(lost)} (tables full)"
        if shown and len(shown) < len(labels):
            line2 += f"  cols {labels[shown[0]]}-{labels[shown[-1]]} of {len(labels)}"
        if d is not None and (d.selected is not None or d.groups is not None):
            shown_sel = d.selected and d.selected != str(d.cpus)
            line2 += f"  CPUs {d.cpus}" + (f" ({d.selected})" if shown_sel else "")
            line2 += f" by {d.groups.by}" if d.groups is not None else ""
        elif d is not None and d.not_shown:
            line2 += f"  CPUs {d.cpus} of {len(c.cpus)} possible; {not_shown_line(d)}"
        else:
            line2 += f"  CPUs {c.cpus} ({len(c.cpus)} possible, {_online_count()} online)"
        self.put(scr, 1, 0, line2)
        if len(self.panes) > 1:
            x = self.put(scr, 2, 0, "view (Tab):")
            for n, pane in enumerate(self.panes, 1):
                text = f"[{n} {pane}]" if pane == self.pane else f"{n} {pane}"
                x = self.put(scr, 2, x + 2, text, curses.A_REVERSE if pane == self.pane else 0)

    def draw_rows(self, scr: Any, table: Table, shown: range, room: int) -> int:
        """The table's rows from :attr:`row_offset`, at most ``room``, then what is left out; returns the
        next free line."""
        every = sort_rows(table.rows, self.sort, self.sort_col)
        rows = every[: self.top] if self.top else every
        self.row_offset = max(0, min(self.row_offset, len(rows) - room))
        visible = rows[self.row_offset : self.row_offset + room]
        vmax = max((float(r.values[i]) for r in rows for i in shown), default=0.0)
        y = 4
        for row in visible:
            self.put(scr, y, 0, row.left)
            for j, i in enumerate(shown):
                v = float(row.values[i])
                x = table.width + j * CELL_W
                self.put(scr, y, x, f"{human(v) if v else '.':>{CELL_W}}", self.heat(v, vmax))
            y += 1
        if not table.rows:
            self.put(scr, y, 0, f"(no {table.what} in the interval)", curses.A_DIM)
            return y + 1
        above, below = self.row_offset, len(rows) - self.row_offset - len(visible)
        past = len(every) - len(rows)
        if above or below or past:
            text = f"... {above + below + past} more {table.what}"
            if above or below:
                text += f" ({above} above, {below} below: up/down, PgUp/PgDn)"
            elif past:
                text += f" (-n {self.top})"
            self.put(scr, y, 0, text, curses.A_DIM)
            y += 1
        return y

    def draw_all_cpus(self, scr: Any, y: int, shown: range) -> None:
        d = self.delta
        assert d is not None
        per_cpu = d.per_cpu() / d.seconds
        cmax = float(per_cpu.max()) if per_cpu.size else 0.0
        self.put(scr, y, 0, f"{'all CPUs':<{NAME_W}}{human(float(per_cpu.sum())):>{TOTAL_W}}", curses.A_BOLD)
        for j, i in enumerate(shown):
            v = float(per_cpu[i])
            attr = self.heat(v, cmax) | curses.A_BOLD
            self.put(scr, y, NAME_W + TOTAL_W + j * CELL_W, f"{human(v):>{CELL_W}}", attr)

    @staticmethod
    def put(scr: Any, y: int, x: int, text: str, attr: int = 0) -> int:
        """Draw ``text`` at (y, x), cut at the window's edge; returns the column after it."""
        rows, cols = scr.getmaxyx()
        if 0 <= y < rows and x < cols - 1:
            # Writing the bottom-right cell raises after the text is drawn.
            with contextlib.suppress(curses.error):
                scr.addstr(y, x, text[: cols - 1 - x], attr)
        return x + len(text)

    def key(self, ch: int) -> bool:
        """Handle a key; False means quit."""
        if ch == curses.KEY_RESIZE:
            return True  # redrawn by the caller
        if self.help:  # any key leaves the help
            self.help = False
            return ch not in (ord("q"), ord("Q"))
        if ch in (ord("q"), ord("Q"), 27):
            return False
        if ch in (ord("?"), curses.KEY_F1):
            self.help = True
        elif ch in (_TAB, curses.KEY_BTAB) or ord("1") <= ch <= ord("9"):
            self.switch(ch)
        elif ch == ord("s"):
            self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        elif ch in (ord("c"), ord("C")):
            self.sort_by_cpu(1 if ch == ord("c") else -1)
        elif not self.scroll(ch):
            self.other_key(ch)
        return True

    def switch(self, ch: int) -> None:
        i = self.panes.index(self.pane)
        if ch == _TAB:
            i += 1
        elif ch == curses.KEY_BTAB:
            i -= 1
        elif ch - ord("1") < len(self.panes):
            i = ch - ord("1")
        self.pane = self.panes[i % len(self.panes)]
        self.row_offset = 0

    def sort_by_cpu(self, step: int) -> None:
        """``c``: sort by the first CPU column shown; pressed again, by the next one (``C``: the one
        before), scrolling the columns to keep it in view."""
        if self.sort != "cpu":
            self.sort, self.sort_col = "cpu", self.cpu_offset
        elif self.ncols:
            self.sort_col = (self.sort_col + step) % self.ncols
        if self.sort_col < self.cpu_offset:
            self.cpu_offset = self.sort_col
        elif self.sort_col >= self.cpu_offset + self.fit:
            self.cpu_offset = self.sort_col - self.fit + 1

    def scroll(self, ch: int) -> bool:
        moves = {
            curses.KEY_DOWN: 1,
            ord("j"): 1,
            curses.KEY_UP: -1,
            ord("k"): -1,
            curses.KEY_NPAGE: max(1, self.room),
            curses.KEY_PPAGE: -max(1, self.room),
            curses.KEY_HOME: -(1 << 30),
        }
        if ch in moves:
            self.row_offset = max(0, self.row_offset + moves[ch])
            return True
        if ch in (curses.KEY_RIGHT, ord(">"), ord("l")):
            self.cpu_offset += 1
        elif ch in (curses.KEY_LEFT, ord("<"), ord("h")):
            self.cpu_offset = max(0, self.cpu_offset - 1)
        else:
            return False
        return True

    def other_key(self, ch: int) -> None:
        if ch == ord("+"):
            self.interval = min(60.0, self.interval * 2)
        elif ch == ord("-"):
            self.interval = max(0.1, self.interval / 2)
        elif ch == ord("p"):
            self.paused = not self.paused

    def loop(self, scr: Any) -> None:
        with contextlib.suppress(curses.error):  # a terminal that cannot hide the cursor shows it
            curses.curs_set(0)
        self.init_colors()
        scr.timeout(100)
        last = self.counter.snapshot()
        if self.view is not None:
            self.view.remember(last.online)  # a CPU online at the start keeps its column
        dlast = self.disturb.snapshot() if self.disturb is not None else None
        due = time.monotonic() + self.interval
        self.draw(scr)
        while True:
            ch = scr.getch()
            if ch != -1:
                if not self.key(ch):
                    return
                self.draw(scr)
            if time.monotonic() >= due:
                snap = self.counter.snapshot()
                dsnap = self.disturb.snapshot() if self.disturb is not None else None
                if not self.paused:
                    d = snap.delta(last)
                    self.delta = self.view(d) if self.view is not None else d
                    if self.disturb is not None and dsnap is not None and dlast is not None:
                        self.dview = self.disturb.view(dsnap.delta(dlast), d)
                last, dlast = snap, dsnap
                due = time.monotonic() + self.interval
                self.draw(scr)


def _online_count() -> int:
    from ..cpus import cpu_lists

    try:
        return len(cpu_lists().online)
    except Exception:  # a header detail must not end the view
        return 0


def terminal_problem() -> str | None:
    """Why the full-screen view cannot run on this terminal, or None when it can.

    Asked before curses starts: curses.initscr() exits the process on an unknown TERM, and a terminal
    that cannot address the cursor (TERM=dumb) would draw the screen as a stream of garbage."""
    if not (sys.stdout.isatty() and sys.stdin.isatty()):
        return "standard input or output is not a terminal"
    term = os.environ.get("TERM", "")
    if not term:
        return "TERM is not set, so the terminal's capabilities are unknown"
    try:
        curses.setupterm(term, sys.stdout.fileno())
    except curses.error:
        return f"TERM={term} is not a terminal type this system knows (no terminfo entry)"
    if not curses.tigetstr("cup") or not curses.tigetstr("clear"):
        return f"the terminal (TERM={term}) cannot move the cursor or clear the screen"
    return None


def run(
    counter: SnapshotSource,
    *,
    interval: float,
    sort: str,
    top: int,
    view: View | None = None,
    disturb: Disturbances | None = None,
) -> int:
    v = _View(counter, interval, sort, top, view, disturb)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            curses.wrapper(v.loop)
    except curses.error as exc:
        # curses.wrapper has restored the terminal by now.
        raise PercpuError(f"the terminal cannot show the full-screen view ({exc}): use top --batch") from exc
    return 0
