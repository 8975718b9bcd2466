"""Views by topology (--cpus, --by) on synthetic counts: every per-CPU dimension restricted or grouped
together, in the table, JSON, CSV and the exporter's labels."""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from percpu.cli import _report, main
from percpu.cli._view import from_args
from percpu.cpus import CpuList
from percpu.errors import PercpuError
from percpu.exporter import SyscallCollector
from percpu.syscount import ERR_KEY, NR_SLOTS, PROC_KEY, SyscallDelta, SyscallSnapshot, slot_name
from percpu.topo import CpuTopology, read_topology
from percpu.views import group, restrict, view

from .synthetic import FakeCounter, served
from .test_exporter import _parse, scrape

GETPPID, READ, WRITE = 110, 0, 1
# Slots of the fake topology: possible 0-3,6-9; cores {0,2} {1,3} {6}; nodes {0-3} {6,7}; isolated 2,3,6.


def delta(topology: CpuTopology) -> SyscallDelta:
    cpus = topology.possible
    counts = np.zeros((len(cpus), NR_SLOTS), np.uint64)
    counts[cpus.ids.index(3), GETPPID] = 1000  # the isolated CPU 3 (core0.1, node0)
    counts[cpus.ids.index(1), GETPPID] = 5  # its SMT sibling
    counts[cpus.ids.index(0), READ] = 70
    counts[cpus.ids.index(6), WRITE] = 9  # node1, nohz_full
    pkeys = np.zeros(3, PROC_KEY)
    pkeys["tgid"] = [100, 200, 300]
    pkeys["slot"] = [GETPPID, READ, WRITE]
    pkeys["comm"] = [b"spin", b"cat", b"log"]
    pcounts = np.zeros((3, len(cpus)), np.uint64)
    pcounts[0, cpus.ids.index(3)] = 1000
    pcounts[0, cpus.ids.index(1)] = 5
    pcounts[1, cpus.ids.index(0)] = 70
    pcounts[2, cpus.ids.index(6)] = 9
    ekeys = np.zeros(1, ERR_KEY)
    ekeys["slot"], ekeys["err"] = READ, 9
    ecounts = np.zeros((1, len(cpus)), np.uint64)
    ecounts[0, 0] = 4
    end = SyscallSnapshot(
        2.0,
        cpus,
        counts,
        procs=(pkeys, pcounts),
        errors=(ekeys, ecounts),
        arch="x86_64",
        online=CpuList([0, 1, 2, 3, 6]),
    )
    return end.delta(SyscallSnapshot(0.0, cpus, np.zeros_like(counts), arch="x86_64"))


def test_restrict_keeps_only_the_selected_cpus_everywhere(topology: CpuTopology) -> None:
    d = restrict(delta(topology), topology.isolated, "isolated")
    assert d.cpus == CpuList([2, 3, 6]) and d.selected == "isolated"
    assert d.counts.shape == (3, NR_SLOTS)
    assert int(d.per_syscall()[GETPPID]) == 1000, "the sibling's 5 calls are not on an isolated CPU"
    assert int(d.per_syscall()[READ]) == 0 and int(d.per_syscall()[WRITE]) == 9
    assert d.procs is not None
    keys, counts = d.procs
    assert [(int(k["tgid"]), bytes(k["comm"])) for k in keys] == [(100, b"spin"), (300, b"log")]
    assert counts.tolist() == [[0, 1000, 0], [0, 0, 9]]
    assert d.errors is not None and len(d.errors[0]) == 0, "the failed reads ran on CPU 0"


def test_group_by_core_and_node(topology: CpuTopology) -> None:
    d = group(delta(topology), topology, "core")
    assert d.groups is not None and d.groups.labels == ("core0.0", "core0.1", "core1.0", "unknown")
    assert d.counts[:, GETPPID].tolist() == [0, 1005, 0, 0]
    n = view(delta(topology), topology, by="node")
    assert n.counts[:, GETPPID].tolist() == [1005, 0, 0]
    assert n.counts[:, WRITE].tolist() == [0, 9, 0]
    assert n.procs is not None and n.procs[1].tolist() == [[1005, 0, 0], [70, 0, 0], [0, 9, 0]]
    assert int(n.counts.sum()) == int(delta(topology).counts.sum())
    # Imbalance over groups with an online CPU (or calls): node0 1075, node1 9; "unknown" is never online.
    assert n.imbalance() == pytest.approx(1075 / ((1075 + 9) / 2))


