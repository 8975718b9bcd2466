"""Process control for counting a command: a gated spawn, a cgroup of its own, reaping.

``percpu stat -- CMD`` must count the command from its execve and its children too, so the command is
forked held before exec (:func:`spawn_gated`) and put in a cgroup v2 of its own
(:class:`CommandCgroup`) while the counter attaches. The cgroup is made under the cgroup percpu itself
runs in, never at the root of the hierarchy: the command stays inside the caller's memory, pids and CPU
limits (which apply to a cgroup's whole subtree). Percpu holds an exclusive ``flock`` on the cgroup's
directory for as long as it uses it, so a cgroup left behind by a percpu that was killed is recognised
(no lock held) and removed by the next one.

Nothing here runs at import time; nothing here prints. What /proc says (tasks, this process's cgroup) is
asked of the machine in use (:func:`percpu._machine.current`); cgroup paths are parameters so tests can
point them at a hierarchy of their own.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import shlex
import shutil
import signal
import stat
import time
from collections.abc import Iterator
from typing import Any

from . import _machine
from .errors import CommandNotRunnable, PercpuError

__all__ = [
    "CGROUP_PREFIX",
    "CommandCgroup",
    "GatedCommand",
    "Watch",
    "alive",
    "exit_code",
    "in_nested_pid_namespace",
    "own_cgroup",
    "reap",
    "remove_stale_cgroups",
    "resolve_command",
    "spawn_gated",
]

CGROUP_PREFIX = "percpu-stat-"


def exit_code(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128 + the signal that ended the process."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (not a zombie)."""
    return _machine.current().task_state(pid) not in (None, "Z", "X")


def in_nested_pid_namespace(pid: int) -> bool:
    """Whether the task ``pid`` (a process or a thread) runs in a pid namespace below the one /proc
    shows: it then has more than one pid."""
    return len(_machine.current().ns_pids(pid)) > 1


def _interpreter(path: str) -> str:
    """The interpreter a script names on its ``#!`` line (``sh`` when it names none): what to put in front
    of a script that is not executable."""
    try:
        with open(path, "rb") as f:
            first = f.readline(256)
    except OSError:
        return "sh"
    if first.startswith(b"#!"):
        words = first[2:].decode("utf-8", "replace").split()
        if words:
            return " ".join(words)
    return "sh"


def resolve_command(name: str) -> str:
    """The file ``percpu stat -- NAME`` runs, found as a shell finds it: ``NAME`` itself when it has a
    slash, else the first executable ``NAME`` in ``PATH``.

    Raises :class:`CommandNotRunnable` with the status a shell gives: 127 when nothing is found, 126 for
    a directory or a file that is not executable (``Permission denied``), before anything is counted."""
    if "/" not in name:
        found = shutil.which(name)
        if found is None:
            raise CommandNotRunnable(f"command not found: {name} (not in PATH)", command=name, status=127)
        return found
    try:
        st = os.stat(name)
    except OSError as exc:
        err = exc.errno or errno.ENOENT
        status = 127 if err in (errno.ENOENT, errno.ENOTDIR) else 126
        raise CommandNotRunnable(
            f"cannot run {name}: {os.strerror(err)}", command=name, status=status, errno=err
        ) from exc
    if stat.S_ISDIR(st.st_mode):
        raise CommandNotRunnable(
            f"cannot run {name}: Is a directory: name a program or script to run",
            command=name,
            status=126,
            errno=errno.EISDIR,
        )
    if not os.access(name, os.X_OK):
        how = shlex.join([*_interpreter(name).split(), name])
        raise CommandNotRunnable(
            f"cannot run {name}: Permission denied (it is not executable): chmod +x {shlex.quote(name)}, "
            f"or name its interpreter first: percpu stat -- {how}",
            command=name,
            status=126,
            errno=errno.EACCES,
        )
    return name


def spawn_gated(path: str, argv: list[str]) -> tuple[int, int]:
    """Fork the command, held before exec until the returned gate fd is written to (closing it unwritten
    makes the child exit 125 without running anything). Returns (pid, gate fd)."""
    gate_r, gate_w = os.pipe()  # close-on-exec: the command inherits neither end
    child = os.fork()
    if child == 0:
        try:
            os.close(gate_w)  # else a gate closed unwritten would never read as EOF here
            # Nothing between the gate and exec makes a system call but execve itself: the count of the
            # command starts with its execve.
            if os.read(gate_r, 1):
                os.execv(path, argv)
            os._exit(125)
        except OSError as exc:
            os.write(2, f"percpu: cannot run {argv[0]}: {exc.strerror}\n".encode())
            # As a shell: 127 when the file is not there (gone since it was found), 126 when it is but the
            # kernel would not run it (a missing #! interpreter is ENOENT too, but the file is there).
            os._exit(127 if exc.errno == errno.ENOENT and not os.path.exists(path) else 126)
        except BaseException:
            pass
        os._exit(127)
    os.close(gate_r)
    return child, gate_w


