"""The binding module's own guarantees: a clear error for a missing or too old libbpf, and no buffer
smaller than what the kernel writes ever reaches a syscall (checked before the call, so a bogus fd
shows that nothing was called)."""

from __future__ import annotations

import ctypes.util

import numpy as np
import pytest

import percpu
from percpu import _libbpf
from percpu.layout import BPF_F_CPU, Layout


def test_missing_libbpf_is_a_libbpf_error() -> None:
    with pytest.raises(percpu.LibbpfError, match="apt-get install libbpf1"):
        _libbpf.Libbpf("/nonexistent/libbpf.so.1")


def test_a_library_that_is_not_libbpf_1_is_refused() -> None:
    libc = ctypes.util.find_library("c")
    assert libc, "the C library is always there"
    with pytest.raises(percpu.LibbpfError, match=r"older than libbpf 0\.6"):
        _libbpf.Libbpf(libc)


@pytest.fixture
def lib() -> _libbpf.Libbpf:
    try:
        return _libbpf.Libbpf()
    except percpu.LibbpfError as exc:
        pytest.skip(f"libbpf.so.1 is not installed here: {exc}")


def test_small_buffers_never_reach_the_kernel(lib: _libbpf.Libbpf) -> None:
    bad_fd = 1 << 20  # would fail with EBADF if any call were made: ValueError proves none was
    n = lib.num_possible_cpus()
    lay = Layout(4, 12, n, True)  # the kernel copies 16 bytes per possible CPU
    key = np.zeros(4, np.uint8)
    small = np.zeros(16 * n - 8, np.uint8)
    with pytest.raises(ValueError, match=f"the kernel writes {16 * n}"):
        lib.map_lookup(bad_fd, key, small, lay)
    with pytest.raises(ValueError, match=f"the kernel writes {16 * n}"):
        lib.map_lookup_and_delete(bad_fd, key, small, lay)
    with pytest.raises(ValueError, match=f"the kernel reads {16 * n}"):
        lib.map_update(bad_fd, key, small, lay)
    with pytest.raises(ValueError, match="the kernel writes 12"):
        lib.map_lookup(bad_fd, key, np.zeros(11, np.uint8), Layout(4, 12, n, True), BPF_F_CPU)
    tok = np.zeros(8, np.uint8)
    with pytest.raises(ValueError, match="values"):
        lib.map_lookup_batch(bad_fd, None, tok, np.zeros(40, np.uint8), small, 10, lay)
    with pytest.raises(ValueError, match="keys"):
        lib.map_lookup_batch(bad_fd, None, tok, np.zeros(8, np.uint8), np.zeros(160 * n, np.uint8), 10, lay)
    with pytest.raises(ValueError, match="out_batch"):
        lib.map_lookup_batch(
            bad_fd, None, np.zeros(2, np.uint8), np.zeros(40, np.uint8), np.zeros(160 * n, np.uint8), 10, lay
        )
    with pytest.raises(ValueError, match="writable"):
        ro = np.zeros(16 * n, np.uint8)
        ro.flags.writeable = False
        lib.map_lookup(bad_fd, key, ro, lay)


def test_key_buffers_are_checked_against_key_size(lib: _libbpf.Libbpf) -> None:
    """Every key buffer is checked against the map's key_size, not against itself."""
    bad_fd = 1 << 20
    lay = Layout(8, 8, lib.num_possible_cpus(), True)
    short = np.zeros(4, np.uint8)
    val = np.zeros(lay.element_bytes * 4, np.uint8)
    for call in (
        lambda: lib.map_lookup(bad_fd, short, val, lay),
        lambda: lib.map_update(bad_fd, short, val, lay),
        lambda: lib.map_delete(bad_fd, short, lay),
        lambda: lib.map_lookup_and_delete(bad_fd, short, val, lay),
        lambda: lib.map_get_next_key(bad_fd, short, np.zeros(8, np.uint8), lay),
        lambda: lib.map_get_next_key(bad_fd, None, short, lay),
        lambda: lib.map_update_batch(bad_fd, np.zeros(12, np.uint8), val, 2, lay),
        lambda: lib.map_delete_batch(bad_fd, np.zeros(12, np.uint8), 2, lay),
    ):
        with pytest.raises(ValueError, match=r"the kernel (reads|writes) (8|16)"):
            call()


def test_a_layout_for_another_cpu_count_is_refused(lib: _libbpf.Libbpf) -> None:
    """The binding sizes per-CPU buffers by the kernel's own count: a layout that believes otherwise is
    refused before any call, whatever buffer comes with it."""
    n = lib.num_possible_cpus()
    wrong = Layout(4, 8, n + 1, True)
    with pytest.raises(ValueError, match=f"the kernel has {n}"):
        lib.map_lookup(1 << 20, np.zeros(4, np.uint8), np.zeros(8 * (n + 1), np.uint8), wrong)


def test_mean_over_cpus() -> None:
    from percpu.values import PerCpuValue, codec_for

    v = PerCpuValue.from_values([1, 2, 6], percpu.CpuList([0, 2, 5]), codec_for(np.uint32))
    assert v.mean() == 3.0
    rec = np.dtype([("a", "<u2"), ("b", "<f4")])
    r = PerCpuValue.from_values([(1, 0.5), (3, 1.5)], percpu.CpuList([0, 1]), codec_for(rec))
    assert r.mean() == {"a": 2.0, "b": 1.0}


