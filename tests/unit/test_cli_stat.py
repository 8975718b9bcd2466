"""``percpu stat`` logic that needs no kernel: argument checks, output paths, exit statuses, the watch
that ends a run. Everything here fails before counting would start."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import sys
from pathlib import Path

import pytest

from percpu.cli import _report, build_parser, main, stat
from percpu.errors import PercpuError
from percpu.syscount import Lost, SyscallDelta

from .synthetic import snap


def stat_args(*argv: str) -> object:
    return build_parser().parse_args(["stat", *argv])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-o", "/nonexistent/out"], "-o /nonexistent/out: No such file or directory"),
        (["-o", "/"], "-o /: Is a directory"),
        (["--heatmap", "/nonexistent/x.svg"], "--heatmap /nonexistent/x.svg: No such file or directory"),
        (["--heatmap", "x.jpg"], r"name the file .png, .svg or .pdf"),
    ],
)
def test_bad_output_paths_are_errors_before_counting(argv: list[str], message: str) -> None:
    with pytest.raises(PercpuError, match=message):
        stat._Output(stat_args(*argv))  # type: ignore[arg-type]


def test_output_files_are_written_only_when_the_report_is_complete(tmp_path: object) -> None:
    out, svg = os.path.join(str(tmp_path), "o.txt"), os.path.join(str(tmp_path), "m.svg")
    o = stat._Output(stat_args("-o", out, "--heatmap", svg))  # type: ignore[arg-type]
    o.close()  # a run that ended before its report: nothing is created
    assert not os.path.exists(out) and not os.path.exists(svg)
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-d", "1", "--", "sleep", "3"], "-d/--duration does not go with a command"),
        (["-p", "1", "--", "true"], "-p PID does not go with a command"),
        (["--cgroup", "x", "--", "true"], "--cgroup does not go with a command"),
        (["-i", "1", "--count", "2", "--", "true"], "--count does not go with a command"),
        (["--count", "2", "-d", "1"], "--count needs --interval"),
    ],
)
def test_refused_combinations(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stat", *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


_BAD_SECONDS = [
    ("-d", "1e10", "is more than a year"),
    ("-d", "inf", "is not a finite number of seconds"),
    ("-d", "nan", "is not a finite number of seconds"),
    ("-d", "-1", "must be greater than 0"),
    ("-d", "0", "must be greater than 0"),
    ("-d", "soon", "is not a number of seconds"),
    ("-i", "1e10", "is more than a year"),
    ("-i", "inf", "is not a finite number of seconds"),
    ("-i", "1e400", "is not a finite number of seconds"),  # float() makes it inf
    ("-i", "0", "must be greater than 0"),
    ("-i", "1e-9", "is too short: the least is 0.1 s"),  # would read every map in a busy loop
]


@pytest.mark.parametrize(
    ("command", "option", "value", "message"),
    [("stat", *case) for case in _BAD_SECONDS] + [("top", *case) for case in _BAD_SECONDS if case[0] == "-i"],
)
def test_bad_seconds_are_usage_errors(
    command: str, option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, option, value])  # parsing only: nothing may start counting
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


class BrokenStdout(io.StringIO):
    """Standard output whose reader went away (`percpu stat | head`)."""

    def write(self, s: str) -> int:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def run_delta() -> SyscallDelta:
    return snap(2.0, {(0, 0): 9, (2, 110): 40}, lost=Lost(errors=5)).delta(snap(1.0, {}))


def test_a_broken_pipe_leaves_the_heat_map_to_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stat ... --heatmap h.svg | head` ended the run at the pipe's error, exit 0, no picture, no word."""
    svg = tmp_path / "h.svg"
    monkeypatch.setattr(sys, "stdout", BrokenStdout())
    o = stat._Output(stat_args("-f", "csv", "--heatmap", str(svg)))  # type: ignore[arg-type]
    o.write(run_delta())
    assert o.report_lost and o.wanted(), "the picture still needs the rest of the run"
    o.write(run_delta())  # nothing more is written to the pipe, and nothing fails
    o.write_heatmap(run_delta())
    o.commit()
    o.close()
    assert o.finish(0) == 141
    err = capsys.readouterr().err
    assert f"heat map written to {svg}" in err and "the run went on to its end for --heatmap" in err
    assert "warning: 5 calls not counted in the errno table" in svg.read_text()  # the picture says it too
    assert o.finish(3) == 3  # a command that failed: its status comes first


def test_a_broken_pipe_with_nothing_else_to_write_ends_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", BrokenStdout())
    o = stat._Output(stat_args("-f", "json"))  # type: ignore[arg-type]
    assert o.wanted()
    o.write(run_delta())
    assert not o.wanted()
    o.commit()
    o.close()
    assert o.finish(0) == 141


