"""The per-CPU geometry: how many bytes the kernel copies for a map's keys and values, and where each CPU's
value sits in them. The one place percpu computes a buffer size.

The rule percpu exists for: a user-space lookup of one element of a per-CPU map copies
``round_up(value_size, 8)`` bytes (the *stride*) for each *possible* CPU, slot i holding the i-th possible
CPU's value. With ``BPF_F_CPU`` or ``BPF_F_ALL_CPUS`` (Linux 7.0) the kernel copies one unpadded
``value_size`` value instead. Maps that are not per-CPU copy ``value_size`` bytes.

:func:`alloc` hands out every buffer percpu passes to the kernel or libbpf. With ``PERCPU_GUARD_PAGES=1`` in
the environment each buffer ends exactly where a page ends and the next page is inaccessible
(``PROT_NONE``): a kernel that wrote one byte too many would fail with EFAULT, and user-space code would
fault, instead of corrupting memory silently. The test suites run in that mode; :func:`guard_sites` says
which call sites it covered.

Pure: no syscalls except the guard mode's mmap, nothing at import time.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import mmap
import os
import sys
import threading
from collections import Counter
from dataclasses import dataclass

import numpy as np

from . import _fork, _libc
from ._uapi import BPF_F_ALL_CPUS, BPF_F_CPU

__all__ = ["BPF_F_ALL_CPUS", "BPF_F_CPU", "GUARD_ENV", "Layout", "alloc", "guard_mode", "guard_sites"]

ONE_VALUE = BPF_F_CPU | BPF_F_ALL_CPUS

GUARD_ENV = "PERCPU_GUARD_PAGES"


def round8(n: int) -> int:
    """``round_up(n, 8)``: the kernel's stride between two CPUs' values."""
    return (n + 7) & ~7


@dataclass(frozen=True)
class Layout:
    """What one map's keys and values occupy in the buffers the kernel reads and writes.

    ``possible_cpus`` is the kernel's own count (``libbpf_num_possible_cpus``), never a caller's idea of
    it. A *slot* is one CPU's position in a per-CPU value: slot i is the i-th possible CPU.
    """

    key_size: int
    value_size: int
    possible_cpus: int
    percpu: bool

    def __post_init__(self) -> None:
        if self.key_size < 0 or self.value_size < 0:
            raise ValueError(f"negative size in {self}")
        if self.percpu and self.possible_cpus < 1:
            raise ValueError(f"a per-CPU layout needs at least one possible CPU, not {self.possible_cpus}")

    @property
    def stride(self) -> int:
        """Bytes from one CPU's value to the next: ``round_up(value_size, 8)`` (``value_size`` when the map
        is not per-CPU)."""
        return round8(self.value_size) if self.percpu else self.value_size

    @property
    def slots(self) -> int:
        """Values per element: one per possible CPU, or 1 for a map that is not per-CPU."""
        return self.possible_cpus if self.percpu else 1

    @property
    def element_bytes(self) -> int:
        """Bytes a whole-element lookup writes: ``stride * slots``."""
        return self.stride * self.slots

    def value_bytes(self, flags: int = 0) -> int:
        """Bytes one element's value occupies for an operation with ``flags``: one unpadded value with
        ``BPF_F_CPU``/``BPF_F_ALL_CPUS`` on a per-CPU map, else the whole element."""
        if self.percpu and flags & ONE_VALUE:
            return self.value_size
        return self.element_bytes

    def values_bytes(self, n: int, flags: int = 0) -> int:
        """Bytes ``n`` values occupy back to back, as batch operations lay them out."""
        return n * self.value_bytes(flags)

    def keys_bytes(self, n: int = 1) -> int:
        return n * self.key_size

    @property
    def token_bytes(self) -> int:
        """Room for a batch position token: a u32 bucket index for hashes, a key for arrays."""
        return max(self.key_size, 8)

    def slot_offset(self, slot: int) -> int:
        """Where slot ``slot`` starts inside one element."""
        if not 0 <= slot < self.slots:
            raise IndexError(f"slot {slot} outside 0..{self.slots - 1}")
        return slot * self.stride

    # --- buffers --------------------------------------------------------------------------------------

    def value_buffer(self, n: int = 1, flags: int = 0) -> np.ndarray:
        return alloc(self.values_bytes(n, flags))

    def key_buffer(self, n: int = 1) -> np.ndarray:
        return alloc(self.keys_bytes(n))

    def token_buffer(self) -> np.ndarray:
        return alloc(self.token_bytes)

    def typed(self, buf: np.ndarray, n: int, dtype: np.dtype[np.generic]) -> np.ndarray:
        """An (n, slots) array of ``dtype`` over ``n`` whole elements of ``buf`` (a copy when the stride
        has padding, a view otherwise)."""
        if dtype.itemsize != self.value_size:
            raise ValueError(f"dtype {dtype} is {dtype.itemsize} bytes, values are {self.value_size}")
        if buf.nbytes < n * self.element_bytes:
            raise ValueError(f"buffer of {buf.nbytes} bytes holds fewer than {n} elements")
        if self.stride == dtype.itemsize and dtype.subdtype is None:  # numpy cannot view() as a sub-array
            view: np.ndarray = buf[: n * self.element_bytes].view(dtype).reshape(n, self.slots)
            return view
        strided: np.ndarray = np.ndarray(
            (n, self.slots), dtype=dtype, buffer=buf, strides=(self.element_bytes, self.stride)
        ).copy()
        return strided

    def pack(self, raw: np.ndarray, n: int) -> np.ndarray:
        """A buffer of ``n`` whole elements from ``raw``: (n * slots) values of ``value_size`` bytes each,
        laid out with the kernel's stride and zeroed padding."""
        buf = self.value_buffer(n)
        rows = buf.reshape(n * self.slots, self.stride)
        rows[:, : self.value_size] = raw.reshape(n * self.slots, self.value_size)
        return buf