_SECOND_INSTANCE_COLLECTED = """
import ctypes, gc, sys
from percpu import _libbpf
from percpu.layout import BPF_F_CPU, Layout
first = _libbpf.Libbpf()
second = _libbpf.Libbpf()
del second
gc.collect()
path = sys.argv[1]
with open(path, "wb") as f:
    f.write(b"not an ELF object")
try:  # libbpf prints why it cannot open the file: the print hook runs now
    first.object_open(path, ctypes.create_string_buffer(64))
except OSError:
    pass
print(len(first.messages))
"""


def test_print_hook_outlives_a_collected_instance(lib: _libbpf.Libbpf, tmp_path: object) -> None:
    """A second Libbpf() garbage-collected once left libbpf's print hook pointing at a freed thunk: the
    next libbpf message crashed the process (SIGSEGV). In a subprocess, so a crash fails this test."""
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _SECOND_INSTANCE_COLLECTED, os.path.join(str(tmp_path), "bogus.o")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-500:]}"
    assert int(proc.stdout.split()[-1]) >= 1  # libbpf's messages reached the shared hook


def test_integers_beyond_their_c_type_never_reach_the_kernel(lib: _libbpf.Libbpf) -> None:
    """ctypes keeps the low bits of an integer too large for its C type, without a word: map id 2**32 + 5
    was map 5, flags 2**64 were flags 0, -1 was 4294967295. Each argument that crosses into a C integer is
    refused first; a NUL byte would cut a path or name short, so it is refused too."""
    from percpu.errors import InvalidArgument

    bad_fd = 1 << 20  # would fail with EBADF if any call were made
    n = lib.num_possible_cpus()
    lay = Layout(4, 8, n, True)
    key, val, tok = np.zeros(4, np.uint8), np.zeros(8 * n * 4, np.uint8), np.zeros(8, np.uint8)
    calls = {
        "map id 4294967301": lambda: lib.map_get_fd_by_id(2**32 + 5),
        "map id -1": lambda: lib.map_get_fd_by_id(-1),
        "map id 4294967296": lambda: lib.map_get_next_id(2**32),
        "BTF id 4294967297": lambda: lib.btf_get_fd_by_id(2**32 + 1),
        "program id -3": lambda: lib.prog_get_fd_by_id(-3),
        "fd 4294967299": lambda: lib.map_lookup(2**32 + 3, key, val, lay),
        "fd -2": lambda: lib.map_info(-2),
        "flags 18446744073709551616": lambda: lib.map_lookup(bad_fd, key, val, lay, 2**64),
        "flags -1": lambda: lib.map_update(bad_fd, key, val, lay, -1),
        "count 4294967296": lambda: lib.map_lookup_batch(bad_fd, None, tok, key, val, 2**32, lay),
        "elem_flags 36893488147419103232": lambda: lib.map_update_batch(bad_fd, key, val, 1, lay, 2**65),
        "max_entries 4294967297": lambda: lib.map_create(6, "x", 4, 8, 2**32 + 1),
        "key size -4": lambda: lib.map_create(6, "x", -4, 8, 1),
        "map flags 4294967296": lambda: lib.map_create(6, "x", 4, 8, 1, 2**32),
        "map name 'a\\x00b'": lambda: lib.map_create(6, "a\0b", 4, 8, 1),
        "map name 'sixteen_bytes_ab'": lambda: lib.map_create(6, "sixteen_bytes_ab", 4, 8, 1),
        "path '/sys/fs/bpf/a\\x00b'": lambda: lib.obj_get("/sys/fs/bpf/a\0b"),
        "cpu 4294967296": lambda: lib.prog_run_on_cpu(bad_fd, 2**32),
    }
    for said, call in calls.items():
        with pytest.raises(InvalidArgument) as e:
            call()
        assert str(e.value).startswith(said), str(e.value)
        assert isinstance(e.value, ValueError)
    with pytest.raises(InvalidArgument, match="it would reach the kernel as 5"):
        lib.map_get_fd_by_id(2**32 + 5)


def test_the_c_library_calls_check_what_crosses_into_c_too() -> None:
    """mount(2), prctl(2) and statfs(2) take the same checks as the libbpf binding: a NUL byte would end a
    path early, a word past its C type would lose its high bits. (Each call is harmless if a check ever
    went missing: a path that does not exist, an option the kernel refuses, a prctl that only reads.)"""
    from percpu import _libc
    from percpu.errors import InvalidArgument

    pr_get_dumpable = 3
    for call, said in (
        (
            lambda: _libc.mount("none", "/nonexistent-percpu\0/x", "tmpfs"),
            "path '/nonexistent-percpu\\x00/x'",
        ),
        (lambda: _libc.statfs_type("/sys/fs/bpf\0x"), "path '/sys/fs/bpf\\x00x' has a NUL byte"),
        (lambda: _libc.prctl(2**31), "prctl option 2147483648 does not fit the kernel's i32"),
        (lambda: _libc.prctl(pr_get_dumpable, 2**64), "prctl argument 2 18446744073709551616 does not fit"),
    ):
        with pytest.raises(InvalidArgument) as e:
            call()
        assert str(e.value).startswith(said), str(e.value)
