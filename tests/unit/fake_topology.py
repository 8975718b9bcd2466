"""A machine's shape as sysfs and cgroupfs files, for the tests of topo, views and plots: SMT, two NUMA
nodes, two packages, isolated CPUs, cpuset partitions, an offline CPU and possible CPUs never brought up,
with a gap in the possible list. ``topology`` in conftest.py is this machine read by ``read_topology``."""

from __future__ import annotations

import os
from pathlib import Path

# cpu: (package, core, siblings); cpu7 is present but offline (no topology dir), 8-9 are possible only.
TOPOLOGY = {
    0: (0, 0, "0,2"),
    1: (0, 1, "1,3"),
    2: (0, 0, "0,2"),
    3: (0, 1, "1,3"),
    6: (1, 0, "6"),
}


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def fake_sysfs(root: Path, *, isolated: str = "3", nohz: str | None = "6") -> tuple[str, str, str]:
    """``nohz`` None: no nohz_full file (a kernel without NO_HZ_FULL)."""
    cpu = root / "sys/devices/system/cpu"
    node = root / "sys/devices/system/node"
    write(cpu / "possible", "0-3,6-9")
    write(cpu / "present", "0-3,6-7")
    write(cpu / "online", "0-3,6")
    write(cpu / "isolated", isolated)
    if nohz is not None:
        write(cpu / "nohz_full", nohz)
    for c, (pkg, core, sib) in TOPOLOGY.items():
        t = cpu / f"cpu{c}" / "topology"
        write(t / "physical_package_id", str(pkg))
        write(t / "core_id", str(core))
        write(t / "die_id", "0")
        write(t / "cluster_id", "65535")
        write(t / "thread_siblings_list", sib)
    write(node / "node0/cpulist", "0-3")
    write(node / "node1/cpulist", "6")
    # The offline CPU keeps its registration and its node link; its topology is gone.
    (cpu / "cpu7").mkdir()
    os.symlink("../../node/node1", cpu / "cpu7" / "node1")
    cg = root / "cgroup"
    write(cg / "cpuset.cpus.effective", "0-3,6")
    write(cg / "rt/cpuset.cpus.partition", "isolated")
    write(cg / "rt/cpuset.cpus.effective", "2")
    write(cg / "web/cpuset.cpus.partition", "root")
    write(cg / "web/cpuset.cpus.effective", "1")
    write(cg / "bad/cpuset.cpus.partition", "isolated invalid (Cpu list in cpuset.cpus not exclusive)")
    write(cg / "bad/cpuset.cpus.effective", "0")
    write(cg / "plain/cpuset.cpus.partition", "member")
    write(cg / "plain/cpuset.cpus.effective", "0-3")
    return str(cpu), str(node), str(cg)
