"""Process control without a kernel feature: exit statuses, the gated spawn, command cgroups in a fake
hierarchy (directories stand in for cgroupfs: mkdir, rmdir, cgroup.procs, flock behave alike)."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from percpu import process
from percpu.errors import PercpuError

from .fake_kernel import FakeKernel, FakeMachine, installed


def test_exit_code_is_128_plus_the_signal_like_a_shell() -> None:
    p = subprocess.Popen(["sh", "-c", "kill -TERM $$"])
    _, status = os.waitpid(p.pid, 0)
    p.returncode = 0  # reaped here, not by Popen
    assert process.exit_code(status) == 128 + signal.SIGTERM
    p = subprocess.Popen(["sh", "-c", "exit 7"])
    _, status = os.waitpid(p.pid, 0)
    p.returncode = 0
    assert process.exit_code(status) == 7


def test_a_gate_closed_unwritten_makes_the_child_exit_125_without_running() -> None:
    """The command is held before exec; closing the gate without releasing it must end the child at once
    (the child closes its own copy of the write end, so it sees end of file)."""
    marker = f"/tmp/percpu-gate-test-{os.getpid()}"
    child, gate_w = process.spawn_gated("/usr/bin/touch", ["touch", marker])
    os.close(gate_w)
    deadline = time.monotonic() + 5
    pid, status = 0, 0
    try:
        while not pid and time.monotonic() < deadline:
            pid, status = os.waitpid(child, os.WNOHANG)
            time.sleep(0.01)
    finally:
        if not pid:  # do not leave a held child behind a failing test
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
    assert pid, "the child did not see the closed gate"
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 125
    assert not os.path.exists(marker)


def wait_exit(watch: process.Watch, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not watch.exited():
        assert time.monotonic() < deadline, "the command did not exit"
        watch.wait(0.5)


def test_a_gated_command_runs_only_once_released_and_reports_its_exit_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    cmd = process.GatedCommand("/bin/sh", ["sh", "-c", f"touch {marker}; exit 7"], None)
    try:
        assert cmd.cgroup_path is None and not cmd.in_cgroup  # no cgroup2 root given
        time.sleep(0.2)
        assert not marker.exists(), "the command ran before it was released"
        cmd.release()
        wait_exit(cmd.watch)
    finally:
        cmd.close()
    assert marker.exists() and cmd.status == 7
    assert (cmd.removed, cmd.moved) == (True, 0)
    cmd.close()  # a second close is harmless


def test_a_gated_command_never_released_is_reaped_without_running(tmp_path: Path) -> None:
    """percpu failed before the release (a counter that could not attach): the command must not run and
    no child may be left behind."""
    marker = tmp_path / "ran"
    cmd = process.GatedCommand("/usr/bin/touch", ["touch", str(marker)], None)
    pid = cmd.pid
    cmd.close()
    assert not marker.exists()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped already: not a zombie of ours


def test_a_gated_command_still_running_when_percpu_fails_is_ended(tmp_path: Path) -> None:
    cmd = process.GatedCommand("/bin/sleep", ["sleep", "60"], None)
    pid = cmd.pid
    cmd.release()
    cmd.close()  # SIGTERM, reaped
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def fake_hierarchy(tmp_path: Path, *cgroups: str) -> Path:
    root = tmp_path / "cgroup2"
    for cg in ("", *cgroups):
        (root / cg).mkdir(parents=True, exist_ok=True)
        (root / cg / "cgroup.procs").write_text("")
    return root


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@pytest.mark.parametrize(
    ("cgroup", "expected"),
    [
        ("/user.slice/session-3.scope", "user.slice/session-3.scope"),
        ("/", ""),
        ("/gone", None),
        (None, None),  # no cgroup v2 line
    ],
)
def test_own_cgroup(tmp_path: Path, cgroup: str | None, expected: str | None) -> None:
    root = fake_hierarchy(tmp_path, "user.slice/session-3.scope")
    kernel = FakeKernel(1)
    with installed(kernel, FakeMachine(kernel, cgroup=cgroup)):
        got = process.own_cgroup(str(root))
    assert got == (None if expected is None else os.path.normpath(root / expected))


def test_own_cgroup_refuses_a_path_outside_the_mount(tmp_path: Path) -> None:
    root = fake_hierarchy(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "cgroup.procs").write_text("")
    kernel = FakeKernel(1)
    with installed(kernel, FakeMachine(kernel, cgroup="/../elsewhere")):
        assert process.own_cgroup(str(root)) is None


def test_the_command_cgroup_is_made_under_the_given_parent(tmp_path: Path) -> None:
    root = fake_hierarchy(tmp_path, "caller")
    cg = process.CommandCgroup(str(root), parent=str(root / "caller"))
    try:
        assert cg.path == str(root / "caller" / f"percpu-stat-{os.getpid()}")
        assert os.path.isdir(cg.path)
    finally:
        assert cg.remove() == (True, 0)
    assert not (root / "caller" / f"percpu-stat-{os.getpid()}").exists()


def test_leftovers_of_killed_runs_are_removed_live_ones_kept(tmp_path: Path) -> None:
    root = fake_hierarchy(tmp_path, "caller")
    dead = dead_pid()
    stale_here = root / "caller" / f"percpu-stat-{dead}"
    stale_root = root / f"percpu-stat-{dead}"  # where percpu made them before
    locked = root / "caller" / "percpu-stat-1"  # pid 1 is no percpu, but its owner holds the lock
    other = root / "caller" / "not-percpu-7"
    for d in (stale_here, stale_root, locked, other):
        d.mkdir()
    fd = os.open(locked, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        cg = process.CommandCgroup(str(root), parent=str(root / "caller"))
        try:
            assert sorted(cg.removed_stale) == sorted([str(stale_here), str(stale_root)])
        finally:
            cg.remove()
    finally:
        os.close(fd)
    assert not stale_here.exists() and not stale_root.exists()
    assert locked.exists() and other.exists()


def test_a_live_percpu_cgroup_is_never_removed(tmp_path: Path) -> None:
    root = fake_hierarchy(tmp_path)
    first = process.CommandCgroup(str(root), parent=str(root))
    try:
        # Same pid, same process: a second scan sees the lock held and the pid alive.
        assert process.remove_stale_cgroups([str(root)]) == []
        assert first.path is not None and os.path.isdir(first.path)
    finally:
        first.remove()


def test_no_cgroup2_means_no_cgroup(tmp_path: Path) -> None:
    cg = process.CommandCgroup(None)
    assert cg.path is None and not cg.add(os.getpid())
    cg = process.CommandCgroup(str(tmp_path))  # no cgroup.procs: not a cgroup2 mount
    assert cg.path is None


@pytest.mark.parametrize(("ns_pids", "nested"), [((), False), ((7,), True), ((7, 1), True)])
def test_in_nested_pid_namespace(ns_pids: tuple[int, ...], nested: bool) -> None:
    kernel = FakeKernel(1)
    with installed(kernel):
        kernel.machine.add_task(4242, ns_pids=ns_pids)
        assert process.in_nested_pid_namespace(4242) is nested
        assert process.in_nested_pid_namespace(1) is False  # gone: nothing to refuse


@pytest.mark.parametrize(("state", "alive"), [("S", True), ("R", True), ("Z", False), ("X", False)])
def test_alive_is_what_the_machine_says(state: str, alive: bool) -> None:
    kernel = FakeKernel(1)
    with installed(kernel):
        kernel.machine.add_task(4242, state=state)
        assert process.alive(4242) is alive
        assert process.alive(4243) is False  # not in this machine's /proc


def test_a_stale_cgroup_of_a_live_percpu_is_kept_one_of_another_program_removed(tmp_path: Path) -> None:
    """A leftover's pid is reused by a live process: only one whose command line says percpu keeps it
    (the moment between a live run's mkdir and its flock)."""
    root = fake_hierarchy(tmp_path)
    kernel = FakeKernel(1)
    for pid in (4242, 4243):
        (root / f"percpu-stat-{pid}").mkdir()
    with installed(kernel):
        kernel.machine.add_task(4242, cmdline="python3\0-m\0percpu\0stat")
        kernel.machine.add_task(4243, cmdline="sleep\x0060")
        assert process.remove_stale_cgroups([str(root)]) == [str(root / "percpu-stat-4243")]
    assert (root / "percpu-stat-4242").exists()


def test_watch_ends_when_the_pid_exits() -> None:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    watch = process.Watch(p.pid, child=False)
    try:
        t0 = time.monotonic()
        while not watch.exited():
            assert time.monotonic() - t0 < 10, "the watch never saw the process exit"
            watch.wait(30.0)
            p.poll()  # reap it, as its real parent would
        assert time.monotonic() - t0 < 5  # woken by the exit, not by the 30 s timeout
    finally:
        watch.close()
        p.wait()


def test_watch_missing_pid() -> None:
    p = subprocess.Popen(["true"])
    p.wait()
    with pytest.raises(PercpuError, match=f"no process with pid {p.pid}"):
        process.Watch(p.pid, child=False)


def test_sigterm_stops_a_count_and_wakes_the_wait() -> None:
    watch = process.Watch(None, child=False)
    try:
        with watch.signals():
            os.kill(os.getpid(), signal.SIGTERM)
            t0 = time.monotonic()
            watch.wait(30.0)
            assert watch.stop
            assert time.monotonic() - t0 < 5
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        watch.close()


def test_the_wait_is_bounded_for_a_deadline_far_away() -> None:
    """A year-long deadline is accepted; the wait must not pass it to select() whole (OverflowError)."""
    watch = process.Watch(None, child=False)
    try:
        with watch.signals():
            os.kill(os.getpid(), signal.SIGTERM)  # wakes the wait at once
            watch.wait(1e10)
        assert watch.stop
    finally:
        watch.close()


def test_resolve_command_finds_what_a_shell_runs_and_refuses_what_it_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory or a script without its execute bit is found but cannot run: 126 and the reason,
    as a shell says (it was "command not found", exit 1); nothing found is 127."""
    from percpu.errors import CommandNotRunnable

    script = tmp_path / "s.py"
    script.write_text("#!/usr/bin/env python3 -u\nprint(1)\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CommandNotRunnable) as exc:
        process.resolve_command("./s.py")
    assert exc.value.status == 126 and exc.value.command == "./s.py"
    assert str(exc.value).endswith(
        "chmod +x ./s.py, or name its interpreter first: percpu stat -- /usr/bin/env python3 -u ./s.py"
    )
    with pytest.raises(CommandNotRunnable, match=r"^cannot run \./: Is a directory") as exc:
        process.resolve_command("./")
    assert exc.value.status == 126
    script.chmod(0o755)
    assert process.resolve_command("./s.py") == "./s.py"
    monkeypatch.setenv("PATH", str(tmp_path))
    assert process.resolve_command("s.py") == str(script)
    with pytest.raises(CommandNotRunnable, match=r"^command not found: sh ") as exc:
        process.resolve_command("sh")
    assert exc.value.status == 127


def test_a_command_the_kernel_will_not_run_exits_126(tmp_path: Path) -> None:
    """Found, then refused by execve (here: no execute bit): 126 as a shell, not 127 (not found)."""
    path = tmp_path / "x"
    path.write_text("echo hi\n")
    child, gate = process.spawn_gated(str(path), [str(path)])
    os.write(gate, b"x")
    os.close(gate)
    _, status = os.waitpid(child, 0)
    assert process.exit_code(status) == 126
