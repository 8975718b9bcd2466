"""What the machine says, asked in one place: the kernel (the libbpf binding, or a test's fake: every map,
probe and object call goes to ``current().kernel``), its architecture, the CPU lists in sysfs, the mount
table, this process's effective capabilities and cgroup, what kind of BPF object an fd is, other tasks
(alive, in which pid namespace, running what), and sysctls.

:class:`Machine` reads them from its ``/proc`` and ``/sys`` (the parsing is :mod:`percpu._procfs`'s, given
the machine's paths; statfs(2) answers which file system holds a path); :func:`current` is the one in use and
:func:`use` installs another for a ``with`` block (the unit tests' fake machine, whose kernel and files
come from one set of CPU ids, so they cannot contradict each other). Nothing here raises for an unreadable
file: callers get None or an empty list and decide what that means. Nothing is read at import time.
One function changes the machine: :func:`ensure_tracefs` mounts tracefs where libbpf looks for it.
"""

from __future__ import annotations

import os
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import numpy as np

from . import _fork, _libbpf, _libc, _procfs
from ._libbpf import MapInfo
from ._procfs import CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, Mount, bpf_cap_names, can_load_bpf
from .errors import LibbpfError, NotSupported
from .layout import Layout

__all__ = [
    "CAP_BPF",
    "CAP_PERFMON",
    "CAP_SYS_ADMIN",
    "Kernel",
    "Machine",
    "Mount",
    "bpf_cap_names",
    "can_load_bpf",
    "cgroup2_root",
    "current",
    "ensure_tracefs",
    "use",
]

# Where libbpf (tracefs_path() in libbpf.c), bpftrace and bcc look for tracefs: nowhere else.
TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

# statfs(2)'s f_type of bpffs (BPF_FS_MAGIC in include/uapi/linux/magic.h).
BPF_FS_MAGIC = 0xCAFE4A11

# The inode number of the initial pid namespace (PROC_PID_INIT_INO in include/linux/proc_ns.h): fixed.
_INIT_PIDNS_INO = 0xEFFFFFFC


class Kernel(Protocol):
    """What the layers above need from the kernel: the map calls of :class:`percpu._libbpf.Libbpf`, the
    real one, which a unit test's fake kernel also offers. Failures raise :class:`OSError` with the
    kernel's errno, as the binding does."""

    def num_possible_cpus(self) -> int: ...
    def map_create(
        self,
        map_type: int,
        name: str,
        key_size: int,
        value_size: int,
        max_entries: int,
        flags: int = 0,
        btf_fd: int = 0,
        btf_key_type_id: int = 0,
        btf_value_type_id: int = 0,
    ) -> int: ...
    def btf_load(self, data: bytes) -> int: ...
    def map_get_fd_by_id(self, map_id: int) -> int: ...
    def map_get_next_id(self, start: int) -> int | None: ...
    def obj_get(self, path: str) -> int: ...
    def obj_pin(self, fd: int, path: str) -> None: ...
    def map_info(self, fd: int) -> MapInfo: ...
    def dup(self, fd: int) -> int: ...
    def close(self, fd: int) -> None: ...
    def map_lookup(
        self, fd: int, key: np.ndarray, value: np.ndarray, layout: Layout, flags: int = 0
    ) -> None: ...
    def map_update(
        self, fd: int, key: np.ndarray, value: np.ndarray, layout: Layout, flags: int = 0
    ) -> None: ...
    def map_delete(self, fd: int, key: np.ndarray, layout: Layout) -> None: ...
    def map_lookup_and_delete(
        self, fd: int, key: np.ndarray, value: np.ndarray, layout: Layout, flags: int = 0
    ) -> None: ...
    def map_get_next_key(
        self, fd: int, key: np.ndarray | None, next_key: np.ndarray, layout: Layout
    ) -> bool: ...
    def map_lookup_batch(
        self,
        fd: int,
        in_batch: np.ndarray | None,
        out_batch: np.ndarray,
        keys: np.ndarray,
        values: np.ndarray,
        count: int,
        layout: Layout,
        delete: bool = False,
        elem_flags: int = 0,
    ) -> tuple[int, bool]: ...
    def map_update_batch(
        self, fd: int, keys: np.ndarray, values: np.ndarray, count: int, layout: Layout, elem_flags: int = 0
    ) -> int: ...
    def map_delete_batch(self, fd: int, keys: np.ndarray, count: int, layout: Layout) -> int: ...


