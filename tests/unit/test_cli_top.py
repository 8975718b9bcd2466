"""``percpu top``: the screen drawn into a fake curses window (cli/_top.py) must fit the terminal it is
given (80 columns with 64 CPUs), keep its header and key line whole, honour ``-n`` and each sort key; the
batch mode (cli/top.py) prints one table of rates per interval."""

from __future__ import annotations

import argparse
import curses
import dataclasses
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from percpu.cli import _top, top
from percpu.cpus import CpuList
from percpu.disturb._who import Caveat, Disturbance, who_disturbs
from percpu.syscount import ERR_KEY, LAT_KEY, NR_SLOTS, PROC_KEY, Lost, SyscallDelta, SyscallSnapshot

from .test_disturb_who import delta as disturb_delta
from .test_disturb_who import syscalls as disturb_syscalls

CPUS = CpuList(range(64))
KEYS = "q quit  s sort  c sort by CPU (again: next)  </> CPUs  +/- interval  ? help"


class FakeScreen:
    def __init__(self, rows: int, cols: int) -> None:
        self.rows, self.cols = rows, cols
        self.cells: dict[int, list[str]] = {}

    def getmaxyx(self) -> tuple[int, int]:
        return self.rows, self.cols

    def erase(self) -> None:
        self.cells = {}

    def refresh(self) -> None:
        pass

    def addstr(self, y: int, x: int, text: str, attr: int = 0) -> None:
        assert 0 <= y < self.rows
        assert x + len(text) <= self.cols, f"row {y} drawn to column {x + len(text)} of {self.cols}: {text!r}"
        line = self.cells.setdefault(y, [" "] * self.cols)
        line[x : x + len(text)] = list(text)

    def lines(self) -> list[str]:
        return ["".join(self.cells.get(y, [])).rstrip() for y in range(self.rows)]


class FakeCounter:
    attach_mode = "tp_btf"
    cpus = CPUS


def delta(pairs: dict[tuple[int, int], int], **keyed: Any) -> SyscallDelta:
    def snap(t: float, p: dict[tuple[int, int], int], **kw: Any) -> SyscallSnapshot:
        counts = np.zeros((len(CPUS), NR_SLOTS), dtype=np.uint64)
        for (row, slot), v in p.items():
            counts[row, slot] = v
        return SyscallSnapshot(time=t, cpus=CPUS, counts=counts, arch="x86_64", **kw)

    return snap(1.0, pairs, **keyed).since_start()


# read(0) busiest overall, write(1) busiest on cpu0; sched_get_priority_max(146): a name cut to fit.
BUSY = {(0, 1): 900_000, (5, 0): 2_000_000, (63, 0): 1_000, (3, 110): 500_000, (0, 146): 12_345}


def draw(cols: int, rows: int = 24, **kw: Any) -> list[str]:
    view = _top._View(FakeCounter(), 1.0, kw.pop("sort", "total"), kw.pop("top", 0))  # type: ignore[arg-type]
    view.delta = delta(BUSY)
    scr = FakeScreen(rows, cols)
    view.draw(scr)
    return scr.lines()


def body(lines: list[str]) -> list[str]:
    i = next(i for i, ln in enumerate(lines) if ln.startswith("SYSCALL"))
    j = next(j for j, ln in enumerate(lines) if ln.startswith(("all CPUs", "...")))
    return [ln.split()[0] for ln in lines[i + 1 : j]]


@pytest.mark.parametrize("cols", [80, 60])
def test_fits_the_terminal_with_64_cpus(cols: int) -> None:
    lines = draw(cols)
    assert max(len(ln) for ln in lines) <= cols - 1
    assert lines[-1] == KEYS[: cols - 1].rstrip()  # whole where it fits, cut at the edge (60 columns)
    head = next(ln for ln in lines if ln.startswith("SYSCALL"))
    assert head.split()[:2] == ["SYSCALL", "CALLS/s"] and head.split()[2] == "cpu0"
    shown = (cols - _top.NAME_W - _top.TOTAL_W - 1) // _top.CELL_W
    assert head.split()[-1] == f"cpu{shown - 1}"  # whole columns only, none cut in half
    assert f"cols cpu0-cpu{shown - 1} of 64" in lines[1]


