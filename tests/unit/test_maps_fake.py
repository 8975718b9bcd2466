"""Maps against the fake kernel: layouts with gaps and 256 possible CPUs, errors, batches, iteration."""

from __future__ import annotations

import ctypes
import errno

import numpy as np
import pytest

import percpu
from percpu.cpus import Topology
from percpu.values import PerCpuValue, codec_for

from .fake_kernel import FakeKernel

Fake = tuple[FakeKernel, Topology]


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


def test_wrong_size_fails_before_any_syscall(fake: Fake) -> None:
    kernel, topo = fake
    with percpu.PerCpuArray.create(np.uint64, 4) as m:
        kernel.calls.clear()
        with pytest.raises(percpu.SizeMismatch) as e:
            percpu.PerCpuArray.from_id(m.info.id, value=ctypes.c_uint32)
        assert (e.value.expected, e.value.actual, e.value.what) == (8, 4, "value")
        assert "map_lookup" not in kernel.calls
        kernel.calls.clear()
        with pytest.raises(percpu.SizeMismatch, match="values given for"):
            m.update(0, [1, 2])  # one per online CPU: the classic mistake
        with pytest.raises(percpu.SizeMismatch, match="no value for CPU"):
            m.update(0, {topo.possible[0]: 1})
        with pytest.raises(TypeError, match="update_all"):
            m.update(0, 5)
        assert not any(c.startswith("map_update") for c in kernel.calls)


def test_wrong_class_is_a_map_type_error(fake: Fake) -> None:
    _ = fake
    with percpu.PerCpuArray.create(np.uint64, 4) as m:
        with pytest.raises(percpu.MapTypeError, match="PERCPU_ARRAY map, not PERCPU_HASH") as e:
            percpu.PerCpuHash.from_id(m.info.id)
        assert isinstance(e.value, TypeError)
        with percpu.open_map(m.info.id, value=np.uint64) as any_map:
            assert isinstance(any_map, percpu.PerCpuArray)
    with (
        percpu.Array.create(np.uint64, 2) as plain,
        pytest.raises(percpu.MapTypeError, match="not a per-CPU map"),
    ):
        percpu.PerCpuMap.from_id(plain.info.id)


@pytest.mark.parametrize("size", [1, 3, 4, 8, 12, 16, 100, 4096, 32768])
def test_every_value_size_round_trips(fake: Fake, size: int) -> None:
    _, topo = fake
    rng = np.random.default_rng(size)
    with percpu.PerCpuArray.create(bytes if False else np.dtype((np.void, size)), 2) as m:
        vals = [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for _ in topo.possible]
        m.update(1, vals)
        assert list(m[1]) == vals


def test_too_big_value(fake: Fake) -> None:
    _ = fake
    with pytest.raises(percpu.SizeMismatch, match="32768"):
        percpu.PerCpuArray.create(np.dtype((np.void, 32769)), 1)


@pytest.mark.parametrize(
    ("err", "cls", "text"),
    [
        (errno.EPERM, percpu.PermissionDenied, "CAP_BPF"),
        (errno.EACCES, percpu.PermissionDenied, "root"),
        (errno.EINVAL, percpu.BpfError, "Invalid argument"),
        (errno.ENOMEM, percpu.BpfError, "errno 12"),
        (errno.EOPNOTSUPP, percpu.NotSupported, "not supported"),
    ],
)
def test_errors_are_translated(fake: Fake, err: int, cls: type[Exception], text: str) -> None:
    kernel, _ = fake
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 4) as m:
        for op, call in [
            ("map_lookup", lambda: m.lookup(1)),
            ("map_update", lambda: m.update_all(1, 1)),
            ("map_get_next_key", lambda: list(m.keys())),
        ]:
            kernel.fail_next[op] = err
            with pytest.raises(cls, match=text) as e:
                call()
            assert isinstance(e.value, percpu.PercpuError) and type(e.value) is not OSError
            assert e.value.errno == err


def test_batch_einval_means_no_batch_support(fake: Fake) -> None:
    kernel, _ = fake
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 4) as m:
        kernel.fail_next["map_lookup_batch"] = errno.EINVAL
        with pytest.raises(percpu.NotSupported, match="no batch operations for PERCPU_HASH") as e:
            m.snapshot(batch=True)
        assert e.value.min_kernel == "5.6"
        kernel.fail_next["map_lookup_batch"] = errno.EFAULT
        with pytest.raises(percpu.BpfError, match="Bad address"):
            m.snapshot(batch=True)


def test_permission_denied_on_create(fake: Fake) -> None:
    kernel, _ = fake
    kernel.deny = True
    with pytest.raises(percpu.PermissionDenied, match="CAP_BPF and CAP_PERFMON"):
        percpu.PerCpuArray.create(np.uint64, 1)