def test_restrict_then_group(topology: CpuTopology) -> None:
    d = view(delta(topology), topology, by="node", cpus=topology.select("isolated"), selected="isolated")
    assert d.groups is not None
    assert d.groups.labels == ("node0", "node1")
    assert d.groups.members == (CpuList([2, 3]), CpuList([6]))
    assert d.counts[:, GETPPID].tolist() == [1000, 0]
    with pytest.raises(PercpuError, match="before grouping"):
        restrict(d, CpuList([2]))


def test_table_json_csv_of_a_view(topology: CpuTopology) -> None:
    d = view(delta(topology), topology, by="node", cpus=topology.select("isolated"), selected="isolated")
    text = _report.table(d)
    assert "on CPUs 2-3,6 (isolated), by node" in text.splitlines()[0]
    head = next(line for line in text.splitlines() if line.startswith("syscall"))
    assert head.split()[-2:] == ["node0", "node1"]
    assert "busiest node" in text and "spin" in text and " cat " not in text
    obj = json.loads(json.dumps(_report.to_json(d, end_time=1.0, attach="tp_btf")))
    assert obj["by"] == "node" and obj["selected"] == "isolated"
    assert obj["groups"] == {"node0": [2, 3], "node1": [6]}
    assert obj["per_node"] == {"node0": 1000, "node1": 9}
    assert obj["syscalls"][0]["per_node"] == {"node0": 1000, "node1": 0}
    assert [p["pid"] for p in obj["processes"]] == [100, 300]
    rows = list(csv.DictReader(io.StringIO(_report.csv_rows(d, end_time=1.0, header=True))))
    assert list(rows[0])[:5] == ["time", "interval_s", "record", "node", "syscall"]
    assert [(r["node"], r["syscall"], r["calls"]) for r in rows if r["record"] == "syscall"] == [
        ("node0", "getppid", "1000"),
        ("node1", "write", "9"),
    ]
    assert [(r["node"], r["text"]) for r in rows if r["record"] == "group"] == [
        ("node0", "2,3"),
        ("node1", "6"),
    ]
    assert [(r["code"], r["text"]) for r in rows if r["record"] == "selected"] == [("isolated", "2-3,6")]


def test_table_of_selected_cpus_has_their_columns(topology: CpuTopology) -> None:
    d = view(delta(topology), topology, cpus=topology.select("node:1"), selected="node:1")
    head = next(line for line in _report.table(d).splitlines() if line.startswith("syscall"))
    assert head.split()[-2:] == ["cpu6", "cpu7"]
    obj = _report.to_json(d, end_time=1.0, attach=None)
    assert obj["per_cpu"] == {"6": 9, "7": 0} and obj["cpus"] == [6, 7]


def test_cli_options_build_the_view(topology: CpuTopology) -> None:
    from percpu.cli import build_parser

    args = build_parser().parse_args(["stat", "--by", "core", "--cpus", "isolated,0"])
    v = from_args(args, topology)
    assert v.topology is topology
    d = v(delta(topology))
    assert d.cpus == CpuList([0, 2, 3, 6]) and d.groups is not None
    assert d.groups.labels == ("core0.0", "core0.1", "core1.0")
    plain = from_args(build_parser().parse_args(["stat"]), topology)
    assert plain.topology is None, "no topology read without --by, --cpus or pictures"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["stat", "--cpus", "99999", "-d", "1"], "CPU 99999 is not possible here"),
        (["stat", "--cpus", "node:4096", "-d", "1"], "no such NUMA node"),
        (["stat", "--cpus", "bogus", "-d", "1"], "not a CPU list"),
        (["top", "--cpus", "1,,2"], "empty term"),
    ],
)
def test_bad_cpu_selection_is_one_line_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_group_is_refused_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["stat", "--by", "socket"])
    assert "invalid choice: 'socket'" in capsys.readouterr().err


class LayoutCounter(FakeCounter):
    def __init__(self, cpus: CpuList, seed: int = 0) -> None:
        super().__init__(len(cpus), seed)
        self._cpus = cpus


