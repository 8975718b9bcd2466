"""`percpu stat` and `percpu top` run as a user would: a subprocess, and top inside tmux."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from percpu.cpus import cpu_lists, format_cpu_list
from percpu.process import own_cgroup
from percpu.syscalls import syscall_number
from percpu.syscount import cgroup2_root

from ..conftest import Unprivileged, svg_cells, unique_comm
from .conftest import HANG, PERCPU
from .conftest import percpu_cmd as percpu

pytestmark = pytest.mark.kernel

HERE = os.path.dirname(os.path.abspath(__file__))
HELPERS = os.path.abspath(os.path.join(HERE, "..", "helpers"))
WORKLOAD = os.path.join(HELPERS, "syscall_workload.py")


def busy_cpu() -> int:
    return list(cpu_lists().online)[-1]


def online_cpus() -> str:
    """The online CPUs, for ``--cpus`` in the heat-map tests: a heat map writes each cell's count only up
    to 40 columns (one per possible CPU unless selected), and a guest with 64 possible CPUs has more."""
    return format_cpu_list(cpu_lists().online)


def test_stat_command_json_counts_the_command_exactly() -> None:
    cpu = busy_cpu()
    r = percpu("stat", "-f", "json", "-q", "--", sys.executable, WORKLOAD, "20000", str(cpu))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["calls"] == 20_000, "standard output is the command's alone"
    obj = json.loads(r.stderr)  # the report, as perf stat's, on standard error
    getppid = next(s for s in obj["syscalls"] if s["name"] == "getppid")
    assert getppid["per_cpu"][str(cpu)] == 20_000
    assert sum(v for c, v in getppid["per_cpu"].items() if c != str(cpu)) == 0
    assert obj["attach"] == "tp_btf"


def test_stat_command_report_goes_to_stderr_and_leaves_stdout_to_the_command(tmp_path: object) -> None:
    """`stat -- CMD` printed its report on stdout, among the command's own output; perf stat and strace -c
    write theirs to stderr. `-o -` still asks for stdout."""
    r = percpu("stat", "-q", "--", "sh", "-c", "echo out; echo err >&2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "out\n"
    assert r.stderr.startswith("err\n") and "system calls in" in r.stderr, r.stderr
    r = percpu("stat", "-q", "-o", "-", "--", "sh", "-c", "echo out")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("out\n") and "system calls in" in r.stdout and r.stderr == "", r
    # Standard error closed: the report would be lost, so the command is never run.
    marker = os.path.join(str(tmp_path), "ran")
    r = subprocess.run(
        f"{' '.join(PERCPU)} stat -q -- touch {marker} 2>&-; echo rc=$?",
        shell=True,
        capture_output=True,
        text=True,
        timeout=HANG,
    )
    assert r.stdout == "rc=1\n" and not os.path.exists(marker), r
    # Standard error's reader gone (`2>&1 >/dev/null | head`): the picture is still drawn, exit 141.
    svg = os.path.join(str(tmp_path), "h.svg")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        p = subprocess.run(
            [*PERCPU, "stat", "-q", "--cpus", online_cpus(), "--heatmap", svg, "--", "true"],
            stdout=subprocess.DEVNULL,
            stderr=write_end,
            timeout=1800,  # matplotlib's first import: minutes under TCG
        )
    finally:
        os.close(write_end)
    assert p.returncode == 141 and os.path.getsize(svg) > 0


def test_stat_command_exit_status_is_the_commands() -> None:
    r = percpu("stat", "-q", "--", "sh", "-c", "exit 7")
    assert r.returncode == 7


def test_stat_table_and_csv_and_heatmap(tmp_path: object) -> None:
    cpu = busy_cpu()
    svg = os.path.join(str(tmp_path), "m.svg")
    # matplotlib's first import builds its font cache: minutes under TCG (the session shares the cache),
    # more than 600 s in a guest sharing the machine with another: the limit only guards against a hang.
    heatmap = ["--cpus", online_cpus(), "--heatmap", svg]
    r = percpu("stat", *heatmap, "--", sys.executable, WORKLOAD, "50000", str(cpu), timeout=1800)
    assert r.returncode == 0, r.stderr
    assert "getppid" in r.stderr and "imbalance" in r.stderr
    assert f"cpu{cpu}" in r.stderr
    assert re.search(r"^getppid +50,000 ", r.stderr, re.M), r.stderr  # a one-shot table's counts: exact
    cells = svg_cells(svg)
    assert cells[f"cpu{cpu}-getppid"] == "50k"
    r = percpu("stat", "-f", "csv", "-q", "--", sys.executable, WORKLOAD, "30000", str(cpu))
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stderr)))
    hits = [row for row in rows if row["syscall"] == "getppid"]
    assert [(int(h["cpu"]), int(h["calls"])) for h in hits] == [(cpu, 30000)]


@contextlib.contextmanager
def spinning_workload(cpu: int) -> Iterator[subprocess.Popen[str]]:
    """A getppid loop that outlives any counting done on it (killed when the block ends): how long
    counting takes to start (seconds under qemu TCG) can never make it end first. Entered once the loop
    runs: an interpreter still starting (seconds in a TCG guest) makes no calls for an interval to see."""
    w = subprocess.Popen(
        [sys.executable, WORKLOAD, "0", str(cpu), "--seconds", "3600", "--announce"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert w.stdout is not None
    try:
        line = w.stdout.readline()  # "" if it died first
        if line != "looping\n":
            pytest.fail(f"the workload did not start its loop: {line!r}")
        yield w
    finally:
        w.kill()
        w.wait()
        w.stdout.close()


def test_stat_pid_duration_and_intervals() -> None:
    with spinning_workload(busy_cpu()) as w:
        # --count ends the run after exactly three reports, however slow the machine.
        r = percpu("stat", "-p", str(w.pid), "-d", "600", "-i", "0.5", "--count", "3", "-f", "json", "-q")
        assert w.poll() is None, "the workload ended before counting did"
        d = percpu("stat", "-p", str(w.pid), "-d", "0.5", "-f", "json", "-q")
        assert w.poll() is None, "the workload ended before counting did"
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 3
    assert all(x["interval_s"] > 0 for x in lines)
    per_interval = [calls(x, "getppid") for x in lines]
    assert all(n > 0 for n in per_interval), f"getppid calls per interval: {per_interval}"
    assert d.returncode == 0, d.stderr
    once = [json.loads(x) for x in d.stdout.splitlines()]
    assert len(once) == 1 and calls(once[0], "getppid") > 0, "-d ends counting on a live process"


@pytest.fixture(scope="module")
def getppid_n(tmp_path_factory: pytest.TempPathFactory) -> str:
    """tests/helpers/getppid_n.c built now: a native command that makes exactly N getppid calls."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler (cc): scripts/setup.sh --dev installs gcc")
    exe = str(tmp_path_factory.mktemp("helpers") / "getppid_n")
    subprocess.run([cc, "-O2", "-o", exe, os.path.join(HELPERS, "getppid_n.c")], check=True, timeout=120)
    return exe


