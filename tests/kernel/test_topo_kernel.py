"""`percpu stat --cpus/--by` for real: counts restricted to CPUs, per process too, and grouped by topology."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from percpu.cpus import cpu_lists

pytestmark = pytest.mark.kernel

WORKLOAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "helpers", "syscall_workload.py")
PERCPU = [sys.executable, "-m", "percpu"]
N = 20_000


def stat_with_workload(cpu: int, *args: str) -> dict[str, object]:
    """``percpu stat -f json ARGS -- WORKLOAD``: N getppid calls pinned to ``cpu``, counted in the
    command's own cgroup (other people's processes stay out of the per-process map)."""
    r = subprocess.run(
        [
            *PERCPU,
            "stat",
            "-f",
            "json",
            "-q",
            *args,
            "--",
            sys.executable,
            WORKLOAD,
            str(N),
            str(cpu),
            "--comm",
            "pcpu_sel",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    obj: dict[str, object] = json.loads(r.stderr)  # a command's report is on standard error
    obj["workload_pid"] = json.loads(r.stdout)["pid"]  # the workload prints its own line
    return obj


def test_stat_per_process_on_selected_cpus_lists_only_what_ran_there() -> None:
    """Two pinned loops in one command, one on the selected CPU, one elsewhere: only the first's calls
    are listed. (A command's cgroup keeps other people's processes, and their churn through the
    per-process LRU map, out of the count.)"""
    online = list(cpu_lists().online)
    cpu, other = online[-1], online[0]
    script = (
        f"{sys.executable} {WORKLOAD} {N} {cpu} --comm pcpu_sel && "
        f"{sys.executable} {WORKLOAD} {N // 2} {other} --comm pcpu_else"
    )
    r = subprocess.run(
        [*PERCPU, "stat", "-f", "json", "-q", "-P", "--cpus", str(cpu), "--", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stderr)
    assert obj["cpus"] == [cpu] and obj["selected"] == str(cpu)
    procs = obj["processes"]
    assert procs
    for p in procs:
        assert list(p["per_cpu"]) == [str(cpu)] and p["total"] == p["per_cpu"][str(cpu)] > 0
    getppid = [(p["comm"], p["total"]) for p in procs if p["syscall"] == "getppid"]
    assert ("pcpu_sel", N) in getppid
    assert not [g for g in getppid if g[0] == "pcpu_else"], "the loop on the other CPU is left out"
    calls = next(s for s in obj["syscalls"] if s["name"] == "getppid")
    assert calls["per_cpu"] == {str(cpu): calls["total"]} and calls["total"] >= N
    if len(online) > 1:
        assert calls["total"] < N + N // 2


def test_stat_by_core_and_node_puts_the_calls_in_the_cpus_groups() -> None:
    cpu = list(cpu_lists().online)[-1]
    topo = cpu_lists().topology()
    for by in ("core", "node"):
        obj = stat_with_workload(cpu, "--by", by, "-P")
        groups = obj["groups"]
        assert isinstance(groups, dict)
        mine = next(lab for lab, members in groups.items() if cpu in members)
        assert mine == topo[cpu].label(by, topo.multi_die)
        assert sorted(c for m in groups.values() for c in m) == list(topo.possible)
        per = obj[f"per_{by}"]
        assert isinstance(per, dict) and sum(per.values()) == obj["total"]
        procs = obj["processes"]
        assert isinstance(procs, list)
        w = next(p for p in procs if p["pid"] == obj["workload_pid"] and p["syscall"] == "getppid")
        assert w[f"per_{by}"][mine] == N and w["total"] == N
