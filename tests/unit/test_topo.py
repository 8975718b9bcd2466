"""The machine's shape from a fake sysfs: SMT, two NUMA nodes, two packages, isolated CPUs, cpuset
partitions, an offline CPU and possible CPUs never brought up, with a gap in the possible list."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from percpu import CpuList, CpuLists, PercpuError
from percpu.topo import CpuTopology, TopologyWatch, group_rows, read_topology, select_cpus, topology_lines

from .fake_topology import fake_sysfs, write


def test_records_per_possible_cpu_in_slot_order(topology: CpuTopology) -> None:
    assert [c.cpu for c in topology.cpus] == [0, 1, 2, 3, 6, 7, 8, 9]
    assert [c.slot for c in topology.cpus] == list(range(8))
    c2 = topology[2]
    assert (c2.package, c2.core, c2.die, c2.node, c2.siblings) == (0, 0, 0, 0, CpuList([0, 2]))
    assert c2.cluster == 65535 and c2.known and c2.online and c2.present
    assert topology[6].node == 1 and topology[6].package == 1
    with pytest.raises(PercpuError, match="CPU 4 is not possible"):
        topology[4]


def test_offline_and_absent_cpus_have_no_topology(topology: CpuTopology) -> None:
    c7, c8 = topology[7], topology[8]
    assert c7.state == "offline" and not c7.known and c7.core is None and c7.package is None
    assert c7.node == 1, "the node comes from the cpu7/node1 link when node1/cpulist leaves it out"
    assert c8.state == "absent" and c8.node is None and c8.siblings == CpuList([])
    assert topology.absent == CpuList([8, 9])


def test_isolation_sources(topology: CpuTopology) -> None:
    assert topology[3].isolated and not topology[3].nohz_full
    assert topology[6].nohz_full and not topology[6].isolated
    assert topology[2].partition is not None and topology[2].partition.kind == "isolated"
    assert topology[2].partition.path == "/rt"
    web = topology[1].partition
    assert web is not None and web.kind == "root"
    assert [p.path for p in topology.partitions] == ["/rt", "/web"], (
        "invalid and member partitions are left out"
    )
    assert topology.isolated == CpuList([2, 3, 6]), "a root partition is dedicated, not isolated"
    assert topology.housekeeping == CpuList([0, 1, 7, 8, 9])
    assert not topology[1].is_isolated


def test_groups_by_core_package_node(topology: CpuTopology) -> None:
    core = topology.groups("core")
    assert core.labels == ("core0.0", "core0.1", "core1.0", "unknown")
    assert core.members == (CpuList([0, 2]), CpuList([1, 3]), CpuList([6]), CpuList([7, 8, 9]))
    assert core.index.tolist() == [0, 1, 0, 1, 2, 3, 3, 3]
    node = topology.groups("node")
    assert node.labels == ("node0", "node1", "unknown")
    assert node.members == (CpuList([0, 1, 2, 3]), CpuList([6, 7]), CpuList([8, 9]))
    pkg = topology.groups("package")
    assert pkg.labels == ("pkg0", "pkg1", "unknown")
    cpu = topology.groups("cpu")
    assert cpu.labels == ("cpu0", "cpu1", "cpu2", "cpu3", "cpu6", "cpu7", "cpu8", "cpu9")
    with pytest.raises(PercpuError, match="cannot group by 'socket'"):
        topology.groups("socket")


def test_group_rows_sums_slots_and_keeps_totals(topology: CpuTopology) -> None:
    counts = np.arange(8 * 3, dtype=np.uint64).reshape(8, 3)
    by_node = group_rows(counts, topology.groups("node"))
    assert by_node.tolist() == [
        (counts[0] + counts[1] + counts[2] + counts[3]).tolist(),
        (counts[4] + counts[5]).tolist(),
        (counts[6] + counts[7]).tolist(),
    ]
    assert by_node.dtype == np.uint64
    by_core = group_rows(counts, topology.groups("core"))
    assert by_core[1].tolist() == (counts[1] + counts[3]).tolist()
    assert int(by_core.sum()) == int(counts.sum())
    with pytest.raises(PercpuError, match="3 CPU rows"):
        group_rows(counts[:3], topology.groups("node"))


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("isolated", [2, 3, 6]),
        ("housekeeping", [0, 1, 7, 8, 9]),
        ("node:1", [6, 7]),
        ("0-1,node:1", [0, 1, 6, 7]),
        ("3", [3]),
        (" 0 , 2 ", [0, 2]),
        ("8-9", [8, 9]),
    ],
)
def test_select(topology: CpuTopology, spec: str, want: list[int]) -> None:
    assert select_cpus(topology, spec) == CpuList(want)


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("4", r"CPU 4 is not possible here \(possible: 0-3,6-9\)"),
        ("0-5", "CPU 4 is not possible"),
        ("node:7", r"no such NUMA node with CPUs \(nodes: 0, 1\)"),
        ("node:x", "node:N takes a node number"),
        ("socket:1", "not a CPU list"),
        ("", "empty term"),
        ("0,,1", "empty term"),
    ],
)
def test_select_refuses(topology: CpuTopology, spec: str, error: str) -> None:
    with pytest.raises(PercpuError, match=error):
        select_cpus(topology, spec)


def test_select_isolated_when_nothing_is(tmp_path: Path) -> None:
    cpu, node, _ = fake_sysfs(tmp_path, isolated="", nohz=None)
    topo = read_topology(cpu, node_root=node, cgroup_root=None)
    assert topo.isolated == CpuList([])
    with pytest.raises(PercpuError, match="no CPU is isolated here"):
        topo.select("isolated")
    assert topo.select("housekeeping") == topo.possible


def test_topology_layout_is_the_library_entry(tmp_path: Path) -> None:
    cpu, _node, cg = fake_sysfs(tmp_path)
    topo = CpuLists(cpu).topology(cgroup_root=cg)  # the node root defaults to node/ beside cpu/
    assert topo.nodes == (0, 1)
    assert topo.isolated == CpuList([2, 3, 6])
    text = "\n".join(topology_lines(topo))
    assert "isolated partition /rt" in text and "absent" in text and "nohz_full" in text


def test_records_are_immutable(topology: CpuTopology) -> None:
    with pytest.raises(AttributeError):
        topology[0].core = 5


def test_topology_command_prints_the_running_machine(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from percpu.cli import main

    assert main(["topology", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    possible = CpuLists().possible
    assert [c["cpu"] for c in obj["cpus"]] == list(possible)
    assert all(c["slot"] == i for i, c in enumerate(obj["cpus"]))
    assert main(["topology"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[:4] == ["cpu", "slot", "state", "node"]


@pytest.mark.parametrize(
    ("dies", "labels"),
    [
        # Die ids numbered across the machine (as Linux 6.1 does in qemu): one die per package.
        ({0: 0, 1: 0, 2: 0, 3: 0, 6: 1}, ("core0.0", "core0.1", "core1.0", "unknown")),
        # Two dies in package 0: the label names the die.
        ({0: 0, 1: 1, 2: 0, 3: 1, 6: 0}, ("core0.0.0", "core0.1.1", "core1.0.0", "unknown")),
    ],
)
def test_core_labels_name_the_die_only_when_a_package_has_several(
    tmp_path: Path, dies: dict[int, int], labels: tuple[str, ...]
) -> None:
    cpu, node, _ = fake_sysfs(tmp_path)
    for c, die in dies.items():
        (Path(cpu) / f"cpu{c}" / "topology" / "die_id").write_text(f"{die}\n")
    topo = read_topology(cpu, node_root=node, cgroup_root=None)
    assert topo.groups("core").labels == labels


def test_nohz_full_null_means_none(tmp_path: Path) -> None:
    """Linux 6.1 with NO_HZ_FULL, booted with isolcpus=3 and no nohz_full=, has ``(null)`` there."""
    cpu, node, _ = fake_sysfs(tmp_path, nohz="(null)")
    topo = read_topology(cpu, node_root=node, cgroup_root=None)
    assert not any(c.nohz_full for c in topo.cpus)
    assert topo.isolated == CpuList([3])


def test_a_malformed_isolation_list_names_its_file(tmp_path: Path) -> None:
    cpu, node, _ = fake_sysfs(tmp_path, isolated="3-x")
    with pytest.raises(PercpuError, match=r"cpu/isolated: malformed CPU list"):
        read_topology(cpu, node_root=node, cgroup_root=None)


def test_names_of_earlier_releases_still_work_and_say_what_replaced_them(tmp_path: Path) -> None:
    import percpu
    from percpu import cpus, topo

    with pytest.warns(DeprecationWarning, match="percpu.Topology is now percpu.CpuLists"):
        assert percpu.Topology is percpu.CpuLists
    with pytest.warns(DeprecationWarning, match="percpu.topology is now percpu.cpu_lists"):
        assert percpu.topology is percpu.cpu_lists
    with pytest.warns(DeprecationWarning, match="percpu.CpuLayout is now percpu.CpuTopology"):
        from percpu import CpuLayout  # noqa: F401
    with pytest.warns(DeprecationWarning, match="read_topology"):
        assert topo.read_layout is topo.read_topology
    with pytest.warns(DeprecationWarning, match="cpu_lists"):
        assert cpus.topology is cpus.cpu_lists
    lists = cpus.CpuLists(str(tmp_path))
    with pytest.warns(DeprecationWarning, match=r"CpuLists.topology\(\)"), pytest.raises(PercpuError):
        lists.layout()  # the old method name: same reader, here on a root with no CPU lists
    with pytest.raises(AttributeError):
        percpu.NoSuchName  # noqa: B018


def test_a_cpu_gone_offline_keeps_its_place_and_one_coming_online_gets_its_own(tmp_path: Path) -> None:
    """A live view read the topology once: a CPU brought online later stayed `unknown` until the next
    start. A watch reads it again when the online list changes; a CPU that goes offline (sysfs removes
    its topology) keeps its core, package and node, so its counts stay in its groups."""
    cpu, node, _cg = fake_sysfs(tmp_path)
    reads: list[int] = []

    def read() -> CpuTopology:
        reads.append(1)
        return read_topology(cpu, node_root=node, cgroup_root=None)

    watch = TopologyWatch(read)
    assert watch.topology[7].label("node") == "node1" and watch.topology[7].label("core") == "unknown"
    assert not watch.update(CpuList([0, 1, 2, 3, 6])) and len(reads) == 1, "no change: no read"
    # CPU 7 comes online (the kernel makes its topology), CPU 3 goes offline (the kernel removes its own)
    t7 = Path(cpu) / "cpu7" / "topology"
    for name, text in (
        ("physical_package_id", "1"),
        ("core_id", "1"),
        ("die_id", "0"),
        ("thread_siblings_list", "7"),
    ):
        write(t7 / name, text)
    shutil.rmtree(Path(cpu) / "cpu3" / "topology")
    write(Path(cpu) / "online", "0-2,6-7")
    write(Path(node) / "node0" / "cpulist", "0-2")
    write(Path(node) / "node1" / "cpulist", "6-7")
    assert watch.update(CpuList([0, 1, 2, 6, 7])) and len(reads) == 2
    t = watch.topology
    assert t[7].online and t[7].label("core") == "core1.1" and t[7].label("package") == "pkg1"
    assert (
        not t[3].online and t[3].known and t[3].label("core") == "core0.1" and t[3].label("node") == "node0"
    )
    assert t.groups("core").labels == ("core0.0", "core0.1", "core1.0", "core1.1", "unknown")
    assert t.groups("core").members[-1] == CpuList([8, 9]), "only the CPUs never placed"
    assert read_topology(cpu, node_root=node, cgroup_root=None)[3].label("core") == "unknown", "sysfs alone"
