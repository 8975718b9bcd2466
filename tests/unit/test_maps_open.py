"""maps/_open.py: opening and creating maps, and what is refused before any syscall."""

from __future__ import annotations

import errno
from collections.abc import Callable

import numpy as np
import pytest

import percpu
from percpu.cpus import CpuLists
from percpu.maps import MapType

from .fake_kernel import FakeKernel, FakeMachine, installed

Fake = tuple[FakeKernel, CpuLists]


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


def test_too_big_value(fake: Fake) -> None:
    _ = fake
    with pytest.raises(percpu.SizeMismatch, match="32768"):
        percpu.PerCpuArray.create(np.dtype((np.void, 32769)), 1)


def test_max_entries_out_of_range_fails_before_any_syscall(fake: Fake) -> None:
    kernel, _ = fake
    kernel.calls.clear()
    for n in (-1, 2**32 + 3):
        with pytest.raises(percpu.PercpuError, match="out of range"):
            percpu.PerCpuArray.create(np.uint64, n)
    assert "map_create" not in kernel.calls


@pytest.mark.usefixtures("fake")
def test_bad_fd_is_a_percpu_error() -> None:
    with pytest.raises(percpu.BpfError, match="not an open file descriptor"):
        percpu.Map.from_fd(9999)


def test_ids_fds_and_names_that_would_change_on_the_way_in_are_refused(fake: Fake) -> None:
    """open_map(2**32 + id) opened map id (ctypes kept the low 32 bits); an fd past 32 bits was read as
    another fd; a NUL in a name made the kernel's name end there. Refused before any syscall."""
    kernel, _ = fake
    with percpu.PerCpuArray.create(np.uint64, 4, name="counts") as m:
        kernel.calls.clear()
        for spec in (2**32 + m.info.id, str(2**32 + m.info.id), -1, np.int64(-5)):
            with pytest.raises(percpu.InvalidArgument, match="map id"):
                percpu.open_map(spec)  # type: ignore[arg-type]
        for fd in (2**32 + m.fd, -1):
            with pytest.raises(percpu.InvalidArgument, match=f"fd {fd} "):
                percpu.Map.from_fd(fd)
        with pytest.raises(percpu.InvalidArgument, match=r"map name 'a\\x00b'"):
            percpu.PerCpuArray.create(np.uint64, 4, name="a\0b")
        with pytest.raises(percpu.InvalidArgument, match="map flags 4294967296"):
            percpu.PerCpuArray.create(np.uint64, 4, flags=2**32)
        with pytest.raises(percpu.InvalidArgument, match=r"pin path '/sys/fs/bpf/a\\x00b'"):
            m.pin("/sys/fs/bpf/a\0b")
        with pytest.raises(percpu.InvalidArgument, match=r"pin path '/sys/fs/bpf/a\\x00b'"):
            percpu.open_map("/sys/fs/bpf/a\0b")
        assert kernel.calls == []  # nothing reached the kernel
        with percpu.open_map(str(m.info.id)) as same:  # what is in range still opens
            assert same.info.id == m.info.id


def test_a_map_the_machine_cannot_hold_is_refused_with_its_cost() -> None:
    """The report: PerCpuArray.create(np.uint64, 2**31) on a 23 GiB machine made the kernel try to
    allocate 32 GiB of per-CPU memory, and the out-of-memory killer fired. percpu knows the cost before
    the syscall: it says it, and refuses what the machine cannot hold."""
    kernel = FakeKernel(2)
    with installed(kernel, FakeMachine(kernel, mem_available=20 << 30)):
        with pytest.raises(percpu.MapTooLarge) as e:
            percpu.PerCpuArray.create(np.uint64, 2**31, name="huge")
        cost = 312 + 2**31 * 8 + 2**31 * 8 * 2  # header, a pointer and a value per possible CPU each
        assert (e.value.cost, e.value.available) == (cost, 20 << 30)
        assert e.value.limit == "MemAvailable in /proc/meminfo" and e.value.map_name == "huge"
        text = str(e.value)
        assert text.startswith(
            "map 'huge': a PERCPU_ARRAY of 2,147,483,648 entries x round_up(8, 8) = 8-byte values x 2 "
            f"possible CPUs takes 48.0 GiB ({cost:,} bytes) of kernel memory, allocated when it is created; "
            "this process can have 20.0 GiB (MemAvailable in /proc/meminfo). At most 894,784,840 entries fit"
        )
        assert "check_memory=False" in text
        assert "map_create" not in kernel.calls  # nothing reached the kernel
        assert percpu.maps.memory_bytes(MapType.PERCPU_ARRAY, 4, 8, 894_784_840, 2) <= 20 << 30
        assert percpu.maps.memory_bytes(MapType.PERCPU_ARRAY, 4, 8, 894_784_841, 2) > 20 << 30


