"""The kernel's own answers behind percpu's map errors (issue 26), and the messages percpu makes of them on
this kernel: pins, batch updates, deletes, cgroup storage, a map's geometry at creation, fds.

The unit tests' fake kernel (tests/unit/fake_kernel.py) stands in for this one there; the first test runs
the same calls on both and holds the fake to this kernel's errno (and a batch's count), so a message the
unit tests check is the message the real kernel's answer gets."""

from __future__ import annotations

import errno
import functools
import os
import tempfile
from collections.abc import Callable, Iterator

import numpy as np
import pytest

import percpu
from percpu import _machine
from percpu._libbpf import BPF_NOEXIST, PartialBatch
from percpu._machine import Kernel
from percpu.layout import Layout
from percpu.maps import MapType

from ..unit.fake_kernel import FakeKernel

pytestmark = pytest.mark.kernel

POSSIBLE = percpu.cpu_lists().possible
NCPU = len(POSSIBLE)
BPFFS = "/sys/fs/bpf"
T = MapType

Answer = tuple[int | None, int | None]  # (errno or None, a batch's count when it failed)


def _answer(call: Callable[[], object]) -> Answer:
    try:
        call()
    except PartialBatch as exc:
        return exc.errno, exc.done
    except OSError as exc:
        return exc.errno, None
    return None, None


def _create(k: Kernel, map_type: int, key: int, value: int, entries: int, name: str = "") -> Answer:
    def call() -> None:
        fd = k.map_create(map_type, name, key, value, entries)
        k.close(fd)

    return _answer(call)


def _with_map(
    k: Kernel, map_type: int, key: int, value: int, entries: int, then: Callable[..., Answer]
) -> Answer:
    fd = k.map_create(map_type, "", key, value, entries)
    try:
        return then(k, fd, Layout(key, value, NCPU, map_type in percpu.maps.PERCPU_TYPES))
    finally:
        k.close(fd)


def _keys(*ks: int, size: int = 4) -> np.ndarray:
    out: np.ndarray = np.frombuffer(b"".join(x.to_bytes(size, "little") for x in ks), np.uint8).copy()
    return out


def _batch_update(flags: int, n: int, first: int = 0) -> Callable[..., Answer]:
    def then(k: Kernel, fd: int, lay: Layout) -> Answer:
        vals = lay.value_buffer(n)
        return _answer(lambda: k.map_update_batch(fd, _keys(*range(first, first + n)), vals, n, lay, flags))

    return then


def _delete_batch(*ks: int) -> Callable[..., Answer]:
    def then(k: Kernel, fd: int, lay: Layout) -> Answer:
        return _answer(lambda: k.map_delete_batch(fd, _keys(*ks, size=lay.key_size), len(ks), lay))

    return then


def _delete(key: int) -> Callable[..., Answer]:
    def then(k: Kernel, fd: int, lay: Layout) -> Answer:
        return _answer(lambda: k.map_delete(fd, _keys(key, size=lay.key_size), lay))

    return then


def _update(key: int, flags: int) -> Callable[..., Answer]:
    def then(k: Kernel, fd: int, lay: Layout) -> Answer:
        v = lay.value_buffer()
        return _answer(lambda: k.map_update(fd, _keys(key, size=lay.key_size), v, lay, flags))

    return then


def _fill_then(first: Callable[..., Answer], then: Callable[..., Answer]) -> Callable[..., Answer]:
    def both(k: Kernel, fd: int, lay: Layout) -> Answer:
        assert first(k, fd, lay) == (None, None)
        return then(k, fd, lay)

    return both


