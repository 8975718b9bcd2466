"""maps/_errors.py and errors.from_errno: what an element operation's errno means for a map."""

from __future__ import annotations

import errno

import numpy as np
import pytest

import percpu
from percpu import features
from percpu.cpus import CpuLists

from .fake_kernel import FakeKernel

Fake = tuple[FakeKernel, CpuLists]


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
            assert e.value.errno == err and e.value.map_name == m.name
            assert isinstance(e.value.__cause__, OSError) and e.value.__cause__.errno == err


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


def test_permission_denied_on_create(fake: Fake) -> None:
    kernel, _ = fake
    kernel.deny = True
    with pytest.raises(percpu.PermissionDenied, match="CAP_BPF and CAP_PERFMON"):
        percpu.PerCpuArray.create(np.uint64, 1)


@pytest.mark.parametrize(
    ("cls", "feature"),
    [(percpu.PerCpuHash, features.BATCH_HASH), (percpu.PerCpuArray, features.BATCH_ARRAY)],
    ids=["hash", "array"],
)
@pytest.mark.parametrize("err", [errno.EINVAL, errno.ENOTSUP, 524])
def test_a_kernel_without_batch_operations_is_told_by_their_declaration(
    fake: Fake, cls: type[percpu.Map], feature: features.Feature, err: int
) -> None:
    """A refused batch read names the declaration of batch operations for the map's type: arrays got
    them in Linux 5.13, after hashes (5.6). Before, every map type said 5.6."""
    kernel, _ = fake
    with cls.from_fd(kernel.map_create(cls.map_types[0], "b", 4, 8, 4)) as m:
        kernel.fail_next["map_lookup_batch"] = err
        with pytest.raises(percpu.NotSupported) as e:
            m.snapshot(batch=True)
    assert e.value.feature == feature.name and e.value.min_kernel == feature.since
    assert f"{feature.name}: {feature.needs} adds it" in str(e.value) and e.value.errno == err


def test_a_kernel_without_lookup_and_delete_on_per_cpu_hashes_is_told_by_its_declaration(fake: Fake) -> None:
    kernel, _ = fake
    feature = features.LOOKUP_AND_DELETE_PERCPU_HASH
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 4) as m:
        m.update_all(1, 1)
        kernel.fail_next["map_lookup"] = errno.EINVAL  # the fake's lookup-and-delete looks up first
        with pytest.raises(percpu.NotSupported) as e:
            m.lookup_and_delete(1)
        assert e.value.feature == feature.name and e.value.min_kernel == feature.since == "5.14"
        assert features.known(features.LOOKUP_AND_DELETE, m.info.type) is False
        assert m[1].sum() == len(m.cpus)  # nothing was deleted
