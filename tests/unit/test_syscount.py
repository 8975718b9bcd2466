"""syscount's pure parts: the filters and the configuration they become, checked without a kernel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from percpu import _machine
from percpu.errors import InvalidFilter, PercpuError
from percpu.syscount import PID_MAX_LIMIT, Filters, Lost, SyscallCounter, pid_namespace

from .fake_kernel import FakeKernel, FakeMachine, installed


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


@pytest.mark.parametrize("kw", [{"errors_entries": 0}, {"latency_entries": 1 << 25}, {"proc_entries": True}])
def test_table_sizes_are_checked(kw: dict[str, object]) -> None:
    with pytest.raises(PercpuError, match="give a table size from 1 to"):
        SyscallCounter(start=False, **kw)  # type: ignore[arg-type]


def test_lost_subtracts_and_never_goes_negative() -> None:
    assert Lost(5, 7, 9) - Lost(1, 2, 3) == Lost(4, 5, 6)
    assert Lost(0, 1, 0) - Lost(3, 0, 0) == Lost(0, 1, 0)  # a counter seen lower later: never negative