@pytest.mark.parametrize(("by", "rows"), [("node", 3), ("core", 4), ("package", 3)])
def test_exporter_groups_under_a_label_named_after_the_grouping(
    topology: CpuTopology, by: str, rows: int
) -> None:
    f = LayoutCounter(topology.possible, seed=5)
    f.tick(list(range(30)))
    c = served(SyscallCollector(f, cpu_label=by, topology=topology))
    got = scrape(c)
    series = {k: v for k, v in got.items() if k[0] == "percpu_syscalls_total"}
    labels = {dict(k[1])[by] for k in series}
    assert labels <= set(topology.groups(by).labels) and len(topology.groups(by).labels) == rows
    assert all("cpu" not in dict(k[1]) for k in series)
    assert sum(series.values()) == float(f.counts.sum())
    g = topology.groups(by)
    first = g.labels[0]
    want = int(f.counts[g.index == 0, 7].sum())
    assert (
        got[("percpu_syscalls_total", tuple(sorted({by: first, "syscall": slot_name(7, "x86_64")}.items())))]
        == want
    )
    # The fast exposition path writes the same samples.
    fast = served(SyscallCollector(f, cpu_label=by, topology=topology))
    b = _parse(fast.expose(openmetrics=False).decode())
    got.pop(("percpu_scrape_duration_seconds", ()))
    assert got == b


def test_exporter_label_choice_none_and_bad(topology: CpuTopology) -> None:
    f = LayoutCounter(topology.possible)
    f.counts[:, WRITE] = 1
    got = scrape(served(SyscallCollector(f, cpu_label="none")))
    assert got[("percpu_syscalls_total", (("syscall", "write"),))] == 8
    with pytest.raises(ValueError, match="choose cpu, core, package, node or none"):
        SyscallCollector(f, cpu_label="socket")


def test_exporter_series_bounded_at_256_cpus(tmp_path: Path) -> None:
    """256 CPUs in 2 nodes, 2 packages, 128 SMT-2 cores: series per syscall are 2 with node, 128 with core."""
    cpu = tmp_path / "cpu"
    node = tmp_path / "node"
    cpu.mkdir()
    for f, text in (("possible", "0-255"), ("present", "0-255"), ("online", "0-255")):
        (cpu / f).write_text(text + "\n")
    for c in range(256):
        t = cpu / f"cpu{c}" / "topology"
        t.mkdir(parents=True)
        (t / "physical_package_id").write_text(f"{c % 128 // 64}\n")
        (t / "core_id").write_text(f"{c % 64}\n")
        (t / "thread_siblings_list").write_text(f"{c % 128},{c % 128 + 128}\n")
    for n in (0, 1):
        (node / f"node{n}").mkdir(parents=True)
        (node / f"node{n}" / "cpulist").write_text(
            f"{n * 64}-{n * 64 + 63},{128 + n * 64}-{128 + n * 64 + 63}\n"
        )
    topo = read_topology(str(cpu), node_root=str(node), cgroup_root=None)
    f = LayoutCounter(topo.possible)
    f.counts[:, [0, 1, 2]] = 1
    for by, per_syscall in (("node", 2), ("package", 2), ("core", 128), ("cpu", 256)):
        got = scrape(SyscallCollector(f, cpu_label=by, topology=topo))
        n = sum(1 for k in got if k[0] == "percpu_syscalls_total")
        assert n == 3 * per_syscall, by


def cloud_vm(calls: dict[int, int], online: tuple[int, ...] = (0, 1)) -> SyscallDelta:
    """A VM with 64 possible CPUs of which ``online`` are online: getppid calls per CPU."""
    cpus = CpuList(range(64))
    counts = np.zeros((64, NR_SLOTS), np.uint64)
    for cpu, n in calls.items():
        counts[cpu, GETPPID] = n
    end = SyscallSnapshot(3.0, cpus, counts, arch="x86_64", online=CpuList(online))
    return end.delta(SyscallSnapshot(1.0, cpus, np.zeros_like(counts), arch="x86_64"))