def calls(obj: dict[str, object], name: str) -> int:
    return sum(int(s["total"]) for s in obj["syscalls"] if s["name"] == name)  # type: ignore[attr-defined, index]


def test_stat_command_is_counted_from_its_execve(getppid_n: str) -> None:
    # A native command makes its calls microseconds after execve; several runs, as a late start is a race.
    for _ in range(5):
        r = percpu("stat", "-f", "json", "-q", "--", getppid_n, "1000")
        assert r.returncode == 0, r.stderr
        obj = json.loads(r.stderr)
        assert calls(obj, "getppid") == 1000
        assert calls(obj, "execve") == 1  # the command's own, and no PATH search before it
        assert calls(obj, "exit_group") == 1


def test_stat_names_a_64_bit_commands_int80_calls_from_the_i386_table(tmp_path: object) -> None:
    """`percpu stat -- CMD` of a 64-bit command making 1000 i386 getpriority calls by int $0x80 (i386 96,
    x86_64's gettimeofday) reports them as compat:getpriority, as `strace -c` does ("32 bit mode")."""
    if os.uname().machine != "x86_64":
        pytest.skip("int $0x80 from a 64-bit task is an x86_64 thing")
    exe = os.path.join(str(tmp_path), "int80_getpriority")
    src = os.path.join(HELPERS, "int80_getpriority.c")
    subprocess.run(["cc", "-nostdlib", "-static", "-fno-pie", "-no-pie", "-O1", "-o", exe, src], check=True)
    r = percpu("stat", "-f", "json", "-q", "--", exe)
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stderr)  # a command's report is on standard error
    assert calls(obj, "compat:getpriority") == 1000
    assert calls(obj, "gettimeofday") == 0 and calls(obj, "getpriority") == 0


def test_stat_command_killed_by_a_signal_exits_128_plus_signal() -> None:
    r = percpu("stat", "-q", "--", "sh", "-c", "kill -TERM $$")
    assert r.returncode == 128 + signal.SIGTERM, r.stderr


def stat_leaving_cgroup(*args: str) -> tuple[subprocess.CompletedProcess[str], bool]:
    """Run `percpu stat ARGS`; also say whether the cgroup it made (named by its pid) is still there."""
    root = cgroup2_root()
    assert root is not None, "this test needs a cgroup2 mount"
    parent = own_cgroup(root)
    assert parent is not None, "this test needs to run in a cgroup under the cgroup2 mount"
    p = subprocess.Popen([*PERCPU, "stat", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=600)  # a guard against a hang: percpu starts slowly under TCG
    left = any(os.path.exists(os.path.join(d, f"percpu-stat-{p.pid}")) for d in (parent, root))
    return subprocess.CompletedProcess(p.args, p.returncode, out, err), left


def test_stat_command_leaves_no_cgroup_and_checks_before_running(tmp_path: object) -> None:
    marker = os.path.join(str(tmp_path), "ran")
    r, left = stat_leaving_cgroup("-s", "no_such_syscall", "--", "touch", marker)
    assert r.returncode == 1 and "no_such_syscall" in r.stderr and "Traceback" not in r.stderr
    assert not os.path.exists(marker), "the command ran although the filter was refused"
    assert not left
    r, left = stat_leaving_cgroup("-q", "--", "touch", marker)
    assert r.returncode == 0, r.stderr
    assert os.path.exists(marker) and not left
    # A command that leaves a process running: its cgroup is still removed. The process runs until the
    # test kills it, so that percpu finds it however long percpu takes after the command (a fixed
    # `sleep 3` had ended first in a loaded TCG guest).
    pidfile = os.path.join(str(tmp_path), "left.pid")
    try:
        r, left = stat_leaving_cgroup("--", "sh", "-c", f"sleep 3600 >/dev/null 2>&1 & echo $! >{pidfile}")
        assert r.returncode == 0, r.stderr
        assert "warning: the command left 1 process(es) running" in r.stderr  # in the report itself
        assert not left
    finally:
        if os.path.exists(pidfile):
            with open(pidfile, encoding="ascii") as f, contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(f.read()), signal.SIGKILL)


def test_stat_interval_with_command_ends_when_the_command_does() -> None:
    # An interval far beyond anything startup can take, even under emulation: waiting for it would show.
    t0 = time.monotonic()
    r = percpu("stat", "-i", "900", "-f", "json", "-q", "--", "sleep", "0.3", timeout=1200)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 600, "waited for the interval after the command exited"
    assert len(r.stderr.splitlines()) == 1


def test_stat_heatmap_with_intervals_covers_the_whole_run(tmp_path: object, getppid_n: str) -> None:
    svg = os.path.join(str(tmp_path), "m.svg")
    # Which interval the calls fall in is timing; that the intervals partition the run, and the heat map
    # holds all of it, is not.
    script = f"{getppid_n} 777; sleep 0.7"
    heatmap = ["--cpus", online_cpus(), "--heatmap", svg]
    r = percpu("stat", "-i", "0.2", "-q", *heatmap, "-f", "json", "--", "sh", "-c", script, timeout=1800)
    assert r.returncode == 0, r.stderr
    in_intervals = sum(calls(json.loads(line), "getppid") for line in r.stderr.splitlines())
    cells = [int(v) for k, v in svg_cells(svg).items() if k.endswith("-getppid")]
    assert 777 <= sum(cells) <= 780, cells  # the helper's, and sh's own few
    assert in_intervals == sum(cells)


