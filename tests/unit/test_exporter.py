"""The Prometheus collector on synthetic snapshots: names, labels, bounds, and counters that never fall."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from percpu._text import printable
from percpu.cli import main
from percpu.exporter import SyscallCollector
from percpu.syscount import ERR_KEY, FOLDED_TGID, LAT_KEY, NR_SLOTS, PROC_KEY, Lost, slot_name

from .fake_kernel import FakeKernel, FakeMachine, installed
from .synthetic import FakeCounter, FakeProgram, served

DASHBOARD = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "grafana-dashboard.json")


def scrape(c: SyscallCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(c)
    out = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_names_and_labels() -> None:
    f = FakeCounter(4)
    f.counts[2, 110] = 7
    f.counts[0, 0] = 3
    got = scrape(served(SyscallCollector(f, libbpf_version="v1.1")))
    assert got[("percpu_syscalls_total", (("cpu", "2"), ("syscall", "getppid")))] == 7
    assert got[("percpu_syscalls_total", (("cpu", "0"), ("syscall", "read")))] == 3
    assert got[("percpu_build_info", (("attach", "tp_btf"), ("libbpf", "v1.1"), ("version", "0.1.0")))] == 1
    assert ("percpu_scrape_duration_seconds", ()) in got


def test_lost_calls_per_full_table() -> None:
    f = FakeCounter(2)
    f.lost = Lost(processes=0, errors=5, latency=2)
    got = scrape(served(SyscallCollector(f)))
    assert got[("percpu_lost_syscalls_total", (("table", "errors"),))] == 5
    assert got[("percpu_lost_syscalls_total", (("table", "latency"),))] == 2
    assert got[("percpu_lost_syscalls_total", (("table", "processes"),))] == 0
    assert ("percpu_lost_syscalls_total", (("table", "skipped"),)) not in got  # skipped is its own family
    assert got[("percpu_skipped_program_runs_total", ())] == 0


def test_skipped_program_runs_are_exported() -> None:
    f = FakeCounter(2)
    f.lost = Lost(processes=0, errors=0, latency=0, skipped=98196)
    got = scrape(served(SyscallCollector(f)))
    assert got[("percpu_skipped_program_runs_total", ())] == 98196


def test_no_cpu_label_sums() -> None:
    f = FakeCounter(3)
    f.counts[:, 1] = [1, 2, 3]
    got = scrape(served(SyscallCollector(f, cpu_label=False)))
    assert got[("percpu_syscalls_total", (("syscall", "write"),))] == 6


def test_top_n_is_sticky_and_other_never_decreases() -> None:
    f = FakeCounter(8, seed=1)
    c = SyscallCollector(f, top_syscalls=5)
    last: dict[Any, float] = {}
    names_seen: set[str] = set()
    for i in range(60):
        # new syscalls keep appearing, and the busiest change over time
        f.tick([0, 1, 2, *range(3, 3 + i // 3)])
        got = scrape(c)
        for k, v in got.items():
            if k[0].endswith("_total"):
                assert v >= last.get(k, 0), f"{k} went down"
        for k in last:
            if k[0] == "percpu_syscalls_total":
                assert k in got, f"series {k} disappeared"
        last = got
        names = {dict(k[1])["syscall"] for k in got if k[0] == "percpu_syscalls_total"}
        names_seen |= names
        assert len(names - {"other"}) <= 10  # N named at first sight, at most N more when they get busy
    assert "other" in names_seen


def test_full_matrix_256_cpus() -> None:
    f = FakeCounter(256)
    f.counts[:, :460] = 1
    got = scrape(SyscallCollector(f))
    assert sum(1 for k in got if k[0] == "percpu_syscalls_total") == 256 * 460


def test_processes_bounded_comm_only_and_monotonic_under_eviction() -> None:
    f = FakeCounter(2)
    keys = np.zeros(4, PROC_KEY)
    keys["tgid"] = [10, 11, 12, 13]
    keys["slot"] = 0
    keys["comm"] = [b"a", b"b", b"c", b"d"]
    f.procs = (keys, np.array([[5, 0], [1, 1], [2, 0], [9, 9]], np.uint64))
    c = SyscallCollector(f, max_comms=4)
    first = scrape(c)
    comms = {dict(k[1])["comm"] for k in first if k[0] == "percpu_process_syscalls_total"}
    assert comms == {"d", "a", "other"}  # half the slots at first sight, the busiest first
    assert all("pid" not in dict(k[1]) for k in first)
    # the kernel's LRU evicts pid 13 and pid 10 starts over (a new incarnation with a smaller count)
    f.procs = (keys[:3], np.array([[1, 0], [2, 1], [2, 0]], np.uint64))
    second = scrape(c)
    for k, v in first.items():
        if k[0] == "percpu_process_syscalls_total":
            assert second[k] >= v


def test_errors_and_latency_histogram() -> None:
    f = FakeCounter(2)
    ek = np.zeros(1, ERR_KEY)
    ek["slot"], ek["err"] = 2, 2
    f.errors = (ek, np.array([[3, 4]], np.uint64))
    lk = np.zeros(2, LAT_KEY)
    lk["slot"], lk["bucket"] = 0, [10, 12]
    f.latency = (lk, np.array([[5, 0], [0, 5]], np.uint64))
    got = scrape(served(SyscallCollector(f)))
    assert got[("percpu_syscall_errors_total", (("errno", "ENOENT"), ("syscall", "open")))] == 7
    assert got[("percpu_syscall_latency_seconds_count", (("syscall", "read"),))] == 10
    le = {dict(k[1])["le"]: v for k, v in got.items() if k[0] == "percpu_syscall_latency_seconds_bucket"}
    assert le["+Inf"] == 10
    assert le[repr(2.0**11 / 1e9)] == 5  # bucket 10 holds [1024, 2048) ns
    assert got[("percpu_syscall_latency_seconds_sum", (("syscall", "read"),))] == pytest.approx(
        (5 * 1.5 * 2**10 + 5 * 1.5 * 2**12) / 1e9
    )


def _parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

    parse = om_parse if text.rstrip().endswith("# EOF") else text_string_to_metric_families
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in parse(text)
        for s in fam.samples
        if s.name != "percpu_scrape_duration_seconds"
    }


@pytest.mark.parametrize("openmetrics", [False, True])
@pytest.mark.parametrize("kw", [{}, {"top_syscalls": 7}, {"cpu_label": False}])
def test_fast_exposition_equals_prometheus_client(openmetrics: bool, kw: dict[str, Any]) -> None:
    f = FakeCounter(16, seed=3)
    f.tick(list(range(40)))
    slow = SyscallCollector(f, **kw)
    fast = SyscallCollector(f, **kw)
    for _ in range(3):
        f.tick(list(range(0, 60, 3)))
        a = scrape(slow)
        a.pop(("percpu_scrape_duration_seconds", ()))
        b = _parse(fast.expose(openmetrics=openmetrics).decode())
        assert a == b


Key = tuple[str, tuple[tuple[str, str], ...]]


def _syscall_series(got: dict[Key, float]) -> dict[tuple[str, str], float]:
    return {
        (dict(k[1])["cpu"], dict(k[1])["syscall"]): v
        for k, v in got.items()
        if k[0] == "percpu_syscalls_total"
    }


def test_top_n_names_syscalls_that_get_busy_later_and_other_stays_monotonic() -> None:
    """The mix changes: a syscall in "other" and a new one get busy, then more than 2N are busy.

    The busy ones get names (up to 2N), nothing exported goes down or vanishes (syscalls, "other",
    errors, latency, in both exposition paths), and "other" grows by exactly the calls of the syscalls
    in it: no call is lost from the sum of increases, none is counted twice.
    """
    n, ncpu = 3, 4
    f = FakeCounter(ncpu, seed=7)
    ek = np.zeros(2, ERR_KEY)
    ek["slot"], ek["err"] = [5, 6], [2, 2]  # ENOENT from two syscalls that start in "other"
    lk = np.zeros(2, LAT_KEY)
    lk["slot"], lk["bucket"] = [5, 6], [10, 10]
    slow, fast = SyscallCollector(f, top_syscalls=n), SyscallCollector(f, top_syscalls=n)
    last: dict[Key, float] = {}
    prev_counts = f.counts.copy()
    prev_named: set[str] = set()
    unshown = [0] * ncpu  # calls of "other" made before its series was first served

    def work(heavy: list[int], light: list[int]) -> None:
        for s in heavy:
            f.counts[:, s] += np.uint64(1000)
        for s in light:
            f.counts[:, s] += np.uint64(1)
        f.errors = (ek, (f.counts[:, [5, 6]] // np.uint64(10)).T.copy())
        f.latency = (lk, f.counts[:, [5, 6]].T.copy())

    busy_late = [5, 300]
    many = list(range(400, 410))
    for i in range(40):
        if i < 10:
            work([0, 1, 2], [3, 4, 5, 6])
        elif i < 25:
            work([0, *busy_late], [1, 2, 3, 4, 5, 6])
        else:
            work([0, *many], [1, 2, 3, 4, 6])
        got = scrape(slow)
        got.pop(("percpu_scrape_duration_seconds", ()))
        assert _parse(fast.expose(openmetrics=False).decode()) == got
        for k, v in last.items():
            if k[0].endswith(("_total", "_count", "_bucket", "_sum")):
                assert k in got, f"series {k} disappeared at scrape {i}"
                assert got[k] >= v, f"{k} went down at scrape {i}: {v} -> {got[k]}"
        series = _syscall_series(got)
        named = {sc for _, sc in series} - {"other"}
        assert len(named) <= 2 * n
        # Conservation: "other" grew by the calls of every syscall not named before this scrape, except
        # those first seen now and named at once (their series starts with them).
        first_named = {s for s in range(NR_SLOTS) if not prev_counts[:, s].any() and slot_name(s) in named}
        in_other = [
            s
            for s in np.nonzero(f.counts.sum(axis=0))[0]
            if slot_name(int(s)) not in prev_named and int(s) not in first_named
        ]
        grew = (f.counts - prev_counts)[:, in_other].sum(axis=1)
        for cpu in range(ncpu):
            before = _syscall_series(last).get((str(cpu), "other"))
            now = series.get((str(cpu), "other"), 0)
            if before is None:  # born at 0 (or not yet there): its calls so far show at its next scrape
                assert now == 0, (i, cpu)
                unshown[cpu] += int(grew[cpu])
            else:
                assert now - before == grew[cpu] + unshown[cpu], (i, cpu)
                unshown[cpu] = 0
        last, prev_counts, prev_named = got, f.counts.copy(), named
        if i == 24:
            # the syscall that was in "other" and the new one got names once they became busy
            assert {slot_name(s) for s in busy_late} <= named
    # more than 2N busy syscalls: the names stop at 2N, the rest is counted in "other"
    assert len(named) == 2 * n
    assert any(slot_name(s) not in named for s in many)
    assert ("percpu_syscall_errors_total", (("errno", "ENOENT"), ("syscall", slot_name(5)))) in last
    assert ("percpu_syscall_errors_total", (("errno", "ENOENT"), ("syscall", "other"))) in last


def test_bpf_prog_stats_with_the_stats_fd_or_the_sysctl() -> None:
    """--enable-bpf-stats holds a BPF_ENABLE_STATS fd, which leaves kernel.bpf_stats_enabled at 0."""
    kernel = FakeKernel(2)
    machine = FakeMachine(kernel, sysctls={"kernel.bpf_stats_enabled": "0"})
    sysctl = Path(machine.proc, "sys", "kernel", "bpf_stats_enabled")
    with installed(kernel, machine):
        _bpf_prog_stats(sysctl)


def _bpf_prog_stats(sysctl: Path) -> None:
    f = FakeCounter(2)
    f.progs = [FakeProgram("enter_btf", 1234, 5_000_000), FakeProgram("exit_btf", 0, 0, gone=True)]
    run_cnt = ("percpu_bpf_prog_run_count_total", (("program", "enter_btf"),))
    run_time = ("percpu_bpf_prog_run_time_seconds_total", (("program", "enter_btf"),))

    held = served(SyscallCollector(f, bpf_stats=True))
    got = scrape(held)
    assert got[run_cnt] == 1234
    assert got[run_time] == pytest.approx(0.005)
    assert not any("exit_btf" in str(k) for k in got)  # a program that went away is skipped
    assert _parse(held.expose(openmetrics=True).decode())[run_cnt] == 1234

    plain = SyscallCollector(f)
    assert not any(k[0].startswith("percpu_bpf_prog") for k in scrape(plain))
    sysctl.write_text("1\n")
    assert scrape(plain)[run_cnt] == 0  # born at 0, its value from the next scrape on
    assert scrape(plain)[run_cnt] == 1234
    sysctl.write_text("0\n")  # turned off again: the kernel keeps the values, the series stay
    f.progs[0].run_cnt = 1300
    assert scrape(plain)[run_cnt] == 1300

    reg = CollectorRegistry(auto_describe=False)
    reg.register(held)
    helps = {m.name: m.documentation for m in reg.collect()}
    assert "only while BPF stats are enabled" in helps["percpu_bpf_prog_run_time_seconds"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--top-syscalls", "-3"], "must be 1 or more"),
        (["--top-syscalls", "0"], "must be 1 or more"),
        (["--max-comms", "-1"], "must be 1 or more"),
        (["--max-comms", "x"], "not a whole number"),
        (["-s", ",,"], "no syscall names given"),
        (["-s", " , ", "-s", ","], "no syscall names given"),
        (["--web.max-requests", "-1"], "must be 0 or more"),
        (["--web.max-connections", "0"], "must be 1 or more"),
        (["--web.request-timeout", "0"], "must be more than 0"),
        (["--web.request-timeout", "soon"], "give a duration"),
        (["--web.share-window=-1s"], "give a duration"),
        (["--listen", "localhost"], "give ADDRESS:PORT"),
    ],
)
def test_exporter_rejects_options_that_would_count_nothing(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def serve(args: Any) -> int:
        raise AssertionError(f"accepted {argv}: the exporter would start")

    monkeypatch.setattr("percpu.cli.export._cmd_exporter", serve)
    with pytest.raises(SystemExit) as exc:
        main(["exporter", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_dashboard_queries_use_exported_names_and_keep_instances_apart() -> None:
    f = FakeCounter(2)
    f.counts[0, 0] = 5
    ek = np.zeros(1, ERR_KEY)
    f.errors = (ek, np.array([[1, 0]], np.uint64))
    lk = np.zeros(1, LAT_KEY)
    f.latency = (lk, np.array([[1, 0]], np.uint64))
    f.progs = [FakeProgram("enter_btf", 1, 1)]
    exported = {k[0] for k in scrape(SyscallCollector(f, bpf_stats=True))}
    with open(DASHBOARD, encoding="utf-8") as fh:
        dash = json.load(fh)
    exprs = {p["title"]: t["expr"] for p in dash["panels"] for t in p["targets"]}
    for title, expr in exprs.items():
        for name in re.findall(r"\b(percpu_[a-z0-9_]+)", expr):
            assert name in exported, f"panel {title!r} queries {name}, which the exporter does not export"
        assert '{instance=~"$instance"}' in expr, title
    # several instances selected: the imbalance is one ratio per instance, not one over all of them
    imbalance = next(e for t, e in exprs.items() if t.startswith("Imbalance"))
    assert imbalance.count("max by (instance)") == 1 and imbalance.count("avg by (instance)") == 1


def test_exporter_refuses_an_unknown_user_before_loading(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def counter(*args: Any) -> Any:
        raise AssertionError("loaded BPF programs for a user that does not exist")

    monkeypatch.setattr("percpu.cli._options.counter", counter)
    assert main(["exporter", "--user", "no-such-user-percpu"]) == 1
    assert "--user no-such-user-percpu: no such user" in capsys.readouterr().err


def test_comm_bookkeeping_stays_bounded_whatever_processes_call_themselves() -> None:
    """Processes that rename themselves in a loop: the names held stay at max_comms, the rest is "other"."""
    f = FakeCounter(2)
    c = SyscallCollector(f, max_comms=3)
    total = 0
    for i in range(200):
        keys = np.zeros(50, PROC_KEY)
        keys["tgid"] = 1000 + np.arange(50)
        keys["slot"] = 39
        keys["comm"] = [f"n{i}-{j}".encode() for j in range(50)]  # 50 new names every scrape
        f.procs = (keys, np.ones((50, 2), np.uint64))
        total += 100
        scrape(c)  # names given and series born (at 0) here; their calls show from the next scrape on
        got = scrape(c)
        comms = {dict(k[1])["comm"] for k in got if k[0] == "percpu_process_syscalls_total"}
        assert len(comms) <= 4 and "other" in comms
        assert c.tracked_comms == (2 if i == 0 else 3)  # 2 at first sight, 1 more among the busiest
        assert c.tracked_process_keys == 50  # the keys the map holds now, not every key ever seen
        procs = sum(v for k, v in got.items() if k[0] == "percpu_process_syscalls_total")
        # No call lost or counted twice while names come and go.
        assert procs == total
    assert got[("percpu_exporter_tracked_comms", ())] == 3


def test_label_values_are_escaped() -> None:
    f = FakeCounter(1)
    keys = np.zeros(1, PROC_KEY)
    keys["comm"] = [b'a"b\\c\nd']
    f.procs = (keys, np.array([[4]], np.uint64))
    f.counts[0, 0] = 1
    c = served(SyscallCollector(f))
    for om in (False, True):
        got = _parse(c.expose(openmetrics=om).decode())
        # The quote and the backslash are the text format's to escape, and a parser gets them back; the
        # newline is escaped before that, as stat shows it (the backslash doubled so it cannot be forged).
        label = 'a"b\\\\c\\x0ad'
        assert got[("percpu_process_syscalls_total", (("comm", label), ("syscall", "read")))] == 4


HOSTILE = b"\x1b]0;owned\x07\xff\x9b\x7f"  # set the window title, a byte not UTF-8, CSI, DEL


def test_a_hostile_comm_reaches_the_scrape_escaped_as_stat_shows_it() -> None:
    f = FakeCounter(1)
    keys = np.zeros(3, PROC_KEY)
    keys["comm"] = [HOSTILE, "\u202eevil".encode(), b"a\\x1b"]  # the last spells an escape with a backslash
    keys["slot"] = 0
    f.procs = (keys, np.array([[4], [5], [6]], np.uint64))
    f.counts[0, 0] = 15
    c = served(SyscallCollector(f))
    for om in (False, True):
        body = c.expose(openmetrics=om)
        body.decode("utf-8")  # the whole exposition is UTF-8: no stray byte of a name got through
        assert not any((b < 0x20 and b != 0x0A) or b == 0x7F for b in body), "a control byte in the scrape"
        assert "\u202e" not in body.decode() and "\x9b" not in body.decode()
        lines = body.decode().splitlines()
        # The text format doubles the backslashes of printable()'s escapes.
        shown = "\\\\x1b]0;owned\\\\x07\\\\xff\\\\x9b\\\\x7f"
        assert f'percpu_process_syscalls_total{{comm="{shown}",syscall="read"}} 4' in lines
        got = _parse(body.decode())
        comms = {dict(k[1])["comm"]: v for k, v in got.items() if k[0] == "percpu_process_syscalls_total"}
        assert comms == {
            printable(HOSTILE): 4,
            "\\u202eevil": 5,
            "a\\\\x1b": 6,  # not the same label as a name with a real ESC in it
        }


def test_exposition_shares_one_rendering_and_gzips() -> None:
    import gzip

    f = FakeCounter(4)
    f.counts[:, 0] = 5
    exp = SyscallCollector(f).scrape()
    plain = exp.body(openmetrics=False)
    assert exp.body(openmetrics=False) is plain  # one copy, however many readers
    assert gzip.decompress(exp.body(openmetrics=False, gzipped=True)) == plain
    om = exp.body(openmetrics=True)
    assert om.endswith(b"# EOF\n") and _parse(om.decode()) == _parse(plain.decode())
    assert exp.series == sum(1 for _ in _parse(plain.decode())) + 1  # + the scrape duration


def _procs_of(got: dict[Key, float]) -> dict[tuple[str, str], float]:
    return {
        (dict(k[1])["comm"], dict(k[1])["syscall"]): v
        for k, v in got.items()
        if k[0] == "percpu_process_syscalls_total"
    }


def settled(c: SyscallCollector) -> dict[tuple[str, str], float]:
    """The per-process series once every series is past its birth: a scrape names comms and serves new
    series at 0, the next one (no calls in between) at their values."""
    scrape(c)
    return _procs_of(scrape(c))


class Workload:
    """Per-process rows as the counter reports them: (pid, syscall, comm) -> calls on CPU 0."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, int, bytes], int] = {}

    def call(self, pid: int, comm: bytes, n: int, slot: int = 39) -> None:
        self.rows[(pid, slot, comm)] = self.rows.get((pid, slot, comm), 0) + n

    def procs(self) -> tuple[np.ndarray, np.ndarray]:
        keys = np.zeros(len(self.rows), PROC_KEY)
        keys["tgid"] = [k[0] for k in self.rows]
        keys["slot"] = [k[1] for k in self.rows]
        keys["comm"] = [k[2] for k in self.rows]
        counts = np.zeros((len(self.rows), 2), np.uint64)
        counts[:, 0] = list(self.rows.values())
        return keys, counts