def test_the_per_cpu_multiplication_and_the_cgroup_limit_are_counted() -> None:
    """1M entries of 64 B on a 128-possible-CPU VM is 8 GiB; a memory cgroup's limit counts too; hashes
    allocate their elements and buckets at creation (buckets even with BPF_F_NO_PREALLOC)."""
    kernel = FakeKernel(128)
    machine = FakeMachine(
        kernel, mem_available=64 << 30, cgroup_memory=(4 << 30, "memory.max of cgroup /job")
    )
    with installed(kernel, machine):
        for create in (
            lambda: percpu.PerCpuArray.create(np.dtype((np.void, 64)), 1 << 20),
            lambda: percpu.PerCpuHash.create(np.uint32, np.dtype((np.void, 64)), 1 << 20),
            lambda: percpu.PerCpuHash.create(np.uint32, np.uint64, 2**31, flags=1),  # 32 GiB of buckets
        ):
            with pytest.raises(percpu.MapTooLarge, match=r"\(memory\.max of cgroup /job\)") as e:
                create()
            assert e.value.available == 4 << 30
        assert percpu.maps.memory_bytes(MapType.PERCPU_ARRAY, 4, 64, 1 << 20, 128) > 8 << 30
        with percpu.PerCpuHash.create(np.uint32, np.uint64, 1 << 20, flags=1) as lazy:  # 16 MiB up front
            assert lazy.memory_bytes > 1 << 30  # what it takes once full


def test_check_memory_false_creates_what_the_check_refuses() -> None:
    kernel = FakeKernel(4)
    with installed(kernel, FakeMachine(kernel, mem_available=1 << 20)):
        with pytest.raises(percpu.MapTooLarge):
            percpu.PerCpuArray.create(np.uint64, 65536)
        with percpu.PerCpuArray.create(np.uint64, 65536, check_memory=False) as m:
            m.update_all(65535, 7)
            assert m[65535].sum() == 28
            assert m.memory_bytes == 312 + 65536 * 8 + 65536 * 8 * 4
    kernel = FakeKernel(4)
    with installed(kernel, FakeMachine(kernel, mem_available=None)):  # no MemAvailable: nothing to go by
        percpu.PerCpuArray.create(np.uint64, 65536).close()


# --- what the kernel's map types take, refused with their rule before the syscall (issue 26) ----------------

VOID0 = np.dtype((np.void, 0))


@pytest.mark.parametrize(
    ("create", "argument", "text"),
    [
        (
            lambda: percpu.PerCpuHash.create(np.uint32, np.uint64, 0, name="m"),
            "max_entries",
            "create PERCPU_HASH map 'm': max_entries 0: a PERCPU_HASH map holds 1 element or more; give the "
            "number of elements it holds",
        ),
        (
            lambda: percpu.PerCpuArray.create(np.uint64, 0, name="m"),
            "max_entries",
            "create PERCPU_ARRAY map 'm': max_entries 0: a PERCPU_ARRAY map holds 1 element or more; give "
            "the number of elements it holds",
        ),
        (
            lambda: percpu.LruPerCpuHash.create(np.uint32, np.uint64, 2**31 + 1),
            "max_entries",
            "create LRU_PERCPU_HASH map: max_entries 2,147,483,649: a LRU_PERCPU_HASH map holds at most "
            "2,147,483,648 (2**31) entries (the kernel sizes its buckets as the next power of two, which "
            "must fit 32 bits); create it with fewer",
        ),
        (
            lambda: percpu.PerCpuHash.create(VOID0, np.uint64, 4, name="m"),
            "key",
            "create PERCPU_HASH map 'm': key type |V0 is 0 bytes: the kernel takes keys of 1 byte or more",
        ),
        (
            lambda: percpu.PerCpuHash.create(np.uint32, VOID0, 4, name="m"),
            "value",
            "create PERCPU_HASH map 'm': value type |V0 is 0 bytes: the kernel takes values of 1 byte or "
            "more",
        ),
        (
            lambda: percpu.PerCpuCgroupStorage.create(np.uint64, key=np.uint32, name="m"),
            "key",
            "create PERCPU_CGROUP_STORAGE map 'm': key type uint32 is 4 bytes: a PERCPU_CGROUP_STORAGE key "
            "is struct bpf_cgroup_storage_key (16 bytes: the cgroup's inode id and the attach type, "
            "percpu.maps.CGROUP_STORAGE_KEY) or the cgroup's u64 inode id (8 bytes)",
        ),
        (
            lambda: percpu.Map._create(MapType.PERCPU_ARRAY, np.uint64, np.uint64, 4),
            "key",
            "create PERCPU_ARRAY map: key type uint64 is 8 bytes: an array's key is its 4-byte index (u32)",
        ),
        (
            lambda: percpu.Map._create(MapType.PERCPU_CGROUP_STORAGE, np.uint64, np.uint64, 4),
            "max_entries",
            "create PERCPU_CGROUP_STORAGE map: max_entries 4: a PERCPU_CGROUP_STORAGE map takes 0, the "
            "kernel making one element per cgroup a program using it is attached to",
        ),
    ],
    ids=[
        "hash-0-entries",
        "array-0-entries",
        "hash-over-2**31",
        "0-byte-key",
        "0-byte-value",
        "cgroup-key",
        "array-key",
        "cgroup-entries",
    ],
)
def test_what_a_map_type_cannot_be_is_refused_with_the_kernels_rule(
    fake: Fake, create: Callable[[], object], argument: str, text: str
) -> None:
    """max_entries=0, a 0-byte key and the like gave a bare "Invalid argument (errno 22)"."""
    kernel, _ = fake
    kernel.calls.clear()
    with pytest.raises(percpu.InvalidArgument) as e:
        create()
    assert str(e.value) == text and e.value.argument == argument
    assert "map_create" not in kernel.calls