def test_stat_pid_ends_when_the_process_exits() -> None:
    cpu = busy_cpu()
    # Gated: the workload makes its calls only once counting has started, then exits; stat must end
    # with it (no -d) and have counted every call.
    w = subprocess.Popen(
        [sys.executable, WORKLOAD, "900", str(cpu), "--wait-stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    p = subprocess.Popen(
        [*PERCPU, "stat", "-p", str(w.pid), "-s", "getppid", "--sum"],  # the table: it notes the start
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stderr is not None and w.stdin is not None
        note = p.stderr.readline()  # written once counting has started
        assert "counting system calls" in note, note
        w.stdin.write("go\n")
        w.stdin.close()
        assert w.wait(timeout=HANG) == 0
        out, err = p.communicate(timeout=HANG)
    finally:
        for proc in (w, p):
            proc.kill()
            proc.wait()
        if p.stdout is not None:
            p.stdout.close()
        if p.stderr is not None:
            p.stderr.close()
    assert p.returncode == 0, err
    row = re.search(r"^getppid +(\d+) ", out, re.M)  # below 1000 the table prints exact counts
    assert row is not None, out
    assert int(row.group(1)) == 900


def test_stat_sigterm_prints_the_report() -> None:
    p = subprocess.Popen([*PERCPU, "stat"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stderr is not None
        note = p.stderr.readline()  # written once counting has started
        assert "counting system calls" in note, note
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=HANG)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == 0, err
    assert "system calls in" in out and "imbalance" in out
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["stat", "-p", "999999999", "-d", "1"], "no process with pid 999999999"),
        (["stat", "--", "no-such-command-xyz"], "command not found: no-such-command-xyz"),
        (["stat", "--", "/tmp"], "cannot run /tmp: Is a directory"),
        (["stat", "-s", "no_such_syscall", "-d", "1"], "no_such_syscall"),
        (["stat", "-d", "-3"], "must be greater than 0"),
        (["top", "--attach", "kprobe"], "invalid choice"),
        (["stat", "-d", "1", "--", "sleep", "3"], "-d/--duration does not go with a command"),
        (["stat", "-o", "/nonexistent/out", "-d", "1"], "-o /nonexistent/out: No such file or directory"),
        (["stat", "-o", "/", "-d", "1"], "-o /: Is a directory"),
        (
            ["stat", "--heatmap", "/nonexistent/x.svg", "-d", "1"],
            "--heatmap /nonexistent/x.svg: No such file",
        ),
        (["stat", "--heatmap", "x.jpg", "-d", "5"], "name the file .png, .svg or .pdf"),
    ],
)
def test_bad_input_is_a_clear_error(args: list[str], message: str) -> None:
    r = percpu(*args)
    # The note stat writes once counting has started must not come: input is checked before.
    assert "counting system calls" not in r.stderr, "checked only after counting (or after the command ran)"
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_not_root_is_a_clear_error(unprivileged: Unprivileged) -> None:
    r = subprocess.run(
        unprivileged.command("-m", "percpu", "stat", "-d", "1"),
        capture_output=True,
        text=True,
        timeout=600,  # an interpreter start and numpy import: minutes under TCG
        env=unprivileged.env,
    )
    assert r.returncode == 1
    assert "CAP_BPF" in r.stderr and "root" in r.stderr
    assert "Traceback" not in r.stderr


def _tmux(*args: str) -> str:
    """tmux on a server of the session's own (``-L`` named after it): a server shared between sessions
    exits when its last session ends, and a new session started at that moment can reach the exiting server
    and fail (seen under load as `tmux new-session` exiting 1)."""
    session = next(args[i + 1] for i, a in enumerate(args) if a in ("-t", "-s"))
    return subprocess.run(
        ["tmux", "-L", session, *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def _tmux_end(session: str) -> None:
    subprocess.run(["tmux", "-L", session, "kill-server"], capture_output=True)


KEYS = "q quit  s sort  c sort by CPU (again: next)  </> CPUs  +/- interval  ? help"
KEYS_PANES = "q quit  Tab view  s sort  c sort by CPU (again: next)  </> CPUs  ? help"


@contextlib.contextmanager
def top_in_tmux(*args: str, cols: int = 80, rows: int = 24) -> Iterator[str]:
    """`percpu top ARGS` in a tmux pane 200 x 50 whose terminal reports COLS x ROWS (stty), so top must
    size itself from the terminal: lines wider than COLS would show in the 200-column capture. After top
    the pane prints top's exit status and the terminal modes, and stays open."""
    if not shutil.which("tmux"):
        pytest.fail("tmux is not installed: scripts/setup.sh --dev installs it")
    session = f"percpu-test-{os.getpid()}-{time.monotonic_ns()}"
    top = " ".join([sys.executable, "-m", "percpu", "top", *args])
    # `trap : INT`: Ctrl-C reaches top (a trapped signal is default again in the child), not the shell.
    script = (
        f"cd {os.getcwd()} && stty cols {cols} rows {rows} && trap : INT; {top}; "
        "echo percpu-rc=$?; stty -a; echo percpu-end; sleep 120"
    )
    _tmux("new-session", "-d", "-s", session, "-x", "200", "-y", "50", script)
    try:
        yield session
    finally:
        _tmux_end(session)


def screen_when(session: str, ready: str, timeout: float = HANG, history: bool = False) -> str:
    """The pane's text once it shows ``ready``: the visible screen, or with ``history`` everything printed
    (scrollback included, wrapped lines joined): tables of 64 possible CPUs scroll a 50-line pane."""
    deadline = time.monotonic() + timeout
    extra = ["-S", "-", "-J"] if history else []
    while True:
        screen = _tmux("capture-pane", "-p", *extra, "-t", session)
        if ready in screen or time.monotonic() > deadline:
            assert ready in screen, screen
            return screen
        time.sleep(0.3)


def settled_screen(session: str, ready: str) -> str:
    """The screen once it shows ``ready`` and two captures half a second apart agree: top redraws with a
    burst of cursor moves that tmux may take in several reads, and a capture between two of them shows rows
    of two frames (seen in a 7.x guest: a --sort nr screen out of order). Run top with an interval of
    seconds so that a redraw is rare beside the half second."""
    deadline = time.monotonic() + HANG
    screen = screen_when(session, ready)
    while True:
        time.sleep(0.5)
        again = _tmux("capture-pane", "-p", "-t", session)
        if again == screen or time.monotonic() > deadline:
            assert again == screen, f"the screen did not settle within {HANG:.0f} s:\n{screen}\n{again}"
            return screen
        screen = again


def body(screen: str) -> list[list[str]]:
    """The syscall rows of a top screen, each split into fields (name, total, one per CPU)."""
    lines = screen.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("SYSCALL"))
    j = next(j for j, ln in enumerate(lines) if ln.startswith(("all CPUs", "... ")))
    return [ln.split() for ln in lines[i + 1 : j]]


def value(text: str) -> float:
    """Undo percpu's human(): '.' is 0, '1.2k' is 1200."""
    if text == ".":
        return 0.0
    mult = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}.get(text[-1], 1.0)
    return float(text[:-1] if mult != 1.0 else text) * mult


