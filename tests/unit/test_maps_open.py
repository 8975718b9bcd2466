"""maps/_open.py: opening and creating maps, and what is refused before any syscall."""

from __future__ import annotations

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