def test_a_hash_of_2_to_the_32_entries_names_max_entries_not_the_value(fake: Fake) -> None:
    """PerCpuHash.create(..., 2**32 - 1) blamed the value size (the kernel's E2BIG read as a value too
    large); the memory check, which now answers before the kernel, says the cost. The rule answers first,
    with or without the memory check."""
    kernel, _ = fake
    for check in (True, False):
        with pytest.raises(
            percpu.InvalidArgument, match=r"^create PERCPU_HASH map: max_entries 4,294,967,295: "
        ):
            percpu.PerCpuHash.create(np.uint32, np.uint64, 2**32 - 1, check_memory=check)
    assert "map_create" not in kernel.calls
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 2**31, flags=1, check_memory=False):
        pass  # the largest the kernel takes (without preallocation)


def test_the_fake_kernel_refuses_what_the_rule_refuses() -> None:
    """The fake kernel answers a create the rules refuse as the kernel does (tests/kernel compares the
    two), so a rule percpu lacks fails here as it would there."""
    kernel = FakeKernel(2)
    for args, err in (
        ((MapType.PERCPU_HASH, "", 4, 8, 0), errno.EINVAL),
        ((MapType.PERCPU_HASH, "", 0, 8, 4), errno.EINVAL),
        ((MapType.PERCPU_HASH, "", 4, 8, 2**31 + 1), errno.E2BIG),
        ((MapType.PERCPU_ARRAY, "", 8, 8, 4), errno.EINVAL),
        ((MapType.PERCPU_CGROUP_STORAGE, "", 16, 8, 4), errno.EINVAL),
        ((MapType.PERCPU_CGROUP_STORAGE, "", 16, 32769, 0), errno.E2BIG),
        ((MapType.PERCPU_HASH, "a-b", 4, 8, 4), errno.EINVAL),
    ):
        with pytest.raises(OSError) as e:
            kernel.map_create(*args)
        assert e.value.errno == err, args


def test_from_fd_leaves_a_refused_fd_to_its_caller(fake: Fake) -> None:
    """from_fd(fd) of something that is not a map closed the caller's fd; a closed fd or one never
    opened said "File descriptor in bad state (errno 77)", the kernel's EBADFD taken as is."""
    kernel, _ = fake
    with pytest.raises(percpu.BpfError) as e:
        percpu.Map.from_fd(999)
    assert str(e.value) == (
        "fd 999 is not an open file descriptor (closed, or never opened); open the map with "
        "percpu.open_map(id or pin path), or pass an fd that is open"
    )
    assert e.value.errno == errno.EBADFD
    with percpu.PerCpuArray.create(np.uint64, 4) as m:
        fd = kernel.dup(m.fd)
        with pytest.raises(percpu.MapTypeError, match="not PERCPU_HASH"):
            percpu.PerCpuHash.from_fd(fd)
        with pytest.raises(percpu.SizeMismatch):
            percpu.PerCpuArray.from_fd(fd, value=np.uint32)
        assert fd in kernel.fds  # still the caller's, open
        with percpu.PerCpuArray.from_fd(fd) as taken:
            assert taken.info.id == m.info.id
        assert fd not in kernel.fds  # taken, then closed with the map