@pytest.mark.parametrize("cols", [80, 50])
def test_top_in_a_terminal(cols: int) -> None:
    cpu = busy_cpu()
    w = subprocess.Popen(
        [sys.executable, WORKLOAD, "0", str(cpu), "--seconds", "3600"], stdout=subprocess.DEVNULL
    )  # killed below: it must outlive top's start, however slow that is
    try:
        with top_in_tmux("-i", "0.5", cols=cols) as session:
            screen = screen_when(session, "getppid")
            assert "percpu top" in screen
            assert f"cpu{cpu}" in screen
            assert "imbalance" in screen
            assert max(len(line) for line in screen.splitlines()) <= cols, screen
            head = next(ln for ln in screen.splitlines() if ln.startswith("SYSCALL"))
            assert head.split()[:2] == ["SYSCALL", "CALLS/s"]
            if len(KEYS) < cols:
                assert KEYS in screen, "the key line is cut"
            _tmux("send-keys", "-t", session, "s")  # next sort key: name
            screen_when(session, "sort name")  # top redraws on the key; in a TCG guest not within 1 s
            _tmux("send-keys", "-t", session, "q")
            assert "percpu-rc=0" in screen_when(session, "percpu-rc=", timeout=120), "top did not quit on q"
    finally:
        w.kill()
        w.wait()


@pytest.mark.parametrize("how", ["C-c", "SIGTERM"])
def test_top_quits_cleanly_and_restores_the_terminal(how: str) -> None:
    with top_in_tmux("-i", "0.3") as session:
        screen_when(session, "all CPUs")
        if how == "C-c":
            _tmux("send-keys", "-t", session, "C-c")
        else:
            shell = int(_tmux("display-message", "-p", "-t", session, "#{pane_pid}"))
            with open(f"/proc/{shell}/task/{shell}/children", encoding="ascii") as f:
                (top,) = (int(p) for p in f.read().split())
            os.kill(top, signal.SIGTERM)
        # stty's report is the last thing printed before the marker: wait for the marker, not the exit code.
        screen = screen_when(session, "percpu-end", timeout=120)
        assert "percpu-rc=0" in screen, screen
        assert "Traceback" not in screen
        assert re.search(r"(?<!-)\bicanon\b", screen) and not re.search(r"-icanon\b", screen), screen
        assert not re.search(r"(?<![\w-])-echo\b", screen), screen
        assert _tmux("display-message", "-p", "-t", session, "#{alternate_on} #{cursor_flag}").split() == [
            "0",
            "1",
        ]


def test_top_n_limits_rows() -> None:
    with top_in_tmux("-i", "0.3", "-n", "2") as session:
        screen = screen_when(session, "all CPUs")
        assert len(body(screen)) == 2, screen
        assert re.search(r"^\.\.\. \d+ more", screen, re.M), screen  # tmux, top and the shell make >2 kinds


def _nr(name: str) -> int:
    return int(name[8:]) if name.startswith("syscall_") else syscall_number(name)


@pytest.mark.parametrize("sort", ["total", "name", "nr", "cpu"])
def test_top_sort_keys(sort: str) -> None:
    with top_in_tmux("-i", "3", "--sort", sort) as session:
        screen = settled_screen(session, "all CPUs")
        assert f"sort {sort}" in screen
        rows = body(screen)
        assert len(rows) >= 3, screen
        names = [r[0] for r in rows]
        if sort == "total":
            keys: list[object] = [-value(r[1]) for r in rows]
        elif sort == "name":
            keys = list(names)
        elif sort == "nr":
            names = [n for n in names if len(n) < 17]  # a longer name is cut on screen
            keys = [_nr(n) for n in names]
        else:  # the first CPU column shown
            keys = [-value(r[2]) for r in rows]
        assert keys == sorted(keys), screen  # type: ignore[type-var]


# A loop, named argv[1] and pinned to CPU argv[2], of getppid() or of failing close(-1) (argv[3]) until
# it is killed; "looping" once it runs.
LOOP = """
import contextlib, ctypes, os, sys
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
os.sched_setaffinity(0, {int(sys.argv[2])})
print("looping", flush=True)
while True:
    if sys.argv[3] == "getppid":
        os.getppid()
    else:
        with contextlib.suppress(OSError):
            os.close(-1)
"""