class Machine:
    """One machine: ``kernel`` (the binding; the real libbpf, loaded on first use, unless given) and the
    ``/proc`` and ``/sys`` trees its answers are read from."""

    def __init__(self, kernel: Kernel | None = None, *, proc: str = "/proc", sys: str = "/sys") -> None:
        self._kernel = kernel
        self.proc = proc
        self.sys = sys

    @property
    def kernel(self) -> Kernel:
        """The kernel every map, probe and object call goes to: what sizes buffers and answers bpf()."""
        return self._kernel if self._kernel is not None else _libbpf.libbpf()

    def libbpf(self) -> _libbpf.Libbpf:
        """The kernel as the real libbpf binding, for what needs libbpf itself (BPF objects and programs,
        kernel BTF, run-time stats); :class:`~percpu.errors.LibbpfError` when it is a test's fake."""
        kernel = self.kernel
        if not isinstance(kernel, _libbpf.Libbpf):
            raise LibbpfError("this operation needs the real libbpf, not the test kernel in use")
        return kernel

    def architecture(self) -> str:
        """The machine's architecture as ``uname -m`` says it (``x86_64``, ``aarch64``)."""
        return platform.machine()

    # --- CPUs -----------------------------------------------------------------------------------------

    @property
    def cpu_root(self) -> str:
        """Where the CPU lists (possible, online, present, isolated, nohz_full) and each CPU's topology
        live. The possible *count* is the kernel's (:meth:`num_possible_cpus`); these ids name its slots."""
        return os.path.join(self.sys, "devices", "system", "cpu")

    @property
    def node_root(self) -> str:
        return os.path.join(self.sys, "devices", "system", "node")

    @property
    def kernel_btf(self) -> str | None:
        """The kernel's own BTF (``/sys/kernel/btf/vmlinux``) when it has one: tp_btf programs need it."""
        path = os.path.join(self.sys, "kernel", "btf", "vmlinux")
        return path if os.path.exists(path) else None

    def num_possible_cpus(self) -> int:
        """The kernel's own count of possible CPUs: what sizes every per-CPU buffer."""
        return self.kernel.num_possible_cpus()

    # --- mounts -------------------------------------------------------------------------------------

    def mounts(self) -> list[Mount]:
        """The mount table, in mount order (later entries are mounted over earlier ones); [] if unreadable."""
        return _procfs.mounts(self.mounts_path)

    @property
    def mounts_path(self) -> str:
        """Where the mount table is read (for messages that say it could not be)."""
        return os.path.join(self.proc, "self", "mounts")

    def mount_point(self, fstype: str) -> str | None:
        """Where the first file system of type ``fstype`` (``cgroup2``, ``tracefs``, ``bpf``) is mounted."""
        return next((m.point for m in self.mounts() if m.fstype == fstype), None)

    def tracefs_dir(self) -> str | None:
        """Where tracefs is mounted for the tools that attach classic tracepoints, or None.

        libbpf, bpftrace and bcc look only at /sys/kernel/tracing and at debugfs's /sys/kernel/debug/tracing:
        a tracefs mounted elsewhere (a chroot's or a container's /sys, seen from the host) is of no use to
        them, nor to percpu, which attaches through libbpf.
        """
        points = {m.point for m in self.mounts() if m.fstype == "tracefs"}
        return next((d for d in TRACEFS_DIRS if d in points), None)

    def mount_of(self, path: str) -> Mount | None:
        """The mount that holds ``path`` (symbolic links resolved; a missing tail stays as written)."""
        return _procfs.mount_of(path, self.mounts())

    def fs_magic(self, path: str) -> int | None:
        """statfs(2)'s f_type (``BPF_FS_MAGIC`` for bpffs) of the file system holding ``path``, or of its
        nearest existing ancestor when it does not exist; None when statfs fails.

        The answer when the mount table has none: in a chroot whose root is not a mount point, no line of
        /proc/self/mounts holds the chroot's own files.
        """
        return _statfs_magic(path)

    # --- this process -------------------------------------------------------------------------------

    def euid(self) -> int:
        """This process's effective user id (root proves nothing about capabilities: see below)."""
        return os.geteuid()

    def effective_caps(self) -> int | None:
        """The effective capability set (CapEff), or None when it cannot be read.

        Being uid 0 proves nothing: a container runtime or ``setpriv`` can leave root with no
        capabilities, and then every bpf() call fails with EPERM.
        """
        return _procfs.effective_caps(os.path.join(self.proc, "self", "status"))

    def seccomp_mode(self) -> int | None:
        """This process's seccomp mode (0 none, 1 strict, 2 filter), or None when it cannot be read."""
        return _procfs.seccomp_mode(os.path.join(self.proc, "self", "status"))

    def fd_kind(self, fd: int) -> str | None:
        """``"map"``, ``"program"`` or ``"link"`` for a BPF fd, from the kernel's fdinfo; None if unknown.

        The kernel answers BPF_OBJ_GET_INFO_BY_FD on a program with a program's info, which must not be
        read as a map's, so the kind is checked before.
        """
        return _procfs.fd_kind(fd, self.proc)

    def pid_namespace(self) -> tuple[int, int] | None:
        """(device, inode) of this process's pid namespace when it is not the initial one, else None."""
        try:
            st = os.stat(os.path.join(self.proc, "self", "ns", "pid"))
        except OSError:
            return None  # no /proc/self/ns (very old kernels, no CONFIG_PID_NS): one namespace only
        return None if st.st_ino == _INIT_PIDNS_INO else (st.st_dev, st.st_ino)

    def threads(self) -> int:
        """How many threads this process has now (capabilities belong to each)."""
        return _procfs.thread_count(self.proc)

    def task_exists(self, tid: int) -> bool:
        """Whether a process or a thread with this id is visible here."""
        return _procfs.task_exists(tid, self.proc)

    def process_exists(self, pid: int) -> bool:
        """Whether a process (or zombie) with this pid exists in this pid namespace, visible in /proc or
        not: kill(pid, 0) sees other users' processes where /proc hides them (hidepid)."""
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def memory_available(self) -> tuple[int, str] | None:
        """What this process can still allocate, and where that figure comes from: the least of
        ``MemAvailable`` (``/proc/meminfo``) and what its memory cgroup (v2 or v1, and their ancestors)
        has left under its limit; None when neither can be read."""
        found = []
        avail = _procfs.mem_available(os.path.join(self.proc, "meminfo"))
        if avail is not None:
            found.append((avail, "MemAvailable in /proc/meminfo"))
        left = self.cgroup_memory_left()
        if left is not None:
            found.append(left)
        return min(found) if found else None

    def cgroup_memory_left(self) -> tuple[int, str] | None:
        """What this process's memory cgroup has left under the tightest limit on its path, and which
        limit that is; None without a limited memory cgroup."""
        return _procfs.cgroup_memory_left(os.path.join(self.proc, "self", "cgroup"), self.mounts_path)

    def cgroup(self) -> str | None:
        """This process's cgroup v2 path (``/user.slice/...``, relative to the cgroup2 mount's root when
        it is the namespace's); None without a v2 entry or when unreadable."""
        return _procfs.cgroup_v2(os.path.join(self.proc, "self", "cgroup"))

    # --- other tasks --------------------------------------------------------------------------------

    def task_state(self, tid: int) -> str | None:
        """A task's state letter (``R``, ``S``, ``Z`` for a zombie, ...); None when it is gone."""
        return _procfs.task_state(tid, self.proc)

    def ns_pids(self, tid: int) -> list[int]:
        """A task's pid in each pid namespace it is in, outermost first; [] when it is gone."""
        return _procfs.ns_pids(tid, self.proc)

    def cmdline(self, pid: int) -> bytes | None:
        """A process's NUL-separated arguments; None when it is gone."""
        return _procfs.cmdline(pid, self.proc)

    # --- sysctls ------------------------------------------------------------------------------------

    def sysctl(self, name: str) -> str | None:
        """A sysctl by its dotted name (``kernel.bpf_stats_enabled``), stripped; None if unreadable."""
        return _procfs.sysctl(name, os.path.join(self.proc, "sys"))

    def sysctl_int(self, name: str) -> int | None:
        text = self.sysctl(name)
        try:
            return None if text is None else int(text)
        except ValueError:
            return None


