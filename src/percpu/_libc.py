"""The C library calls percpu makes, each through ctypes with its prototype declared here.

libbpf has its own binding (:mod:`percpu._libbpf`); these are the few system calls Python's ``os`` module
does not offer: mount(2) (tracefs, when the classic tracepoint needs it), prctl(2) and capset(2) (the
exporter giving its privileges up), statfs(2) (is a pin path in a BPF file system?) and mprotect(2) (the
guard pages of the proof mode). Each raises :class:`OSError` with the errno; the C library is opened on
first use, never at import time.
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any

__all__ = ["capset", "mount", "mprotect", "prctl", "statfs_type"]

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "mount": (
        ctypes.c_int,
        [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p],
    ),
    "prctl": (ctypes.c_int, [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]),
    "capset": (ctypes.c_int, [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]),
    "statfs": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_void_p]),
    "mprotect": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]),
}


@functools.cache
def _fn(name: str) -> Any:
    fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    fn.restype, fn.argtypes = _PROTOTYPES[name]
    return fn


def _raise() -> None:
    err = ctypes.get_errno()
    raise OSError(err, os.strerror(err))


def mount(source: str, target: str, fstype: str) -> None:
    """mount(2) with no flags and no data."""
    if _fn("mount")(source.encode(), target.encode(), fstype.encode(), 0, None) != 0:
        _raise()


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    ret = int(_fn("prctl")(option, arg2, arg3, arg4, arg5))
    if ret < 0:
        _raise()
    return ret


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2) for the calling thread (capabilities are per thread: call it before starting threads)."""
    data = (_CapData * 2)()
    for i in range(2):
        data[i] = _CapData(
            effective >> (32 * i) & 0xFFFFFFFF,
            permitted >> (32 * i) & 0xFFFFFFFF,
            inheritable >> (32 * i) & 0xFFFFFFFF,
        )
    if _fn("capset")(ctypes.byref(_CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)), data) != 0:
        _raise()


def statfs_type(path: str) -> int:
    """The file system type (``f_type``, e.g. BPF_FS_MAGIC) of the file system holding ``path``."""
    # struct statfs is 120 bytes on x86_64 and arm64 and opens with f_type, a long; room to spare.
    buf = ctypes.create_string_buffer(256)
    if _fn("statfs")(os.fsencode(path), buf) != 0:
        _raise()
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def mprotect(addr: int, length: int, prot: int) -> None:
    if _fn("mprotect")(addr, length, prot) != 0:
        _raise()