def test_reports_show_the_cpus_that_exist_and_say_what_they_left_out() -> None:
    """`stat` on a VM with 2 of 64 possible CPUs online printed 64 columns, 62 of them zeros for CPUs that
    were not even present, under "on 64 possible CPUs (0-63)". Now the online CPUs and any CPU with calls
    (CPU 5 counted before it went offline) are shown, and one line says what was left out."""
    from percpu.views import shown

    d = shown(cloud_vm({1: 100, 5: 50}))
    assert d.cpus == CpuList([0, 1, 5]) and d.not_shown == CpuList([2, 3, 4, *range(6, 64)])
    assert d.imbalance() == 2.0, "the busiest CPU over the mean of the CPUs shown (0, 1 and 5)"
    text = _report.table(d, exact=True)
    lines = text.splitlines()
    assert lines[0] == "150 system calls in 2.00 s (75/s) on 3 of 64 possible CPUs (0-1,5)"
    assert lines[1] == "61 possible CPUs not online (2-4,6-63): no calls"
    head = next(line for line in lines if line.startswith("syscall"))
    assert head.split()[-3:] == ["cpu0", "cpu1", "cpu5"] and len(head.split()) == 6
    obj = _report.to_json(d, end_time=1.0, attach=None)
    assert obj["cpus"] == [0, 1, 5] and obj["online"] == [0, 1] and obj["not_shown"] == list(d.not_shown)
    assert obj["per_cpu"] == {"0": 0, "1": 100, "5": 50} and obj["total"] == 150
    rows = list(csv.DictReader(io.StringIO(_report.csv_rows(d, end_time=1.0, header=True))))
    assert [(r["record"], r["text"]) for r in rows if r["record"] in ("online", "not-shown")] == [
        ("online", "0-1"),
        ("not-shown", "2-4,6-63"),
    ]
    assert next(r for r in rows if r["record"] == "not-shown")["calls"] == "0"
    totals = {r["cpu"]: int(r["calls"]) for r in rows if r["record"] == "total"}
    assert totals == {"0": 0, "1": 100, "5": 50} and sum(totals.values()) == obj["total"]


def test_a_cpu_shown_before_keeps_its_column_and_every_cpu_on_request() -> None:
    """A live view (top, stat -i) keeps the columns it showed: CPU 1 went offline and made no call in
    this interval. --all-cpus shows every possible CPU."""
    from percpu.cli import build_parser

    view_ = from_args(build_parser().parse_args(["top"]))
    first = view_(cloud_vm({0: 10, 1: 20}))
    later = view_(cloud_vm({0: 10}, online=(0,)))
    assert first.cpus == later.cpus == CpuList([0, 1])
    assert later.not_shown == CpuList(range(2, 64)) and later.imbalance() == 1.0
    every = from_args(build_parser().parse_args(["top", "--all-cpus"]))(cloud_vm({1: 20}))
    assert every.cpus == CpuList(range(64)) and every.not_shown is None
    assert "possible CPUs not online" not in _report.table(every)


def test_nothing_is_left_out_when_the_online_cpus_are_unknown_or_all_are_there() -> None:
    from percpu.views import shown

    unknown = dataclasses.replace(cloud_vm({1: 1}), online=None)
    assert shown(unknown) is unknown
    every = cloud_vm({1: 1}, online=tuple(range(64)))
    assert shown(every) is every


def test_a_live_view_follows_cpus_going_offline_and_coming_online(tmp_path: Path) -> None:
    """`top --by core` and `stat -i --by core` read the topology once: CPU 7, brought online after the
    start, stayed in `unknown` until the next start. Now the next interval has it in its core, and CPU 3,
    taken offline (sysfs removes its topology), keeps its core: no count moves between groups."""
    import shutil

    from percpu.cli._view import View
    from percpu.topo import TopologyWatch

    from .fake_topology import fake_sysfs, write

    cpu, node, _cg = fake_sysfs(tmp_path)
    v = View("core", None, False, TopologyWatch(lambda: read_topology(cpu, node_root=node, cgroup_root=None)))
    possible = v.watch.topology.possible if v.watch else CpuList(())

    def interval(online: list[int], calls: dict[int, int]) -> SyscallDelta:
        counts = np.zeros((len(possible), NR_SLOTS), np.uint64)
        for c, n in calls.items():
            counts[possible.ids.index(c), GETPPID] = n
        end = SyscallSnapshot(2.0, possible, counts, arch="x86_64", online=CpuList(online))
        return end.delta(SyscallSnapshot(1.0, possible, np.zeros_like(counts), arch="x86_64"))

    def by_core(d: SyscallDelta) -> dict[str, int]:
        assert d.groups is not None
        return {lab: int(n) for lab, n in zip(d.groups.labels, d.counts[:, GETPPID], strict=True) if n}

    assert by_core(v(interval([0, 1, 2, 3, 6], {3: 10}))) == {"core0.1": 10}
    for name, text in (
        ("physical_package_id", "1"),
        ("core_id", "1"),
        ("die_id", "0"),
        ("thread_siblings_list", "7"),
    ):
        write(Path(cpu) / "cpu7" / "topology" / name, text)
    shutil.rmtree(Path(cpu) / "cpu3" / "topology")
    write(Path(cpu) / "online", "0-2,6-7")
    d = v(interval([0, 1, 2, 6, 7], {7: 5, 3: 2}))  # CPU 3's last calls, counted before it went away
    assert by_core(d) == {"core0.1": 2, "core1.1": 5}
    assert d.groups is not None and "unknown" not in d.groups.labels


