"""What the system holds: every map's info, and whether a path can hold a pinned map."""

from __future__ import annotations

import errno as _errno
import os

from .. import _machine
from .._libbpf import MapInfo
from ..errors import (
    MapNotFound,
    from_errno,
)


def check_pin_path(path: str) -> None:
    """Refuse a path that cannot hold a pinned map, saying why, before any bpf() call.

    Without this the kernel's answer for a file elsewhere is EACCES, which reads like a privilege
    problem even as root. The mount table says which file system holds the path; where it has no line
    for it (a chroot whose root is not a mount point), statfs(2) does. Says nothing when neither can tell.
    """
    machine = _machine.current()
    table = machine.mounts()
    where = machine.mount_of(path)
    if where is not None:
        in_bpffs = where.fstype == "bpf"
    else:
        magic = machine.fs_magic(path)
        if magic is None:
            return
        in_bpffs = magic == _machine.BPF_FS_MAGIC
    if not in_bpffs:
        bpffs = [m.point for m in table if m.fstype == "bpf"]
        hint = (
            f"pinned maps live under {', '.join(bpffs)}"
            if bpffs
            else "no bpffs is mounted here (mount -t bpf bpf /sys/fs/bpf)"
        )
        raise MapNotFound(f"{path} is not in a BPF file system (bpffs); {hint}")
    if os.path.isdir(path):
        raise MapNotFound(
            f"{path} is a directory in bpffs, not a pinned map; give the path of a map pinned under "
            "it, or a map id from `percpu maps`"
        )


def list_maps() -> list[MapInfo]:
    """Info on every BPF map on the system (needs CAP_SYS_ADMIN or root to see others' maps)."""
    b = _machine.current().kernel
    out: list[MapInfo] = []
    cur = 0
    while True:
        try:
            nxt = b.map_get_next_id(cur)
        except OSError as exc:
            raise from_errno(exc.errno or 0, "list maps") from exc
        if nxt is None:
            return out
        cur = nxt
        try:
            fd = b.map_get_fd_by_id(nxt)
        except OSError as exc:
            if exc.errno == _errno.ENOENT:
                continue  # freed between the two calls
            raise from_errno(exc.errno or 0, f"open map id {nxt}") from exc
        try:
            out.append(b.map_info(fd))
        except OSError as exc:
            raise from_errno(exc.errno or 0, f"map info of id {nxt}") from exc
        finally:
            b.close(fd)
