"""The disturbance counter's task table on the running kernel: exited tasks taken out of it on a long run,
pids as a pid namespace numbers them, and the expected workload marked by pid, name and cgroup."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest

from percpu.disturb import DisturbCounter, Expected, Tasks
from percpu.syscount import cgroup2_root

from ..conftest import unique_comm
from .test_cli_syscalls import caller_cgroup
from .test_disturb_kernel import INTRUDER, blocked_schedstat, online_pair

pytestmark = pytest.mark.kernel

THREADS = 3000
# Starts THREADS threads one after another, each named NAME and switched in at least once (it sleeps), and
# waits for each before the next: a steady stream of short-lived tasks, as a build or a busy server makes.
SHORT_LIVED = """
import ctypes, sys, threading, time
libc = ctypes.CDLL(None)
def run():
    libc.prctl(15, b"%s", 0, 0, 0)
    time.sleep(0.0005)
for _ in range(%d):
    t = threading.Thread(target=run)
    t.start()
    t.join()
print("done", flush=True)
"""


def by_name(tasks: Tasks, name: str) -> int:
    """Switch-ins of every row named ``name``: by thread id, and exited ones summed by name."""
    return sum(int(tasks.switches[i].sum()) for i in range(len(tasks.keys)) if tasks.comm(i) == name)


def test_a_long_run_of_short_lived_threads_loses_no_switch() -> None:
    """3,000 threads (6,000 rows: each renames itself) through a table of 2,048: the rows of those that
    exited are taken out while counting (kept by thread id, then summed by name), so nothing is lost,
    every thread's switch-ins are there, and every switch-in of every CPU is in a row. Without it the
    table filled with exited threads and the rest were counted as lost."""
    name = unique_comm("pcpudrn")
    with DisturbCounter(irqs=False, softirqs=False, vectors=False, tasks=True, task_entries=2048) as c:
        start = c.snapshot()  # the first snapshot starts the thread that takes exited tasks out
        r = subprocess.run(
            [sys.executable, "-c", SHORT_LIVED % (name, THREADS)], capture_output=True, text=True, timeout=600
        )
        assert r.stdout == "done\n", r.stderr
        c.stop()
        end = c.snapshot()
    assert end.tasks is not None and end.lost is not None
    d = end.delta(start)
    assert d.tasks is not None
    assert int(d.lost.tasks.sum()) == 0, f"{int(d.lost.tasks.sum())} switch-ins lost"
    assert by_name(d.tasks, name) >= THREADS
    assert (end.tasks.switches.sum(axis=0) + end.lost.tasks == end.switches + end.gaps).all()


def test_without_taking_exited_tasks_out_the_same_run_loses_switches() -> None:
    """The same run with exited tasks left in the table (drain_exited=False): it fills, and what it cannot
    take is counted as lost, never dropped silently."""
    name = unique_comm("pcpudrn")
    with DisturbCounter(
        irqs=False, softirqs=False, vectors=False, tasks=True, task_entries=2048, drain_exited=False
    ) as c:
        c.snapshot()
        subprocess.run([sys.executable, "-c", SHORT_LIVED % (name, THREADS)], check=True, timeout=600)
        c.stop()
        end = c.snapshot()
    assert end.tasks is not None and end.lost is not None
    assert int(end.lost.tasks.sum()) > 0
    assert (end.tasks.switches.sum(axis=0) + end.lost.tasks == end.switches + end.gaps).all()


# Run inside a new pid namespace: counts a child pinned to a CPU, and says what the task table holds.
IN_NAMESPACE = """
import json, os, subprocess, sys, time
from percpu.disturb import DisturbCounter, Expected
child = [sys.executable, "-c", %r]
me = Expected(pid=os.getpid())
with DisturbCounter(irqs=False, softirqs=False, vectors=False, tasks=True, expect=me) as c:
    s0 = c.snapshot()
    p = subprocess.Popen(child, stdout=subprocess.PIPE, text=True)
    p.stdout.readline()
    p.wait()
    time.sleep(0.2)
    c.stop()
    t = c.snapshot().delta(s0).tasks
rows = [(t.pid(i), int(t.keys[i]["tgid"]), t.comm(i), bool(t.expected[i]), bool(t.outside[i]))
        for i in range(len(t.keys))]
print(json.dumps({"me": os.getpid(), "child": p.pid, "pidns": c.pidns_ino, "rows": rows}))
"""
CHILD = """
import ctypes, os, time
ctypes.CDLL(None).prctl(15, b"%s", 0, 0, 0)
os.sched_setaffinity(0, {%d})
end = time.monotonic() + 0.05
while time.monotonic() < end:
    time.sleep(0.001)
