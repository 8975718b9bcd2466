"""A fork() while another thread holds one of percpu's locks: the child gets locks of its own, free.

Each test holds a lock in a second thread (deterministically: the thread takes it, says so, and waits),
forks, and has the child use what that lock guards (tests/unit/forking.py). Before the fix the child
waited forever; a regression shows as a child killed by its own alarm, never as a hung suite.
"""

from __future__ import annotations

import numpy as np
import pytest

import percpu
from percpu import features, layout
from percpu.btf import _parse as btf_parse
from percpu.cpus import CpuLists
from percpu.disturb import DisturbCounter
from percpu.objects import BpfObject, bundled
from percpu.syscount import SyscallCounter

from .fake_kernel import FakeKernel
from .forking import held_in_another_thread, run_in_child

Fake = tuple[FakeKernel, CpuLists]


def test_a_map_in_use_by_another_thread_at_fork_works_in_the_child(fake: Fake) -> None:
    """The report: a fork while another thread was inside a map call left the child deadlocked on the
    map's lock, even in close()."""
    _, topo = fake
    m = percpu.PerCpuHash.create(np.uint32, np.uint64, 4, name="forked")
    m.update_all(1, 3)

    def child() -> None:
        assert m[1].sum() == 3 * len(topo.possible)
        m.update_all(1, 5)
        assert m.lookup(1)[topo.possible[-1]] == 5
        m.close()

    with held_in_another_thread(m.handle.held()):
        assert run_in_child(child) == 0, "the child could not use the map (a negative code: killed)"
    assert m[1].sum() == 3 * len(topo.possible)  # the parent's map is its own
    m.close()


def test_a_clone_and_the_features_lock_are_free_in_the_child(fake: Fake) -> None:
    """Maps made by clone() and the module-level lock every map call may take (what the kernel can do)."""
    _ = fake
    with percpu.PerCpuArray.create(np.uint64, 2) as m, m.clone() as twin:

        def child() -> None:
            twin.update_all(0, 7)
            assert features.known(features.BATCH_OPS, twin.info.type) in (None, True, False)
            twin.close()

        with held_in_another_thread(twin.handle.held()), held_in_another_thread(features._lock):
            assert run_in_child(child) == 0


def test_a_guard_page_buffer_can_be_allocated_in_the_child() -> None:
    """In the guard-page proof mode every buffer notes its call site under a lock."""
    assert layout.guard_mode(), "the suites run in guard mode (tests/conftest.py)"

    def child() -> None:
        assert layout.alloc(16).nbytes == 16

    layout.alloc(1)
    with held_in_another_thread(layout._sites_lock):
        assert run_in_child(child) == 0


def test_a_bpf_object_in_use_by_another_thread_at_fork_closes_in_the_child() -> None:
    """The object's handle state: the child's close() (or its finalizer at exit) took that lock."""
    obj = BpfObject(bundled("syscount.bpf.o"))
    try:

        def child() -> None:
            assert obj.rodata().tobytes()
            obj.close()

        with held_in_another_thread(obj._state.lock):
            assert run_in_child(child) == 0
        assert obj.rodata().tobytes()  # the parent's object stays open
    finally:
        obj.close()


@pytest.mark.parametrize("make", [SyscallCounter, DisturbCounter], ids=["syscall", "disturbance"])
def test_a_counter_in_use_by_another_thread_at_fork_works_in_the_child(fake: Fake, make: type) -> None:
    """The counter's lock (held by a snapshot, a close or the drainer): the child's close() and programs()
    took it. The disturbance counter had copied the syscall counter's lifetime but not this; both take it
    from percpu._loaded now."""
    _ = fake
    c = make(start=False)

    def child() -> None:
        assert c.programs() == []
        c.close()

    with held_in_another_thread(c._lock):
        assert run_in_child(child) == 0
    c.close()


def test_the_btf_cache_in_use_by_another_thread_at_fork_is_free_in_the_child(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BTF read by id is cached under a module lock (a map opened by id or name asks for it)."""
    _ = fake
    monkeypatch.setattr(btf_parse, "_btf_by_id", lambda btf_id: f"BTF {btf_id}")

    def child() -> None:
        assert btf_parse.load_btf(7) == "BTF 7"

    with held_in_another_thread(btf_parse._cache_lock):
        assert run_in_child(child) == 0
