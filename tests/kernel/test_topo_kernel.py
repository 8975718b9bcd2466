"""`percpu stat --cpus/--by` for real: counts restricted to CPUs, per process too, and grouped by topology."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from percpu.cpus import topology

pytestmark = pytest.mark.kernel

WORKLOAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "helpers", "syscall_workload.py")
PERCPU = [sys.executable, "-m", "percpu"]
N = 20_000


def stat_with_workload(cpu: int, *args: str) -> dict[str, object]:
    """``percpu stat -f json ARGS`` for 4 s while the workload makes N getppid calls pinned to ``cpu``."""
    with subprocess.Popen(
        [*PERCPU, "stat", "-f", "json", "-q", "-d", "4", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as p:
        time.sleep(1.5)  # the counter is attached well before this (loading takes well under a second)
        w = subprocess.run(
            [sys.executable, WORKLOAD, str(N), str(cpu), "--comm", "pcpu_sel"],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    obj: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    obj["workload_pid"] = json.loads(w.stdout)["pid"]
    return obj


def test_stat_per_process_on_selected_cpus_lists_only_what_ran_there() -> None:
    cpu = list(topology().online)[-1]
    obj = stat_with_workload(cpu, "-P", "--cpus", str(cpu))
    assert obj["cpus"] == [cpu] and obj["selected"] == str(cpu)
    procs = obj["processes"]
    assert isinstance(procs, list) and procs
    for p in procs:
        assert list(p["per_cpu"]) == [str(cpu)] and p["total"] == p["per_cpu"][str(cpu)] > 0
    mine = [p for p in procs if p["pid"] == obj["workload_pid"] and p["syscall"] == "getppid"]
    assert len(mine) == 1 and mine[0]["total"] == N and mine[0]["comm"] == "pcpu_sel"
    syscalls = obj["syscalls"]
    assert isinstance(syscalls, list)
    getppid = next(s for s in syscalls if s["name"] == "getppid")
    assert getppid["per_cpu"] == {str(cpu): getppid["total"]} and getppid["total"] >= N


def test_stat_by_core_and_node_puts_the_calls_in_the_cpus_groups() -> None:
    cpu = list(topology().online)[-1]
    lay = topology().layout()
    for by in ("core", "node"):
        obj = stat_with_workload(cpu, "--by", by, "-P")
        groups = obj["groups"]
        assert isinstance(groups, dict)
        mine = next(lab for lab, members in groups.items() if cpu in members)
        assert mine == lay[cpu].label(by, lay.multi_die)
        assert sorted(c for m in groups.values() for c in m) == list(lay.possible)
        per = obj[f"per_{by}"]
        assert isinstance(per, dict) and sum(per.values()) == obj["total"]
        procs = obj["processes"]
        assert isinstance(procs, list)
        w = next(p for p in procs if p["pid"] == obj["workload_pid"] and p["syscall"] == "getppid")
        assert w[f"per_{by}"][mine] == N and w["total"] == N
