"""_machine.py: what the machine says, read from its /proc and /sys, and the seam that installs one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import percpu
from percpu import _machine
from percpu.cpus import possible_cpus

from .fake_kernel import FakeKernel, installed


def _machine_at(tmp_path: Path, files: dict[str, str]) -> _machine.Machine:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return _machine.Machine(FakeKernel(2), proc=str(tmp_path / "proc"), sys=str(tmp_path / "sys"))


def test_mounts_unescape_fields_and_the_last_longest_mount_holds_a_path(tmp_path: Path) -> None:
    m = _machine_at(
        tmp_path,
        {
            "proc/self/mounts": "/dev/root / ext4 rw 0 0\n"
            "bpf /sys/fs/bpf bpf rw 0 0\n"
            "none /sys/fs/bpf tmpfs rw 0 0\n"  # mounted over the bpffs: it holds the paths now
            "bpf /mnt/my\\040bpf bpf rw 0 0\n"
            "short\n",
        },
    )
    assert [x.point for x in m.mounts()] == ["/", "/sys/fs/bpf", "/sys/fs/bpf", "/mnt/my bpf"]
    assert m.mount_point("bpf") == "/sys/fs/bpf"
    assert m.mount_point("cgroup2") is None
    where = m.mount_of("/sys/fs/bpf/a_map")
    assert where is not None and where.fstype == "tmpfs"
    where = m.mount_of("/mnt/my bpf/x")
    assert where is not None and where.fstype == "bpf"
    where = m.mount_of("/etc/passwd")
    assert where is not None and where.point == "/"


def test_capabilities_and_sysctls(tmp_path: Path) -> None:
    m = _machine_at(
        tmp_path,
        {
            "proc/self/status": "Name:\tx\nCapEff:\t000000c000200000\n",
            "proc/sys/kernel/unprivileged_bpf_disabled": "2\n",
            "proc/sys/kernel/perf_event_paranoid": "not a number\n",
        },
    )
    caps = m.effective_caps()
    assert caps == (1 << 21) | (1 << 38) | (1 << 39)
    assert _machine.can_load_bpf(caps)
    assert not _machine.can_load_bpf(1 << _machine.CAP_BPF)  # tracing also needs CAP_PERFMON
    assert m.sysctl("kernel.unprivileged_bpf_disabled") == "2"
    assert m.sysctl_int("kernel.unprivileged_bpf_disabled") == 2
    assert m.sysctl_int("kernel.perf_event_paranoid") is None
    assert m.sysctl("kernel.bpf_stats_enabled") is None


def test_an_unreadable_machine_answers_none(tmp_path: Path) -> None:
    m = _machine_at(tmp_path, {"proc/self/status": "Name:\tx\n"})
    assert m.mounts() == [] and m.mount_of("/") is None
    assert m.effective_caps() is None
    assert m.fd_kind(3) is None


def test_tasks_and_this_process_cgroup_come_from_the_machines_proc(tmp_path: Path) -> None:
    m = _machine_at(
        tmp_path,
        {
            "proc/7/stat": "7 (sh) S 1 7 7 0\n",
            "proc/7/status": "Name:\tsh\nNSpid:\t7\t1\n",
            "proc/7/cmdline": "sh\0-c\0true\0",
            "proc/self/cgroup": "0::/user.slice\n",
        },
    )
    assert m.task_state(7) == "S" and m.ns_pids(7) == [7, 1] and m.cmdline(7) == b"sh\0-c\0true\0"
    assert m.task_state(8) is None and m.ns_pids(8) == [] and m.cmdline(8) is None
    assert m.cgroup() == "/user.slice"
    assert _machine.Machine().architecture() == os.uname().machine


def test_a_process_exists_until_reaped_whatever_proc_shows(tmp_path: Path) -> None:
    # An empty /proc, as hidepid shows another user's processes: kill(pid, 0) still sees them.
    m = _machine_at(tmp_path, {"proc/self/cgroup": "0::/\n"})
    child = subprocess.Popen(["sleep", "60"])
    try:
        assert not m.task_exists(child.pid)
        assert m.process_exists(child.pid) and m.process_exists(1)
    finally:
        child.kill()
    child.wait()
    assert not m.process_exists(child.pid)


def test_a_pipe_is_no_bpf_object() -> None:
    r, w = os.pipe()
    try:
        assert _machine.Machine().fd_kind(r) is None
    finally:
        os.close(r)
        os.close(w)


def test_use_installs_the_machine_and_its_kernel_then_restores_both() -> None:
    before = _machine.current()
    kernel = FakeKernel(3)
    with installed(kernel) as k:
        assert k is kernel
        assert _machine.current() is kernel.machine
        assert _machine.current().kernel is kernel
    assert _machine.current() is before


@pytest.mark.parametrize(("ids", "online"), [((0, 2, 3, 5), (0, 5)), (tuple(range(0, 512, 2)), (0, 2))])
def test_a_gapped_fake_machine_agrees_with_itself(ids: tuple[int, ...], online: tuple[int, ...]) -> None:
    """The kernel's count, the sysfs lists and a map's CPU ids all come from one tuple."""
    kernel = FakeKernel(len(ids), cpu_ids=ids, online=online)
    with installed(kernel):
        assert possible_cpus().ids == ids
        assert Path(kernel.machine.cpu_root, "online").read_text().strip() == (
            "0,5" if online == (0, 5) else "0,2"
        )
        with percpu.PerCpuArray.create(np.uint64, 1) as m:
            m[0] = list(range(len(ids)))
            v = m[0]
    assert m.cpus.ids == ids
    assert [v[c] for c in ids] == list(range(len(ids)))


def test_kernel_btf_is_where_the_machine_has_it(tmp_path: Path) -> None:
    m = _machine_at(tmp_path, {"proc/self/status": ""})
    assert m.kernel_btf is None
    m = _machine_at(tmp_path, {"sys/kernel/btf/vmlinux": "\x9f\xeb"})
    assert m.kernel_btf == str(tmp_path / "sys" / "kernel" / "btf" / "vmlinux")