@contextlib.contextmanager
def loops(comm: str, *runs: tuple[int, str]) -> Iterator[None]:
    """One :data:`LOOP` per (cpu, call), all named ``comm``, running for the block."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LOOP, comm, str(cpu), call], stdout=subprocess.PIPE, text=True
        )
        for cpu, call in runs
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline() == "looping\n"
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()
            if p.stdout is not None:
                p.stdout.close()


def test_top_shows_the_process_errno_and_latency_tables_in_views_of_their_own() -> None:
    """`top -P -e -L` showed only the syscall x CPU table in the terminal, although the programs of the
    other three were loaded; only -b printed them. Tab (or 1-4) now switches views."""
    comm = unique_comm("pcpu_view")
    top = top_in_tmux("-P", "-e", "-L", "-c", comm, "-i", "1", cols=100, rows=30)
    with loops(comm, (busy_cpu(), "getppid"), (busy_cpu(), "close")), top as session:
        screen = screen_when(session, "getppid")
        assert "view (Tab):  [1 syscalls]  2 processes  3 errors  4 latency" in screen, screen
        assert screen.rstrip().splitlines()[-1] == KEYS_PANES, screen
        _tmux("send-keys", "-t", session, "Tab")
        screen = screen_when(session, "[2 processes]")
        rows = [ln.split() for ln in screen.splitlines() if comm in ln]
        assert {r[2] for r in rows} == {"getppid", "close"}, screen
        assert len({r[0] for r in rows}) == 2, "one row per (pid, syscall)"
        _tmux("send-keys", "-t", session, "3")
        screen = screen_when(session, "[3 errors]")
        assert any(ln.split()[:2] == ["close", "EBADF"] for ln in screen.splitlines()), screen
        _tmux("send-keys", "-t", session, "4")
        screen = screen_when(session, "[4 latency]")
        assert "histogram: a column per log2 ns bucket" in screen and "@ <=9/9" in screen, screen
        assert {ln.split()[0] for ln in screen.splitlines() if "] 2^" in ln} == {"getppid", "close"}
        _tmux("send-keys", "-t", session, "q")
        assert "percpu-rc=0" in screen_when(session, "percpu-rc=", timeout=120)


def test_top_c_sorts_by_each_cpu_shown() -> None:
    """`c` sorted by the first CPU shown: with every CPU on screen, nothing sorted by cpu1. Each press now
    moves the sort to the next column."""
    online = list(cpu_lists().online)
    if len(online) < 2:
        pytest.skip("one online CPU: there is no second column to sort by")
    first, second = online[0], online[1]
    comm = unique_comm("pcpu_sortc")
    top = top_in_tmux("-c", comm, "-i", "3", "--cpus", f"{first},{second}", cols=100)
    with loops(comm, (first, "getppid"), (second, "close")), top as session:
        screen_when(session, "close")
        for cpu, call in ((first, "getppid"), (second, "close")):
            _tmux("send-keys", "-t", session, "c")
            screen = settled_screen(session, f"sort cpu{cpu} ")
            head = next(ln for ln in screen.splitlines() if ln.startswith("SYSCALL")).split()
            assert head[2:] == (
                [f"*cpu{first}", f"cpu{second}"] if cpu == first else [f"cpu{first}", f"*cpu{second}"]
            )
            rows = body(screen)
            column = 2 if cpu == first else 3
            assert rows[0][0] == call, screen
            assert [-value(r[column]) for r in rows] == sorted(-value(r[column]) for r in rows), screen


def test_stat_comm_filter_takes_a_name_that_is_not_utf8() -> None:
    """The kernel compares raw bytes; a name from the command line that is not UTF-8 (an ESC and a 0xff
    byte) must filter on exactly those bytes, not fail to encode."""
    name = b"pc\xff\x1bq"
    cpu = busy_cpu()
    cmd = [sys.executable, WORKLOAD, "4321", str(cpu), b"--comm", name]
    r = subprocess.run(
        [*PERCPU, "stat", "-c", name, "-f", "json", "-q", "--", *cmd],
        capture_output=True,
        timeout=HANG,
    )
    assert r.returncode == 0, r.stderr
    assert b"Traceback" not in r.stderr
    assert calls(json.loads(r.stderr), "getppid") == 4321


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ("TERM=dumb", "the terminal (TERM=dumb) cannot move the cursor"),
        ("-u TERM", "TERM is not set"),
        ("TERM=no-such-terminal", "TERM=no-such-terminal is not a terminal type this system knows"),
    ],
)
def test_top_on_a_terminal_curses_cannot_drive_prints_tables(env: str, problem: str) -> None:
    """A terminal that cannot address the cursor, or an unknown TERM: one line on stderr saying so, then the
    --batch tables (was: a curses traceback, or curses exiting the process)."""
    if not shutil.which("tmux"):
        pytest.fail("tmux is not installed: scripts/setup.sh --dev installs it")
    session = f"percpu-test-{os.getpid()}-{time.monotonic_ns()}"
    top = " ".join([sys.executable, "-m", "percpu", "top", "-i", "0.2", "--count", "2", "-n", "3"])
    script = f"cd {os.getcwd()} && env {env} {top} 2>&1; echo percpu-rc=$?; sleep 120"
    _tmux("new-session", "-d", "-s", session, "-x", "200", "-y", "50", script)
    try:
        screen = screen_when(session, "percpu-rc=", history=True)
    finally:
        _tmux_end(session)
    assert "percpu-rc=0" in screen, screen
    assert problem in screen and "printing a table every interval instead" in screen, screen
    assert screen.count("imbalance (busiest CPU / mean)") == 2, screen
    assert "Traceback" not in screen


def test_stat_output_on_a_read_only_file_system_is_refused_before_counting(tmp_path: object) -> None:
    """Root may write anywhere but on a read-only mount: checked up front, the old file untouched."""
    d = os.path.join(str(tmp_path), "ro")
    os.mkdir(d)
    old = os.path.join(d, "old.txt")
    with open(old, "w", encoding="utf-8") as f:
        f.write("old report\n")
    stat_cmd = " ".join([*PERCPU, "stat", "-q", "-d", "0.2", "-o", old])
    script = f"mount --bind {d} {d} && mount -o remount,bind,ro {d} && {stat_cmd}"
    r = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=HANG
    )
    assert r.returncode == 1, r.stderr
    assert f"-o {old}: Read-only file system" in r.stderr and "Traceback" not in r.stderr
    with open(old, encoding="utf-8") as f:
        assert f.read() == "old report\n"


def test_stat_output_to_dev_stdout_and_a_pipe() -> None:
    # virtme-ng's guests point /dev/stdout at a virtio port to the host's terminal instead of the process's
    # fd 1; there the same path is /proc/self/fd/1, which is what /dev/stdout stands for everywhere else.
    try:
        dev_stdout = "/dev/stdout" if os.readlink("/dev/stdout") == "/proc/self/fd/1" else "/proc/self/fd/1"
    except OSError:  # no such link at all
        dev_stdout = "/proc/self/fd/1"
    r = subprocess.run(
        f"{' '.join(PERCPU)} stat -q -f json -d 0.2 -o {dev_stdout} | cat",
        shell=True,
        capture_output=True,
        text=True,
        timeout=HANG,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["total"] > 0, r.stderr
    r = percpu("stat", "-q", "-f", "json", "-d", "0.2", "-o", "-")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["total"] > 0


def test_stat_output_replaces_the_file_when_the_report_is_done(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "r.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write("old\n")
    os.chmod(path, 0o604)
    r = percpu("stat", "-q", "-f", "json", "-d", "0.2", "-o", path)
    assert r.returncode == 0, r.stderr
    with open(path, encoding="utf-8") as f:
        assert json.loads(f.read())["total"] > 0
    assert os.stat(path).st_mode & 0o777 == 0o604
    assert os.listdir(str(tmp_path)) == ["r.json"]


@pytest.mark.parametrize("table", [[], ["--proc-entries", "256"]], ids=["default table", "256 keys"])
def test_stat_per_process_rows_and_lost_add_up_over_thousands_of_processes(
    fork_calls: str, table: list[str]
) -> None:
    """5,000 short processes (about 15,000 process keys, more than either table holds): the process rows
    plus the calls reported lost are the syscall table's total, to the call (an LRU table dropped most of
    them, and said "lost": 0)."""
    r = percpu("stat", "-q", "-P", "-f", "json", *table, "--", fork_calls, "5000", "7")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stderr)  # a command's report is on standard error
    rows = sum(p["total"] for p in obj["processes"])
    assert calls(obj, "getpriority") == 35_000
    assert rows + obj["lost"]["processes"] == obj["total"]


def test_stat_per_process_shows_a_hostile_name_escaped() -> None:
    """A process may name itself with terminal escapes (here: set the window title) and bytes that are
    not UTF-8; root's `stat -P` shows them as text."""
    name = b"\x1b]0;x\x07\xff"
    cmd = [sys.executable, WORKLOAD, "321", str(busy_cpu()), b"--comm", name]
    r = subprocess.run([*PERCPU, "stat", "-q", "-P", "--", *cmd], capture_output=True, timeout=HANG)
    assert r.returncode == 0, r.stderr
    report = r.stderr
    assert b"\x1b" not in report and b"\x07" not in report
    row = next(ln for ln in report.splitlines() if b"\\x1b]0;x\\x07\\xff" in ln and b"getppid" in ln)
    assert row.split()[-2] == b"321"


