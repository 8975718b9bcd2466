"""Report files: checked up front, replaced only when the report is complete, streams left as they are."""

from __future__ import annotations

import errno
import io
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from percpu import cli
from percpu.cli import _options, _outfile, main
from percpu.cli._outfile import ReportFile
from percpu.errors import NotSupported, PercpuError
from percpu.syscount import SyscallCounter


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".percpu-" in p.name)


def test_a_failed_run_leaves_the_old_files_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run fails after the output files were checked (here: no hook to attach to): the files that
    were there keep their contents (they were truncated to nothing before)."""
    out, svg = tmp_path / "report.txt", tmp_path / "map.svg"
    out.write_text("yesterday's report\n")
    svg.write_text("<svg>yesterday</svg>\n")

    def refuse(self: SyscallCounter) -> None:
        raise NotSupported("cannot attach the syscall counter at any hook", feature="test")

    monkeypatch.setattr(_options, "require_root", lambda: None)
    monkeypatch.setattr(SyscallCounter, "start", refuse)
    assert main(["stat", "-q", "-o", str(out), "--heatmap", str(svg), "-d", "0.1"]) == 1
    assert out.read_text() == "yesterday's report\n"
    assert svg.read_text() == "<svg>yesterday</svg>\n"
    assert leftovers(tmp_path) == []


def test_a_regular_file_is_replaced_at_commit_keeping_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text("old\n")
    path.chmod(0o640)
    f = ReportFile(str(path), "-o")
    f.write("new\n")
    f.flush()
    assert path.read_text() == "old\n", "the file changed before the report was complete"
    f.commit()
    f.close()
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert leftovers(tmp_path) == []


def test_a_new_file_gets_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        f = ReportFile(str(tmp_path / "new.csv"), "-o")
    finally:
        os.umask(old)
    f.write("x\n")
    f.commit()
    f.close()
    assert stat.S_IMODE((tmp_path / "new.csv").stat().st_mode) == 0o640


def test_a_symlink_keeps_pointing_at_the_replaced_file(tmp_path: Path) -> None:
    real = tmp_path / "real.txt"
    real.write_text("old\n")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    f = ReportFile(str(link), "-o")
    f.write("new\n")
    f.commit()
    f.close()
    assert link.is_symlink() and real.read_text() == "new\n"


def test_close_without_commit_removes_the_temporary_file(tmp_path: Path) -> None:
    f = ReportFile(str(tmp_path / "never.txt"), "-o")
    f.write("half a report")
    assert leftovers(tmp_path)  # the report in progress lives next to its target
    f.close()
    assert leftovers(tmp_path) == [] and not (tmp_path / "never.txt").exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [("missing/out", "No such file or directory"), (".", "Is a directory")],
)
def test_bad_paths_are_refused_up_front(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(PercpuError, match=f"-o .*: {message}"):
        ReportFile(str(tmp_path / name), "-o")


def test_a_fifo_is_written_as_it_is_and_not_opened_before_the_report(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    f = ReportFile(str(fifo), "-o")  # must not wait for a reader here
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    f.write("line\n")
    f.commit()
    f.close()
    reader.join(10)
    assert got == [b"line\n"]
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_a_pipe_through_proc_self_fd_is_written_as_it_is() -> None:
    r, w = os.pipe()
    try:
        f = ReportFile(f"/proc/self/fd/{w}", "-o")
        f.write("through the pipe\n")
        f.commit()
        f.close()
        assert os.read(r, 100) == b"through the pipe\n"
    finally:
        os.close(r)
        os.close(w)


def test_dash_is_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    f = ReportFile("-", "-o")
    assert f.stream is sys.stdout
    f.write("to stdout\n")
    f.commit()
    f.close()
    assert capsys.readouterr().out == "to stdout\n"


def test_a_binary_report_file_takes_bytes_and_commits_them(tmp_path: Path) -> None:
    """Pictures (--heatmap out.png) go through the same replace-at-commit as text reports."""
    path = tmp_path / "m.png"
    path.write_bytes(b"old")
    f = ReportFile(str(path), "--heatmap", binary=True)
    f.write(b"\x89PNG\r\n\x1a\n...")
    assert path.read_bytes() == b"old"
    f.commit()
    f.close()
    assert path.read_bytes() == b"\x89PNG\r\n\x1a\n..."
    assert leftovers(tmp_path) == []


def test_binary_reports_for_pictures(tmp_path: Path) -> None:
    """A writer that wants a file object (a plotting library) gets one; the picture still replaces the
    old file only at commit."""
    path = tmp_path / "map.png"
    path.write_bytes(b"old picture")
    f = ReportFile(str(path), "--heatmap", binary=True)
    f.stream.write(b"\x89PNG new")
    assert path.read_bytes() == b"old picture"
    f.commit()
    f.close()
    assert path.read_bytes() == b"\x89PNG new"


def test_dev_stdout_is_stdout_where_the_symlink_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bare devtmpfs (a container, a VM guest's minimal init) has no /dev/stdout: it still means the
    process's standard output, and no regular file appears in /dev."""
    real_stat = os.stat

    def no_dev_stdout(path: str, *args: object, **kw: object) -> os.stat_result:
        if os.path.abspath(path) == "/dev/stdout":
            raise FileNotFoundError(2, "No such file or directory", path)
        return real_stat(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", no_dev_stdout)
    r = ReportFile("/dev/stdout", "-o")
    r.write("report\n")
    r.commit()
    r.close()
    assert capsys.readouterr().out == "report\n"


def test_a_missing_device_is_refused_not_created(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PercpuError, match="-o /dev/percpu-no-such-device: No such file or directory"):
        ReportFile("/dev/percpu-no-such-device", "-o")
    assert not os.path.exists("/dev/percpu-no-such-device")


def test_a_write_that_fails_names_the_file() -> None:
    """`-o /dev/full` said only "percpu: No space left on device"."""
    f = ReportFile("/dev/full", "-o")
    f.write("a report\n")
    with pytest.raises(PercpuError, match=r"^-o /dev/full: No space left on device$") as exc:
        f.flush()
    assert exc.value.errno == errno.ENOSPC
    f.close()


def test_a_closed_standard_fd_is_opened_on_dev_null_first() -> None:
    """With fd 2 closed Python has no sys.stderr, print(file=None) writes to stdout, and the next file
    opened gets number 2."""
    code = (
        "import os, sys\n"
        "from percpu.cli._outfile import open_standard_fds, stdout_closed\n"
        "assert sys.stderr is None\n"
        "print(sorted(open_standard_fds()), stdout_closed())\n"
        "print('a note for stderr', file=sys.stderr)\n"
        "print(os.readlink('/proc/self/fd/2'), os.open('/dev/null', os.O_RDONLY) > 2)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.close(2),
    )
    assert r.returncode == 0
    assert r.stdout == "[2] False\n/dev/null True\n"


def test_standard_output_closed_at_the_start_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_outfile, "_closed_at_start", frozenset({1}))
    monkeypatch.setattr(cli, "open_standard_fds", lambda: frozenset({1}))
    with pytest.raises(PercpuError, match="standard output was closed when percpu started") as exc:
        ReportFile("-", "-o")
    assert exc.value.errno == errno.EBADF
    assert main(["top", "-b", "--count", "1"]) == 1  # before anything is loaded


def test_standard_error_closed_at_the_start_is_refused_for_a_report_that_goes_there(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stat -- CMD 2>&-`: a command's report goes to standard error, which is /dev/null now."""
    monkeypatch.setattr(_outfile, "_closed_at_start", frozenset({2}))
    with pytest.raises(PercpuError, match="standard error, which was closed when percpu started") as exc:
        ReportFile("-", "-o", std=2)
    assert "-o - for standard output" in str(exc.value) and exc.value.errno == errno.EBADF
    ReportFile("-", "-o").write("to stdout\n")  # standard output is open: a report may go there
    assert capsys.readouterr().out == "to stdout\n"


def test_dash_with_std_2_is_stderr_and_its_errors_say_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    f = ReportFile("-", "-o", std=2)
    assert f.std_fd == 2 and ReportFile("-", "-o").std_fd == 1
    assert ReportFile("/dev/full", "-o").std_fd is None
    f.write("a report\n")
    f.commit()
    assert capsys.readouterr() == ("", "a report\n")

    class Full(io.StringIO):
        def write(self, s: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sys, "stderr", Full())
    with pytest.raises(PercpuError, match=r"^standard error: No space left on device$"):
        ReportFile("-", "-o", std=2).write("a report\n")