def test_busy_names_win_a_series_and_the_comm_series_add_up() -> None:
    """--max-comms 4 on a machine where four names are about at first: two of them are named (the busiest),
    and the other two slots go to names among the two busiest of an interval: a build that starts later
    gets its series (it stayed in "other" for good when the first four names seen took every slot). A name
    keeps its series; every series only grows; the comm series, "other" included, always add up to the
    per-process calls."""
    f = FakeCounter(2)
    w = Workload()
    c = SyscallCollector(f, max_comms=4)
    last: dict[tuple[str, str], float] = {}
    steps = [
        [(1, b"sshd", 5), (2, b"cron", 3), (3, b"bash", 1), (4, b"agetty", 1)],  # sshd, cron named
        [(3, b"bash", 1), (1, b"sshd", 10), (2, b"cron", 10)],  # bash not among the 2 busiest
        [(5, b"build", 900), (1, b"sshd", 1)],  # build is: named, from this interval on
        [(3, b"bash", 1000), (5, b"build", 900)],  # bash gets busy: the 4th name; its first 2 calls
        [(6, b"ld", 5000), (5, b"build", 10)],  # stay in "other"; ld is the busiest, but 4 are named
        [(6, b"ld", 5000), (4, b"agetty", 1)],
    ]
    for step in steps:
        for pid, comm, n in step:
            w.call(pid, comm, n)
        f.procs = w.procs()
        got = settled(c)
        for k, v in last.items():
            assert got[k] >= v, f"{k} went down"
        assert sum(got.values()) == sum(w.rows.values())
        last = got
    assert last == {
        ("sshd", "getpid"): 16,
        ("cron", "getpid"): 13,
        ("build", "getpid"): 1810,
        ("bash", "getpid"): 1000,
        ("other", "getpid"): 2 + 2 + 10000,
    }
    assert c.tracked_comms == 4