def test_wider_terminal_shows_more_cpus() -> None:
    assert "cpu20" not in draw(80)[3] and "cpu20" in draw(200)[3]


def test_top_n_limits_rows() -> None:
    lines = draw(80, top=2)
    assert body(lines) == ["read", "write"]
    assert any(ln.startswith("... 2 more") for ln in lines)


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        ("total", ["read", "write", "getppid", "sched_get_priorit"]),
        ("name", ["getppid", "read", "sched_get_priorit", "write"]),
        ("nr", ["read", "write", "getppid", "sched_get_priorit"]),
        ("cpu", ["write", "sched_get_priorit", "read", "getppid"]),
    ],
)
def test_sort_keys(sort: str, order: list[str]) -> None:
    assert body(draw(80, sort=sort)) == order


def test_grouped_view_shows_group_columns(tmp_path: Any) -> None:
    """``top --by package --cpus 0-7``: the columns are the groups of the selected CPUs."""
    from percpu.topo import CpuGroups, CpuTopology
    from percpu.views import view as make_view

    class TwoPackages(CpuTopology):
        def groups(self, by: str, cpus: Any = None) -> CpuGroups:
            sel = list(cpus)
            index = np.array([0 if c < 4 else 1 for c in sel], dtype=np.intp)
            members = (CpuList(c for c in sel if c < 4), CpuList(c for c in sel if c >= 4))
            return CpuGroups(by, ("pkg0", "pkg1"), members, index)

    lay = TwoPackages(())
    v = _top._View(FakeCounter(), 1.0, "total", 0)  # type: ignore[arg-type]
    v.delta = make_view(delta(BUSY), lay, by="package", cpus=CpuList(range(8)), selected="0-7")
    scr = FakeScreen(24, 100)
    v.draw(scr)
    lines = scr.lines()
    head = next(ln for ln in lines if ln.startswith("SYSCALL"))
    assert head.split()[-2:] == ["pkg0", "pkg1"]
    assert "CPUs 0-7 by package" in lines[1]
    read = next(ln for ln in lines if ln.startswith("read "))
    assert read.split()[-2:] == [".", "2.0M"], "cpu5's 2M reads are in pkg1"


@pytest.mark.parametrize(("rows", "cols"), [(3, 12), (1, 80), (7, 80), (24, 35), (2, 2)])
def test_a_window_too_small_says_so(rows: int, cols: int) -> None:
    scr = FakeScreen(rows, cols)  # asserts that nothing is drawn outside the window
    view = _top._View(FakeCounter(), 1.0, "total", 0)  # type: ignore[arg-type]
    view.delta = delta(BUSY)
    view.draw(scr)
    text = "".join(scr.lines())
    if cols > 12:
        assert f"window {cols}x{rows} too small" in text, scr.lines()
    assert "SYSCALL" not in text


def test_the_smallest_window_shows_the_view() -> None:
    scr = FakeScreen(_top.MIN_ROWS, _top.MIN_COLS)
    view = _top._View(FakeCounter(), 1.0, "total", 0)  # type: ignore[arg-type]
    view.delta = delta(BUSY)
    view.draw(scr)
    lines = scr.lines()
    assert lines[3].startswith("SYSCALL") and lines[4].startswith("read"), lines


def test_lost_calls_show_in_the_header() -> None:
    scr = FakeScreen(24, 80)
    view = _top._View(FakeCounter(), 1.0, "total", 0)  # type: ignore[arg-type]
    view.delta = delta(BUSY)
    view.draw(scr)
    assert "LOST" not in "\n".join(scr.lines())
    view.delta = dataclasses.replace(view.delta, lost=Lost(errors=1500))
    view.draw(scr)
    assert "LOST 1.5k (tables full)" in scr.lines()[1]


