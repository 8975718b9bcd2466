"""A loaded counter's lifetime, one rule for the syscall counter and the disturbance counter.

Each counter owns the BPF object it loaded and the maps it reads: one owner, so copies and pickles are
refused (a copy's ``close()`` would detach the original's programs and close its maps), and a child
forked while another thread held the counter's lock gets a free one (:mod:`._fork`). ``close()`` and a
read exclude each other: a read racing a shutdown finishes, or gets :class:`~percpu.errors.PercpuError`.

A counter whose kernel table does not evict keeps it from filling with a :class:`Drainer` thread, started
at the first read (not at start: a caller may still give up privileges while it has one thread, as the
exporter does). The thread holds the counter's drain method weakly (a dropped counter is still
finalized), ``close()`` stops it, and a failure there is raised by the next read.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, TypeVar

from . import _fork, _machine
from ._drain import DrainPace
from .cpus import CpuList, CpuLists
from .errors import NotCopyable, PercpuError
from .maps import Map
from .objects import BpfObject, Uncopyable

__all__ = ["Drained", "Drainer", "LoadedCounter"]

_Read = TypeVar("_Read")
_Self = TypeVar("_Self", bound="LoadedCounter")


class Drained(Protocol):
    """A table a :class:`Drainer` keeps from filling: ``due(now)`` says whether to drain, and ``period``
    how long to wait before asking again (:class:`~percpu._drain.DrainPace`)."""

    period: float

    def due(self, now: float) -> bool: ...
    def drain(self) -> object: ...


class Drainer(threading.Thread):
    """Calls ``drain`` (a counter's :meth:`LoadedCounter._drain_if_due`, held weakly: a counter dropped
    without close() is still finalized) every period it returns, until :attr:`stop` is set."""

    def __init__(self, drain: Callable[[threading.Event], float], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.drain = weakref.WeakMethod(drain)
        self.stop = threading.Event()

    def run(self) -> None:
        period = DrainPace.PERIOD_MAX
        while not self.stop.wait(period):
            drain = self.drain()
            if drain is None:
                return
            period = drain(self.stop)
            del drain


class LoadedCounter(Uncopyable):
    """The lifetime both counters share (see the module's doc). A counter names itself (``_what``), what
    its drainer takes out of where (``_drained``) and the drainer thread (``_drain_thread``); it loads in
    :meth:`start`, lets go of its own state in :meth:`_closed_locked`, and says in :meth:`_drains` whether
    its table wants a drainer and in :meth:`_table_to_drain` which table that is."""

    _what: ClassVar[str]
    _drained: ClassVar[str]
    _drain_thread: ClassVar[str]
    _topo: CpuLists  # the machine's CPU lists (its sysfs), set by the counter

    def __init__(self) -> None:
        self._obj: BpfObject | None = None
        self._maps: dict[str, Map] = {}
        self._drainer: Drainer | None = None
        self._drain_error: BaseException | None = None
        # The attached programs whose skipped runs a snapshot reports, their fds kept at load (asking
        # libbpf for them at every snapshot cost more than the rest of a read under TCG).
        self._prog_fds: list[int] = []
        # close() and a read may run in different threads (an exporter shutting down while a scrape
        # reads): the lock makes a read finish before the maps go, or fail with a typed error after.
        self._lock = threading.RLock()
        _fork.track(self)

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Detach the programs and free the maps (waits for a snapshot running in another thread)."""
        drainer, self._drainer = self._drainer, None
        if drainer is not None:
            drainer.stop.set()
            if drainer is not threading.current_thread():
                drainer.join()
        with self._lock:
            maps, self._maps = self._maps, {}
            obj, self._obj = self._obj, None
            self._closed_locked()
        for m in maps.values():
            m.close()
        if obj is not None:
            obj.close()

    def _closed_locked(self) -> None:
        """What the counter lets go of beside its object and maps, at close() (under the lock)."""

    def _after_fork_in_child(self) -> None:
        # A thread that held the lock at fork() (a snapshot, a close, the drainer) is not in the child,
        # and its call does not go on there: the child's counter gets a free lock of its own.
        self._lock = threading.RLock()

    def _refuse(self) -> NotCopyable:
        return NotCopyable(
            f"{self._what} cannot be copied or pickled: it owns its loaded BPF programs and maps, "
            "which its close() detaches and frees, so a copy would close the original's. Share the counter "
            "itself (snapshot() and close() may be called from any thread); another process starts a "
            "counter of its own"
        )

    def __enter__(self: _Self) -> _Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def programs(self) -> list[Any]:
        """The loaded programs (for run counts and run time when bpf_stats are on)."""
        with self._lock:
            if self._obj is None:
                return []
            return [p for p in self._obj.programs.values() if p.autoload]

    def _skipped_runs(self) -> int:
        """Runs the kernel skipped, summed over ``_prog_fds`` (0 before Linux 5.12, which does not count
        them: features.RECURSION_MISSES)."""
        if self._obj is None:
            return 0
        lib = _machine.current().libbpf()
        total = 0
        for fd in self._prog_fds:
            try:
                total += lib.prog_recursion_misses(fd)
            except OSError:
                continue
        return total

    def _online(self) -> CpuList | None:
        """The online CPUs now, or None when sysfs cannot say (a snapshot must not fail over it)."""
        try:
            return self._topo.online
        except PercpuError:
            return None

    def _read(self, read: Callable[[], _Read]) -> _Read:
        """``read()`` under the lock, once the counter is known to run and its drainer not to have failed;
        then the drainer, at the first read."""
        with self._lock:
            if self._obj is None:
                raise PercpuError(f"{self._what} is not running (closed, or start() not called)")
            if self._drain_error is not None:
                exc = self._drain_error
                raise PercpuError(f"taking {self._drained} failed: {exc}") from exc
            snap = read()
            self._start_drainer()
            return snap

    def _drains(self) -> bool:
        """Whether the counter's table wants a drainer now."""
        return False

    def _table_to_drain(self) -> Drained | None:
        return None

    def _start_drainer(self) -> None:
        """The thread that keeps the table from filling, at the first read: not at start, so that a caller
        may still give up privileges while it has one thread (the exporter does)."""
        if self._drainer is None and self._drains():
            self._drainer = Drainer(self._drain_if_due, self._drain_thread)
            self._drainer.start()

    def _drain_if_due(self, stop: threading.Event) -> float:
        """Drain the table if it is filling; returns how long to wait before asking again."""
        with self._lock:
            t = self._table_to_drain()
            if stop.is_set() or t is None:
                return 0.0
            if t.due(time.monotonic()):
                try:
                    t.drain()
                except Exception as exc:  # raised by the next read, not lost with the thread
                    self._drain_error = exc
                    stop.set()
            return t.period
