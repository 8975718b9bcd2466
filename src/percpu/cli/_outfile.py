"""Report files that a failed run cannot destroy.

A shell's ``>`` truncates the file before the command runs; percpu runs as root and a run can fail late
(a program the kernel refuses, a command not found, Ctrl-C before the first report), so an output file is
checked up front without being touched, and a regular file is replaced only once the report is complete:
it is written to a temporary file in the same directory and renamed over the old one (the old file's mode
and owner are kept). Anything else (``-`` for stdout, ``/dev/stdout``, a pipe, a FIFO, a terminal) is not
created or replaced but opened as it is, at the first write.

A write that fails (a full file system, ``-o /dev/full``) raises :class:`PercpuError` naming the file,
with the OS's errno (``EPIPE`` when the reader of a pipe went away), for the command to say what was lost.
A standard stream that was closed when percpu started (``>&-``) is open on /dev/null
(:func:`open_standard_fds`): a report to it would be lost, so it is refused before counting. ``-`` is
standard output, or standard error for a report made with ``std=2`` (``stat -- CMD``, whose command has
standard output to itself).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
from typing import IO, Any

from ..errors import PercpuError

__all__ = ["ReportFile", "open_standard_fds", "stderr_closed", "stdout_closed"]

# The standard fds (0, 1, 2) that were closed when percpu started, now open on /dev/null.
_closed_at_start: frozenset[int] = frozenset()


def open_standard_fds() -> frozenset[int]:
    """Open /dev/null over each of fds 0, 1 and 2 that is closed, and give Python a stream for it; return
    the ones that were closed.

    A process started with one closed (``2>&-``) hands that number to the next file it opens, so a line
    meant for stderr lands in the report on fd 1 or in a file opened later, and Python, which found no
    stream there, has ``sys.stderr`` None (``print(file=None)`` writes to stdout). Daemons and shells do
    the same: open /dev/null over it first."""
    global _closed_at_start  # noqa: PLW0603 - once per process, at the start of main()
    closed = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.append(fd)
    for fd in closed:
        got = os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
        if got != fd:
            os.dup2(got, fd)
            os.close(got)
    names = {0: "stdin", 1: "stdout", 2: "stderr"}
    for fd in closed:
        if getattr(sys, names[fd]) is None:
            mode = "r" if fd == 0 else "w"
            stream = open(fd, mode, buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
            setattr(sys, names[fd], stream)
    _closed_at_start = frozenset(closed)
    return _closed_at_start


def stdout_closed() -> bool:
    """Whether standard output was closed when percpu started (it is /dev/null now)."""
    return 1 in _closed_at_start


def stderr_closed() -> bool:
    """Whether standard error was closed when percpu started (it is /dev/null now)."""
    return 2 in _closed_at_start


_STD_NAMES = {1: "standard output", 2: "standard error"}


def _error(option: str, path: str, err: int, std: int = 1) -> PercpuError:
    where = _STD_NAMES[std] if path == "-" else f"{option} {path}"
    return PercpuError(f"{where}: {os.strerror(err)}", errno=err)


def _refuse_closed(option: str, path: str, std: int) -> None:
    """A report to a standard stream that was closed at the start would be lost: refuse it now."""
    if std == 1 and (path == "-" or os.path.abspath(path) == "/dev/stdout") and stdout_closed():
        raise PercpuError(
            f"{option} {path}: standard output was closed when percpu started, so the report would "
            "be lost: name a file, or redirect standard output (>/dev/null to discard it)",
            errno=errno.EBADF,
        )
    if std == 2 and path == "-" and stderr_closed():
        raise PercpuError(
            "without -o a command's report goes to standard error, which was closed when percpu "
            "started, so the report would be lost: name a file with -o (-o - for standard output), or "
            "redirect standard error (2>/dev/null to discard it)",
            errno=errno.EBADF,
        )


class ReportFile:
    """Where one report goes: ``path`` (``-`` for the standard stream ``std``: 1 stdout, 2 stderr),
    named ``option`` in messages.

    Checks happen in the constructor and raise :class:`PercpuError`; :meth:`write` streams text,
    :meth:`commit` makes it the file's contents, :meth:`close` without a commit leaves the old file as it
    was and removes the temporary one."""

    def __init__(self, path: str, option: str, *, binary: bool = False, std: int = 1) -> None:
        self.path = path
        self.option = option
        self.binary = binary
        # The standard stream written to (1 or 2), or None for a file: what a lost report points at
        # /dev/null, so that the interpreter's last flush cannot fail on it again.
        self.std_fd: int | None = std if path == "-" else None
        self._stream: IO[Any] | None = None
        self._own = False  # whether close() closes the stream
        self._tmp: str | None = None
        self._target = ""
        self.existed = True  # a regular file replaced at commit: whether there was one to keep
        _refuse_closed(option, path, std)
        if path == "-":
            stream = sys.stdout if std == 1 else sys.stderr
            self._stream = stream.buffer if binary else stream
            return
        try:
            st: os.stat_result | None = os.stat(path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise _error(option, path, exc.errno or errno.EIO) from exc
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise _error(option, path, errno.EISDIR)
        special = os.path.abspath(path).startswith(("/dev/", "/proc/"))
        if st is None and os.path.abspath(path) == "/dev/stdout":
            # udev (or the container runtime) makes /dev/stdout; a bare devtmpfs has none. It still means
            # this process's standard output, never a new file in /dev.
            self._stream = sys.stdout.buffer if binary else sys.stdout
            self.std_fd = 1
            return
        if st is None and special:
            raise _error(option, path, errno.ENOENT)  # never a regular file created in /dev or /proc
        if st is not None and (special or not stat.S_ISREG(st.st_mode)):
            # A device, FIFO or socket, or /dev/stdout and /proc/self/fd/N whatever they stand for (the
            # shell may have opened a file for appending): written as it is, opened at the first write
            # (opening a FIFO now would wait for its reader before counting starts).
            if not os.access(path, os.W_OK):
                raise _error(option, path, errno.EACCES)
            self._target = path
            return
        target = os.path.realpath(path)  # replace what a symbolic link points to, not the link
        if st is not None:
            # Writable as it is? Opened without O_TRUNC and closed again: nothing is changed.
            try:
                os.close(os.open(target, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC))
            except OSError as exc:
                raise _error(option, path, exc.errno or errno.EIO) from exc
        directory, base = os.path.split(target)
        if not os.path.isdir(directory):
            raise _error(option, path, errno.ENOENT)
        # A name no one else can have chosen (O_EXCL), in the target's directory so the rename is atomic.
        for n in range(100):
            tmp = os.path.join(directory, f".{base}.percpu-{os.getpid()}-{n}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise _error(option, path, exc.errno or errno.EIO) from exc
        else:
            raise _error(option, path, errno.EEXIST)
        self.existed = st is not None
        if st is not None:
            with contextlib.suppress(OSError):
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
                os.fchown(fd, st.st_uid, st.st_gid)  # root replacing a user's file leaves it theirs
        self._tmp = tmp
        self._target = target
        self._stream = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")
        self._own = True

    @property
    def stream(self) -> IO[Any]:
        """The file object to write to (text, or bytes with ``binary=True``), for writers that want one
        (``savefig(report.stream, format=...)``); opened now for a stream written as it is."""
        if self._stream is None:
            try:
                if self.binary:
                    self._stream = open(self._target, "wb")  # noqa: SIM115 (closed in close())
                else:
                    self._stream = open(self._target, "w", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise _error(self.option, self.path, exc.errno or errno.EIO) from exc
            self._own = True
        return self._stream

    @property
    def replaces(self) -> bool:
        """Whether this is a regular file, replaced only at :meth:`commit` (until then it is as it was)."""
        return self._tmp is not None

    def write(self, data: str | bytes) -> None:
        try:
            self.stream.write(data)
        except OSError as exc:
            raise _error(self.option, self.path, exc.errno or errno.EIO, self.std_fd or 1) from exc

    def flush(self) -> None:
        if self._stream is not None:
            try:
                self._stream.flush()
            except OSError as exc:
                raise _error(self.option, self.path, exc.errno or errno.EIO, self.std_fd or 1) from exc

    def commit(self) -> None:
        """The report is complete: make it the file's contents (atomically for a regular file)."""
        if self._stream is None:
            return
        try:
            self._stream.flush()
            if self._tmp is not None:
                os.fsync(self._stream.fileno())  # the data before the name: a crash leaves old or new
                self._stream.close()
                self._stream = None
                os.replace(self._tmp, self._target)
                self._tmp = None
        except OSError as exc:
            raise _error(self.option, self.path, exc.errno or errno.EIO, self.std_fd or 1) from exc

    def close(self) -> None:
        """Close; without :meth:`commit`, a regular file keeps its old contents."""
        stream, self._stream = self._stream, None
        if stream is not None and self._own:
            with contextlib.suppress(OSError):
                stream.close()
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