class GrowingCounter:
    """A counter whose every snapshot is 2 s after the last, with 1,000 more reads on CPU 2 and 10 more
    getppid calls on CPU 0."""

    attach_mode = "tp_btf"
    cpus = CpuList([0, 2])

    def __init__(self) -> None:
        self.snapshots = 0
        self.open = False

    def __enter__(self) -> GrowingCounter:
        self.open = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.open = False

    def snapshot(self) -> SyscallSnapshot:
        counts = np.zeros((2, NR_SLOTS), np.uint64)
        counts[1, 0], counts[0, 110] = 1000 * self.snapshots, 10 * self.snapshots
        self.snapshots += 1
        return SyscallSnapshot(time=2.0 * self.snapshots, cpus=self.cpus, counts=counts, arch="x86_64")  # type: ignore[call-arg]


def test_batch_prints_a_table_of_rates_per_interval(capsys: pytest.CaptureFixture[str]) -> None:
    counter = GrowingCounter()
    args = argparse.Namespace(interval=0.01, count=3, top=0, sort="total")
    assert top._top_batch(args, counter) == 0  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert counter.snapshots == 4 and not counter.open  # one before the first interval; closed at the end
    assert out.count("1,010 system calls in 2.00 s (505/s)") == 3
    rows = [ln.split() for ln in out.splitlines() if ln.startswith(("read", "getppid"))]
    assert rows == [["read", "500", "99.0", "0", "500"], ["getppid", "5", "1.0", "5", "0"]] * 3


class CountingEverything(FakeCounter):
    """A counter started with -P -e -L."""

    per_process = errors = latency = True


def every_table() -> SyscallDelta:
    """BUSY, plus 30 processes (pid 1000 + i making 100 * (30 - i) reads on cpu i), 2 errnos and read's
    latency."""
    pk = np.zeros(30, dtype=PROC_KEY)
    pk["tgid"], pk["slot"], pk["comm"] = np.arange(1000, 1030), 0, b"reader"
    pc = np.zeros((30, len(CPUS)), np.uint64)
    pc[np.arange(30), np.arange(30)] = np.arange(30, 0, -1) * 100
    ek = np.zeros(2, dtype=ERR_KEY)
    ek["slot"], ek["err"] = [0, 257], [9, 2]
    ec = np.zeros((2, len(CPUS)), np.uint64)
    ec[0, 5], ec[1, 3] = 700, 40
    lk = np.zeros(2, dtype=LAT_KEY)
    lk["slot"], lk["bucket"] = 0, [8, 10]
    lc = np.zeros((2, len(CPUS)), np.uint64)
    lc[0, 5], lc[1, 5] = 900, 100
    return delta(BUSY, procs=(pk, pc), errors=(ek, ec), latency=(lk, lc))


def view_of_everything(rows: int = 24, cols: int = 100) -> tuple[_top._View, FakeScreen]:
    v = _top._View(CountingEverything(), 1.0, "total", 0)  # type: ignore[arg-type]
    v.delta = every_table()
    scr = FakeScreen(rows, cols)
    v.draw(scr)
    return v, scr


def press(v: _top._View, scr: FakeScreen, *keys: int | str) -> list[str]:
    """The screen after ``keys``, each followed by a redraw (as the loop does)."""
    for k in keys:
        assert v.key(ord(k) if isinstance(k, str) else k)
        v.draw(scr)
    v.draw(scr)
    return scr.lines()


