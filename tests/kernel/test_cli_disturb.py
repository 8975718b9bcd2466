"""``percpu stat -D``: who disturbs a CPU, on the running kernel, through the command line.

A task pinned to one CPU runs a known number of stints while ``stat`` counts (asleep before its window
opens and again before it closes): the report has it by pid and name, as the expected workload when named
so, switched in exactly as often as its schedstat says; every count adds up in the JSON; the CSV carries
the same; a table too small to hold the IRQs says so in every format.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from ..conftest import unique_comm
from .conftest import PERCPU, fetch, percpu_cmd, running_exporter
from .test_cli_syscalls import KEYS_PANES, _tmux, loops, screen_when, settled_screen, top_in_tmux
from .test_disturb_kernel import INTRUDER, Schedstat, blocked_schedstat, online_pair

pytestmark = pytest.mark.kernel


@pytest.fixture
def intruder() -> Iterator[tuple[subprocess.Popen[str], str, int]]:
    cpu, _ = online_pair()
    name = unique_comm("pcpuvw")
    p = subprocess.Popen(
        [sys.executable, "-c", INTRUDER % (cpu, name, 8)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdout.readline() == "ready\n"
    yield p, name, cpu
    p.kill()
    p.communicate()


def stat_around(
    intruder: tuple[subprocess.Popen[str], str, int], *argv: str
) -> tuple[subprocess.CompletedProcess[str], Schedstat, Schedstat]:
    """``percpu stat ARGV`` counting while the intruder runs its stints: the run's window opens before
    them (its start note is on stderr) and closes after (SIGINT: the report of the whole run)."""
    p, _name, _cpu = intruder
    run = subprocess.Popen(
        [*PERCPU, "stat", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert run.stderr is not None and run.stderr.readline().startswith("percpu: counting system calls")
    before = blocked_schedstat(p.pid)
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write("go\n")
    p.stdin.flush()
    assert p.stdout.readline() == "done\n"
    after = blocked_schedstat(p.pid)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=600)
    return subprocess.CompletedProcess(run.args, run.returncode, out, err), before, after


Key = tuple[str, tuple[tuple[str, str], ...]]


def scrape(target: str) -> dict[Key, float]:
    return parse_metrics(metrics_body(target))


def metrics_body(target: str) -> bytes:
    """One scrape's body, unparsed."""
    # A hang guard, not a timing assertion: a scrape of `exporter -D` took over 10 s in the 5.10 guest (TCG).
    code, body = fetch(f"http://{target}/metrics", timeout=300)
    assert code == 200
    return body


def parse_metrics(body: bytes) -> dict[Key, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(body.decode())
        for s in fam.samples
    }


def the_source(obj: dict[str, Any], pid: int) -> dict[str, Any]:
    (src,) = [s for s in obj["disturbance"]["sources"] if s.get("pid") == pid and s["kind"] != "syscall"]
    return src


def test_a_pinned_task_is_named_with_its_switch_ins_and_every_count_adds_up(
    intruder: tuple[subprocess.Popen[str], str, int],
) -> None:
    p, name, cpu = intruder
    r, before, after = stat_around(intruder, "-D", "-f", "json", "--cpus", str(cpu), "-E", f"pid:{p.pid}")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    d = obj["disturbance"]
    assert d["expected"] == f"pid {p.pid}" and set(d["counted"]) >= {"irq", "softirq", "task", "syscall"}
    src = the_source(obj, p.pid)
    assert src["kind"] == "expected" and src["name"] == name
    assert src["per_cpu"] == {str(cpu): after.switches - before.switches}
    if (
        "untimed_per_cpu" not in src
    ):  # every stint seen (this host hides some switches: see test_disturb_kernel)
        assert src["ns"] == after.runtime_ns - before.runtime_ns
    for cell in d["per_cpu"].values():
        tasks = sum(cell[k]["count"] for k in ("task", "kthread", "expected", "idle"))
        assert tasks + cell["lost"]["task"] == cell["switch_ins"]
    assert list(d["per_cpu"]) == [str(cpu)] and obj["selected"] == str(cpu)
    assert "Traceback" not in r.stderr


def test_the_csv_carries_the_same_view(intruder: tuple[subprocess.Popen[str], str, int]) -> None:
    p, name, cpu = intruder
    r, before, after = stat_around(intruder, "-T", "-f", "csv", "--cpus", str(cpu))
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert "ns" in rows[0]
    mine = [x for x in rows if x["record"] == "source" and x["pid"] == str(p.pid)]
    assert [(x["cpu"], x["code"], x["comm"]) for x in mine] == [(str(cpu), "task", name)]
    assert int(mine[0]["calls"]) == after.switches - before.switches
    totals = {x["code"]: int(x["calls"]) for x in rows if x["record"] == "disturb_total"}
    assert (
        totals["task"] + totals["kthread"] + totals["idle"] + totals.get("expected", 0)
        == totals["switch_ins"]
    )