_current: Machine | None = None
_lock = threading.Lock()


@_fork.at_fork_in_child
def _renew_lock() -> None:
    global _lock  # noqa: PLW0603 - a thread holding it at fork() is not in the child
    _lock = threading.Lock()


def current() -> Machine:
    """The machine in use: this one, unless a test installed another with :func:`use`."""
    global _current  # noqa: PLW0603 - a process-wide seam, like a logging handler
    if _current is None:
        with _lock:
            if _current is None:
                _current = Machine()
    return _current


@contextmanager
def use(machine: Machine) -> Iterator[Machine]:
    """Install ``machine`` (and with it its kernel, which every map, probe and object calls) for a
    ``with`` block: the unit tests' one seam."""
    global _current  # noqa: PLW0603
    _fork.install()  # a kernel's first use, as for the real one (percpu._libbpf.libbpf)
    with _lock:
        old, _current = _current, machine
    try:
        yield machine
    finally:
        with _lock:
            _current = old


def cgroup2_root() -> str | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup``, or ``.../unified`` on hybrid
    systems), or None."""
    return current().mount_point("cgroup2")


def ensure_tracefs() -> str:
    """Where tracefs is mounted for libbpf, mounting it at /sys/kernel/tracing if it is not (needs root).

    Only /sys/kernel/tracing and /sys/kernel/debug/tracing count (see ``Machine.tracefs_dir``): a tracefs
    mounted only elsewhere, as a chroot's /sys is from the host, would leave libbpf failing with ENOENT.
    """
    point = current().tracefs_dir()
    if point is not None:
        return point
    target = TRACEFS_DIRS[0]
    try:
        _libc.mount("nodev", target, "tracefs")
    except OSError as exc:
        raise NotSupported(
            f"tracefs is not mounted and mounting it at {target} failed: {exc.strerror}; "
            f"run `mount -t tracefs nodev {target}` as root",
            feature="tracefs",
            errno=exc.errno,
        ) from exc
    return target


def _statfs_magic(path: str) -> int | None:
    real = os.path.realpath(path)
    while not os.path.lexists(real) and real != os.path.dirname(real):
        real = os.path.dirname(real)
    try:
        return _libc.statfs_type(real)
    except OSError:
        return None