@pytest.mark.parametrize("quiet", [[], ["-q"]])
def test_a_report_lost_to_a_full_device_is_named(
    quiet: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    o = stat._Output(stat_args("-o", "/dev/full", *quiet))  # type: ignore[arg-type]
    o.write(run_delta())
    o.commit()
    o.close()
    assert o.finish(0, ["make", "-j"]) == 1
    assert capsys.readouterr().err == (
        "percpu: -o /dev/full: No space left on device: the report was lost; the command (make -j) ran to "
        "its end, exit status 0\n"
    )


def test_the_runs_caveats_are_in_the_report_whatever_the_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The table printed them on stderr (hidden by -q), JSON and CSV not at all."""
    caveat = _report.Caveat("own-process-only", "counted the command's own process only")
    for fmt in ("table", "json", "csv"):
        o = stat._Output(stat_args("-q", "-f", fmt))  # type: ignore[arg-type]
        o.add_caveat(caveat)
        o.write(run_delta())
        o.commit()
        o.close()
        assert o.finish(0) == 0
        out = capsys.readouterr().out
        if fmt == "json":
            assert json.loads(out)["warnings"][-1] == {
                "code": caveat.code,
                "text": caveat.text,
                "count": None,
            }
        elif fmt == "csv":
            rows = [r for r in csv.DictReader(io.StringIO(out)) if r["record"] == "warning"]
            assert [r["code"] for r in rows] == ["lost.errors", "own-process-only"]
        else:
            assert f"warning: {caveat.text}\n" in out


class BrokenStderr(BrokenStdout):
    """Standard error whose reader went away (`percpu stat -- CMD 2>&1 >/dev/null | head`)."""


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_a_commands_report_goes_to_stderr_unless_o_says_where(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stat -- CMD` printed its report on stdout, among the command's own output."""
    o = stat._Output(stat_args("-f", fmt), command=True)  # type: ignore[arg-type]
    o.write(run_delta())
    o.commit()
    o.close()
    assert o.finish(0) == 0
    out, err = capsys.readouterr()
    assert out == "" and ("getppid" in err or "110" in err)
    if fmt != "table":  # the caveats are in the report: not said twice on the same stream
        assert "percpu: warning" not in err
    for argv in (["-o", "-"], []):  # `-o -` asks for stdout; without a command, stdout as before
        o = stat._Output(stat_args("-f", fmt, *argv), command=bool(argv))  # type: ignore[arg-type]
        o.write(run_delta())
        o.commit()
        o.close()
        out, err = capsys.readouterr()
        assert "getppid" in out or "110" in out


def test_a_commands_report_to_a_broken_stderr_ends_as_a_broken_stdout_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stderr", BrokenStderr())
    o = stat._Output(stat_args("-q"), command=True)  # type: ignore[arg-type]
    o.write(run_delta())
    assert o.report_lost and o.broken_pipe and not o.wanted()
    o.commit()
    o.close()
    assert o.finish(0, ["true"]) == 141
    assert o.finish(3, ["false"]) == 3  # the command's failing status comes first


def test_a_one_shot_table_is_exact_and_interval_tables_humanized(capsys: pytest.CaptureFixture[str]) -> None:
    """A one-shot report said `openat 1.3k` under a header of `6,153 system calls`."""
    d = snap(2.0, {(0, 0): 1234, (2, 110): 5678}).delta(snap(1.0, {}))
    for argv, cell in (([], "5,678"), (["-i", "1"], "5.7k")):
        o = stat._Output(stat_args("-q", *argv))  # type: ignore[arg-type]
        o.write(d)
        o.close()
        row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("getppid"))
        assert row.split()[1] == cell and cell in row.split()[3:], row


@pytest.mark.parametrize(
    ("argv", "note"),
    [
        ([], "until Ctrl-C"),
        (["-d", "5"], "for 5 s"),
        (["-i", "1", "--count", "2"], "for 2 reports (one every 1 s)"),
        (["-i", "0.5", "--count", "1"], "for 1 report (one every 0.5 s)"),
        (["-i", "1"], "until Ctrl-C, a report every 1 s"),
        (
            ["-i", "1", "--count", "3", "-d", "2"],
            "for 3 reports (one every 1 s) or 2 s, whichever ends first",
        ),
        (["-p", "7", "-d", "5", "-i", "1"], "for 5 s, or until pid 7 exits, a report every 1 s"),
        (["-p", "7"], "until Ctrl-C, or until pid 7 exits"),
    ],
)
def test_the_start_note_says_what_will_end_the_run(argv: list[str], note: str) -> None:
    """`stat -i 1 --count 2` said "counting ... until Ctrl-C", and ended after two reports."""
    assert stat.run_end(stat_args(*argv)) == note  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("command", "status", "message"),
    [
        ("/", 126, "cannot run /: Is a directory"),
        ("./not-executable.sh", 126, "cannot run ./not-executable.sh: Permission denied (it is not"),
        ("./no-such-file", 127, "cannot run ./no-such-file: No such file or directory"),
        ("no-such-command-percpu", 127, "command not found: no-such-command-percpu"),
    ],
)
def test_a_command_that_cannot_run_exits_as_a_shell_says(
    command: str,
    status: int,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`stat -- DIR` and `stat -- ./script` without the x bit said "command not found", exit 1."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "not-executable.sh").write_text("#!/bin/sh\necho hi\n")
    assert main(["stat", "--", command]) == status
    err = capsys.readouterr().err
    assert err.startswith(f"percpu: {message}") and "Traceback" not in err, err


class FullStderr(io.StringIO):
    """Standard error on a full device (`percpu stat -- CMD 2>/dev/full`)."""

    def write(self, s: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_commands_report_to_a_full_stderr_is_lost_with_status_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", FullStderr())
    o = stat._Output(stat_args("-q"), command=True)  # type: ignore[arg-type]
    o.write(run_delta())
    assert o.report_lost and not o.broken_pipe
    o.commit()
    o.close()
    with pytest.raises(OSError):  # the stream is full: what finish() says there cannot land ...
        print("x", file=sys.stderr)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # ... (fd 2 would be /dev/null by now)
    assert o.finish(0, ["true"]) == 1
    assert "standard error: No space left on device: the report was lost" in sys.stderr.getvalue()