SCENARIOS: dict[str, Callable[[Kernel], Answer]] = {
    # create: each map type's map_alloc_check (and htab_map_alloc's bucket limit), and the name's characters
    "hash 0 entries": lambda k: _create(k, T.PERCPU_HASH, 4, 8, 0),
    "hash 0-byte key": lambda k: _create(k, T.PERCPU_HASH, 0, 8, 4),
    "hash 0-byte value": lambda k: _create(k, T.PERCPU_HASH, 4, 0, 4),
    "hash 2**31 + 1 entries": lambda k: _create(k, T.PERCPU_HASH, 4, 8, 2**31 + 1),
    "hash 2**32 - 1 entries": lambda k: _create(k, T.LRU_PERCPU_HASH, 4, 8, 2**32 - 1),
    "hash 32769-byte values": lambda k: _create(k, T.PERCPU_HASH, 4, 32769, 1),
    "array 0 entries": lambda k: _create(k, T.PERCPU_ARRAY, 4, 8, 0),
    "array 8-byte key": lambda k: _create(k, T.PERCPU_ARRAY, 8, 8, 4),
    "cgroup storage 4 entries": lambda k: _create(k, T.PERCPU_CGROUP_STORAGE, 16, 8, 4),
    "cgroup storage 4-byte key": lambda k: _create(k, T.PERCPU_CGROUP_STORAGE, 4, 8, 0),
    "cgroup storage 8-byte key": lambda k: _create(k, T.PERCPU_CGROUP_STORAGE, 8, 8, 0),
    "cgroup storage 32769-byte values": lambda k: _create(k, T.PERCPU_CGROUP_STORAGE, 16, 32769, 0),
    "name a-b": lambda k: _create(k, T.PERCPU_HASH, 4, 8, 4, "a-b"),
    # batch updates: flags refused whole (the count untouched), a full hash, an index past an array's end
    "batch update BPF_NOEXIST": lambda k: _with_map(k, T.PERCPU_HASH, 4, 8, 4, _batch_update(BPF_NOEXIST, 2)),
    "batch update BPF_F_LOCK": lambda k: _with_map(k, T.PERCPU_HASH, 4, 8, 4, _batch_update(4, 2)),
    "batch update into a full hash": lambda k: _with_map(k, T.PERCPU_HASH, 4, 8, 4, _batch_update(0, 6)),
    "batch update past an array": lambda k: _with_map(k, T.PERCPU_ARRAY, 4, 8, 4, _batch_update(0, 3, 2)),
    # deletes: arrays and cgroup storage have none, one by one or in a batch
    "array delete": lambda k: _with_map(k, T.PERCPU_ARRAY, 4, 8, 4, _delete(1)),
    "array batch delete": lambda k: _with_map(k, T.PERCPU_ARRAY, 4, 8, 4, _delete_batch(1, 2)),
    "cgroup storage delete": lambda k: _with_map(k, T.PERCPU_CGROUP_STORAGE, 8, 8, 0, _delete(1)),
    "cgroup storage batch delete": lambda k: _with_map(k, T.PERCPU_CGROUP_STORAGE, 8, 8, 0, _delete_batch(1)),
    "hash batch delete of a missing key": lambda k: _with_map(
        k, T.PERCPU_HASH, 4, 8, 4, _fill_then(_batch_update(0, 2), _delete_batch(0, 7, 1))
    ),
    # cgroup storage: user space updates only the elements the kernel made
    "cgroup storage update of no element": lambda k: _with_map(
        k, T.PERCPU_CGROUP_STORAGE, 8, 8, 0, _update(1, 0)
    ),
    "cgroup storage update BPF_NOEXIST": lambda k: _with_map(
        k, T.PERCPU_CGROUP_STORAGE, 8, 8, 0, _update(1, BPF_NOEXIST)
    ),
}


@pytest.fixture
def fake() -> FakeKernel:
    return FakeKernel(NCPU, cpu_ids=POSSIBLE.ids)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_fake_kernel_answers_as_this_kernel_does(scenario: str, fake: FakeKernel) -> None:
    real = SCENARIOS[scenario](_machine.current().kernel)
    assert real == SCENARIOS[scenario](fake), f"this kernel answered {real}"


def _pin_answers(k: Kernel, cases: dict[str, str]) -> dict[str, Answer]:
    """Each case's answer, after a first pin at ``cases["again"]``."""
    fd = k.map_create(T.PERCPU_HASH, "", 4, 8, 4)
    try:
        assert _answer(lambda: k.obj_pin(fd, cases["again"])) == (None, None)
        return {case: _answer(functools.partial(k.obj_pin, fd, path)) for case, path in cases.items()}
    finally:
        k.close(fd)


def test_pins_answer_as_this_kernel_does(fake: FakeKernel) -> None:
    """bpf_obj_pin: EEXIST for a path that exists, ENOENT without its directory (bpffs or not), EPERM
    for a new path outside bpffs."""
    pid = os.getpid()
    here = tempfile.mkdtemp(prefix="percpu-pin-")
    cases = {
        "again": f"{BPFFS}/percpu_pin_twice_{pid}",
        "missing dir": f"{BPFFS}/percpu_no_dir_{pid}/x",
        "outside bpffs": os.path.join(here, "x"),
        "an existing file outside": here,
        "a missing dir outside": os.path.join(here, "no", "x"),
    }
    answers: dict[str, dict[str, Answer]] = {}
    try:
        answers["real"] = _pin_answers(_machine.current().kernel, cases)
        answers["fake"] = _pin_answers(fake, cases)
    finally:
        os.unlink(cases["again"])
        os.rmdir(here)
    assert answers["real"] == answers["fake"]
    assert answers["real"] == {
        "again": (errno.EEXIST, None),
        "missing dir": (errno.ENOENT, None),
        "outside bpffs": (errno.EPERM, None),
        "an existing file outside": (errno.EEXIST, None),
        "a missing dir outside": (errno.ENOENT, None),
    }