# --- allocation ----------------------------------------------------------------------------------------

_sites: Counter[str] = Counter()
_sites_lock = threading.Lock()


@_fork.at_fork_in_child
def _renew_lock() -> None:
    global _sites_lock  # noqa: PLW0603 - a thread holding it at fork() is not in the child
    _sites_lock = threading.Lock()


_HERE = os.path.abspath(__file__)
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(_HERE)))  # the checkout, for src/ layouts
_PROT_NONE = 0


def guard_mode() -> bool:
    """Whether buffers end at a page boundary followed by an inaccessible page (``PERCPU_GUARD_PAGES=1``)."""
    return os.environ.get(GUARD_ENV, "") not in ("", "0")


def alloc(nbytes: int) -> np.ndarray:
    """A zeroed, writable uint8 buffer of ``nbytes`` for the kernel or libbpf to read or write.

    In guard mode it ends exactly at a page boundary and the next page is ``PROT_NONE``.
    """
    if nbytes < 0:
        raise ValueError(f"cannot allocate {nbytes} bytes")
    if not guard_mode():
        return np.zeros(nbytes, dtype=np.uint8)
    _note_site()
    return _guarded(nbytes)


def guard_sites() -> dict[str, int]:
    """Call sites (``file:line`` outside this module) that allocated in guard mode, with their counts."""
    with _sites_lock:
        return dict(_sites)


GUARD_REPORT_ENV = "PERCPU_GUARD_REPORT"  # a file each process appends its covered sites to, at exit
_report_registered = False


def _write_report(path: str) -> None:
    with _sites_lock:
        lines = "".join(f"{site}\n" for site in _sites)
    with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as f:
        f.write(lines)


def _note_site() -> None:
    global _report_registered  # noqa: PLW0603 - one exit hook per process, on its first guarded buffer
    f = sys._getframe(2)
    while f.f_back is not None and os.path.abspath(f.f_code.co_filename) == _HERE:
        f = f.f_back
    path = os.path.abspath(f.f_code.co_filename)
    rel = os.path.relpath(path, _ROOT)
    site = f"{path if rel.startswith('..') else rel}:{f.f_lineno}"
    with _sites_lock:
        _sites[site] += 1
        report = os.environ.get(GUARD_REPORT_ENV)
        if report and not _report_registered:
            _report_registered = True
            atexit.register(_write_report, report)


def _guarded(nbytes: int) -> np.ndarray:
    page = mmap.PAGESIZE
    data = max(1, -(-nbytes // page)) * page
    mm = mmap.mmap(-1, data + page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    view = (ctypes.c_char * (data + page)).from_buffer(mm)
    addr = ctypes.addressof(view)
    del view  # a live export would keep the mapping from ever being unmapped
    try:
        _libc.mprotect(addr + data, page, _PROT_NONE)
    except OSError as exc:
        raise OSError(exc.errno, f"mprotect of a guard page: {exc.strerror}") from None
    # The array keeps the mapping alive; when the last view goes, the mapping (guard page too) goes.
    out: np.ndarray = np.frombuffer(mm, dtype=np.uint8, count=nbytes, offset=data - nbytes)
    return out
