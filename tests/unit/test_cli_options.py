"""The options the counting commands share: one definition, the same meaning in stat, top and export."""

from __future__ import annotations

import ast
import os

import pytest

import percpu.cli
from percpu.cli import _options, build_parser
from percpu.errors import PercpuError

COUNTER_OPTIONS = ("--pid", "--tid", "--comm", "--cgroup", "--syscall", "--failed", "--errors-entries")


@pytest.mark.parametrize("command", ["stat", "top", "exporter"])
def test_every_counting_command_has_the_shared_options(command: str) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]  # type: ignore[index]
    options = {o for a in sub._actions for o in a.option_strings}
    assert set(COUNTER_OPTIONS) <= options


def command_imports(source: str) -> list[str]:
    """The cli modules a module's source imports relatively: ``from .x import y``, ``from . import x``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found += [node.module] if node.module else [a.name for a in node.names]
    return found


def test_no_command_module_imports_another_command_module() -> None:
    here = os.path.dirname(percpu.cli.__file__)
    commands = set(percpu.cli._MODULES)
    on_disk = {f[:-3] for f in os.listdir(here) if f.endswith(".py") and not f.startswith("_")}
    assert commands == on_disk, "every public cli module is a command, registered in cli._MODULES"
    # Private modules too: a shared helper that imported a command would tie the commands together again.
    for name in sorted(f[:-3] for f in os.listdir(here) if f.endswith(".py")):
        with open(os.path.join(here, f"{name}.py"), encoding="utf-8") as f:
            others = commands & set(command_imports(f.read())) - {name}
        assert not others, f"cli/{name}.py imports cli/{sorted(others)[0]}.py: share through a _module"


@pytest.mark.parametrize(
    "source", ["from .dump import _parse_key", "from . import _report, dump", "from .stat import register"]
)
def test_the_import_check_sees_both_forms(source: str) -> None:
    assert set(command_imports(source)) & {"dump", "stat"}


def args(*argv: str) -> object:
    return build_parser().parse_args(["stat", *argv])


def test_filters_from_the_command_line() -> None:
    f = _options.filters(args("-s", "read,write", "-s", "getppid", "--cgroup", "123", "-x"))  # type: ignore[arg-type]
    assert list(f.syscalls or ()) == ["read", "write", "getppid"]
    assert f.cgroup == 123 and f.failed_only


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-s", ",,"], "no syscall names given"),
        (["-p", "4194305"], "no process with pid 4194305"),
        (["-t", "999999999"], "no thread with tid 999999999"),
    ],
)
def test_bad_filters_are_clear_errors(argv: list[str], message: str) -> None:
    with pytest.raises(PercpuError, match=message):
        _options.filters(args(*argv))  # type: ignore[arg-type]


@pytest.mark.parametrize("option", ["--proc-entries", "--errors-entries", "--latency-entries"])
@pytest.mark.parametrize(
    ("value", "message"), [("0", "must be 1 or more"), ("16777217", "must be 16777216 or less")]
)
def test_table_sizes_are_usage_errors(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["stat", option, value])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
