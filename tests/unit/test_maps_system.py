"""maps/_system.py: whether a path can hold a pinned map, asked of the machine's mount table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from percpu._machine import BPF_FS_MAGIC, Machine
from percpu.errors import MapNotFound
from percpu.maps import check_pin_path

from .fake_kernel import FakeKernel, FakeMachine, installed

ROOT = ("/dev/sda1", "/", "ext4")
BPFFS = ("bpf", "/sys/fs/bpf", "bpf")
EXT4_MAGIC = 0xEF53


def _on(*mounts: tuple[str, str, str]) -> tuple[FakeKernel, FakeMachine]:
    kernel = FakeKernel(2)
    return kernel, FakeMachine(kernel, mounts=mounts)


@pytest.mark.parametrize("path", ["/etc/passwd", "/etc/no_such_file"])
def test_paths_outside_bpffs_are_refused(path: str) -> None:
    with installed(*_on(ROOT, BPFFS)), pytest.raises(MapNotFound) as exc:
        check_pin_path(path)
    assert str(exc.value) == f"{path} is not in a BPF file system (bpffs); pinned maps live under /sys/fs/bpf"


def test_no_bpffs_mounted() -> None:
    with (
        installed(*_on(ROOT)),
        pytest.raises(MapNotFound, match=r"no bpffs is mounted here \(mount -t bpf bpf /sys/fs/bpf\)"),
    ):
        check_pin_path("/sys/fs/bpf/x")


def test_bpffs_mount_point_with_a_space_and_a_directory_in_it(tmp_path: Path) -> None:
    bpffs = os.path.join(str(tmp_path), "my bpf")
    os.makedirs(os.path.join(bpffs, "dir"))
    kernel, machine = _on(ROOT, ("bpf", bpffs.replace(" ", "\\040"), "bpf"))
    with installed(kernel, machine):
        with pytest.raises(MapNotFound, match="is a directory in bpffs, not a pinned map"):
            check_pin_path(os.path.join(bpffs, "dir"))
        check_pin_path(os.path.join(bpffs, "a_map"))  # in bpffs: accepted, the library opens it
    assert kernel.calls == []  # the check itself makes no bpf() call


def test_an_unreadable_mount_table_and_no_statfs_say_nothing() -> None:
    kernel = FakeKernel(2)
    machine = FakeMachine(kernel)
    os.unlink(os.path.join(machine.proc, "self", "mounts"))
    with installed(kernel, machine):
        check_pin_path("/etc/passwd")  # nothing can tell: the kernel's own answer decides


@pytest.mark.parametrize("path", ["/etc/passwd", "/etc/no_such_file"])
def test_a_chroot_whose_root_is_not_a_mount_asks_statfs(path: str) -> None:
    """In such a chroot no line of the mount table holds /etc; statfs says ext4, not bpffs (was: nothing
    said, and the kernel's EACCES raised as a privilege problem, as root)."""
    kernel = FakeKernel(2)
    machine = FakeMachine(kernel, mounts=(BPFFS,), statfs={"/": EXT4_MAGIC, "/sys/fs/bpf": BPF_FS_MAGIC})
    with installed(kernel, machine), pytest.raises(MapNotFound) as exc:
        check_pin_path(path)
    assert str(exc.value) == f"{path} is not in a BPF file system (bpffs); pinned maps live under /sys/fs/bpf"


def test_statfs_saying_bpffs_lets_the_library_open_the_path() -> None:
    kernel = FakeKernel(2)
    machine = FakeMachine(kernel, mounts=(), statfs={"/pins": BPF_FS_MAGIC})
    with installed(kernel, machine):
        check_pin_path("/pins/a_map")
    assert kernel.calls == []


def test_statfs_of_this_machine(tmp_path: Path) -> None:
    """The real statfs(2): procfs's magic for /proc, and a path that does not exist yet answers for its
    nearest existing ancestor."""
    real = Machine()
    assert real.fs_magic("/proc/self") == 0x9FA0  # PROC_SUPER_MAGIC
    here = real.fs_magic(str(tmp_path))
    assert here is not None and here != BPF_FS_MAGIC
    assert real.fs_magic(str(tmp_path / "no" / "such" / "map")) == here
