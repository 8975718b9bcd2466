"""The syscall counter on the real kernel: exact counts for a workload with a known number of calls."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from percpu.cpus import topology
from percpu.syscalls import syscall_number
from percpu.syscount import ATTACH_MODES, Filters, SyscallCounter

pytestmark = pytest.mark.kernel

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOAD = os.path.join(HERE, "..", "helpers", "syscall_workload.py")
GETPPID = syscall_number("getppid")
CLOSE = syscall_number("close")
COMM = "pcpu_workload"


def run_workload(calls: int, cpu: int, *extra: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, WORKLOAD, str(calls), str(cpu), "--comm", COMM, *extra],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def cpu_pair() -> tuple[int, int]:
    online = list(topology().online)
    if len(online) < 2:
        pytest.skip("needs two online CPUs to show counts stay on the CPU they happened on")
    return online[-1], online[0]


@pytest.mark.parametrize("calls", [100_000, 1_000_000])
def test_exact_count_per_process_on_its_cpu(calls: int) -> None:
    cpu, other = cpu_pair()
    cpus = list(topology().possible)
    with SyscallCounter(per_process=True) as c:
        info = run_workload(calls, cpu)
        snap = c.snapshot()
    assert snap.procs is not None
    keys, counts = snap.procs
    mine = (keys["tgid"] == int(info["pid"])) & (keys["slot"] == GETPPID)
    assert mine.sum() == 1, "one (pid, comm, getppid) entry for the workload"
    row = counts[mine][0]
    assert int(row[cpus.index(cpu)]) == calls
    assert int(row[cpus.index(other)]) == 0
    assert bytes(keys[mine][0]["comm"]).decode() == COMM


@pytest.mark.parametrize("mode", ATTACH_MODES)
def test_exact_count_each_attach_mode(mode: str) -> None:
    cpu, other = cpu_pair()
    cpus = list(topology().possible)
    with SyscallCounter(filters=Filters(comm=COMM), attach=mode) as c:
        assert c.attach_mode == mode
        before = c.snapshot()
        run_workload(100_000, cpu)
        d = c.snapshot().delta(before)
    assert int(d.counts[cpus.index(cpu), GETPPID]) == 100_000
    assert int(d.counts[cpus.index(other), GETPPID]) == 0


def test_errors_mode_counts_failures_by_errno() -> None:
    cpu, _ = cpu_pair()
    with SyscallCounter(filters=Filters(comm=COMM), errors=True) as c:
        run_workload(10, cpu, "--fail", "777")
        snap = c.snapshot()
    assert snap.errors is not None
    keys, counts = snap.errors
    hit = (keys["slot"] == CLOSE) & (keys["err"] == errno.EBADF)
    assert int(counts[hit].sum()) == 777


def test_failed_only_counts_only_failures() -> None:
    cpu, _ = cpu_pair()
    cpus = list(topology().possible)
    with SyscallCounter(filters=Filters(comm=COMM, failed_only=True)) as c:
        run_workload(5000, cpu, "--fail", "300")
        snap = c.snapshot()
    assert int(snap.counts[cpus.index(cpu), CLOSE]) == 300
    assert int(snap.counts[:, GETPPID].sum()) == 0  # getppid never fails


def test_latency_histogram_holds_every_call() -> None:
    cpu, _ = cpu_pair()
    with SyscallCounter(filters=Filters(comm=COMM), latency=True) as c:
        run_workload(20_000, cpu)
        snap = c.snapshot()
    assert snap.latency is not None
    keys, counts = snap.latency
    mine = keys["slot"] == GETPPID
    assert int(counts[mine].sum()) == 20_000
    # getppid takes between 16 ns and 1 ms on any machine this runs on
    buckets = keys["bucket"][mine]
    assert buckets.min() >= 4 and buckets.max() <= 20


def test_syscall_subset_filter() -> None:
    cpu, _ = cpu_pair()
    with SyscallCounter(filters=Filters(comm=COMM, syscalls=["getppid"])) as c:
        run_workload(1000, cpu, "--fail", "50")
        snap = c.snapshot()
    nz = set(np.nonzero(snap.counts.sum(axis=0))[0].tolist())
    assert nz == {GETPPID}
    assert int(snap.counts[:, GETPPID].sum()) == 1000


def test_tgid_filter_ignores_other_processes() -> None:
    cpu, _ = cpu_pair()
    with SyscallCounter(filters=Filters(tgid=os.getpid())) as c:
        run_workload(1000, cpu)
        for _ in range(123):
            os.getppid()
        snap = c.snapshot()
    assert int(snap.counts[:, GETPPID].sum()) == 123


def test_counters_never_reset_between_snapshots() -> None:
    cpu, _ = cpu_pair()
    with SyscallCounter(filters=Filters(comm=COMM)) as c:
        run_workload(1000, cpu)
        a = c.snapshot()
        b = c.snapshot()
        run_workload(500, cpu)
        e = c.snapshot()
    assert int(a.counts[:, GETPPID].sum()) == 1000
    assert (b.counts >= a.counts).all()
    assert int(e.delta(b).counts[:, GETPPID].sum()) == 500
