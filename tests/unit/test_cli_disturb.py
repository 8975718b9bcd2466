"""The disturbance options of the counting commands, without a kernel: -E parsed and refused as it should
be, the system calls per process folded into the view, and a kernel that cannot run the counter turned into
a caveat, not an error."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from percpu._contract import PROC_KEY
from percpu.cli import _disturbances, _report, build_parser, stat
from percpu.cli._disturbances import PairDelta
from percpu.cpulist import CpuList
from percpu.disturb import Expected
from percpu.disturb._who import Disturbance, who_disturbs
from percpu.errors import InvalidFilter, PercpuError
from percpu.syscount import FOLDED_TGID, NR_SLOTS, SyscallSnapshot

from .fake_kernel import FakeKernel, installed
from .test_disturb_who import delta, syscalls


def args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    _disturbances.add_options(p.add_argument_group("opt-in dimensions"))
    p.add_argument("--cpus")
    p.add_argument("--by", default="cpu")
    return p.parse_args(list(argv))


@pytest.mark.parametrize(
    ("specs", "expected"),
    [
        (["42"], Expected(pid=42)),
        (["pid:42", "comm:app"], Expected(pid=42, comm="app")),
        (["comm:app,cgroup:7"], Expected(comm="app", cgroup=7)),
        (["cgroup:/app.slice"], Expected(cgroup="/app.slice")),
    ],
)
def test_expect_specs(specs: list[str], expected: Expected) -> None:
    assert _disturbances.expected_of(specs) == expected


@pytest.mark.parametrize(
    ("specs", "error", "message"),
    [
        (["thread:3"], PercpuError, "give pid:N, comm:NAME or cgroup:PATH"),
        (["pid:1", "pid:2"], PercpuError, "one pid at most"),
        (["pid:x"], PercpuError, "a pid is a whole number"),
        (["comm:"], PercpuError, "give pid:N"),
        (["comm:a-name-longer-than-15"], InvalidFilter, "15 bytes"),
    ],
)
def test_bad_expect_specs_are_refused_before_counting(specs: list[str], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        _disturbances.expected_of(specs)


def test_which_options_ask_for_disturbances() -> None:
    assert not _disturbances.wanted(args())
    for opt in ("-I", "-V", "-S", "-T", "-D", "--irqs"):
        assert _disturbances.wanted(args(opt)), opt
    assert _disturbances.wanted(args("-E", "comm:app"))  # an expected workload needs the tasks


def test_system_calls_per_process_are_summed_over_syscalls_and_marked_expected() -> None:
    cpus = CpuList([0, 1])
    counts = np.zeros((2, NR_SLOTS), np.uint64)
    counts[0, 0], counts[1, 1], counts[1, 2] = 7, 30, 5
    keys = np.zeros(4, PROC_KEY)
    keys["tgid"] = [100, 100, 200, FOLDED_TGID]
    keys["slot"] = [0, 1, 1, 2]
    keys["comm"] = [b"app", b"app", b"cron", b"gone"]
    rows = np.array([[7, 0], [0, 25], [0, 5], [0, 3]], np.uint64)
    end = SyscallSnapshot(2.0, cpus, counts, procs=(keys, rows), arch="x86_64")
    d = end.delta(
        SyscallSnapshot(1.0, cpus, np.zeros_like(counts), procs=(keys[:0], rows[:0]), arch="x86_64")
    )
    got = _disturbances.syscall_rows(d, Expected(comm="app"))
    assert got.totals.tolist() == [7, 35]
    assert got.tgids is not None and got.tgids.tolist() == [100, 200, -1]
    assert got.comms == ("app", "cron", "gone")
    assert got.counts is not None and got.counts.tolist() == [[7, 25], [0, 5], [0, 3]]
    assert got.expected is not None and got.expected.tolist() == [True, False, False]
    # without per-process counts, one row per CPU
    plain = _disturbances.syscall_rows(SyscallSnapshot(1.0, cpus, counts).since_start())
    assert plain.totals.tolist() == [7, 35] and plain.counts is None


def test_a_kernel_that_cannot_run_the_counter_is_a_caveat_and_the_rest_goes_on() -> None:
    """The fake kernel has no BTF: the session starts anyway, its intervals are empty, and the view says
    why in a caveat (never an exception)."""
    kernel = FakeKernel(2)
    with installed(kernel):
        s = _disturbances.session(args("-D"))
        assert s is not None
        s.start()
        first, second = s.snapshot(), s.snapshot()
        v = s.view(second.delta(first))
        s.close()
    assert s.failed is not None and "BTF" in s.failed
    codes = {c.code: c.text for c in s.run_caveats()}
    assert codes["disturb.unsupported.all"].startswith("disturbances not counted here: ")
    assert "CONFIG_DEBUG_INFO_BTF" in codes["disturb.unsupported.all"]
    assert v.unsupported == {"all": s.failed} and not v.sources


# --- stat's report with a disturbance view ----------------------------------------------------------------


class StubSession:
    """A disturbance session whose every interval is test_disturb_who's synthetic view."""

    def view(self, dd: object, d: object) -> Disturbance:
        return who_disturbs(
            delta(), syscalls=syscalls(), unsupported={"tlb_shootdown": "no hook"}, expected="pid 100"
        )


