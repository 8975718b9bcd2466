"""What procfs says (``percpu._procfs``), read from fixture files: mounts, capabilities, sysctls, tasks."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from percpu import _procfs

CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 1 << 21, 1 << 38, 1 << 39


def test_mounts_unescape_and_find_a_type(tmp_path: Path) -> None:
    table = tmp_path / "mounts"
    table.write_text(
        "/dev/sda1 / ext4 rw 0 0\ntracefs /sys/kernel/my\\040tracing tracefs rw 0 0\n"
        "tracefs /mnt/t tracefs rw 0 0\n",
        encoding="ascii",
    )
    got = _procfs.mounts(str(table))
    assert got[1] == _procfs.Mount("tracefs", "/sys/kernel/my tracing", "tracefs")
    assert _procfs.mount_point("tracefs", got) == "/sys/kernel/my tracing"  # the first one
    assert _procfs.mount_point("bpf", got) is None
    assert _procfs.mounts(str(tmp_path / "missing")) == []


def test_sysctl_reads_the_dotted_name(tmp_path: Path) -> None:
    (tmp_path / "kernel").mkdir()
    (tmp_path / "kernel" / "bpf_stats_enabled").write_text("1\n", encoding="ascii")
    assert _procfs.sysctl("kernel.bpf_stats_enabled", root=str(tmp_path)) == "1"
    assert _procfs.sysctl("kernel.no_such_sysctl", root=str(tmp_path)) is None


def test_task_exists_finds_processes_and_threads() -> None:
    assert _procfs.task_exists(os.getpid())
    seen: list[bool] = []
    t = threading.Thread(target=lambda: seen.append(_procfs.task_exists(threading.get_native_id())))
    t.start()
    t.join()
    assert seen == [True]  # a thread's id is not listed in /proc but resolves
    assert not _procfs.task_exists(4194305)  # above the largest pid_max


def test_a_task_state_pid_namespaces_and_command_line(tmp_path: Path) -> None:
    task = tmp_path / "4242"
    task.mkdir()
    (task / "stat").write_text("4242 (odd) name) Z 1 4242 4242 0\n")  # a comm may hold ") "
    (task / "status").write_text("Name:\tx\nNSpid:\t4242\t7\t1\n")
    (task / "cmdline").write_bytes(b"python3\0-m\0percpu\0")
    assert _procfs.task_state(4242, str(tmp_path)) == "Z"
    assert _procfs.ns_pids(4242, str(tmp_path)) == [4242, 7, 1]
    assert _procfs.cmdline(4242, str(tmp_path)) == b"python3\0-m\0percpu\0"
    gone = 4243
    assert _procfs.task_state(gone, str(tmp_path)) is None
    assert _procfs.ns_pids(gone, str(tmp_path)) == []
    assert _procfs.cmdline(gone, str(tmp_path)) is None


def test_this_process_as_proc_shows_it() -> None:
    assert _procfs.task_state(os.getpid()) == "R"  # reading its own stat: running
    assert os.getpid() in _procfs.ns_pids(os.getpid())
    assert _procfs.cmdline(os.getpid()) == b"".join(os.fsencode(a) + b"\0" for a in sys.orig_argv)


@pytest.mark.parametrize(
    ("text", "path"),
    [("12:memory:/a\n0::/user.slice/x.scope\n", "/user.slice/x.scope"), ("12:memory:/a\n", None)],
)
def test_the_cgroup_v2_line(tmp_path: Path, text: str, path: str | None) -> None:
    (tmp_path / "cgroup").write_text(text)
    assert _procfs.cgroup_v2(str(tmp_path / "cgroup")) == path
    assert _procfs.cgroup_v2(str(tmp_path / "missing")) is None


@pytest.mark.parametrize(
    ("caps", "names", "can"),
    [
        (0, [], False),
        (CAP_BPF, ["CAP_BPF"], False),
        (CAP_BPF | CAP_PERFMON, ["CAP_PERFMON", "CAP_BPF"], True),
        (CAP_SYS_ADMIN, ["CAP_SYS_ADMIN"], True),
        (1 << 12, [], False),  # CAP_NET_ADMIN: not a BPF capability
    ],
)
def test_bpf_capabilities(caps: int, names: list[str], can: bool) -> None:
    assert _procfs.bpf_cap_names(caps) == names
    assert _procfs.can_load_bpf(caps) is can


def test_seccomp_mode_from_status(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n", encoding="ascii")
    assert _procfs.seccomp_mode(str(status)) == 2
    status.write_text("Name:\tx\n", encoding="ascii")  # a kernel without CONFIG_SECCOMP
    assert _procfs.seccomp_mode(str(status)) is None
    assert _procfs.seccomp_mode(str(tmp_path / "missing")) is None


def test_effective_caps_from_status(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t000000c000200000\n", encoding="ascii")
    assert _procfs.effective_caps(str(status)) == CAP_SYS_ADMIN | CAP_PERFMON | CAP_BPF
    status.write_text("Name:\tx\n", encoding="ascii")
    assert _procfs.effective_caps(str(status)) is None


def test_thread_count(tmp_path: Path) -> None:
    for tid in ("100", "101", "107"):
        (tmp_path / "self" / "task" / tid).mkdir(parents=True)
    assert _procfs.thread_count(str(tmp_path)) == 3
    before = _procfs.thread_count()
    started, done = threading.Event(), threading.Event()
    t = threading.Thread(target=lambda: (started.set(), done.wait(10)))
    t.start()
    try:
        started.wait(10)
        assert _procfs.thread_count() == before + 1
    finally:
        done.set()
        t.join()


def test_memory_available_and_the_tightest_memory_cgroup(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:  1 kB\nMemAvailable:   20000000 kB\n")
    assert _procfs.mem_available(str(meminfo)) == 20000000 * 1024
    meminfo.write_text("MemTotal:       24000000 kB\n")  # before Linux 3.14
    assert _procfs.mem_available(str(meminfo)) is None
    assert _procfs.mem_available(str(tmp_path / "missing")) is None

    v2, v1 = tmp_path / "unified", tmp_path / "memory"
    files = {
        v2 / "job" / "memory.max": "max\n",
        v2 / "job" / "memory.current": "100\n",
        v2 / "job" / "task" / "memory.max": "1000\n",
        v2 / "job" / "task" / "memory.current": "400\n",
        v1 / "batch" / "memory.limit_in_bytes": "9223372036854771712\n",  # v1's "no limit"
        v1 / "batch" / "memory.usage_in_bytes": "5\n",
        v1 / "memory.limit_in_bytes": "700\n",
        v1 / "memory.usage_in_bytes": "200\n",
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    mounts = tmp_path / "mounts"
    mounts.write_text(
        f"cgroup2 {v2} cgroup2 rw,nsdelegate 0 0\ncgroup {tmp_path / 'cpu'} cgroup rw,cpu 0 0\n"
        f"cgroup {v1} cgroup rw,relatime,memory 0 0\n"
    )
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("4:memory:/batch\n3:cpu:/x\n0::/job/task\n")
    assert _procfs.cgroup_memory_left(str(cgroup), str(mounts)) == (500, "memory.limit_in_bytes of cgroup /")
    (v1 / "memory.limit_in_bytes").write_text("max\n")
    assert _procfs.cgroup_memory_left(str(cgroup), str(mounts)) == (600, "memory.max of cgroup /job/task")
    cgroup.write_text("0::/\n")
    assert _procfs.cgroup_memory_left(str(cgroup), str(mounts)) is None  # no limit on the path
    assert _procfs.cgroup_memory_left(str(tmp_path / "missing"), str(mounts)) is None