def test_info_on_an_fd_that_is_not_open_is_ebadfd(fake: FakeKernel) -> None:
    """BPF_OBJ_GET_INFO_BY_FD answers EBADFD (77), not EBADF, for an fd that is not open."""
    closed = os.dup(0)
    os.close(closed)
    assert _answer(lambda: _machine.current().kernel.map_info(closed)) == (errno.EBADFD, None)
    assert _answer(lambda: fake.map_info(closed)) == (errno.EBADFD, None)


# --- what percpu says on this kernel --------------------------------------------------------------------


@pytest.fixture
def pin_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="percpu-test-", dir=BPFFS)
    try:
        yield path
    finally:
        for name in os.listdir(path):
            os.unlink(os.path.join(path, name))
        os.rmdir(path)


def test_pin_errors_say_what_is_wrong_with_the_path(pin_dir: str) -> None:
    """As root: "the key exists", "no such key" and "run as root" before."""
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 4, name="pinned") as m:
        m.pin(f"{pin_dir}/p")
        with pytest.raises(
            percpu.BpfError, match=f"^map 'pinned': cannot pin at {pin_dir}/p: the path exists"
        ):
            m.pin(f"{pin_dir}/p")
        with pytest.raises(percpu.BpfError, match=f"directory {pin_dir}/d does not exist; make it first"):
            m.pin(f"{pin_dir}/d/p")
        with pytest.raises(percpu.InvalidArgument, match="its directory is not in a BPF file system"):
            m.pin(os.path.join(tempfile.gettempdir(), "p"))
        with percpu.open_map(f"{pin_dir}/p") as again:
            assert again.info.id == m.info.id


def test_batch_writes_name_the_key_and_the_cause() -> None:
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 4, name="full") as m:
        with pytest.raises(
            percpu.InvalidArgument, match=r"update_batch flags 1 \(BPF_NOEXIST\): the kernel's"
        ):
            m.update_batch([1, 2], [1, 2], BPF_NOEXIST)
        assert m.count() == 0
        with pytest.raises(percpu.MapFull, match=r"^map 'full': is full \(4 entries\), no room for key 4 "):
            m.update_batch(np.arange(6), np.ones(6, np.uint64))
        with pytest.raises(percpu.KeyNotFound, match=r"^map 'full': key 9 is not in the map \(delete_batch "):
            m.delete_batch([0, 9])
        assert sorted(m.keys()) == [1, 2, 3]
    with percpu.PerCpuArray.create(np.uint64, 4, name="arr") as a:
        with pytest.raises(percpu.BpfError, match=r"^map 'arr': index 9 is out of range \(the array has 4 "):
            a.update_batch([1, 9], [5, 6])
        with pytest.raises(
            percpu.MapTypeError, match="delete_batch: PERCPU_ARRAY elements cannot be deleted"
        ):
            a.delete_batch([1])


def test_cgroup_storage_refuses_deletes_and_says_who_makes_elements() -> None:
    with percpu.PerCpuCgroupStorage.create(np.uint64, key=np.uint64, name="cg") as m:
        with pytest.raises(percpu.MapTypeError, match="delete: PERCPU_CGROUP_STORAGE elements cannot be"):
            del m[1]
        with pytest.raises(percpu.KeyNotFound, match="the kernel makes a cgroup storage's elements when"):
            m.update(1, [0] * NCPU)
        with pytest.raises(
            percpu.BpfError, match="BPF_NOEXIST cannot create a PERCPU_CGROUP_STORAGE element"
        ):
            m.update(1, [0] * NCPU, BPF_NOEXIST)


def test_creation_names_the_rule_it_breaks() -> None:
    for check in (True, False):
        with pytest.raises(
            percpu.InvalidArgument, match=r"max_entries 4,294,967,295: a PERCPU_HASH map holds"
        ):
            percpu.PerCpuHash.create(np.uint32, np.uint64, 2**32 - 1, check_memory=check)
    with pytest.raises(percpu.InvalidArgument, match="max_entries 0: a PERCPU_ARRAY map holds 1 element"):
        percpu.PerCpuArray.create(np.uint64, 0)
    with pytest.raises(percpu.InvalidArgument, match=r"key type \|V0 is 0 bytes"):
        percpu.PerCpuHash.create(np.dtype((np.void, 0)), np.uint64, 4)


def test_from_fd_says_what_the_fd_is_and_leaves_it_open() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(percpu.MapTypeError, match=f"^fd {r} is not a BPF map but another kind of file"):
            percpu.Map.from_fd(r)
        os.fstat(r)  # still open: the caller's
    finally:
        os.close(r)
        os.close(w)
    for fd in (r, 999):  # closed now, and never opened
        with pytest.raises(percpu.BpfError, match=f"^fd {fd} is not an open file descriptor") as e:
            percpu.Map.from_fd(fd)
        assert e.value.errno == errno.EBADFD