def reap(child: int, grace: float = 1.0) -> int:
    """End and wait for ``child`` (after percpu itself failed): SIGTERM, SIGKILL after ``grace`` seconds.
    Returns its exit code as a shell reports it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(child, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end:
        pid, st = os.waitpid(child, os.WNOHANG)
        if pid:
            return exit_code(st)
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(child, signal.SIGKILL)
    return exit_code(os.waitpid(child, 0)[1])


def own_cgroup(root: str) -> str | None:
    """The cgroup v2 directory this process runs in, under the cgroup2 mount ``root``; None when it
    cannot be found there (no v2 line, or a cgroup namespace whose root is not the mount's)."""
    rel = _machine.current().cgroup()
    if rel is None:
        return None
    path = os.path.normpath(os.path.join(root, rel.lstrip("/")))
    if os.path.commonpath([path, root]) != os.path.normpath(root) or not os.path.isfile(
        os.path.join(path, "cgroup.procs")
    ):
        return None
    return path


def _write_pid(cgroup: str, pid: str) -> bool:
    try:
        with open(os.path.join(cgroup, "cgroup.procs"), "w", encoding="ascii") as f:
            f.write(pid)
    except OSError:
        return False
    return True


def _evict(path: str, homes: list[str]) -> list[str]:
    """Move every process of the cgroup ``path`` to the first of ``homes`` that takes it; returns them."""
    try:
        with open(os.path.join(path, "cgroup.procs"), encoding="ascii") as f:
            pids = f.read().split()
    except OSError:
        return []
    for pid in pids:
        for home in homes:
            if _write_pid(home, pid):
                break
    return pids


def _rmdir(path: str, homes: list[str], tries: int = 50) -> tuple[bool, int]:
    """Remove a cgroup, moving processes still in it to ``homes`` first. Returns (removed, how many
    processes were moved out)."""
    left: list[str] = []
    for attempt in range(tries):
        try:
            os.rmdir(path)
            return True, len(left)
        except FileNotFoundError:
            return True, len(left)
        except OSError:
            if attempt % 10 == 0:
                left = _evict(path, homes) or left
            time.sleep(0.02)
    return False, len(left)


def _percpu_pid(name: str) -> int | None:
    tail = name[len(CGROUP_PREFIX) :]
    return int(tail) if name.startswith(CGROUP_PREFIX) and tail.isdigit() else None


def _is_percpu(pid: int) -> bool:
    return b"percpu" in (_machine.current().cmdline(pid) or b"")


def remove_stale_cgroups(parents: list[str]) -> list[str]:
    """Remove the command cgroups that percpu runs killed before they could (SIGKILL, a crash) left in
    ``parents``; their processes move to the parent. Returns the paths removed.

    A cgroup is stale when no process holds its lock and the pid in its name is not a running percpu
    (the second test covers the moment between a live run's mkdir and its flock)."""
    removed: list[str] = []
    for parent in dict.fromkeys(parents):
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            pid = _percpu_pid(name)
            path = os.path.join(parent, name)
            if pid is None or (alive(pid) and _is_percpu(pid)):
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # its percpu is alive (in another pid namespace, perhaps)
            try:
                if _rmdir(path, [parent], tries=10)[0]:
                    removed.append(path)
            finally:
                os.close(fd)
    return removed


class CommandCgroup:
    """A fresh cgroup v2 for ``percpu stat -- CMD``, under ``parent`` (default: the cgroup percpu runs
    in), so the command's children are counted too and the command stays within the caller's limits.

    :attr:`path` is None when no cgroup could be made (no cgroup v2, not allowed); :attr:`removed_stale`
    lists the leftovers of killed runs removed first. :meth:`remove` must be called after the command is
    reaped."""

    def __init__(self, root: str | None, parent: str | None = None) -> None:
        self.path: str | None = None
        self.root = root or ""
        self.parent = ""
        self.removed_stale: list[str] = []
        self._lock = -1
        if root is None or not os.path.exists(os.path.join(root, "cgroup.procs")):
            return
        parent = parent or own_cgroup(root)
        if parent is None:
            return
        # Leftovers of killed runs: under this parent, and at the root, where percpu made them before.
        self.removed_stale = remove_stale_cgroups([parent, root])
        path = os.path.join(parent, f"{CGROUP_PREFIX}{os.getpid()}")
        try:
            os.mkdir(path)
        except FileExistsError:
            pass  # a leftover of an earlier percpu with this pid that could not be removed: reuse it
        except OSError:
            return
        try:
            self._lock = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            if self._lock >= 0:
                os.close(self._lock)
                self._lock = -1
            return  # someone else's (another pid namespace's percpu with our pid): leave it alone
        self.parent = parent
        self.path = path

    def add(self, pid: int) -> bool:
        """Put ``pid`` in the cgroup; False (and the cgroup removed) when the kernel refuses."""
        if self.path is None:
            return False
        if not _write_pid(self.path, str(pid)):
            self.remove()
            return False
        return True

    def remove(self) -> tuple[bool, int]:
        """Remove the cgroup (after reaping the command). Processes the command left running are moved to
        percpu's own cgroup first. Returns (removed, how many processes had to be moved)."""
        if self.path is None:
            return True, 0
        path, self.path = self.path, None
        try:
            return _rmdir(path, [self.parent, self.root])
        finally:
            os.close(self._lock)
            self._lock = -1


class Watch:
    """What ends a count besides its deadline (``percpu stat``): SIGINT/SIGTERM, or the exit of the
    watched process (``child``: a command percpu started, reaped here, its exit code in :attr:`status`).
    Waits sleep in select() on a pidfd and on a pipe the signal handlers write to, so either wakes the
    loop at once."""

    def __init__(self, pid: int | None, *, child: bool) -> None:
        self.pid = pid
        self.child = child
        self.stop = False
        self.status = 0
        self.pidfd = -1
        if pid is not None:
            try:
                self.pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                raise PercpuError(f"no process with pid {pid}") from None
            except OSError:
                self.pidfd = -1  # before Linux 5.3: poll /proc instead
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    def close(self) -> None:
        for fd in (self.pidfd, self._r, self._w):
            if fd >= 0:
                os.close(fd)
        self.pidfd = self._r = self._w = -1

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        """Without a command, SIGINT and SIGTERM end the count and the report is printed. With one,
        Ctrl-C reaches the command from the terminal and percpu reports when it exits; SIGTERM sent to
        percpu alone is passed on to the command, with the same result."""

        def on_signal(signum: int, frame: Any) -> None:
            if self.child and self.pid is not None:
                if signum == signal.SIGTERM:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pid, signal.SIGTERM)
            else:
                self.stop = True

        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN if self.child else on_signal)
        old_term = signal.signal(signal.SIGTERM, on_signal)
        old_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        try:
            yield
        finally:
            signal.set_wakeup_fd(old_fd)
            signal.signal(signal.SIGTERM, old_term)
            signal.signal(signal.SIGINT, old_int)

    def wait(self, timeout: float) -> None:
        fds = [self._r]
        if self.pidfd >= 0:
            fds.append(self.pidfd)
        elif self.pid is not None:
            timeout = min(timeout, 0.1)
        # Bounded: a wait far in the future (a long --duration) would overflow select()'s time type.
        select.select(fds, [], [], min(max(timeout, 0.0), 3600.0))
        with contextlib.suppress(BlockingIOError):
            os.read(self._r, 512)

    def exited(self) -> bool:
        """True once the watched process has ended (the child is reaped and its status kept)."""
        if self.pid is None:
            return False
        if self.child:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = exit_code(st)
                self.pid = None
                return True
            return False
        if self.pidfd >= 0:
            return bool(select.select([self.pidfd], [], [], 0)[0])
        return not alive(self.pid)


