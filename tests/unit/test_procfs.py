"""What procfs says (``percpu._procfs``), read from fixture files: mounts, capabilities, sysctls, tasks."""

from __future__ import annotations

import os
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