@contextlib.contextmanager
def caller_cgroup() -> Iterator[str]:
    """A cgroup v2 of the test's own, standing for the cgroup (with its limits) a user runs percpu in."""
    root = cgroup2_root()
    assert root is not None, "this test needs a cgroup2 mount"
    parent = own_cgroup(root)
    assert parent is not None
    path = os.path.join(parent, f"percpu-test-caller-{os.getpid()}")
    os.mkdir(path)
    try:
        yield path
    finally:
        with open(os.path.join(path, "cgroup.procs"), encoding="ascii") as f:
            for pid in f.read().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for d in sorted((e.path for e in os.scandir(path) if e.is_dir()), reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(d)
        deadline = time.monotonic() + 10
        while True:
            try:
                os.rmdir(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def in_cgroup(cgroup: str, *argv: str) -> list[str]:
    """A shell command line that moves itself into ``cgroup`` and then runs ``argv``."""
    return ["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh", *argv]


def test_stat_command_cgroup_is_under_the_callers_cgroup() -> None:
    """The command must stay inside the caller's limits: its cgroup is a child of the caller's, not a
    cgroup at the root of the hierarchy."""
    root = cgroup2_root()
    assert root is not None
    with caller_cgroup() as caller:
        r = subprocess.run(
            in_cgroup(caller, *PERCPU, "stat", "-q", "--", "cat", "/proc/self/cgroup"),
            capture_output=True,
            text=True,
            timeout=HANG,
        )
        assert r.returncode == 0, r.stderr
        line = next(ln for ln in r.stdout.splitlines() if ln.startswith("0::"))
        rel = "/" + os.path.relpath(caller, root)
        assert re.fullmatch(re.escape(rel) + r"/percpu-stat-\d+", line[3:]), (line, rel)
        assert [e.name for e in os.scandir(caller) if e.is_dir()] == [], "the command cgroup was left"


def test_stat_command_cgroup_left_by_a_killed_percpu_is_removed_by_the_next_run() -> None:
    with caller_cgroup() as caller:
        p = subprocess.Popen(
            in_cgroup(caller, *PERCPU, "stat", "-q", "--", "sleep", "3600"),  # killed by caller_cgroup()
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + HANG
            left: list[str] = []
            while not left:
                assert time.monotonic() < deadline, "percpu never made its command cgroup"
                left = [e.path for e in os.scandir(caller) if e.name.startswith("percpu-stat-")]
                time.sleep(0.05)
            with open(os.path.join(left[0], "cgroup.procs"), encoding="ascii") as f:
                while not f.read().split():  # the command is in it: percpu is counting
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                    f.seek(0)
            p.kill()  # SIGKILL: percpu cannot clean up; its command (sleep) stays in the cgroup
            p.wait()
            assert os.path.isdir(left[0])
            r = subprocess.run(
                in_cgroup(caller, *PERCPU, "stat", "--", "true"), capture_output=True, text=True, timeout=HANG
            )
            assert r.returncode == 0, r.stderr
            assert f"removed {left[0]}, left by a percpu that was killed" in r.stderr
            assert not os.path.exists(left[0])
            assert [e.name for e in os.scandir(caller) if e.is_dir()] == []
        finally:
            p.kill()
            p.wait()


IN_PIDNS = """
import subprocess, sys
workload, cpu = sys.argv[1], sys.argv[2]
w = subprocess.Popen([sys.executable, workload, "54321", cpu, "--wait-stdin"], stdin=subprocess.PIPE,
                     stdout=subprocess.DEVNULL, text=True)
p = subprocess.Popen([sys.executable, "-m", "percpu", "stat", "-p", str(w.pid), "-f", "json"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
note = p.stderr.readline()  # written once counting has started
assert "counting system calls" in note, note + p.stderr.read()
w.stdin.write("go\\n")
w.stdin.close()
w.wait(timeout=600)
out, err = p.communicate(timeout=600)  # percpu ends when the process exits
sys.stderr.write(f"pid in the namespace: {w.pid}\\n" + err)
sys.stdout.write(out)
sys.exit(p.returncode)
"""


def test_stat_pid_inside_a_pid_namespace_counts_that_process() -> None:
    """In a container, -p takes the container's pid (here 2), which the kernel's tracepoints know under
    another number: the filter compares in percpu's pid namespace (it counted nothing before, or pid 2 of
    the host)."""
    r = subprocess.run(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            sys.executable,
            "-c",
            IN_PIDNS,
            WORKLOAD,
            str(busy_cpu()),
        ],
        capture_output=True,
        text=True,
        timeout=HANG,
    )
    assert r.returncode == 0, r.stderr
    assert "pid in the namespace: 2" in r.stderr, r.stderr
    assert calls(json.loads(r.stdout), "getppid") == 54321


def test_stat_refuses_a_pid_in_a_nested_pid_namespace() -> None:
    """percpu in a pid namespace, the target in one nested inside it: its pid there is another, so the
    filter could never match: refused with what to do."""
    # The target sleeps until the outer namespace ends (its init, sh, exiting kills it): however long
    # percpu takes to start (tens of seconds in a loaded TCG guest), the target is still there. Its pid
    # is polled for, not assumed to exist after a fixed delay.
    script = (
        "unshare --pid --fork --mount-proc sleep 3600 & "
        'until target=$(pgrep -x sleep -P "$(pgrep -x unshare -n)"); do sleep 0.1; done; '
        f"{' '.join(PERCPU)} stat -q -d 0.2 -p $target; echo rc=$?; kill %1"
    )
    r = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=HANG,
    )
    assert "runs in a pid namespace nested inside percpu's" in r.stderr, r.stderr
    assert "rc=1" in r.stdout and "Traceback" not in r.stderr


def test_stat_per_process_inside_a_pid_namespace_shows_that_namespaces_pids() -> None:
    """`stat -P` in a container: the pid column is the container's pid of the process (the kernel's
    own pid before, which the container cannot see)."""
    comm = unique_comm("pcpu_nsP")
    stat = [*PERCPU, "stat", "-q", "-P", "-f", "json", "-c", comm]
    cmd = [sys.executable, WORKLOAD, "777", str(busy_cpu()), "--comm", comm]
    r = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", *stat, "--", *cmd],
        capture_output=True,
        text=True,
        timeout=HANG,
    )
    assert r.returncode == 0, r.stderr
    pid = json.loads(r.stdout)["pid"]  # the workload's own pid, as the namespace numbers it
    assert pid < 100, "the workload should be one of the namespace's first processes"
    rows = [p for p in json.loads(r.stderr)["processes"] if p["syscall"] == "getppid"]
    assert [(p["pid"], p["comm"], p["total"]) for p in rows] == [(pid, comm, 777)]