def test_the_process_errno_and_latency_tables_have_views_of_their_own() -> None:
    """`top -P -e -L` showed only the syscall x CPU table; the others were in -b alone."""
    v, scr = view_of_everything()
    lines = press(v, scr)
    assert lines[2] == "view (Tab):  [1 syscalls]  2 processes  3 errors  4 latency"
    assert lines[-1] == _top.KEYS_PANES and "Tab view" in lines[-1]
    lines = press(v, scr, _top._TAB)
    assert "[2 processes]" in lines[2]
    assert lines[3].split()[:4] == ["PID", "COMM", "SYSCALL", "CALLS/s"] and lines[3].split()[4] == "cpu0"
    assert lines[4].split()[:5] == ["1000", "reader", "read", "3.0k", "3.0k"]
    assert lines[-2].startswith("... 12 more (pid, syscall) pairs (0 above, 12 below")
    lines = press(v, scr, "3")
    assert [ln.split()[:3] for ln in lines[4:6]] == [["read", "EBADF", "700"], ["openat", "ENOENT", "40"]]
    lines = press(v, scr, _top._TAB)
    assert "[4 latency]" in lines[2]
    assert lines[4].split()[:4] == ["read", "1.0k", "512ns", "2.0us"] and lines[4].endswith("2^8 [@ .] 2^11")
    assert lines[-3].startswith("histogram: a column per log2 ns bucket") and "@ <=9/9" in lines[-2]
    assert "[1 syscalls]" in press(v, scr, _top._TAB)[2]  # round again
    assert "[4 latency]" in press(v, scr, curses.KEY_BTAB)[2]


def test_a_view_of_an_empty_table_says_so() -> None:
    v, scr = view_of_everything()
    v.delta = delta(BUSY, errors=(np.zeros(0, dtype=ERR_KEY), np.zeros((0, len(CPUS)), np.uint64)))
    assert "(no (syscall, errno) pairs in the interval)" in press(v, scr, "3")


def test_rows_past_the_window_scroll() -> None:
    v, scr = view_of_everything(rows=12)
    lines = press(v, scr, "2")
    assert [ln.split()[0] for ln in lines[4:9]] == ["1000", "1001", "1002", "1003", "1004"]
    lines = press(v, scr, curses.KEY_DOWN, "j", curses.KEY_NPAGE)  # 1, 1, and a page of 6 rows
    assert lines[4].split()[0] == "1008"
    assert "... 24 more (pid, syscall) pairs (8 above, 16 below" in lines[10]
    lines = press(v, scr, *[curses.KEY_NPAGE] * 5)
    assert lines[9].split()[0] == "1029" and "(24 above, 0 below" in lines[10]  # stops at the last row
    assert press(v, scr, curses.KEY_HOME)[4].split()[0] == "1000"


def test_c_sorts_by_each_cpu_in_turn() -> None:
    """`c` sorted by the first CPU shown, always: with every CPU on screen, none sorted by cpu1."""
    v, scr = view_of_everything(cols=80)  # 6 CPU columns of 64 fit
    lines = press(v, scr, "c")
    assert "sort cpu0 " in lines[1] and lines[3].split()[2] == "*cpu0"
    assert body(lines)[0] == "write"  # cpu0's busiest
    lines = press(v, scr, "c", "c", "c")
    assert "sort cpu3 " in lines[1] and body(lines)[0] == "getppid"  # cpu3's only syscall
    lines = press(v, scr, "c", "c")
    assert "sort cpu5" in lines[1] and body(lines)[0] == "read"
    lines = press(v, scr, "c")  # cpu6 is past the right edge: the columns follow it
    assert "*cpu6" in lines[3] and lines[3].split()[2] == "cpu1" and "cols cpu1-cpu6 of 64" in lines[1]
    lines = press(v, scr, "C", "C", "C", "C", "C", "C", "C")
    assert "sort cpu63 " in lines[1] and lines[3].split()[-1] == "*cpu63" and body(lines)[0] == "read"
    lines = press(v, scr, "2", "c")  # the process view sorts by the column too: pid 1001 is cpu0's... none
    assert "sort cpu0 " in lines[1] and lines[4].split()[0] == "1000"


