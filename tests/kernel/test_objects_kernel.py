"""BPF objects' lifetime against the running kernel: nothing touches libbpf memory after close, a dropped
object detaches, a forked child holds no link, and a counter closed during a snapshot fails typed."""

from __future__ import annotations

import gc
import os
import threading

import pytest

import percpu
from percpu.objects import BpfObject, bundled
from percpu.syscount import SyscallCounter


def link_fds() -> int:
    """bpf_link fds this process holds."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:bpf_link":
                n += 1
        except OSError:
            pass
    return n


def test_programs_and_rodata_refuse_use_after_close() -> None:
    """Program objects and the .rodata view read libbpf memory; after close() that memory is freed, and
    each use raises PercpuError instead (an autoload read flipped under MALLOC_PERTURB_ before)."""
    obj = BpfObject(bundled("syscount.bpf.o"))
    prog = next(iter(obj.programs.values()))
    view = obj.rodata()
    assert isinstance(prog.autoload, bool) and len(view) > 0
    view[0] = view[0]
    obj.close()
    for use in (
        lambda: prog.autoload,
        lambda: setattr(prog, "autoload", True),
        lambda: prog.fd,
        prog.attach,
        lambda: view[0],
        lambda: view.__setitem__(0, 1),
        view.tobytes,
        obj.rodata,
    ):
        with pytest.raises(percpu.PercpuError, match="closed"):
            use()


def test_rodata_view_is_refused_once_loaded() -> None:
    with SyscallCounter(start=False) as c:
        c.start()
        obj = c._obj
        assert obj is not None
        with pytest.raises(percpu.PercpuError, match="frozen"):
            obj.rodata()


def test_a_dropped_counter_detaches() -> None:
    before = link_fds()
    c = SyscallCounter()
    assert link_fds() > before
    del c
    gc.collect()
    assert link_fds() == before


def test_a_child_forked_without_exec_holds_no_link() -> None:
    """Link fds are inherited by fork(); the child closes its copies at once, so programs stay attached
    only as long as the parent wants them."""
    with SyscallCounter(errors=True) as c:
        assert c._obj is not None and link_fds() >= 2
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report what it holds, then leave without running the parent's cleanup
            try:
                os.write(w, str(link_fds()).encode())
            finally:
                os._exit(0)
        os.close(w)
        held = int(os.read(r, 64).decode())
        os.close(r)
        os.waitpid(pid, 0)
        assert held == 0
        assert link_fds() >= 2  # the parent's own links are untouched
        c.snapshot()


def test_close_during_snapshots_fails_typed() -> None:
    """The exporter closes the counter at shutdown while a scrape may still read it."""
    for _ in range(5):
        c = SyscallCounter()
        errors: list[BaseException] = []
        done = threading.Event()

        def scrape(
            counter: SyscallCounter = c, done: threading.Event = done, errors: list[BaseException] = errors
        ) -> None:
            while not done.is_set():
                try:
                    counter.snapshot()
                except BaseException as exc:
                    errors.append(exc)
                    return

        t = threading.Thread(target=scrape)
        t.start()
        c.snapshot()
        c.close()
        done.set()
        t.join(timeout=30)
        assert not t.is_alive()
        assert all(isinstance(e, percpu.PercpuError) for e in errors), errors