def test_stat_csv_carries_processes_errors_and_latency_as_json_does() -> None:
    """`-f csv -P -e -L` wrote only (cpu, syscall) rows: the per-process, errno and latency counts were
    dropped without a word. And with -n 2 JSON kept the two busiest syscalls while CSV kept all."""
    cpu = busy_cpu()
    comm = unique_comm("pcpu_csv")
    cmd = [sys.executable, WORKLOAD, "3000", str(cpu), "--fail", "700", "--comm", comm]
    opts = ["-q", "-P", "-e", "-L", "-n", "2", "-c", comm]
    r = percpu("stat", "-f", "csv", *opts, "--", *cmd)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stderr)))
    j = percpu("stat", "-f", "json", *opts, "--", *cmd)
    assert j.returncode == 0, j.stderr
    obj = json.loads(j.stderr)

    def total(record: str, **match: str) -> int:
        return sum(
            int(x["calls"])
            for x in rows
            if x["record"] == record and all(x[k] == v for k, v in match.items())
        )

    assert total("process", syscall="getppid", comm=comm) == 3000
    assert total("error", syscall="close", error="EBADF") == 700
    assert total("latency", syscall="getppid") == 3000
    assert {x["syscall"] for x in rows if x["record"] == "syscall"} == {s["name"] for s in obj["syscalls"]}
    assert len(obj["syscalls"]) == 2 and obj["other"]["syscalls"] > 0
    assert total("syscall") + total("other") == total("total")  # the rows add up to the total
    assert [x["code"] for x in rows if x["record"] == "lost"] == list(obj["lost"])


def test_stat_warns_in_every_format_when_it_cannot_make_the_commands_cgroup() -> None:
    """`cgroup.max.descendants` 0 in the caller's cgroup: percpu counts the command's own process only.
    The table said so on stderr, hidden by -q; JSON printed a child's 5,000 calls as 0 without a word."""
    cpu = busy_cpu()
    script = f"{sys.executable} {WORKLOAD} 5000 {cpu} >/dev/null; true"  # the calls are a child's
    with caller_cgroup() as caller:
        with open(os.path.join(caller, "cgroup.max.descendants"), "w", encoding="ascii") as f:
            f.write("0")
        out = {}
        for fmt in ("json", "csv", "table"):
            r = subprocess.run(
                in_cgroup(caller, *PERCPU, "stat", "-q", "-f", fmt, "--", "sh", "-c", script),
                capture_output=True,
                text=True,
                timeout=HANG,
            )
            assert r.returncode == 0, r.stderr
            out[fmt] = r.stderr
    obj = json.loads(out["json"])
    assert calls(obj, "getppid") < 5000  # the child was not counted ...
    (w,) = obj["warnings"]  # ... and the report says so
    assert w["code"] == "own-process-only" and "counted the command's own process only" in w["text"]
    rows = [x for x in csv.DictReader(io.StringIO(out["csv"])) if x["record"] == "warning"]
    assert [x["code"] for x in rows] == ["own-process-only"]
    assert "warning: no cgroup could be made for the command" in out["table"]  # in the report, -q or not


def test_stat_warns_in_json_when_the_command_leaves_processes_running(tmp_path: object) -> None:
    pidfile = os.path.join(str(tmp_path), "left.pid")
    spinner = f"{sys.executable} {WORKLOAD} 0 {busy_cpu()} --seconds 3600"
    try:
        r = percpu(
            "stat", "-q", "-f", "json", "--", "sh", "-c", f"{spinner} >/dev/null 2>&1 & echo $! >{pidfile}"
        )
        assert r.returncode == 0, r.stderr
        obj = json.loads(r.stderr)
        assert [(w["code"], w["count"]) for w in obj["warnings"]] == [("left-running", 1)]
        assert "left 1 process(es) running" in obj["warnings"][0]["text"]
    finally:
        if os.path.exists(pidfile):
            with open(pidfile, encoding="ascii") as f, contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(f.read()), signal.SIGKILL)