def test_processes_summed_by_name_are_not_counted_twice() -> None:
    """Rows of exited processes leave the snapshot for a row of their name (pid FOLDED_TGID), or of no name
    once the counter keeps no more names: the comm series count each call once."""
    f = FakeCounter(2)
    c = SyscallCollector(f)
    w = Workload()
    w.call(10, b"cc1", 5)
    w.call(11, b"cc1", 7)
    f.procs = w.procs()
    assert settled(c) == {("cc1", "getpid"): 12}
    w.rows = {(FOLDED_TGID, 39, b"cc1"): 12, (12, 39, b"ld"): 3}  # 10 and 11 exited, summed by name
    f.procs = w.procs()
    assert settled(c) == {("cc1", "getpid"): 12, ("ld", "getpid"): 3}
    # 12 exited after one more call, when no more names were kept: summed by syscall alone
    w.rows = {(FOLDED_TGID, 39, b"cc1"): 12, (FOLDED_TGID, 39, b""): 4}
    f.procs = w.procs()
    assert settled(c) == {("cc1", "getpid"): 12, ("ld", "getpid"): 3, ("other", "getpid"): 1}


def test_a_series_is_served_at_zero_the_first_time_then_at_its_value() -> None:
    """Prometheus's increase() starts from a series' first sample: every series of the kernel's counts is
    born at 0 (the calls before it then show as its first increase), in both exposition paths, whether it
    exists at the first scrape or appears later, and whatever family it is in."""
    f = FakeCounter(2)
    f.counts[0, 0] = 3
    f.progs = [FakeProgram("enter_btf", 10, 10)]
    slow, fast = SyscallCollector(f, bpf_stats=True), SyscallCollector(f, bpf_stats=True)
    read = ("percpu_syscalls_total", (("cpu", "0"), ("syscall", "read")))
    first = scrape(slow)
    assert _parse(fast.expose(openmetrics=False).decode()) == {
        k: v for k, v in first.items() if k[0] != "percpu_scrape_duration_seconds"
    }
    assert first[read] == 0 and first[("percpu_bpf_prog_run_count_total", (("program", "enter_btf"),))] == 0
    assert first[("percpu_build_info", (("attach", "tp_btf"), ("libbpf", ""), ("version", "0.1.0")))] == 1
    # New since: a syscall (400,000 calls), a CPU of a known syscall, an errno, a process, a histogram.
    f.counts[0, 39] = 400_000
    f.counts[1, 0] = 5
    ek = np.zeros(1, ERR_KEY)
    ek["slot"], ek["err"] = 2, 2
    f.errors = (ek, np.array([[7, 0]], np.uint64))
    pk = np.zeros(1, PROC_KEY)
    pk["comm"], pk["slot"] = b"w", 39
    f.procs = (pk, np.array([[400_000, 0]], np.uint64))
    lk = np.zeros(1, LAT_KEY)
    lk["slot"], lk["bucket"] = 39, 10
    f.latency = (lk, np.array([[400_000, 0]], np.uint64))
    born = ("percpu_syscalls_total", (("cpu", "0"), ("syscall", "getpid")))
    cpu1 = ("percpu_syscalls_total", (("cpu", "1"), ("syscall", "read")))
    err = ("percpu_syscall_errors_total", (("errno", "ENOENT"), ("syscall", "open")))
    proc = ("percpu_process_syscalls_total", (("comm", "w"), ("syscall", "getpid")))
    count = ("percpu_syscall_latency_seconds_count", (("syscall", "getpid"),))
    for step, want in ((1, 0), (2, None)):
        got = scrape(slow)
        assert _parse(fast.expose(openmetrics=True).decode()) == {
            k: v for k, v in got.items() if k[0] != "percpu_scrape_duration_seconds"
        }
        assert got[read] == 3  # served before: at its value
        hist = [
            v for k, v in got.items() if k[0].startswith("percpu_syscall_latency") and k[1][-1][1] == "getpid"
        ]
        if want == 0:  # born now: at 0, the histogram whole
            assert (got[born], got[cpu1], got[err], got[proc], got[count]) == (0, 0, 0, 0, 0), step
            assert not any(hist)
        else:
            assert (got[born], got[cpu1], got[err], got[proc], got[count]) == (
                400_000,
                5,
                7,
                400_000,
                400_000,
            )
            assert max(hist) == 400_000


