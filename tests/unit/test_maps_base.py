"""maps/_base.py: Map's lifetime and element operations, against the fake machine (CPU ids with gaps, 256
possible CPUs)."""

from __future__ import annotations

import numpy as np
import pytest

import percpu
from percpu.cpus import CpuLists

from .fake_kernel import FakeKernel

Fake = tuple[FakeKernel, CpuLists]


def test_values_are_indexed_by_cpu_id_not_slot(fake: Fake) -> None:
    _, topo = fake
    cpus = list(topo.possible)
    with percpu.PerCpuHash.create(np.uint32, np.uint16, 8) as m:
        m.update(1, {c: c + 1 for c in cpus})
        v = m[1]
        assert v.cpus == topo.possible
        for c in cpus:
            assert v[c] == c + 1
        assert v.sum() == sum(c + 1 for c in cpus)
        assert v.max() == cpus[-1] + 1 and v.min() == 1
        assert v.online(topo).to_dict() == {c: c + 1 for c in topo.online}
        with pytest.raises(IndexError, match="not a possible CPU"):
            v[cpus[-1] + 1]
        # the buffer the kernel filled: one padded slot per possible CPU
        assert m.value_bytes == 8 * len(cpus)


@pytest.mark.parametrize("size", [1, 3, 4, 8, 12, 16, 100, 4096, 32768])
def test_every_value_size_round_trips(fake: Fake, size: int) -> None:
    _, topo = fake
    rng = np.random.default_rng(size)
    with percpu.PerCpuArray.create(np.dtype((np.void, size)), 2) as m:
        vals = [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for _ in topo.possible]
        m.update(1, vals)
        assert list(m[1]) == vals


def test_arrays_cannot_delete_and_say_so(fake: Fake) -> None:
    kernel, _ = fake
    with percpu.PerCpuArray.create(np.uint64, 4) as m:
        for call in (lambda: m.delete(0), lambda: m.lookup_and_delete(0), m.lookup_and_delete_batch):
            with pytest.raises(percpu.MapTypeError, match="cannot be deleted"):
                call()
        kernel.calls.clear()
        assert len(m.snapshot()) == 4
        assert "map_lookup_batch" in kernel.calls  # batch reads still on
        with pytest.raises(percpu.BpfError, match="out of range"):
            m.update_all(4, 1)


def test_failed_open_closes_the_fd_exactly_once(fake: Fake) -> None:
    """A constructor that raises must not leave a finalizer that closes the fd a second time (by then the
    number may belong to someone else: a pipe, a socket)."""
    import gc

    kernel, _ = fake
    with percpu.PerCpuArray.create(np.uint64, 1) as m:
        closed: list[int] = []
        orig_close = kernel.close

        def counting_close(fd: int) -> None:
            closed.append(fd)
            orig_close(fd)

        kernel.close = counting_close  # type: ignore[method-assign]
        try:
            with pytest.raises(percpu.SizeMismatch):
                percpu.PerCpuArray.from_id(m.info.id, value=np.uint8)
            gc.collect()
        finally:
            kernel.close = orig_close  # type: ignore[method-assign]
        assert len(closed) == 1


def test_a_copy_is_a_handle_of_its_own_on_the_same_kernel_map(fake: Fake) -> None:
    """copy.copy() shared the map's fd: dropping the copy closed it under the original, whose next call
    reached whatever the fd number was given to next (another map, on the real kernel). A copy is a clone:
    its own duplicate of the fd, on the same kernel map, closed on its own."""
    import copy
    import gc

    kernel, topo = fake
    n = len(topo.possible)
    m = percpu.PerCpuHash.create(np.uint32, np.uint64, 16, name="mine")
    c = copy.copy(m)
    assert c.fd != m.fd and c.info.id == m.info.id and type(c) is type(m)
    c.update_all(7, 99)
    assert m[7].sum() == 99 * n  # one kernel map: a write through either is seen by both
    del c
    gc.collect()
    assert m.fd in kernel.fds  # the original's fd outlived the copy
    m.update_all(7, 1)
    assert m[7].sum() == n
    deep = copy.deepcopy(m)
    clone = m.clone()
    assert len({m.fd, deep.fd, clone.fd}) == 3
    m.close()
    assert deep[7].sum() == n and clone[7].sum() == n  # closing one handle leaves the others open
    deep.close()
    clone.close()
    with pytest.raises(percpu.PercpuError, match="is closed"):
        m.clone()


def test_pickling_a_map_says_what_to_pickle_instead(fake: Fake) -> None:
    """pickle (and multiprocessing, which pickles) failed with "cannot pickle '_thread.RLock' object": an
    fd means nothing in another process. The error says to send the id or pin path and reopen it."""
    import pickle

    from percpu.errors import NotCopyable

    _ = fake
    with percpu.PerCpuArray.create(np.uint64, 4, name="counts") as m:
        with pytest.raises(NotCopyable, match=r"map 'counts' \(id \d+\) cannot be pickled") as e:
            pickle.dumps(m)
        assert isinstance(e.value, TypeError)
        assert "percpu.open_map(" in str(e.value) and f"{m.info.id}" in str(e.value)
