"""The full-screen view behind ``percpu top`` (curses)."""

from __future__ import annotations

import contextlib
import curses
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from ..errors import PercpuError
from ..syscount._data import SnapshotSource, SyscallDelta
from ._report import SORTS, columns, heat_level, human, order_slots

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


class _View:
    def __init__(
        self,
        counter: SnapshotSource,
        interval: float,
        sort: str,
        top: int,
        view: Callable[[SyscallDelta], SyscallDelta] | None = None,
    ) -> None:
        self.counter = counter
        self.view = view  # --cpus / --by: applied to every interval's counts
        self.interval = interval
        self.sort = sort
        self.top = top
        self.cpu_offset = 0
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

    def order(self, d: SyscallDelta, first_cpu: int) -> list[int]:
        return order_slots(d, self.sort, first_cpu)

    def draw(self, scr: Any) -> None:
        scr.erase()
        rows, cols = scr.getmaxyx()
        if rows < MIN_ROWS or cols < MIN_COLS:
            msg = f"window {cols}x{rows} too small: top needs {MIN_COLS}x{MIN_ROWS} (q quits)"
            for y in range(min(rows, 3)):
                self.put(scr, y, 0, msg[y * (cols - 1) : (y + 1) * (cols - 1)])
            scr.refresh()
            return
        c = self.counter
        d = self.delta
        labels = columns(d) if d is not None else [f"cpu{x}" for x in c.cpus]
        ncpu = len(labels)
        fit = max(1, (cols - NAME_W - TOTAL_W - 1) // CELL_W)
        self.cpu_offset = max(0, min(self.cpu_offset, ncpu - fit))
        shown = range(self.cpu_offset, min(ncpu, self.cpu_offset + fit))
        rate = 0.0 if d is None else float(d.per_syscall().sum()) / d.seconds
        title = f"percpu top  {c.attach_mode}  {human(rate)} calls/s  every {self.interval:g}s"
        if self.paused:
            title += "  PAUSED"
        self.put(scr, 0, 0, title[: cols - 1], curses.A_BOLD)
        imb = 0.0 if d is None else d.imbalance()
        online = _online_count()
        # What the columns mean comes first: on a narrow terminal the line is cut from the right.
        line2 = f"sort {self.sort}  imbalance {imb:.2f}"
        lost = 0 if d is None else sum(d.lost)
        if lost:  # before the CPU range: a narrow terminal must still show it
            line2 += f"  LOST {human(lost)} (tables full)"
        if len(shown) < ncpu:
            line2 += f"  cols {labels[shown[0]]}-{labels[shown[-1]]} of {ncpu}"
        if d is not None and (d.selected is not None or d.groups is not None):
            shown_sel = d.selected and d.selected != str(d.cpus)
            line2 += f"  CPUs {d.cpus}" + (f" ({d.selected})" if shown_sel else "")
            line2 += f" by {d.groups.by}" if d.groups is not None else ""
        else:
            line2 += f"  CPUs {c.cpus} ({len(c.cpus)} possible, {online} online)"
        self.put(scr, 1, 0, line2[: cols - 1])
        keys = "q quit  s sort  c sort by CPU  </> CPUs  +/- interval  p pause"
        self.put(scr, rows - 1, 0, keys[: cols - 1], curses.A_DIM)
        head = f"{'SYSCALL':<{NAME_W}}{'CALLS/s':>{TOTAL_W}}" + "".join(
            f"{labels[i][: CELL_W - 1]:>{CELL_W}}" for i in shown
        )
        self.put(scr, 3, 0, head[: cols - 1], curses.A_REVERSE)
        if d is None:
            self.put(scr, 4, 0, "collecting...")
            scr.refresh()
            return
        slots = self.order(d, shown[0])
        room = max(0, rows - 4 - 3)
        if self.top:
            room = min(room, self.top)
        rates = d.counts / d.seconds
        vmax = float(rates[list(shown)][:, slots].max()) if slots else 0.0
        for r, slot in enumerate(slots[:room]):
            y = 4 + r
            total = float(rates[:, slot].sum())
            self.put(scr, y, 0, f"{d.name(slot)[: NAME_W - 1]:<{NAME_W}}{human(total):>{TOTAL_W}}")
            for j, i in enumerate(shown):
                v = float(rates[i, slot])
                self.put(
                    scr,
                    y,
                    NAME_W + TOTAL_W + j * CELL_W,
                    f"{human(v) if v else '.':>{CELL_W}}",
                    self.heat(v, vmax),
                )
        y = 4 + min(room, len(slots))
        if len(slots) > room:
            self.put(scr, y, 0, f"... {len(slots) - room} more", curses.A_DIM)
            y += 1
        per_cpu = d.per_cpu() / d.seconds
        cmax = float(per_cpu.max()) if per_cpu.size else 0.0
        self.put(scr, y, 0, f"{'all CPUs':<{NAME_W}}{human(float(per_cpu.sum())):>{TOTAL_W}}", curses.A_BOLD)
        for j, i in enumerate(shown):
            self.put(
                scr,
                y,
                NAME_W + TOTAL_W + j * CELL_W,
                f"{human(float(per_cpu[i])):>{CELL_W}}",
                self.heat(float(per_cpu[i]), cmax) | curses.A_BOLD,
            )
        scr.refresh()

    @staticmethod
    def put(scr: Any, y: int, x: int, text: str, attr: int = 0) -> None:
        rows, cols = scr.getmaxyx()
        if 0 <= y < rows and x < cols - 1:
            # Writing the bottom-right cell raises after the text is drawn.
            with contextlib.suppress(curses.error):
                scr.addstr(y, x, text[: cols - 1 - x], attr)

    def key(self, ch: int) -> bool:
        """Handle a key; False means quit."""
        if ch in (ord("q"), ord("Q"), 27):
            return False
        if ch == ord("s"):
            self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        elif ch == ord("c"):
            self.sort = "cpu"
        elif ch in (curses.KEY_RIGHT, ord(">"), ord("l")):
            self.cpu_offset += 1
        elif ch in (curses.KEY_LEFT, ord("<"), ord("h")):
            self.cpu_offset = max(0, self.cpu_offset - 1)
        elif ch == ord("+"):
            self.interval = min(60.0, self.interval * 2)
        elif ch == ord("-"):
            self.interval = max(0.1, self.interval / 2)
        elif ch == ord("p"):
            self.paused = not self.paused
        return True

    def loop(self, scr: Any) -> None:
        with contextlib.suppress(curses.error):  # a terminal that cannot hide the cursor shows it
            curses.curs_set(0)
        self.init_colors()
        scr.timeout(100)
        last = self.counter.snapshot()
        due = time.monotonic() + self.interval
        self.draw(scr)
        while True:
            ch = scr.getch()
            if ch != -1:
                if not self.key(ch):
                    return
                self.draw(scr)
            if ch == curses.KEY_RESIZE:
                self.draw(scr)
            if time.monotonic() >= due:
                snap = self.counter.snapshot()
                if not self.paused:
                    d = snap.delta(last)
                    self.delta = self.view(d) if self.view is not None else d
                last = snap
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
    view: Callable[[SyscallDelta], SyscallDelta] | None = None,
) -> int:
    v = _View(counter, interval, sort, top, view)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            curses.wrapper(v.loop)
    except curses.error as exc:
        # curses.wrapper has restored the terminal by now.
        raise PercpuError(f"the terminal cannot show the full-screen view ({exc}): use top --batch") from exc
    return 0