class GatedCommand:
    """``percpu stat -- CMD``: the command forked held before its execve (:func:`spawn_gated`), watched
    (:class:`Watch`, which reaps it) and put in a :class:`CommandCgroup` of its own where one can be made,
    so the counter can attach to its cgroup (or pid) before it runs a single instruction of its own.

    :meth:`release` lets it exec; :meth:`close` ends what is left: a command never released exits 125
    without running, one still running after percpu failed is ended and reaped, and the cgroup is removed
    (only then: a cgroup cannot be removed while the command is in it). After :meth:`close`,
    :attr:`removed` says whether the cgroup went, :attr:`moved` how many processes the command left in it
    had to be moved out, :attr:`cgroup_path` where it was."""

    def __init__(self, path: str, argv: list[str], cgroup_root: str | None) -> None:
        self.cgroup = CommandCgroup(cgroup_root)
        self.cgroup_path = self.cgroup.path
        self.removed, self.moved = True, 0
        self._closed = False
        try:
            self.pid, self._gate = spawn_gated(path, argv)
        except BaseException:
            self.cgroup.remove()
            raise
        try:
            self.watch = Watch(self.pid, child=True)
        except BaseException:
            os.close(self._gate)  # never released: the child exits without running the command
            reap(self.pid)
            self.cgroup.remove()
            raise
        self.in_cgroup = self.cgroup.add(self.pid)

    @property
    def status(self) -> int:
        """The command's exit code as a shell reports it (128 + N if signal N ended it), once reaped."""
        return self.watch.status

    def left_running(self) -> int:
        """How many processes are in the command's cgroup now: once the command has exited, the ones it
        left running (0 without a cgroup, where percpu cannot tell)."""
        path = self.cgroup.path
        if path is None:
            return 0
        try:
            with open(os.path.join(path, "cgroup.procs"), encoding="ascii") as f:
                return len(f.read().split())
        except OSError:
            return 0

    def release(self) -> None:
        """Let the command run: its execve is the first system call it makes."""
        os.write(self._gate, b"x")
        os.close(self._gate)
        self._gate = -1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._gate >= 0:
            os.close(self._gate)  # the child sees EOF and exits without running the command
            self._gate = -1
        try:
            if self.watch.pid is not None:
                reap(self.pid)  # not reaped by the watch: percpu failed before the command ended
        finally:
            self.watch.close()
            self.removed, self.moved = self.cgroup.remove()
