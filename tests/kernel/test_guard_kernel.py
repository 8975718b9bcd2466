"""The guard-page proof mode against the real kernel: a buffer one value too small, handed to the raw
bpf() lookup past every percpu check, makes the kernel fail with EFAULT at the inaccessible page instead
of writing past the buffer."""

from __future__ import annotations

import ctypes
import errno

import numpy as np
import pytest

import percpu
from percpu import _machine, layout


def test_an_undersized_buffer_is_efault_not_corruption(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(layout.GUARD_ENV, "1")
    lib = _machine.current().libbpf()
    with percpu.PerCpuArray.create(np.uint64, 1) as m:
        m.update_all(0, 0x1122334455667788)
        need = m.layout.element_bytes
        assert need == 8 * lib.num_possible_cpus()
        small = layout.alloc(need - 8)  # one CPU's value short; the next byte is a PROT_NONE page
        small[:] = 0xEE
        key = m.layout.key_buffer()
        raw_lookup = lib.fn("bpf_map_lookup_elem_flags")  # the binding's own size check bypassed
        ret = raw_lookup(m.fd, key.ctypes.data, small.ctypes.data, ctypes.c_uint64(0))
        assert ret == -errno.EFAULT
        # The same call with a buffer of the kernel's size succeeds and is exact.
        whole = m.layout.value_buffer()
        assert raw_lookup(m.fd, key.ctypes.data, whole.ctypes.data, ctypes.c_uint64(0)) == 0
        assert (whole.view("<u8") == 0x1122334455667788).all()


def test_percpu_never_reaches_the_kernel_with_that_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(layout.GUARD_ENV, "1")
    lib = _machine.current().libbpf()
    with percpu.PerCpuArray.create(np.uint64, 1) as m:
        small = layout.alloc(m.layout.element_bytes - 8)
        with pytest.raises(ValueError, match="the kernel writes"):
            lib.map_lookup(m.fd, m.layout.key_buffer(), small, m.layout)