print("ran", flush=True)
"""


def test_task_pids_are_those_of_percpus_pid_namespace() -> None:
    """percpu in a pid namespace of its own (a container) keys tasks by the pids it knows them by, as the
    syscall counter's filters compare them: its child is there under the pid Popen gave, with its name;
    the expected workload given by that namespace's pid is matched; tasks outside the namespace (the
    host's) have no pid, and are marked so. Before, every key held the initial namespace's pids."""
    name = unique_comm("pcpuns")
    cpu, _ = online_pair()
    script = IN_NAMESPACE % (CHILD % (name, cpu),)
    r = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["pidns"] != 0 and out["me"] < 10  # a namespace of its own, where it is one of the first
    rows = [tuple(x) for x in out["rows"]]
    child = [x for x in rows if x[2] == name]
    assert child and {(x[0], x[1]) for x in child} == {(out["child"], out["child"])}, child
    assert all(not x[3] and not x[4] for x in child)
    mine = [x for x in rows if x[1] == out["me"]]
    assert mine and all(x[3] and not x[4] for x in mine), mine
    outside = [x for x in rows if x[4]]
    assert outside and all(x[0] is None and x[1] == 0 and not x[3] for x in outside)


@pytest.fixture
def intruder() -> Iterator[subprocess.Popen[str]]:
    cpu, _ = online_pair()
    p = subprocess.Popen(
        [sys.executable, "-c", INTRUDER % (cpu, unique_comm("pcpuexp"), 4)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    assert p.stdout.readline() == "ready\n"
    yield p
    p.kill()
    p.communicate()


def run_intruder(p: subprocess.Popen[str], expect: Expected) -> Tasks:
    assert p.stdin is not None and p.stdout is not None
    with DisturbCounter(
        irqs=False, softirqs=False, vectors=False, tasks=True, times=True, expect=expect
    ) as c:
        blocked_schedstat(p.pid)
        s0 = c.snapshot()
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline() == "done\n"
        blocked_schedstat(p.pid)
        c.stop()
        d = c.snapshot().delta(s0)
    assert d.tasks is not None and d.tasks.expected is not None
    return d.tasks


def comm_of(pid: int) -> str:
    with open(f"/proc/{pid}/comm", encoding="utf-8") as f:
        return f.read().strip()


@pytest.mark.parametrize("by", ["pid", "comm", "cgroup"])
def test_the_expected_workload_is_marked_and_nothing_else(intruder: subprocess.Popen[str], by: str) -> None:
    """A task named as the expected workload, by its pid, its name or its cgroup, has its rows marked
    expected; no other task's row is."""
    if by == "pid":
        t = run_intruder(intruder, Expected(pid=intruder.pid))
    elif by == "comm":
        t = run_intruder(intruder, Expected(comm=comm_of(intruder.pid)))
    else:
        if cgroup2_root() is None:
            pytest.fail("no cgroup2 mount: the cgroup test needs one")
        with caller_cgroup() as cg:
            with open(os.path.join(cg, "cgroup.procs"), "w", encoding="ascii") as f:
                f.write(str(intruder.pid))
            t = run_intruder(intruder, Expected(cgroup=cg))
            # (the fixture kills the intruder; caller_cgroup's cleanup waits for it to leave)
    assert t.expected is not None
    rows = t.rows_of(intruder.pid)
    assert len(rows) == 1 and bool(t.expected[rows[0]]) and int(t.switches[rows[0]].sum()) >= 4
    others = np.nonzero(t.expected)[0]
    assert [int(t.keys[i]["tgid"]) for i in others] == [intruder.pid], [t.comm(int(i)) for i in others]


# Pinned to a CPU at a real-time priority (nothing the machine's other work runs preempts it), busy until
# told to stop on stdin, without sleeping or a system call in between: one stint on that CPU throughout.
BUSY = """
import os, select, sys
os.sched_setaffinity(0, {%d})
os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(80))
print("busy", flush=True)
n = 0
while True:
    n += 1
    if n %% 2000000 == 0 and select.select([sys.stdin], [], [], 0)[0]:
        break
"""
WINDOWS = 6


def test_a_task_that_runs_through_windows_gets_each_windows_time() -> None:
    """A task busy on one CPU through several consecutive snapshots, never switched out: each window gets
    the time it ran there (the stint in progress credited at each snapshot), and the windows add up to
    exactly what the kernel's table holds once it left the CPU and counting stopped. Before, the kernel
    charged the stint when it ended: the windows it ran through had no time for it, and the one it ended
    in had all of it (task shares above 100% of a CPU)."""
    cpu, _ = online_pair()
    with DisturbCounter(irqs=False, softirqs=False, vectors=False, tasks=True, times=True) as c:
        snaps = [c.snapshot()]  # before the task exists: every nanosecond of it is in the windows
        with subprocess.Popen(
            [sys.executable, "-c", BUSY % cpu], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        ) as p:
            assert p.stdout is not None and p.stdin is not None
            assert p.stdout.readline() == "busy\n"
            for _ in range(WINDOWS):
                snaps.append(c.snapshot())
                time.sleep(0.1)
            p.stdin.close()  # the task stops and exits: its last stint is charged
            p.wait(timeout=60)
        c.stop()
        snaps.append(c.snapshot())
    end = snaps[-1].tasks
    assert end is not None and end.ns is not None
    col = list(c.cpus).index(cpu)
    windows = []  # (ns on its CPU, ns on every CPU, switch-ins on its CPU) of the task, per window
    for a, b in itertools.pairwise(snaps):
        d = b.delta(a).tasks
        assert d is not None and d.ns is not None
        rows = d.rows_of(p.pid)
        windows.append((int(d.ns[rows, col].sum()), int(d.ns[rows].sum()), int(d.switches[rows, col].sum())))
    rows = end.rows_of(p.pid)
    assert sum(w[0] for w in windows) == int(end.ns[rows, col].sum())
    assert sum(w[1] for w in windows) == int(end.ns[rows].sum())
    # The windows between two snapshots taken while it ran there, at least one of them with no switch-in
    # of it (it was never switched out): each has time of it on that CPU.
    middle = windows[1:WINDOWS]
    assert any(w[2] == 0 for w in middle), f"switched out in every window: {windows}"
    assert all(w[0] > 0 for w in middle), (
        f"(ns there, ns, switch-ins there) per window on CPU {cpu}: {windows}"
    )
