"""``percpu explain`` against the fake kernel: what the kernel wrote is measured, an overrun is reported."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import percpu
from percpu.cli import main
from percpu.layout import Layout

from .fake_kernel import FakeKernel, installed

N = len(percpu.cpu_lists().possible)  # explain sizes its buffer from the real sysfs list


class OverrunKernel(FakeKernel):
    """A kernel that writes 8 bytes more than round_up(value_size, 8) x possible CPUs, through the pointer
    it is given, as a real kernel would if percpu's sizing were wrong."""

    def map_lookup(self, fd: int, key: np.ndarray, value: np.ndarray, layout: Layout, flags: int = 0) -> None:
        raw = self._map(fd).data[key.tobytes()] + b"\xab" * 8
        ctypes.memmove(value.ctypes.data, raw, len(raw))


def test_explain_measures_what_the_kernel_wrote(capsys: pytest.CaptureFixture[str]) -> None:
    with installed(FakeKernel(N)):
        assert main(["explain", "--value-size", "12"]) == 0
    out = capsys.readouterr().out
    assert out.count("intact: all 16 bytes still ee") == 2
    assert f"Measured: the kernel wrote {16 * N} bytes; every slot holds" in out
    cost = percpu.maps.memory_bytes(percpu.MapType.PERCPU_ARRAY, 4, 12, 1 << 20, N)
    assert f"an entry holds 16 x {N} = {16 * N} bytes of values" in out
    assert f"a PERCPU_ARRAY of 1,048,576 such values takes {percpu.maps._kinds.human_bytes(cost)} here" in out


def test_explain_reports_an_overwritten_guard(capsys: pytest.CaptureFixture[str]) -> None:
    with installed(OverrunKernel(N)):
        assert main(["explain", "--value-size", "12"]) == 1
    out, err = capsys.readouterr()
    assert "guard before  : " + " ".join(["ee"] * 16) + "   intact" in out
    assert "guard after   : " + " ".join(["ab"] * 8 + ["ee"] * 8) + "   OVERWRITTEN: 8 of 16 bytes" in out
    assert f"the kernel wrote {16 * N + 8} bytes at offset 0, not the {16 * N} bytes" in err