def test_the_exporter_by_core_follows_cpus_going_offline_and_coming_online(tmp_path: Path) -> None:
    """`percpu exporter --cpu-label core` read the topology once: CPU 7, brought online later, was served
    under core="unknown" until a restart. Now its core from the next scrape; CPU 3, taken offline, keeps its
    core (moving its calls to unknown would make core0.1 go down, a counter reset counted twice); every
    series only grows."""
    import shutil

    from .fake_topology import fake_sysfs, write

    cpu, node, _cg = fake_sysfs(tmp_path)

    def read() -> CpuTopology:
        return read_topology(cpu, node_root=node, cgroup_root=None)

    first = read()
    fake = FakeCounter(len(first.possible))
    fake._cpus = first.possible
    fake.online = CpuList([0, 1, 2, 3, 6])
    c = SyscallCollector(fake, cpu_label="core", topology=first, read_topology=read)
    slot = {cpu_id: i for i, cpu_id in enumerate(first.possible)}
    seen: list[dict[tuple[str, tuple[tuple[str, str], ...]], float]] = []

    def getppid() -> dict[str, float]:
        got = _parse(c.expose(False).decode())
        seen.append(got)
        return {dict(k[1])["core"]: v for k, v in got.items() if k[0] == "percpu_syscalls_total" and v}

    fake.counts[slot[3], GETPPID] = 10
    getppid()  # new series are served at 0 once
    assert getppid() == {"core0.1": 10}
    for name, text in (
        ("physical_package_id", "1"),
        ("core_id", "1"),
        ("die_id", "0"),
        ("thread_siblings_list", "7"),
    ):
        write(Path(cpu) / "cpu7" / "topology" / name, text)
    write(Path(cpu) / "online", "0-3,6-7")
    fake.online = CpuList([0, 1, 2, 3, 6, 7])
    fake.counts[slot[7], GETPPID] = 5
    getppid()
    assert getppid() == {"core0.1": 10, "core1.1": 5}
    shutil.rmtree(Path(cpu) / "cpu3" / "topology")
    write(Path(cpu) / "online", "0-2,6-7")
    fake.online = CpuList([0, 1, 2, 6, 7])
    fake.counts[slot[3], GETPPID] = 12  # its last calls, counted before it went away
    assert getppid() == {"core0.1": 12, "core1.1": 5}
    for before, after in itertools.pairwise(seen):
        assert all(after.get(k, v) >= v for k, v in before.items()), "a counter went down"


def test_a_cpu_keeps_the_row_its_counts_were_served_in(tmp_path: Path) -> None:
    """CPU 7's calls were read while sysfs had no place for it yet (it came online between the reads of the
    online list and of the counts): served under unknown, they stay there once its core is known, so no
    series goes down. A group seen for the first time is added after the others."""
    from percpu.exporter._cpurows import CpuRows

    from .fake_topology import fake_sysfs, write

    cpu, node, _cg = fake_sysfs(tmp_path)
    rows = CpuRows(
        CpuList([0, 1, 2, 3, 6, 7, 8, 9]),
        "core",
        read=lambda: read_topology(cpu, node_root=node, cgroup_root=None),
    )
    assert rows.labels == ["core0.0", "core0.1", "core1.0", "unknown"]
    counts = np.zeros((8, NR_SLOTS), np.uint64)
    counts[5, GETPPID] = 3  # CPU 7
    snap = SyscallSnapshot(1.0, CpuList([0, 1, 2, 3, 6, 7, 8, 9]), counts, online=CpuList([0, 1, 2, 3, 6]))
    assert int(rows.counts(snap)[3, GETPPID]) == 3
    for name, text in (
        ("physical_package_id", "1"),
        ("core_id", "1"),
        ("die_id", "0"),
        ("thread_siblings_list", "7"),
    ):
        write(Path(cpu) / "cpu7" / "topology" / name, text)
    later = dataclasses.replace(snap, online=CpuList([0, 1, 2, 3, 6, 7]))
    assert int(rows.counts(later)[3, GETPPID]) == 3 and rows.labels[3] == "unknown"
    assert rows.topology is not None and rows.topology[7].label("core") == "core1.1"
