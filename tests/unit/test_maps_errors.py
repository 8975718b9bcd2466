"""maps/_errors.py and errors.from_errno: what an element operation's errno means for a map."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

import percpu
from percpu import features
from percpu._libbpf import PartialBatch
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


# --- errors that pointed the wrong way (issue 26) ----------------------------------------------------------


def test_pin_errors_name_the_path_and_what_is_wrong_with_it(fake: Fake, tmp_path: Path) -> None:
    """pin() to an existing path said "the key exists", to a missing directory "no such key", and outside
    bpffs "run as root" (as root)."""
    kernel, _ = fake
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 4, name="pinned") as m:
        m.pin("/sys/fs/bpf/p")
        with pytest.raises(percpu.BpfError) as e:
            m.pin("/sys/fs/bpf/p")
        assert str(e.value) == (
            "map 'pinned': cannot pin at /sys/fs/bpf/p: the path exists (another pinned object, or a file); "
            "if it is a stale pin, remove it first (os.unlink('/sys/fs/bpf/p'), or rm), else pin at another "
            "path"
        )
        assert e.value.errno == errno.EEXIST and not isinstance(e.value, percpu.KeyExists)
        with pytest.raises(percpu.BpfError) as e:
            m.pin("/sys/fs/bpf/no_dir/p")
        assert str(e.value) == (
            "map 'pinned': cannot pin at /sys/fs/bpf/no_dir/p: directory /sys/fs/bpf/no_dir does not exist; "
            "make it first (os.makedirs('/sys/fs/bpf/no_dir'), or mkdir -p): bpffs holds directories as any "
            "file system does"
        )
        assert e.value.errno == errno.ENOENT and not isinstance(e.value, percpu.KeyNotFound)
        kernel.calls.clear()
        outside = str(tmp_path / "p")
        with pytest.raises(percpu.InvalidArgument) as e:
            m.pin(outside)
        assert str(e.value) == (
            f"map 'pinned': cannot pin at {outside}: its directory is not in a BPF file system (bpffs), the "
            "only place the kernel pins objects; pinned maps live under /sys/fs/bpf"
        )
        assert kernel.calls == []  # refused before the kernel, whose EPERM reads as "run as root"
        with percpu.open_map("/sys/fs/bpf/p") as again:
            assert again.info.id == m.info.id


def test_batch_updates_refuse_the_flags_the_kernel_refuses_whole(fake: Fake) -> None:
    """update_batch(..., BPF_NOEXIST) said "(after 2 of 2 elements) ... Invalid argument" when nothing
    was written: the kernel's batch update takes no BPF_NOEXIST or BPF_EXIST."""
    kernel, _ = fake
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 4, name="b") as m:
        kernel.calls.clear()
        for flags, named in (
            (percpu.BPF_NOEXIST, " (BPF_NOEXIST)"),
            (percpu.BPF_EXIST, " (BPF_EXIST)"),
            (4, ""),
        ):
            with pytest.raises(percpu.InvalidArgument) as e:
                m.update_batch([1, 2], [1, 2], flags)
            assert str(e.value) == (
                f"map 'b': update_batch flags {flags}{named}: the kernel's batch update takes no flags for a "
                "per-CPU map (its element flags take BPF_F_LOCK alone, for values holding a bpf_spin_lock, "
                "which per-CPU values never do) and refuses the whole batch otherwise; to create only or "
                "replace only, write with update(key, value, flags) one key at a time; else leave flags at "
                "BPF_ANY"
            )
            assert e.value.argument == "flags" and e.value.value == flags
        assert kernel.calls == [] and m.count() == 0
    with (
        percpu.Hash.create(np.uint32, np.uint64, 4, name="h") as h,
        pytest.raises(percpu.InvalidArgument, match="takes BPF_F_LOCK alone in its element flags"),
    ):
        h.update_batch([1], [1], percpu.BPF_NOEXIST)


def test_the_kernel_refuses_batch_update_flags_before_any_element(fake: Fake) -> None:
    """What the check above stands in for, as the fake kernel answers it (tests/kernel checks the real
    one): EINVAL with the count untouched, nothing written."""
    kernel, _ = fake
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 4) as m:
        k = np.arange(2, dtype=np.uint32).view(np.uint8)
        v = m.layout.value_buffer(2)
        with pytest.raises(PartialBatch) as e:
            kernel.map_update_batch(m.fd, k, v, 2, m.layout, percpu.BPF_NOEXIST)
        assert e.value.errno == errno.EINVAL and e.value.done == 2 and m.count() == 0


