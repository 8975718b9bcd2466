"""syscount's pure parts: the filters and the configuration they become, checked without a kernel."""

from __future__ import annotations

import copy
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from percpu import _machine
from percpu.cpus import CpuList
from percpu.errors import InvalidFilter, NotCopyable, PercpuError
from percpu.syscount import (
    COMPAT_BASE,
    NR_SLOTS,
    PID_MAX_LIMIT,
    PROC_KEY,
    Filters,
    Lost,
    SyscallCounter,
    SyscallSnapshot,
    pid_namespace,
    slot_name,
)

from .fake_kernel import FakeKernel, FakeMachine, installed
from .synthetic import snap


@pytest.mark.parametrize(
    ("kw", "field", "message"),
    [
        ({"tgid": 2**32 + 1}, "tgid", "must be in 1..4194304"),  # truncated to 1 (init) before
        ({"tgid": 2**32}, "tgid", "must be in 1..4194304"),  # truncated to 0: no filter at all before
        ({"tgid": PID_MAX_LIMIT + 1}, "tgid", "must be in 1..4194304"),
        ({"tgid": 0}, "tgid", "must be in 1.."),
        ({"tgid": -5}, "tgid", "must be in 1.."),
        ({"tgid": True}, "tgid", "must be a whole number"),
        ({"tgid": "12"}, "tgid", "must be a whole number"),
        ({"tid": 2**32 + 7}, "tid", "must be in 1..4194304"),
        ({"tid": -1}, "tid", "must be in 1.."),
        ({"cgroup": 2**64 + 3}, "cgroup", "must be in 1..18446744073709551615"),
        ({"cgroup": -1}, "cgroup", "must be in 1.."),
        ({"cgroup": 1.5}, "cgroup", "must be a whole number"),
        ({"comm": "a" * 16}, "comm", "is 16 bytes; the kernel keeps 15"),
        ({"comm": "é" * 8}, "comm", "is 16 bytes"),  # 8 characters, 16 bytes in UTF-8
        ({"comm": b"\xff" * 16}, "comm", "is 16 bytes"),
        ({"comm": ""}, "comm", "is empty"),
        ({"comm": "a\0b"}, "comm", "has a NUL byte"),
        ({"comm": 7}, "comm", "give a str or bytes"),
    ],
)
def test_filters_refuse_what_the_kernel_cannot_hold(kw: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(InvalidFilter, match=message) as exc:
        Filters(**kw)  # type: ignore[arg-type]
    assert exc.value.field == field
    assert isinstance(exc.value, PercpuError) and isinstance(exc.value, ValueError)


def test_filters_take_the_limits() -> None:
    Filters(tgid=1, tid=PID_MAX_LIMIT, cgroup=2**64 - 1, comm="a" * 15)


@pytest.mark.parametrize(
    ("comm", "raw"),
    [
        ("bash", b"bash"),
        ("é", "é".encode()),
        (os.fsdecode(b"\xff\xfeab"), b"\xff\xfeab"),  # how Python hands a non-UTF-8 argv to the CLI
        (b"\x1b[31m\xff", b"\x1b[31m\xff"),
    ],
)
def test_comm_goes_to_the_kernel_as_the_bytes_given(comm: str | bytes, raw: bytes) -> None:
    c = SyscallCounter(filters=Filters(comm=comm), start=False)
    assert bytes(c._config.filter_comm) == raw


def test_ids_reach_the_config_whole() -> None:
    c = SyscallCounter(filters=Filters(tgid=PID_MAX_LIMIT, tid=4242), start=False)
    assert (c._config.filter_tgid, c._config.filter_tid) == (PID_MAX_LIMIT, 4242)


def test_pid_namespace_is_none_in_the_initial_one(tmp_path: Path) -> None:
    # The initial pid namespace has a fixed inode (PROC_PID_INIT_INO); this test runs on the host.
    if os.stat("/proc/self/ns/pid").st_ino != 0xEFFFFFFC:
        pytest.skip("this test process runs in a pid namespace of its own (a container)")
    assert pid_namespace() is None
    assert _machine.Machine(proc=str(tmp_path / "missing")).pid_namespace() is None


def test_pid_filters_compare_in_a_pid_namespace() -> None:
    kernel = FakeKernel(2)
    with installed(kernel, FakeMachine(kernel, pid_namespace=(4, 4026532001))):
        _pid_filters_compare_in_a_pid_namespace()


def _pid_filters_compare_in_a_pid_namespace() -> None:
    c = SyscallCounter(filters=Filters(tgid=2), start=False)
    assert (c._config.pidns_dev, c._config.pidns_ino) == (4, 4026532001)
    c = SyscallCounter(filters=Filters(comm="x"), per_process=True, start=False)  # pids in the report
    assert (c._config.pidns_dev, c._config.pidns_ino) == (4, 4026532001)
    c = SyscallCounter(filters=Filters(comm="x"), start=False)  # no pid anywhere: nothing to translate
    assert (c._config.pidns_dev, c._config.pidns_ino) == (0, 0)


@pytest.mark.parametrize("make", [copy.copy, copy.deepcopy, pickle.dumps], ids=["copy", "deepcopy", "pickle"])
def test_a_counter_has_one_owner_copies_and_pickles_are_refused(make: object) -> None:
    """A copy shared the original's BPF object and maps: closing the copy detached the original's programs
    and closed its maps, and its next snapshot failed. Refused, saying what to do instead."""
    kernel = FakeKernel(2)
    with installed(kernel, FakeMachine(kernel)):
        c = SyscallCounter(start=False)
        with pytest.raises(NotCopyable, match="the syscall counter cannot be copied or pickled"):
            make(c)  # type: ignore[operator]


@pytest.mark.parametrize("name", ["kernel_features", "KernelFeatures"])
def test_the_probes_old_names_still_work_and_say_where_they_went(name: str) -> None:
    from percpu import features, syscount

    with pytest.warns(DeprecationWarning, match=f"percpu.syscount.{name} is now percpu.features.{name}"):
        assert getattr(syscount, name) is getattr(features, name)


@pytest.mark.parametrize("kw", [{"errors_entries": 0}, {"latency_entries": 1 << 25}, {"proc_entries": True}])
def test_table_sizes_are_checked(kw: dict[str, object]) -> None:
    with pytest.raises(PercpuError, match="give a table size from 1 to"):
        SyscallCounter(start=False, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("keep", [-1, 1 << 25, 2.5, True])
def test_rows_kept_by_pid_are_checked(keep: object) -> None:
    with pytest.raises(PercpuError, match=r"proc_keep=.*give a number of rows from 0 to"):
        SyscallCounter(start=False, per_process=True, proc_keep=keep)  # type: ignore[arg-type]


def test_lost_subtracts_and_never_goes_negative() -> None:
    assert Lost(5, 7, 9) - Lost(1, 2, 3) == Lost(4, 5, 6)
    assert Lost(0, 1, 0) - Lost(3, 0, 0) == Lost(0, 1, 0)  # a counter seen lower later: never negative


# --- snapshots and deltas (moved from the report tests: they test syscount, not the rendering) -----------


def test_delta_and_rates() -> None:
    a = snap(10.0, {(0, 0): 100, (1, 110): 5})
    b = snap(12.0, {(0, 0): 300, (1, 110): 25, (2, 1): 7})
    d = b.delta(a)
    assert d.seconds == 2.0
    assert int(d.counts[0, 0]) == 200 and int(d.counts[1, 110]) == 20 and int(d.counts[2, 1]) == 7
    assert d.rates()[0, 0] == 100.0
    assert list(d.active_slots()) == [0, 110, 1]
    assert d.per_cpu().tolist() == [200, 20, 7]
    assert d.imbalance() == pytest.approx(200 / (227 / 3))


def test_slot_names_native_compat_unknown() -> None:
    assert slot_name(110, "x86_64") == "getppid"
    assert slot_name(COMPAT_BASE + 64, "x86_64") == "compat:getppid"
    assert slot_name(1000, "x86_64") == "syscall_1000"


def test_keyed_delta_never_negative_after_lru_eviction() -> None:
    k = np.zeros(2, dtype=PROC_KEY)
    k["tgid"] = [1, 2]
    k["slot"] = [0, 0]
    before = (k, np.array([[5, 0, 0], [9, 0, 0]], dtype=np.uint64))
    now_keys = k[:1]  # pid 2 evicted, pid 1 went on
    now = (now_keys, np.array([[7, 1, 0]], dtype=np.uint64))
    d = snap(1.0, {}, procs=now).delta(snap(0.0, {}, procs=before))
    assert d.procs is not None
    assert d.procs[1].tolist() == [[2, 1, 0]]


def test_filters_resolve_names_and_reject_unknown() -> None:
    f = Filters(syscalls=["read", "getppid", "compat:read", "7"])
    assert f.slots("x86_64") == [0, 110, COMPAT_BASE + 3, 7]
    with pytest.raises(PercpuError):
        Filters(syscalls=["no_such_call"]).slots("x86_64")
    with pytest.raises(PercpuError):
        Filters(cgroup="/definitely/not/a/cgroup").cgroup_id()


def test_imbalance_is_over_cpus_that_were_online_or_busy() -> None:
    """Possible CPUs that never came online must not make an even load look imbalanced."""
    wide = CpuList(range(128))
    counts = np.zeros((128, NR_SLOTS), dtype=np.uint64)
    counts[:4, 0] = 1000  # an even load on the 4 online CPUs of 128 possible
    later = SyscallSnapshot(time=1.0, cpus=wide, counts=counts, online=CpuList(range(4)))
    earlier = SyscallSnapshot(time=0.0, cpus=wide, counts=np.zeros_like(counts))
    assert later.delta(earlier).imbalance() == pytest.approx(1.0)
    counts[100, 0] = 1000  # a CPU that went offline during the interval still had its calls counted
    later = SyscallSnapshot(time=1.0, cpus=wide, counts=counts, online=CpuList(range(4)))
    assert later.delta(earlier).imbalance() == pytest.approx(1.0)
    counts[4:, 0] = 0
    counts[0, 0] = 4000  # one busy CPU among 4 online: 4000 / (7000 / 4)
    later = SyscallSnapshot(time=1.0, cpus=wide, counts=counts, online=CpuList(range(4)))
    assert later.delta(earlier).imbalance() == pytest.approx(4000 / (7000 / 4))
    unknown = SyscallSnapshot(time=1.0, cpus=wide, counts=counts)  # online unknown: all possible
    assert unknown.delta(earlier).imbalance() == pytest.approx(4000 / (7000 / 128))


@pytest.mark.parametrize(
    ("mounts", "mounted_at"),
    [
        ((("tracefs", "/sys/kernel/tracing", "tracefs"),), None),
        ((("tracefs", "/sys/kernel/debug/tracing", "tracefs"),), None),
        ((("tracefs", "/srv/chroot/sys/kernel/tracing", "tracefs"),), "/sys/kernel/tracing"),
        ((), "/sys/kernel/tracing"),
    ],
)
def test_ensure_tracefs_mounts_it_where_libbpf_looks(
    monkeypatch: pytest.MonkeyPatch, mounts: tuple[tuple[str, str, str], ...], mounted_at: str | None
) -> None:
    """A tracefs mounted only elsewhere (a chroot's /sys, seen from the host) is mounted again where libbpf
    looks; one that libbpf finds is used as it is."""
    from percpu import _libc, syscount

    calls: list[tuple[str, str, str]] = []
    monkeypatch.setattr(_libc, "mount", lambda *a: calls.append(a))
    kernel = FakeKernel(2)
    with installed(kernel, FakeMachine(kernel, mounts=(("/dev/root", "/", "ext4"), *mounts))):
        point = syscount.ensure_tracefs()
    assert calls == ([("nodev", mounted_at, "tracefs")] if mounted_at else [])
    assert point == (mounted_at or mounts[0][1])


def test_ensure_tracefs_says_how_when_it_cannot_mount(monkeypatch: pytest.MonkeyPatch) -> None:
    from percpu import _libc, syscount

    def refuse(*_: str) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(_libc, "mount", refuse)
    kernel = FakeKernel(2)
    machine = FakeMachine(kernel, mounts=(("/dev/root", "/", "ext4"),))
    said = r"run `mount -t tracefs nodev /sys/kernel/tracing` as root"
    with installed(kernel, machine), pytest.raises(PercpuError, match=said):
        syscount.ensure_tracefs()
