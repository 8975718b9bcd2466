"""Locks a fork() cannot leave held.

A thread that holds a lock when another thread calls fork() does not exist in the child, so the child's
copy of that lock stays held for good: the child's first call that takes it (a map operation, ``close()``,
a finalizer at exit) waits forever. The critical section that thread was in does not go on in the child
either, so what the child needs is a lock of its own, free. This module gives it one:

* objects that own locks call :func:`track` (a map, a BPF object's handle state); in the child their
  ``_after_fork_in_child()`` runs, which replaces the lock and does whatever else the child must (close
  the child's copies of link fds);
* modules register a function with :func:`at_fork_in_child` that rebinds their module-level lock.

One ``os.register_at_fork`` handler serves them all. It is installed on first use (the first tracked
object, or the first kernel binding), never at import: registering a function only appends it to a list.
Imports nothing from percpu, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Callable
from typing import Protocol

__all__ = ["at_fork_in_child", "install", "track"]


class _Forkable(Protocol):
    def _after_fork_in_child(self) -> None: ...


_objects: weakref.WeakSet[_Forkable] = weakref.WeakSet()
_functions: list[Callable[[], None]] = []
_installed = False
_install_lock = threading.Lock()


def at_fork_in_child(fn: Callable[[], None]) -> Callable[[], None]:
    """Run ``fn`` in every child forked after :func:`install` (a module's lock renewal). Only records it."""
    _functions.append(fn)
    return fn


def track(obj: _Forkable) -> None:
    """Run ``obj._after_fork_in_child()`` in every child forked while ``obj`` is alive."""
    install()
    _objects.add(obj)


def install() -> None:
    """Install the fork handler once per process (idempotent and cheap after the first call)."""
    global _installed  # noqa: PLW0603 - one fork handler per process, installed on first use
    if _installed:
        return
    with _install_lock:
        if not _installed:
            os.register_at_fork(after_in_child=_in_child)
            _installed = True


def _in_child() -> None:
    global _install_lock  # noqa: PLW0603 - renewed like every other lock here
    _install_lock = threading.Lock()
    # One failure must not leave the others' locks held: each runs whatever the one before it did.
    for fn in list(_functions):
        with contextlib.suppress(Exception):
            fn()
    for obj in list(_objects):
        with contextlib.suppress(Exception):
            obj._after_fork_in_child()