def test_stat_piped_into_head_still_writes_its_heat_map(tmp_path: object) -> None:
    """`stat -i ... --heatmap h.svg -f csv | head -3` exited 0 and wrote no picture, without a word: the
    pipe's reader going away ended the run. The run now goes on to its end for the picture, says so, and
    exits 141 (128 + SIGPIPE), as a tool its broken pipe ends does."""
    svg = os.path.join(str(tmp_path), "h.svg")
    heatmap = ["--cpus", online_cpus(), "--heatmap", svg]
    p = subprocess.Popen(
        [*PERCPU, "stat", "-i", "0.3", "--count", "4", *heatmap, "-f", "csv"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None
        head = [p.stdout.readline() for _ in range(3)]
        p.stdout.close()  # `head -3` exits
        _out, err = p.communicate(timeout=1800)  # matplotlib's first import builds its font cache
    finally:
        p.kill()
        p.wait()
    assert head[0].startswith("time,interval_s,record"), head
    assert p.returncode == 141, err
    assert "went on to its end for --heatmap" in err and f"heat map written to {svg}" in err, err
    assert svg_cells(svg), "no heat map"


def test_stat_piped_into_head_stops_when_nothing_else_is_written() -> None:
    """Without a picture to draw, a run whose reader went away stops at once (no --count, no -d: it
    would count until Ctrl-C), and exits 141 as `yes | head` does."""
    p = subprocess.Popen([*PERCPU, "stat", "-i", "0.2", "-f", "csv", "-q"], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        assert p.stdout.readline().startswith("time,")
        p.stdout.close()
        assert p.wait(timeout=HANG) == 141
    finally:
        p.kill()
        p.wait()


def _bpf_fds(pid: int) -> int:
    n = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("anon_inode:bpf")
    return n


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("command", ["stat", "top", "exporter"])
def test_ctrl_c_while_the_programs_load_ends_the_command(command: str) -> None:
    """Ctrl-C while libbpf loads the programs used to land in libbpf's print hook, where ctypes swallowed
    the KeyboardInterrupt ("Exception ignored on calling ctypes callback function"): the command then ran
    its whole duration (the exporter: until a second Ctrl-C). SIGINT is sent as soon as the first BPF
    object of the process exists, while it loads."""
    argv = {
        "stat": ["stat", "-d", "120", "-f", "json"],  # would report after 120 s
        "top": ["top", "-b", "-i", "120", "--count", "1"],
        "exporter": ["exporter", "--listen", f"127.0.0.1:{_free_port()}"],  # would serve until killed
    }[command]
    during_load = 0
    for _ in range(5):
        p = subprocess.Popen([*PERCPU, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + HANG
            while not _bpf_fds(p.pid) and p.poll() is None and time.monotonic() < deadline:
                time.sleep(0.0005)
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=HANG)
        finally:
            p.kill()
            p.wait()
        assert "Exception ignored" not in err and "Traceback" not in err, err
        if p.returncode == 0:
            # The poll above came late (a loaded machine): the command was already running, and Ctrl-C
            # ended it as it should there. Only stat says so on stderr.
            assert command != "stat" or "counting system calls" in err, err
            continue
        assert p.returncode == 130, (p.returncode, err)
        assert out == ""
        during_load += 1
    assert during_load, "no SIGINT landed before the command ran: nothing was tried"


# A traceback with a frame of percpu's main(): a Ctrl-C there must end in exit status 130, never a traceback.
IN_MAIN = re.compile(r'percpu/cli/__init__\.py", line \d+, in main\b')


def test_ctrl_c_at_any_point_of_stat_startup_ends_it() -> None:
    """SIGINT at many points of `stat`'s start, from the interpreter's imports to counting: every run ends
    at once, by 130 before counting starts or with its report after, never ignored."""
    p = subprocess.Popen(
        [*PERCPU, "stat", "-d", "120"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    t0 = time.monotonic()
    try:
        assert p.stderr is not None
        assert "counting system calls" in p.stderr.readline()
        startup = time.monotonic() - t0  # only where to send the signals: nothing is asserted on it
    finally:
        p.kill()
        p.wait()
        if p.stderr is not None:
            p.stderr.close()
    for k in range(16):
        p = subprocess.Popen(
            [*PERCPU, "stat", "-d", "120", "-f", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(startup * k / 12)
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=HANG)
        finally:
            p.kill()
            p.wait()
        assert "Exception ignored" not in err, err
        if p.returncode == -signal.SIGINT or "Traceback" in err:
            # Before percpu's main() runs: the interpreter starting (no handler yet: SIGINT ends it), or
            # in its imports, where Python (or numpy, which turns it into an ImportError) says so itself.
            # Those imports include percpu/cli/__init__.py's own, at module level ("in <module>"): only a
            # traceback through main() is percpu's to prevent.
            assert not IN_MAIN.search(err), err
            assert p.returncode in (-signal.SIGINT, 1), (p.returncode, err)
        elif p.returncode == 0:
            assert json.loads(out)["total"] >= 0  # the signal came once counting had started
        else:
            assert p.returncode == 130 and "Traceback" not in err and out == "", (p.returncode, err)
    # The offsets above come from one run's start-up, and a loaded machine may stretch the others' past
    # all of them: one more SIGINT, sent once counting has begun, makes sure that point is tried.
    p = subprocess.Popen(
        [*PERCPU, "stat", "-d", "120", "-f", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stderr is not None
        assert "counting system calls" in p.stderr.readline()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=HANG)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == 0 and "Traceback" not in err, (p.returncode, err)
    assert json.loads(out)["total"] >= 0


def test_stat_with_stderr_closed_writes_only_its_report_to_stdout() -> None:
    """With fd 2 closed, Python has no sys.stderr and `print(file=None)` wrote the progress note into the
    JSON on stdout; and the next file opened took fd 2. percpu opens /dev/null over a closed fd first."""
    r = subprocess.run(
        f"{' '.join(PERCPU)} stat -f json -d 0.2 2>&-",
        shell=True,
        capture_output=True,
        text=True,
        timeout=HANG,
    )
    assert r.returncode == 0
    assert json.loads(r.stdout)["total"] > 0, r.stdout


def test_top_with_stdout_closed_is_a_clear_error() -> None:
    r = subprocess.run(
        f"{' '.join(PERCPU)} top -b --count 1 >&-", shell=True, capture_output=True, text=True, timeout=HANG
    )
    assert r.returncode == 1
    assert "standard output was closed when percpu started" in r.stderr and "Traceback" not in r.stderr


def test_stat_says_which_report_was_lost_to_a_full_device() -> None:
    """`-o /dev/full` said "percpu: No space left on device": no file named, nothing on the command's
    report, which is lost with the run."""
    r = percpu("stat", "-q", "-o", "/dev/full", "--", "sh", "-c", "exit 3")
    assert r.returncode == 1
    assert r.stderr.strip() == (
        "percpu: -o /dev/full: No space left on device: the report was lost; the command (sh -c 'exit 3') "
        "ran to its end, exit status 3"
    )
    # Reports every 0.1 s fail while the command runs: it is still waited for, not ended (143).
    r = percpu("stat", "-q", "-i", "0.1", "-o", "/dev/full", "--", "sh", "-c", "sleep 1; exit 3")
    assert r.returncode == 1
    assert "the command (sh -c 'sleep 1; exit 3') ran to its end, exit status 3" in r.stderr, r.stderr


def test_stat_on_a_full_file_system_keeps_the_old_report(tmp_path: object) -> None:
    d = os.path.join(str(tmp_path), "full")
    os.mkdir(d)
    old = os.path.join(d, "r.json")
    stat_cmd = " ".join([*PERCPU, "stat", "-q", "-f", "json", "-d", "0.2", "-o", old])
    script = (
        f"mount -t tmpfs -o size=64k percpu-test {d} && echo 'old report' >{old} && "
        f"(dd if=/dev/zero of={d}/filler bs=4k 2>/dev/null; true) && {stat_cmd}; echo rc=$?; cat {old}"
    )
    r = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=HANG
    )
    assert "rc=1\nold report\n" in r.stdout, (r.stdout, r.stderr)
    lost = f"the report was not written ({old} keeps its old contents)"
    assert f"percpu: -o {old}: No space left on device: {lost}" in r.stderr, r.stderr