def test_a_batch_update_into_a_full_hash_is_map_full(fake: Fake) -> None:
    """A full hash gave a generic E2BIG ("Argument list too long") in a batch; one update said MapFull."""
    _ = fake
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 4, name="full") as m:
        with pytest.raises(percpu.MapFull) as e:
            m.update_batch(np.arange(10, 16), np.ones(6, np.uint64))
        assert str(e.value) == (
            "map 'full': is full (4 entries), no room for key 14 (update_batch wrote the 4 elements before "
            "it, not the 1 after it); delete some or create it with a larger max_entries"
        )
        assert e.value.errno == errno.E2BIG and sorted(m.keys()) == [10, 11, 12, 13]


def test_a_batch_update_past_an_arrays_end_names_the_index(fake: Fake) -> None:
    _ = fake
    with percpu.PerCpuArray.create(np.uint64, 4, name="arr") as m:
        with pytest.raises(percpu.BpfError) as e:
            m.update_batch([1, 9], [5, 6])
        assert str(e.value) == (
            "map 'arr': index 9 is out of range (the array has 4 elements, 0..3) (update_batch wrote the 1 "
            "element before it)"
        )
        assert m[1].sum() == 5 * len(m.cpus)


@pytest.mark.parametrize("cls", [percpu.PerCpuArray, percpu.PerCpuCgroupStorage])
def test_what_cannot_delete_says_so_before_any_call(fake: Fake, cls: type[percpu.PerCpuMap]) -> None:
    """PerCpuArray.delete_batch and del on cgroup storage said BpfError "lookup ... Invalid argument"."""
    kernel, _ = fake
    m = (
        percpu.PerCpuArray.create(np.uint64, 4, name="nodel")
        if cls is percpu.PerCpuArray
        else percpu.PerCpuCgroupStorage.create(np.uint64, key=np.uint64, name="nodel")
    )
    with m:
        kernel.calls.clear()
        for what, call in (
            ("delete", lambda: m.__delitem__(1)),
            ("delete_batch", lambda: m.delete_batch([1, 2])),
            ("lookup_and_delete", lambda: m.lookup_and_delete(1)),
            ("lookup_and_delete_batch", m.lookup_and_delete_batch),
        ):
            with pytest.raises(percpu.MapTypeError) as e:
                call()
            assert str(e.value).startswith(f"map 'nodel': {what}: {m.type_name} elements cannot be deleted (")
            assert str(e.value).endswith("); write zeros with update() instead")
            assert e.value.actual == m.type_name
        assert kernel.calls == []


def test_a_failed_delete_says_delete(fake: Fake) -> None:
    kernel, _ = fake
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 4, name="d") as m:
        m.update_all(3, 1)
        kernel.fail_next["map_delete"] = errno.EINVAL
        with pytest.raises(percpu.BpfError) as e:
            m.delete(3)
        assert str(e.value) == "delete of key 3 on map 'd': Invalid argument (errno 22)"
        kernel.batch = False  # the one-element fallback names each key as given, not as raw bytes
        kernel.fail_next["map_delete"] = errno.EPERM
        with pytest.raises(percpu.PermissionDenied, match=r"^delete of key 3 on map 'd': Operation not"):
            m.delete_batch([3])
        kernel.fail_next["map_lookup"] = errno.EPERM  # the fake's lookup-and-delete looks up first
        with pytest.raises(percpu.PermissionDenied, match=r"^lookup-and-delete of key 3 on map 'd'"):
            m.lookup_and_delete(3)


def test_cgroup_storage_updates_say_who_makes_the_elements(fake: Fake) -> None:
    """The kernel makes a cgroup storage's elements; an update of another key said "update: no such
    key", and BPF_NOEXIST "update: Invalid argument"."""
    kernel, _ = fake
    with percpu.PerCpuCgroupStorage.create(np.uint64, key=np.uint64, name="cg") as m:
        kernel.attach_storage(m.fd, (7).to_bytes(8, "little"))
        m.update(7, list(range(len(m.cpus))))
        with pytest.raises(percpu.KeyNotFound) as e:
            m.update(8, [0] * len(m.cpus))
        assert str(e.value) == (
            "map 'cg': no key 8: the kernel makes a cgroup storage's elements when a program using the map "
            "is attached to a cgroup; user space can read and update those, not create others"
        )
        with pytest.raises(percpu.BpfError) as e:
            m.update(7, [0] * len(m.cpus), percpu.BPF_NOEXIST)
        assert str(e.value) == (
            "map 'cg': BPF_NOEXIST cannot create a PERCPU_CGROUP_STORAGE element (key 7): the kernel makes "
            "them when a program using the map is attached to a cgroup; update an existing one with BPF_ANY "
            "or BPF_EXIST"
        )
        assert m[7].to_numpy().tolist() == list(range(len(m.cpus)))


def test_a_map_without_a_name_is_named_by_its_id(fake: Fake) -> None:
    _ = fake
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 4) as m:
        with pytest.raises(percpu.KeyNotFound) as e:
            m.delete(np.uint32(5))
        assert str(e.value) == f"map id {m.info.id}: no key 5"
