"""The one binding to libbpf (``libbpf.so.1``) and through it to the bpf() syscall.

Nothing else in percpu declares ctypes prototypes for libbpf: they are one table, in :mod:`._library`,
which also loads the library. :class:`Libbpf` is the binding whole: the map calls (:mod:`._maps`) and the
calls for objects, programs and BTF (:mod:`._objects`). Everything above this layer calls it as the
kernel of the machine in use (:func:`percpu._machine.current`), whose :class:`~percpu._machine.Kernel`
protocol says what they need of it; unit tests install a fake machine with a fake kernel there.
:func:`libbpf` loads the real library once per process.

Conventions of this layer:

* Buffers are numpy arrays (C-contiguous, writable where the kernel writes). Each call that lets the kernel
  write into a buffer takes the number of bytes the kernel will write, computed by the caller from the
  kernel's own map info, and refuses a smaller buffer *before* the syscall. That is what makes the
  per-CPU overrun impossible even for a buggy caller inside percpu.
* An integer crosses into C only if it is exactly what the C type holds (ctypes keeps the low bits of
  one too large, without a word: map id ``2**32 + 5`` would be map 5, flags ``2**64`` flags 0), and a
  path or name only without a NUL byte (C reads up to it): :func:`percpu._libc.checked` and
  :func:`percpu._libc.c_text` refuse the rest with :class:`~percpu.errors.InvalidArgument` before any
  call (re-exported here for the layers above).
* Failures raise :class:`OSError` with the kernel's errno. The layers above translate them once (a map's
  in :meth:`percpu.maps._handle.MapHandle.call`), adding the map's name. ENOENT that means "end of
  iteration" is not an error here: it is a return value.
* libbpf is loaded on first use, never at import time.
"""

from __future__ import annotations

import threading

from .. import _fork
from .._libc import c_text, checked
from .._uapi import BPF_ANY, BPF_EXIST, BPF_F_ALL_CPUS, BPF_F_CPU, BPF_NOEXIST
from ._library import MIN_LIBBPF
from ._maps import MapCalls, MapInfo, PartialBatch
from ._objects import ObjectCalls, ProgInfo

__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_F_ALL_CPUS",
    "BPF_F_CPU",
    "BPF_NOEXIST",
    "MIN_LIBBPF",
    "Libbpf",
    "MapInfo",
    "PartialBatch",
    "ProgInfo",
    "c_text",
    "checked",
    "libbpf",
]


class Libbpf(MapCalls, ObjectCalls):
    """ctypes binding to ``libbpf.so.1`` (libbpf >= 1.0, where calls return ``-errno``): ``Libbpf()``
    loads it, ``Libbpf(path)`` another copy of it."""


_real: Libbpf | None = None
_real_lock = threading.Lock()


@_fork.at_fork_in_child
def _renew_lock() -> None:
    global _real_lock  # noqa: PLW0603 - a thread holding it at fork() is not in the child
    _real_lock = threading.Lock()


def libbpf() -> Libbpf:
    """The real library, loaded once per process on first use: the kernel of the real machine
    (:attr:`percpu._machine.Machine.kernel`). Everything above asks the machine in use, never this."""
    global _real  # noqa: PLW0603 - one library per process, as libbpf has one print hook per process
    if _real is None:
        _fork.install()  # the kernel's first use: from now on a fork renews the locks of every layer
        with _real_lock:
            if _real is None:
                _real = Libbpf()
    return _real
