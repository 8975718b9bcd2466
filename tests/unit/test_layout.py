"""The per-CPU geometry on its own: sizes, strides and slot offsets against the kernel's rule, buffers
that round-trip, and the guard-page allocation mode."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from percpu import layout
from percpu.layout import BPF_F_ALL_CPUS, BPF_F_CPU, Layout, alloc

sizes = st.integers(min_value=1, max_value=32768)
cpus = st.integers(min_value=1, max_value=4096)


@given(value_size=sizes, possible=cpus, key_size=st.integers(1, 512))
def test_a_per_cpu_element_is_the_padded_value_times_possible_cpus(
    value_size: int, possible: int, key_size: int
) -> None:
    lay = Layout(key_size, value_size, possible, True)
    padded = -(-value_size // 8) * 8  # round_up(value_size, 8), written the other way
    assert lay.stride == padded and lay.stride % 8 == 0 and 0 <= lay.stride - value_size < 8
    assert lay.slots == possible
    assert lay.element_bytes == padded * possible == lay.value_bytes()
    assert lay.value_bytes(BPF_F_CPU | (7 << 32)) == value_size == lay.value_bytes(BPF_F_ALL_CPUS)
    assert lay.values_bytes(3) == 3 * lay.element_bytes
    assert lay.keys_bytes(5) == 5 * key_size
    assert lay.token_bytes >= max(key_size, 4)


@given(value_size=sizes, possible=cpus)
def test_a_shared_map_has_one_unpadded_value_whatever_the_flags(value_size: int, possible: int) -> None:
    lay = Layout(4, value_size, possible, False)
    assert lay.stride == value_size and lay.slots == 1
    assert lay.element_bytes == value_size == lay.value_bytes(BPF_F_CPU)


@given(value_size=sizes, possible=st.integers(1, 64), data=st.data())
def test_slots_do_not_overlap_and_fill_the_element(
    value_size: int, possible: int, data: st.DataObject
) -> None:
    lay = Layout(4, value_size, possible, True)
    offsets = [lay.slot_offset(i) for i in range(lay.slots)]
    assert offsets == sorted(offsets) and offsets[0] == 0
    assert all(b - a == lay.stride for a, b in itertools.pairwise(offsets))
    assert offsets[-1] + lay.stride == lay.element_bytes
    bad = data.draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=possible)))
    with pytest.raises(IndexError):
        lay.slot_offset(bad)


@given(
    value_size=st.integers(1, 40),
    possible=st.integers(1, 9),
    n=st.integers(0, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_pack_then_typed_round_trips_and_zeroes_padding(
    value_size: int, possible: int, n: int, seed: int
) -> None:
    lay = Layout(4, value_size, possible, True)
    dt = np.dtype((np.void, value_size))
    raw = np.random.default_rng(seed).integers(0, 256, n * possible * value_size, dtype=np.uint8)
    buf = lay.pack(raw, n)
    assert buf.nbytes == lay.values_bytes(n)
    rows = buf.reshape(n * possible, lay.stride)
    assert not rows[:, value_size:].any()  # padding is zero
    back = lay.typed(buf, n, dt)
    assert back.shape == (n, possible)
    assert back.tobytes() == raw.tobytes()


def test_impossible_layouts_are_refused() -> None:
    with pytest.raises(ValueError):
        Layout(4, 8, 0, True)
    with pytest.raises(ValueError):
        Layout(-1, 8, 2, True)
    with pytest.raises(ValueError, match="holds fewer"):
        Layout(4, 8, 2, True).typed(np.zeros(8, np.uint8), 1, np.dtype("<u8"))


@pytest.mark.parametrize("nbytes", [0, 1, 12, 4095, 4096, 4097, 65536 + 3])
def test_guarded_buffers_end_at_a_page_boundary(nbytes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(layout.GUARD_ENV, "1")
    buf = alloc(nbytes)
    assert buf.nbytes == nbytes and buf.flags.writeable and not buf.any()
    assert (buf.ctypes.data + nbytes) % os.sysconf("SC_PAGE_SIZE") == 0
    buf[:] = 0xAB  # the whole buffer is writable
    assert any(site.startswith("tests/unit/test_layout.py:") for site in layout.guard_sites())


_WRITE_ONE_PAST = """
import ctypes, os
os.environ["PERCPU_GUARD_PAGES"] = "1"
from percpu.layout import alloc
buf = alloc(24)
ctypes.memmove(buf.ctypes.data, b"x" * 24, 24)
print("inside ok", flush=True)
ctypes.memmove(buf.ctypes.data, b"x" * 25, 25)
print("past the end was writable")
"""


def test_a_write_one_byte_past_a_guarded_buffer_faults() -> None:
    """In guard mode an overrun is a fault at its first byte, never silent corruption."""
    proc = subprocess.run([sys.executable, "-c", _WRITE_ONE_PAST], capture_output=True, text=True, timeout=60)
    assert "inside ok" in proc.stdout
    assert "past the end was writable" not in proc.stdout
    assert proc.returncode == -11, (proc.returncode, proc.stderr[-300:])  # SIGSEGV
