"""Forking while another thread holds a lock, with guards: a deadlocked child is killed by its own alarm
(and by the parent's guard if it outlives that), so a regression fails a test instead of hanging it."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest

CHILD_ALARM = 20  # s: a child still waiting then is deadlocked (it needs milliseconds)
HANG = 60  # s: the parent's guard on the child


@contextmanager
def held_in_another_thread(lock: AbstractContextManager[Any]) -> Iterator[None]:
    """``lock`` held by a second thread for the duration of the block."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            taken.set()
            release.wait(HANG)

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    assert taken.wait(HANG), "the holder thread never took the lock"
    try:
        yield
    finally:
        release.set()
        t.join(HANG)


def run_in_child(body: Callable[[], None]) -> int:
    """Fork; the child runs ``body`` under an alarm and exits 0 if it returned. The child's exit code."""
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a threaded process may deadlock the child: what is tested here.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(CHILD_ALARM)
            body()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + HANG
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the forked child was still running after {HANG} s")
        time.sleep(0.01)