def test_help_explains_every_key_and_mark() -> None:
    v, scr = view_of_everything(rows=40)
    lines = press(v, scr, "?")
    text = "\n".join(lines)
    for what in ("Tab, Shift-Tab", "c, C", "PgUp, PgDn", "no calls in the interval", "LOST n", "@ <=9/9"):
        assert what in text, what
    assert max(len(line) for line in _top.HELP) < 80
    assert "SYSCALL" not in text
    assert press(v, scr, "x")[3].startswith("SYSCALL"), "any key returns to the view"


def test_draw_fits_in_the_house_limit() -> None:
    """Functions under 80 lines: draw was 82."""
    import inspect

    for name, fn in inspect.getmembers(_top._View, inspect.isfunction):
        assert len(inspect.getsource(fn).splitlines()) < 80, name


class StubDisturbances:
    """A disturbance session whose every interval is test_disturb_who's synthetic view (CPUs 0-3)."""

    def __init__(self) -> None:
        self.views = 0

    def run_caveats(self) -> list[Caveat]:
        return [Caveat("disturb.unsupported.tlb_shootdown", "TLB shootdowns not counted here: no hook")]

    def view(self, dd: object, d: object = None) -> Disturbance:
        self.views += 1
        return who_disturbs(disturb_delta(), syscalls=disturb_syscalls(), expected="pid 100")


def test_the_disturbance_view_has_a_row_per_source_its_rates_per_cpu_and_the_caveats() -> None:
    """`top -D` counted disturbances and showed them nowhere: they are a view of their own (Tab, or 5 with
    every table), a row per source with its rate per CPU, its time's share, and the caveats below."""
    stub = StubDisturbances()
    v = _top._View(CountingEverything(), 1.0, "total", 0, disturb=stub)  # type: ignore[arg-type]
    assert v.panes == ["syscalls", "processes", "errors", "latency", "disturbances"]
    v.delta = every_table()
    v.dview = stub.view(None)
    scr = FakeScreen(30, 100)
    lines = press(v, scr, "5")
    assert "[5 disturbances]" in lines[2]
    assert lines[3].split() == ["SOURCE", "KIND", "TIME%", "/s", "cpu0", "cpu1", "cpu2", "cpu3"]
    shown = [ln for ln in lines[4:] if ln[26:35].strip() in _top.KINDS]
    rows = {ln[:26].strip(): ln[26:].split() for ln in shown}
    # the view's 2 seconds: virtio's 6 runs in 600 ns of 8 CPU-seconds, 3/s (2.5 on cpu0, 0.5 on cpu1)
    assert rows["virtio0-input (irq 24)"] == ["irq", "0.0%", "3", "2.5", "0.5", ".", "."]
    assert rows["app (100)"][0] == "expected" and rows["cron (200)"][:1] == ["syscall"]
    assert not any(r[0] == "idle" for r in rows.values())  # the CPU's own time is not a source
    assert "expected workload: pid 100" in "\n".join(lines)
    assert "warning: TLB shootdowns not counted here: no hook" in lines
    # every source of the view is a row (the idle task aside): none lost between the view and the screen
    view = who_disturbs(disturb_delta(), syscalls=disturb_syscalls(), expected="pid 100")
    assert len(shown) == len(view.order([k for k in _top.KINDS if k != "idle"]))


def test_batch_prints_who_disturbs_after_each_table(capsys: pytest.CaptureFixture[str]) -> None:
    class Session(StubDisturbances):
        def start(self) -> None:
            pass

        def snapshot(self) -> object:
            return SimpleNamespace(delta=lambda earlier: "interval")

    counter = GrowingCounter()
    args = argparse.Namespace(interval=0.01, count=2, top=None, sort="total")
    assert top._top_batch(args, counter, None, Session()) == 0  # type: ignore[arg-type]
    captured = capsys.readouterr()
    assert captured.out.count("who disturbs CPUs 0-3: 2.00 s; expected workload: pid 100") == 2
    assert captured.out.count("virtio0-input (irq 24)") == 2
    assert captured.err == "percpu: top: warning: TLB shootdowns not counted here: no hook\n"
