"""CpuLists in a guest of a known shape: ``-smp 4,sockets=2,cores=2,threads=1``, NUMA nodes {0,1} and {2,3},
``isolcpus=3`` (and ``nohz_full=3``) on the kernel command line; the VM matrix boots it as "topology".

N getppid calls pinned to the isolated CPU 3 must be reported under cpu3, its core (core1.1), its package
(pkg1) and its node (node1), and nowhere else, by the library, by ``percpu stat`` and by the exporter.
In a guest of another shape these tests skip and say what they found; the shape is read from sysfs and
/proc/cmdline directly, not through percpu, so a wrong reading by percpu fails rather than skips.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import percpu
from percpu.cpus import CpuList
from percpu.syscalls import syscall_number
from percpu.syscount import Filters, SyscallCounter, SyscallDelta
from percpu.topo import CpuTopology
from percpu.views import restrict, view

N = 20_000
ISOLATED_CPU = 3
GETPPID = syscall_number("getppid")
WORKLOAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "helpers", "syscall_workload.py")
SHAPE = "-smp 4,sockets=2,cores=2,threads=1, NUMA nodes 0-1 and 2-3, isolcpus=3 (scripts/vm-matrix: topology)"


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return "(absent)"


def _shape() -> str | None:
    """What differs from the expected guest, read without percpu; None when this is that guest."""
    found = {
        "possible": _read("/sys/devices/system/cpu/possible"),
        "online": _read("/sys/devices/system/cpu/online"),
        "node0": _read("/sys/devices/system/node/node0/cpulist"),
        "node1": _read("/sys/devices/system/node/node1/cpulist"),
        "pkg of cpu3": _read("/sys/devices/system/cpu/cpu3/topology/physical_package_id"),
        "isolcpus=3": str("isolcpus=3" in _read("/proc/cmdline").split()),
    }
    want = {
        "possible": "0-3",
        "online": "0-3",
        "node0": "0-1",
        "node1": "2-3",
        "pkg of cpu3": "1",
        "isolcpus=3": "True",
    }
    diff = [f"{k} {found[k]!r}" for k in want if found[k] != want[k]]
    return ", ".join(diff) if diff else None


WRONG_SHAPE = _shape()
pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(
        WRONG_SHAPE is not None, reason=f"needs a guest booted with {SHAPE}; here: {WRONG_SHAPE}"
    ),
]


@pytest.fixture(scope="module")
def topology() -> CpuTopology:
    return percpu.cpu_lists().topology()


@pytest.fixture(scope="module")
def pinned() -> SyscallDelta:
    """N getppid calls by a process pinned to the isolated CPU, counted with a comm filter."""
    with SyscallCounter(filters=Filters(comm="pcpu_iso")) as c:
        before = c.snapshot()
        out = subprocess.run(
            [sys.executable, WORKLOAD, str(N), str(ISOLATED_CPU), "--comm", "pcpu_iso"],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert json.loads(out.stdout)["calls"] == N
        return c.snapshot().delta(before)


def test_layout_is_the_guests(topology: CpuTopology) -> None:
    assert topology.possible == CpuList([0, 1, 2, 3])
    assert [(c.package, c.core, c.node) for c in topology.cpus] == [
        (0, 0, 0),
        (0, 1, 0),
        (1, 0, 1),
        (1, 1, 1),
    ]
    assert all(c.siblings == CpuList([c.cpu]) and c.online and c.known for c in topology.cpus)
    assert topology.isolated == CpuList([3]) and topology.housekeeping == CpuList([0, 1, 2])
    assert topology[3].isolated
    if "nohz_full=3" in _read("/proc/cmdline").split():
        assert topology[3].nohz_full
    assert topology.groups("core").labels == ("core0.0", "core0.1", "core1.0", "core1.1")
    assert topology.groups("node").members == (CpuList([0, 1]), CpuList([2, 3]))


@pytest.mark.parametrize(
    ("by", "labels", "home"),
    [
        ("cpu", ("cpu0", "cpu1", "cpu2", "cpu3"), "cpu3"),
        ("core", ("core0.0", "core0.1", "core1.0", "core1.1"), "core1.1"),
        ("package", ("pkg0", "pkg1"), "pkg1"),
        ("node", ("node0", "node1"), "node1"),
    ],
)
def test_calls_are_under_the_isolated_cpus_groups_only(
    pinned: SyscallDelta, topology: CpuTopology, by: str, labels: tuple[str, ...], home: str
) -> None:
    d = view(pinned, topology, by=by)
    names = tuple(d.groups.labels) if d.groups is not None else tuple(f"cpu{c}" for c in d.cpus)
    assert names == labels
    col = d.counts[:, GETPPID]
    want = np.array([N if lab == home else 0 for lab in labels], dtype=np.uint64)
    assert col.tolist() == want.tolist(), f"getppid by {by}: {dict(zip(labels, col.tolist(), strict=True))}"


def test_isolated_and_housekeeping_selections(pinned: SyscallDelta, topology: CpuTopology) -> None:
    iso = restrict(pinned, topology.select("isolated"), "isolated")
    assert iso.cpus == CpuList([3]) and int(iso.counts[:, GETPPID].sum()) == N
    hk = restrict(pinned, topology.select("housekeeping"), "housekeeping")
    assert int(hk.counts[:, GETPPID].sum()) == 0
    assert int(restrict(pinned, topology.select("node:0")).counts.sum()) == 0


def test_stat_cli_reports_the_isolated_cpu(topology: CpuTopology) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "percpu",
            "stat",
            "-f",
            "json",
            "-q",
            "-P",
            "--cpus",
            "isolated",
            "--by",
            "node",
            "--",
            sys.executable,
            WORKLOAD,
            str(N),
            str(ISOLATED_CPU),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stderr)  # a command's report is on standard error
    assert obj["cpus"] == [ISOLATED_CPU] and obj["by"] == "node" and obj["groups"] == {"node1": [3]}
    getppid = next(s for s in obj["syscalls"] if s["name"] == "getppid")
    assert getppid["per_node"] == {"node1": N}
    procs = [p for p in obj["processes"] if p["syscall"] == "getppid"]
    assert [p["per_node"] for p in procs] == [{"node1": N}]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "percpu",
            "stat",
            "-f",
            "json",
            "-q",
            "--by",
            "core",
            "--",
            sys.executable,
            WORKLOAD,
            str(N),
            str(ISOLATED_CPU),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stderr)  # a command's report is on standard error
    getppid = next(s for s in obj["syscalls"] if s["name"] == "getppid")
    assert getppid["per_core"] == {"core0.0": 0, "core0.1": 0, "core1.0": 0, "core1.1": N}


def test_exporter_node_label(topology: CpuTopology) -> None:
    pytest.importorskip("prometheus_client", reason="the exporter extra is not installed")
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from percpu.exporter import SyscallCollector

    with SyscallCounter(filters=Filters(comm="pcpu_exp")) as c:
        subprocess.run(
            [sys.executable, WORKLOAD, str(N), str(ISOLATED_CPU), "--comm", "pcpu_exp"],
            check=True,
            capture_output=True,
            timeout=600,
        )
        reg = CollectorRegistry(auto_describe=False)
        reg.register(SyscallCollector(c, cpu_label="node", topology=topology))
        generate_latest(reg)  # a new series is served at 0 the first time (docs/exporter.md)
        text = generate_latest(reg).decode()
    got = {
        (s.labels.get("node"), s.labels["syscall"]): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "percpu_syscalls_total"
    }
    assert got.get(("node1", "getppid")) == N
    assert ("node0", "getppid") not in got
