"""``percpu stat`` logic that needs no kernel: argument checks, output paths, exit statuses, the watch
that ends a run. Everything here fails before counting would start."""

from __future__ import annotations

import os

import pytest

from percpu.cli import build_parser, main, stat
from percpu.errors import PercpuError


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