def pair() -> PairDelta:
    cpus = CpuList([0, 1, 2, 3])
    counts = np.zeros((4, NR_SLOTS), np.uint64)
    counts[1, 110] = 50
    end = SyscallSnapshot(3.0, cpus, counts, arch="x86_64")
    return PairDelta(end.delta(SyscallSnapshot(1.0, cpus, np.zeros_like(counts), arch="x86_64")), delta())


def report(fmt: str, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    o = stat._Output(build_parser().parse_args(["stat", "-D", "-f", fmt, *extra]), disturb=StubSession())  # type: ignore[arg-type]
    o.add_caveat(
        _report.Caveat("disturb.unsupported.tlb_shootdown", "TLB shootdowns not counted here: no hook")
    )
    o.write(pair())
    o.commit()
    o.close()
    return capsys.readouterr().out


def test_stat_adds_the_view_to_each_format(capsys: pytest.CaptureFixture[str]) -> None:
    table = report("table", capsys)
    assert "50 system calls in 2.00 s" in table and "who disturbs CPUs 0-3: 2.00 s" in table
    assert table.count("TLB shootdowns not counted here: no hook") == 1  # the run's caveat, said once
    obj = json.loads(report("json", capsys))
    assert obj["disturbance"]["expected"] == "pid 100"
    codes = [w["code"] for w in obj["warnings"]]
    assert codes.count("disturb.unsupported.tlb_shootdown") == 1 and "disturb.lost.irq" in codes
    rows = list(csv.DictReader(io.StringIO(report("csv", capsys))))
    assert "ns" in rows[0] and {r["record"] for r in rows} >= {"total", "syscall", "disturb_total", "source"}
    assert {r["code"] for r in rows if r["record"] == "warning"} == set(codes)


def test_stat_draws_who_disturbs_as_its_heat_map(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plots extra is not installed: pip install 'percpu[plots]'")
    svg = tmp_path / "h.svg"
    o = stat._Output(
        build_parser().parse_args(["stat", "-q", "-D", "--heatmap", str(svg)]), disturb=StubSession()
    )  # type: ignore[arg-type]
    o.write_heatmap(pair())
    o.commit()
    o.close()
    text = svg.read_text()
    assert "Who disturbs CPU 0-3" in text and "expected: app (pid 100)" in text


def test_the_exporter_on_a_kernel_that_cannot_run_the_counter_says_so_and_serves_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`percpu exporter -D` on a kernel without BTF: one warning line on stderr, the syscall families go
    on, and the scrape carries ``percpu_disturb_unsupported_info`` with the reason (no traceback)."""
    from percpu.cli import export
    from percpu.exporter import render

    a = build_parser().parse_args(["exporter", "-D"])
    kernel = FakeKernel(2)
    with installed(kernel):
        s = _disturbances.session(a)
        assert s is not None
        families = export._disturb_families(a, s)
        text = render(families(), openmetrics=False).decode()
        s.close()
    err = capsys.readouterr().err
    assert err.startswith("percpu exporter: warning: disturbances not counted here: ") and "BTF" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    (line,) = [ln for ln in text.splitlines() if ln.startswith("percpu_disturb_unsupported_info{")]
    assert 'dimension="all"' in line and "BTF" in line and line.endswith(" 1")
    assert "percpu_task_switches_total" in text  # the families are there, at 0


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_stat_on_a_kernel_that_cannot_run_the_counter_says_so_once_in_its_report(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stat -D` on a kernel without BTF: the syscall report as ever, the reason in one warning (the
    table's footer, JSON's and CSV's warnings), the view holding the system calls only, and no traceback."""
    from .synthetic import FakeCounter as SyscallSource

    kernel = FakeKernel(2)
    syscalls = SyscallSource(2)
    with installed(kernel):
        a = build_parser().parse_args(["stat", "-D", "-f", fmt])
        s = _disturbances.session(a)
        assert s is not None
        o = stat._Output(a, disturb=s)
        both = stat._start_disturb(syscalls, s, o)  # type: ignore[arg-type]
        first = both.snapshot()
        syscalls.counts[1, 110] = 7
        o.write(both.snapshot().delta(first))
        o.commit()
        o.close()
        s.close()
    out = capsys.readouterr().out
    said = "disturbances not counted here: "
    assert out.count(said) == 1 and "BTF" in out.split(said)[1].splitlines()[0], out
    assert "Traceback" not in out
    if fmt == "json":
        obj = json.loads(out)
        d = obj["disturbance"]
        assert [(x["kind"], x["total"]) for x in d["sources"]] == [("syscall", 7)]  # the calls go on
        assert d["unsupported"]["all"] == s.failed
        assert [w["code"] for w in obj["warnings"]].count("disturb.unsupported.all") == 1
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
        assert [r["code"] for r in rows if r["record"] == "warning"].count("disturb.unsupported.all") == 1
    else:
        assert "7 system calls" in out