def test_key_not_found_is_a_key_error(fake: Fake) -> None:
    _ = fake
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 4) as m:
        with pytest.raises(KeyError):
            m[7]
        assert m.get(7) is None and 7 not in m
        with pytest.raises(percpu.KeyNotFound):
            m.delete(7)
        with pytest.raises(percpu.KeyNotFound):
            m.update_all(7, 1, flags=percpu.BPF_EXIST)


def test_full_hash(fake: Fake) -> None:
    _ = fake
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 2) as m:
        m.update_all(1, 1)
        m.update_all(2, 2)
        with pytest.raises(percpu.BpfError, match="is full"):
            m.update_all(3, 3)


def test_iteration_is_bounded_and_never_repeats_under_deletes(fake: Fake) -> None:
    kernel, _ = fake
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 50) as m:
        for k in range(50):
            m.update_all(k, k)
        victims = iter(range(10, 50, 3))

        def delete_one() -> None:  # another program deletes keys while we walk
            v = next(victims, None)
            if v is not None:
                m.delete(v)

        kernel.on_next_key = delete_one
        seen = list(m.keys())
        kernel.on_next_key = None
        assert len(seen) == len(set(seen)) <= 50
        assert set(seen) >= {k for k in range(10)}
        assert all(isinstance(k, int) for k in seen)


def test_snapshot_batches_retry_enospc_and_fall_back(fake: Fake) -> None:
    kernel, topo = fake
    n = 37
    with percpu.PerCpuHash.create(np.uint32, np.uint32, n) as m:
        keys = np.arange(n, dtype=np.uint32)
        vals = (keys[:, None] * 1000 + np.arange(len(topo.possible))).astype(np.uint32)
        m.update_batch(keys, vals)
        kernel.bucket = 64  # a bucket larger than the map: the first call gets ENOSPC
        snap = m.snapshot()
        assert kernel.calls.count("map_lookup_batch") >= 2
        order = np.argsort(snap.keys)
        assert (snap.keys[order] == keys).all() and (snap.values[order] == vals).all()
        assert snap.values.shape == (n, len(topo.possible))
        assert (snap.cpu(topo.possible[-1])[order] == vals[:, -1]).all()
        assert not snap.values.flags.writeable
    kernel.batch = False
    with percpu.PerCpuHash.create(np.uint32, np.uint32, n) as m:
        m.update_batch(keys, vals)  # falls back to one update each
        snap = m.snapshot()  # falls back to a key walk
        order = np.argsort(snap.keys)
        assert (snap.values[order] == vals).all()
        with pytest.raises(percpu.NotSupported):
            m.snapshot(batch=True)
        m.delete_batch(keys[:5])
        assert len(m.snapshot()) == n - 5


def test_update_cpu_read_modify_write(fake: Fake) -> None:
    _, topo = fake
    last = topo.possible[-1]
    with percpu.PerCpuArray.create(np.int32, 2) as m:
        m.update_all(0, -1)
        m.update_cpu(0, last, 7)
        assert m[0][last] == 7 and all(m[0][c] == -1 for c in topo.possible if c != last)
        assert m.lookup_cpu(0, last) == 7
        with pytest.raises(ValueError, match="not a possible CPU"):
            m.update_cpu(0, last + 1, 1)


def test_struct_values_and_reductions(fake: Fake) -> None:
    _, topo = fake
    dt = np.dtype([("a", "<u4"), ("b", "<i2")])  # 6 bytes: stride 8
    with percpu.PerCpuArray.create(dt, 1) as m:
        m.update(0, [(i, -i) for i in range(len(topo.possible))])
        v = m[0]
        total = v.sum()
        assert total["a"] == sum(range(len(topo.possible))) and total["b"] == -sum(range(len(topo.possible)))
        assert v.to_numpy().shape == (len(topo.possible),)


def test_codecs() -> None:
    for size in range(1, 17):
        for signed in (False, True):
            c = codec_for(percpu.Int(size, signed=signed))
            lo, hi = (-(2 ** (8 * size - 1)), 2 ** (8 * size - 1) - 1) if signed else (0, 2 ** (8 * size) - 1)
            for v in (lo, hi, 0 if not signed else -1):
                raw = c.encode(v)
                assert len(raw) == size
                assert c.decode(np.frombuffer(raw, dtype=c.dtype).reshape(())) == v
            with pytest.raises(percpu.PercpuError):
                c.encode(hi + 1)
    assert codec_for(ctypes.c_uint16).encode(7) == b"\x07\x00"
    with pytest.raises(percpu.PercpuError, match="256 does not fit in uint8"):
        codec_for(np.uint8).encode(256)
    with pytest.raises(TypeError, match="cannot use"):
        codec_for(object())


def test_percpu_value_from_values_is_immutable() -> None:
    cpus = percpu.CpuList([0, 2, 3])
    v = PerCpuValue.from_values([1, 2, 3], cpus, codec_for(np.uint64))
    assert v[2] == 2 and v.items().__next__() == (0, 1)
    arr = v.to_numpy()
    arr[0] = 99
    assert v[0] == 1
    with pytest.raises(ValueError):
        v._array[0] = 5


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
