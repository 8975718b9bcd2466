"""Pinned paths (maps/_system.py): a path outside bpffs is refused before any bpf() call."""

from __future__ import annotations

import os

import pytest

import percpu
from percpu import _libbpf
from percpu.errors import PercpuError
from percpu.maps import check_pin_path

from .fake_kernel import FakeKernel

N = len(percpu.topology().possible)


def mounts_file(tmp_path: object, *lines: str) -> str:
    path = os.path.join(str(tmp_path), "mounts")
    with open(path, "w", encoding="ascii") as f:
        f.write("".join(line + "\n" for line in lines))
    return path


def test_paths_outside_bpffs_are_refused(tmp_path: object) -> None:
    mounts = mounts_file(tmp_path, "/dev/sda1 / ext4 rw 0 0", "bpf /sys/fs/bpf bpf rw 0 0")
    for path in ("/etc/passwd", "/etc/no_such_file"):
        with pytest.raises(PercpuError) as exc:
            check_pin_path(path, mounts)
        assert (
            str(exc.value)
            == f"{path} is not in a BPF file system (bpffs); pinned maps live under /sys/fs/bpf"
        )


def test_no_bpffs_mounted(tmp_path: object) -> None:
    mounts = mounts_file(tmp_path, "/dev/sda1 / ext4 rw 0 0")
    with pytest.raises(PercpuError, match=r"no bpffs is mounted here \(mount -t bpf bpf /sys/fs/bpf\)"):
        check_pin_path("/sys/fs/bpf/x", mounts)


def test_bpffs_mount_point_with_a_space_and_a_directory_in_it(tmp_path: object) -> None:
    bpffs = os.path.join(str(tmp_path), "my bpf")
    os.makedirs(os.path.join(bpffs, "dir"))
    escaped = bpffs.replace(" ", "\\040")
    mounts = mounts_file(tmp_path, "/dev/sda1 / ext4 rw 0 0", f"bpf {escaped} bpf rw 0 0")
    with pytest.raises(PercpuError, match="is a directory in bpffs, not a pinned map"):
        check_pin_path(os.path.join(bpffs, "dir"), mounts)
    with _libbpf.use_backend(FakeKernel(N)):
        check_pin_path(os.path.join(bpffs, "a_map"), mounts)  # in bpffs: the library opens it