def test_a_full_irq_table_is_said_in_every_format() -> None:
    """An IRQ table of one entry: the IRQs it cannot take are counted as lost, and every format says so
    (the table's footer, JSON's warnings, CSV's warning rows), and says nothing when none was lost."""
    lost_text = "hard interrupts had numbers beyond the IRQ table (see --irq-entries): not named"
    seen = 0
    for fmt in ("table", "json", "csv"):
        r = percpu_cmd("stat", "-q", "-I", "--irq-entries", "1", "-f", fmt, "--", "sh", "-c", "sleep 1")
        assert r.returncode == 0, r.stderr
        out = r.stderr  # a command's report goes to standard error
        if fmt == "table":
            lost = int(
                next(ln for ln in out.splitlines() if ln.startswith("irq ")).split()[2].replace(",", "")
            )
            lost = 0 if lost_text not in out else int(out.split(lost_text)[0].split()[-1].replace(",", ""))
            said = lost_text in out
        elif fmt == "json":
            obj = json.loads(out)
            lost = sum(c["lost"]["irq"] for c in obj["disturbance"]["per_cpu"].values())
            said = "disturb.lost.irq" in {w["code"] for w in obj["warnings"]}
        else:
            rows = list(csv.DictReader(io.StringIO(out)))
            lost = sum(int(x["calls"]) for x in rows if x["record"] == "disturb_lost" and x["code"] == "irq")
            said = any(x["record"] == "warning" and x["code"] == "disturb.lost.irq" for x in rows)
        assert said == (lost > 0), (fmt, lost)
        seen += lost
    if not seen:
        pytest.skip("no hard interrupt on any line in the three windows: nothing for the table to lose")


def test_the_exporter_serves_who_disturbs_each_cpu(intruder: tuple[subprocess.Popen[str], str, int]) -> None:
    """`percpu exporter -D`: the pinned intruder's switch-ins and time under its name on its CPU, born at 0
    and then exactly its schedstat's count; softirqs, vectors and the loss families served (at 0 when
    nothing was lost); no pid label anywhere; nothing said unsupported on a kernel that has every hook."""
    p, name, cpu = intruder
    # --web.request-timeout: the exporter closes a connection whose answer takes more than 10 s, which a
    # first scrape of -D took in the 5.10 guest under TCG with other guests running.
    with running_exporter("-D", "--max-comms", "1000", "--web.request-timeout", "300") as (target, _proc):
        scrape(target)  # every series so far is born here
        before = blocked_schedstat(p.pid)
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline() == "done\n"
        after = blocked_schedstat(p.pid)
        mine = ("percpu_task_switch_ins_total", (("comm", name), ("cpu", str(cpu)), ("kind", "task")))
        first = scrape(target)
        assert first[mine] == 0  # a new series is served at 0 first (docs/exporter.md)
        got = scrape(target)
    assert got[mine] == after.switches - before.switches
    secs = ("percpu_task_seconds_total", mine[1])
    assert 0 < got[secs] <= (after.runtime_ns - before.runtime_ns) / 1e9 + 1e-9
    families = {k[0] for k in got}
    assert {
        "percpu_softirq_runs_total",
        "percpu_softirq_seconds_total",
        "percpu_task_switches_total",
        "percpu_disturb_skipped_program_runs_total",
    } <= families
    if platform.machine() == "x86_64":
        assert "percpu_interrupt_vector_runs_total" in families
    for table in ("irqs", "softirqs", "tasks"):
        assert ("percpu_disturb_lost_total", (("table", table),)) in got
    assert all("pid" not in dict(k[1]) for k in got)
    assert "percpu_disturb_unsupported_info" not in families, got


def test_top_shows_who_disturbs_the_cpu_in_a_view_of_its_own() -> None:
    """`top -D` in a terminal: Tab to the disturbance view, where a task looping on the CPU is a row of
    kind task with its rate in that CPU's column and a share of its time; `q` quits with status 0."""
    _, cpu = online_pair()
    comm = unique_comm("pcpu_dtop")
    top = top_in_tmux("-D", "--cpus", str(cpu), "-i", "1", cols=100, rows=30)
    with loops(comm, (cpu, "getppid")), top as session:
        screen = screen_when(session, "view (Tab):")
        assert "view (Tab):  [1 syscalls]  2 disturbances" in screen, screen
        assert screen.rstrip().splitlines()[-1] == KEYS_PANES, screen
        _tmux("send-keys", "-t", session, "Tab")
        # Settled: a capture in the middle of a redraw has rows of two frames, or half a row (a 6.12 guest
        # under TCG once showed the task's row with its first two fields only).
        screen = settled_screen(session, f"{comm} (")
        lines = screen.splitlines()
        assert lines[3].split() == ["SOURCE", "KIND", "TIME%", "/s", f"cpu{cpu}"], screen
        (row,) = [ln.split() for ln in lines if ln.startswith(f"{comm} (")]
        assert len(row) >= 5, screen
        assert row[2] == "task" and row[3].endswith("%") and float(row[3][:-1]) > 0, screen
        assert row[-1] != ".", screen
        assert any(ln.startswith("no expected workload (-E)") for ln in lines), screen
        _tmux("send-keys", "-t", session, "q")
        assert "percpu-rc=0" in screen_when(session, "percpu-rc=", timeout=120)