def test_latency_buckets_from_16_ns_to_68_s_are_always_served() -> None:
    """A histogram's row buckets (16 ns to 68 s) are served from its birth, so a call landing in one of
    them later never makes a bucket series appear at a value that holds the earlier, faster calls."""
    f = FakeCounter(1)
    lk = np.zeros(1, LAT_KEY)
    lk["slot"], lk["bucket"] = 0, 10
    f.latency = (lk, np.array([[1000]], np.uint64))
    c = served(SyscallCollector(f))
    before = {k for k in scrape(c) if k[0] == "percpu_syscall_latency_seconds_bucket"}
    assert {dict(k[1])["le"] for k in before} == {repr(2.0 ** (i + 1) / 1e9) for i in range(4, 36)} | {"+Inf"}
    lk = np.zeros(2, LAT_KEY)
    lk["slot"], lk["bucket"] = 0, [10, 30]  # a 1 s call
    f.latency = (lk, np.array([[1000], [1]], np.uint64))
    got = scrape(c)
    after = {k for k in got if k[0] == "percpu_syscall_latency_seconds_bucket"}
    assert after == before
    assert got[("percpu_syscall_latency_seconds_bucket", (("le", "+Inf"), ("syscall", "read")))] == 1001


def test_a_syscall_named_after_it_was_in_other_is_born_at_its_value() -> None:
    """A syscall promoted from "other" keeps its earlier calls in "other" (frozen); its own series is born
    at its full count, not at 0, or increase() summed over syscalls would count those calls twice. A CPU
    it first calls on after its promotion is born at 0 as usual."""
    f = FakeCounter(2)
    ek = np.zeros(1, ERR_KEY)
    ek["slot"], ek["err"] = 1, 2
    lk = np.zeros(1, LAT_KEY)
    lk["slot"], lk["bucket"] = 1, 10
    c = SyscallCollector(f, top_syscalls=1)
    f.counts[:, 0] = 100  # read: named at first sight
    f.counts[0, 1] = 5  # write: in "other"
    f.errors, f.latency = (ek, np.array([[2, 0]], np.uint64)), (lk, np.array([[5, 0]], np.uint64))
    scrape(c)
    other = ("percpu_syscalls_total", (("cpu", "0"), ("syscall", "other")))
    assert scrape(c)[other] == 5
    f.counts[0, 1] += np.uint64(1000)  # write gets busy: named
    f.errors, f.latency = (ek, np.array([[3, 0]], np.uint64)), (lk, np.array([[1005, 0]], np.uint64))
    got = scrape(c)
    assert got[("percpu_syscalls_total", (("cpu", "0"), ("syscall", "write")))] == 1005
    # Its calls until this scrape went to "other" (which grew by 1,000): increase() counts each call once.
    assert got[other] == 1005
    assert got[("percpu_syscall_errors_total", (("errno", "ENOENT"), ("syscall", "write")))] == 3
    assert got[("percpu_syscall_latency_seconds_count", (("syscall", "write"),))] == 1005
    f.counts[1, 1] = 7  # its first call on CPU 1, after its promotion
    assert scrape(c)[("percpu_syscalls_total", (("cpu", "1"), ("syscall", "write")))] == 0
    assert scrape(c)[("percpu_syscalls_total", (("cpu", "1"), ("syscall", "write")))] == 7
