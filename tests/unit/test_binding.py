"""The binding module's own guarantees: a clear error for a missing or too old libbpf, and no buffer
smaller than what the kernel writes ever reaches a syscall (checked before the call, so a bogus fd
shows that nothing was called)."""

from __future__ import annotations

import ctypes.util

import numpy as np
import pytest

import percpu
from percpu import _libbpf


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
    key = np.zeros(4, np.uint8)
    small = np.zeros(8, np.uint8)
    with pytest.raises(ValueError, match="the kernel writes 16"):
        lib.map_lookup(bad_fd, key, small, 16)
    with pytest.raises(ValueError, match="the kernel writes 16"):
        lib.map_lookup_and_delete(bad_fd, key, small, 16)
    with pytest.raises(ValueError, match="the kernel reads 16"):
        lib.map_update(bad_fd, key, small, 16)
    tok = np.zeros(8, np.uint8)
    with pytest.raises(ValueError, match="values"):
        lib.map_lookup_batch(bad_fd, None, tok, np.zeros(40, np.uint8), small, 10, 16, 4)
    with pytest.raises(ValueError, match="keys"):
        lib.map_lookup_batch(bad_fd, None, tok, np.zeros(8, np.uint8), np.zeros(160, np.uint8), 10, 16, 4)
    with pytest.raises(ValueError, match="out_batch"):
        lib.map_lookup_batch(
            bad_fd, None, np.zeros(2, np.uint8), np.zeros(40, np.uint8), np.zeros(160, np.uint8), 10, 16, 4
        )
    with pytest.raises(ValueError, match="writable"):
        ro = np.zeros(16, np.uint8)
        ro.flags.writeable = False
        lib.map_lookup(bad_fd, key, ro, 16)


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
