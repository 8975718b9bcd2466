"""`percpu stat` and `percpu top` run as a user would: a subprocess, and top inside tmux."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from percpu.cpus import topology

pytestmark = pytest.mark.kernel

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOAD = os.path.abspath(os.path.join(HERE, "..", "helpers", "syscall_workload.py"))
PERCPU = [sys.executable, "-m", "percpu"]


def percpu(*args: str, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PERCPU, *args], capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload, no-any-return]


def busy_cpu() -> int:
    return list(topology().online)[-1]


def test_stat_command_json_counts_the_command_exactly() -> None:
    cpu = busy_cpu()
    r = percpu("stat", "-f", "json", "-q", "--", sys.executable, WORKLOAD, "200000", str(cpu))
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout.strip().splitlines()[-1])
    getppid = next(s for s in obj["syscalls"] if s["name"] == "getppid")
    assert getppid["per_cpu"][str(cpu)] == 200_000
    assert sum(v for c, v in getppid["per_cpu"].items() if c != str(cpu)) == 0
    assert obj["attach"] == "tp_btf"


def test_stat_command_exit_status_is_the_commands() -> None:
    r = percpu("stat", "-q", "--", "sh", "-c", "exit 7")
    assert r.returncode == 7


def test_stat_table_and_csv_and_heatmap(tmp_path: object) -> None:
    cpu = busy_cpu()
    svg = os.path.join(str(tmp_path), "m.svg")
    r = percpu("stat", "--heatmap", svg, "--", sys.executable, WORKLOAD, "50000", str(cpu))
    assert r.returncode == 0, r.stderr
    assert "getppid" in r.stdout and "imbalance" in r.stdout
    assert f"cpu{cpu}" in r.stdout
    with open(svg, encoding="utf-8") as f:
        body = f.read()
    assert body.startswith("<svg") and "getppid" in body
    r = percpu("stat", "-f", "csv", "-q", "--", sys.executable, WORKLOAD, "30000", str(cpu))
    assert r.returncode == 0, r.stderr
    out = r.stdout[r.stdout.index("time,interval_s") :]  # the workload prints a JSON line of its own first
    rows = list(csv.DictReader(io.StringIO(out)))
    hits = [row for row in rows if row["syscall"] == "getppid"]
    assert [(int(h["cpu"]), int(h["calls"])) for h in hits] == [(cpu, 30000)]


def test_stat_pid_duration_and_intervals() -> None:
    cpu = busy_cpu()
    w = subprocess.Popen(
        [sys.executable, WORKLOAD, "0", str(cpu), "--seconds", "3"], stdout=subprocess.PIPE, text=True
    )
    try:
        r = percpu("stat", "-p", str(w.pid), "-d", "1.6", "-i", "0.5", "-f", "json", "-q")
    finally:
        w.communicate(timeout=30)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) >= 3
    assert all(abs(x["interval_s"] - 0.5) < 0.3 for x in lines[:-1])
    assert sum(s["total"] for x in lines for s in x["syscalls"] if s["name"] == "getppid") > 1000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["stat", "-p", "999999999", "-d", "1"], "no process with pid 999999999"),
        (["stat", "--", "no-such-command-xyz"], "command not found: no-such-command-xyz"),
        (["stat", "-s", "no_such_syscall", "-d", "1"], "no_such_syscall"),
        (["stat", "-d", "-3"], "must be greater than 0"),
        (["top", "--attach", "kprobe"], "invalid choice"),
    ],
)
def test_bad_input_is_a_clear_error(args: list[str], message: str) -> None:
    r = percpu(*args)
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_not_root_is_a_clear_error() -> None:
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")
    r = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            *PERCPU,
            "stat",
            "-d",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": "/tmp"},
    )
    assert r.returncode == 1
    assert "CAP_BPF" in r.stderr and "root" in r.stderr
    assert "Traceback" not in r.stderr


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True, timeout=30).stdout


def test_top_in_a_terminal() -> None:
    if not shutil.which("tmux"):
        pytest.fail("tmux is not installed: scripts/setup.sh --dev installs it")
    cpu = busy_cpu()
    session = f"percpu-test-{os.getpid()}"
    cmd = " ".join([sys.executable, "-m", "percpu", "top", "-i", "0.5"])
    _tmux("new-session", "-d", "-s", session, "-x", "80", "-y", "24", f"cd {os.getcwd()} && {cmd}")
    w = subprocess.Popen(
        [sys.executable, WORKLOAD, "0", str(cpu), "--seconds", "6"], stdout=subprocess.DEVNULL
    )
    try:
        screen = ""
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            time.sleep(0.5)
            screen = _tmux("capture-pane", "-p", "-t", session)
            if "getppid" in screen:
                break
        assert "percpu top" in screen, screen
        assert "getppid" in screen, screen
        assert f"cpu{cpu}" in screen
        assert "imbalance" in screen
        assert max(len(line) for line in screen.splitlines()) <= 80
        _tmux("send-keys", "-t", session, "s")  # next sort key: name
        time.sleep(1.0)
        assert "sort name" in _tmux("capture-pane", "-p", "-t", session)
        _tmux("send-keys", "-t", session, "q")
        deadline = time.monotonic() + 10
        alive = True
        while time.monotonic() < deadline and alive:
            time.sleep(0.3)
            alive = (
                subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode == 0
            )
        assert not alive, "percpu top did not quit on q"
    finally:
        w.kill()
        w.wait()
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
