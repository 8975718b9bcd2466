"""What the system holds: every map's info, and whether a path can hold a pinned map."""

from __future__ import annotations

import errno as _errno
import os

from .. import _machine
from .._libbpf import MapInfo
from ..errors import (
    InvalidArgument,
    MapNotFound,
    from_errno,
)


def _in_bpffs(path: str) -> bool | None:
    """Whether ``path`` (or, where it does not exist, its nearest existing ancestor) is in a BPF file
    system: the mount table says which file system holds it; where it has no line for it (a chroot whose
    root is not a mount point), statfs(2) does. None when neither can tell."""
    machine = _machine.current()
    where = machine.mount_of(path)
    if where is not None:
        return where.fstype == "bpf"
    magic = machine.fs_magic(path)
    return None if magic is None else magic == _machine.BPF_FS_MAGIC


def _bpffs_hint() -> str:
    bpffs = [m.point for m in _machine.current().mounts() if m.fstype == "bpf"]
    if bpffs:
        return f"pinned maps live under {', '.join(bpffs)}"
    return "no bpffs is mounted here (mount -t bpf bpf /sys/fs/bpf)"


def check_pin_path(path: str) -> None:
    """Refuse a path that cannot hold a pinned map, saying why, before any bpf() call.

    Without this the kernel's answer for a file elsewhere is EACCES, which reads like a privilege
    problem even as root. Says nothing when neither the mount table nor statfs(2) can tell.
    """
    if _in_bpffs(path) is False:
        raise MapNotFound(f"{path} is not in a BPF file system (bpffs); {_bpffs_hint()}")
    if os.path.isdir(path):
        raise MapNotFound(
            f"{path} is a directory in bpffs, not a pinned map; give the path of a map pinned under "
            "it, or a map id from `percpu maps`"
        )


def check_pin_target(path: str, what: str, map_name: str | None = None) -> None:
    """Refuse, before any bpf() call, a path ``what`` (``map 'counts'``) cannot be pinned at because its
    directory is not in bpffs: the kernel's answer there is EPERM, which reads like a privilege problem
    even as root. A path that exists, or whose directory does not, is the kernel's to refuse (EEXIST,
    ENOENT: :func:`percpu.maps._errors.map_error` says what each means), since asking first would race."""
    if _in_bpffs(os.path.dirname(os.path.abspath(path))) is False:
        raise InvalidArgument(
            f"{what}: cannot pin at {path}: its directory is not in a BPF file system (bpffs), the only "
            f"place the kernel pins objects; {_bpffs_hint()}",
            argument="pin path",
            value=path,
            map_name=map_name,
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
