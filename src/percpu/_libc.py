"""The C library calls percpu makes, each through ctypes with its prototype declared here.

libbpf has its own binding (:mod:`percpu._libbpf`); these are the few system calls Python's ``os`` module
does not offer: mount(2) (tracefs, when the classic tracepoint needs it), prctl(2) and capset(2) (the
exporter giving its privileges up), statfs(2) (is a pin path in a BPF file system?) and mprotect(2) (the
guard pages of the proof mode). Each raises :class:`OSError` with the errno; the C library is opened on
first use, never at import time.

What crosses into C is checked first, here and in the libbpf binding alike: :func:`checked` refuses an
integer its C type cannot hold exactly (ctypes would keep its low bits, without a word) and :func:`c_text`
text with a NUL byte (C would stop there), each with :class:`~percpu.errors.InvalidArgument`.
"""

from __future__ import annotations

import ctypes
import functools
import operator
import os
from typing import Any

from .errors import InvalidArgument

__all__ = ["c_text", "capset", "checked", "mount", "mprotect", "prctl", "statfs_type"]

# The C integer types arguments cross into: (lowest, highest) value each holds.
_RANGES = {
    "u8": (0, 2**8 - 1),
    "i16": (-(2**15), 2**15 - 1),
    "u32": (0, 2**32 - 1),
    "i32": (-(2**31), 2**31 - 1),
    "u64": (0, 2**64 - 1),
    "fd": (0, 2**31 - 1),  # an int the kernel takes as a file descriptor: never negative
}


def checked(
    value: object, what: str, ctype: str = "u32", *, where: str = "", map_name: str | None = None
) -> int:
    """``value`` as the Python int the C type ``ctype`` (``u32``, ``i32``, ``u64``, ``fd``, ...) holds
    exactly; else :class:`InvalidArgument` naming ``what`` (prefixed by ``where``), before any syscall.

    ``bool`` is refused (``flags=True`` is more likely a slip than BPF_NOEXIST), as is anything that is
    not an integer (``operator.index``: numpy integers pass, floats do not)."""
    lo, hi = _RANGES[ctype]
    if type(value) is int and lo <= value <= hi:  # the common case, kept cheap: every map call comes here
        return value
    try:
        if isinstance(value, bool):
            raise TypeError(value)
        n = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidArgument(
            f"{where}{what} {value!r} is not an integer", argument=what, value=value, map_name=map_name
        ) from None
    if lo <= n <= hi:
        return n
    if ctype == "fd":
        text = f"{where}{what} {n} is not a file descriptor (0..{hi})"
    else:
        bits = (hi - lo).bit_length()
        wrapped = n & (2**bits - 1)
        if lo < 0 and wrapped > hi:
            wrapped -= 2**bits
        text = (
            f"{where}{what} {n} does not fit the kernel's {ctype} ({lo}..{hi}): it would reach the kernel "
            f"as {wrapped}"
        )
    raise InvalidArgument(text, argument=what, value=value, map_name=map_name)


def c_text(text: str, what: str, *, limit: int | None = None, where: str = "") -> bytes:
    """``text`` as the bytes C reads, refused (:class:`InvalidArgument`) if a NUL byte would end it early
    or it is longer than ``limit`` bytes (where the kernel keeps no more)."""
    raw = os.fsencode(text)
    head = raw.split(b"\0", 1)[0]
    if head != raw:
        raise InvalidArgument(
            f"{where}{what} {text!r} has a NUL byte: C would read it as {os.fsdecode(head)!r}",
            argument=what,
            value=text,
        )
    if limit is not None and len(raw) > limit:
        raise InvalidArgument(
            f"{where}{what} {text!r} is {len(raw)} bytes; the kernel keeps {limit}", argument=what, value=text
        )
    return raw


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
    if _fn("mount")(c_text(source, "source"), c_text(target, "path"), c_text(fstype, "fstype"), 0, None) != 0:
        _raise()


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    args = (checked(a, f"prctl argument {i}", "u64") for i, a in enumerate((arg2, arg3, arg4, arg5), 2))
    ret = int(_fn("prctl")(checked(option, "prctl option", "i32"), *args))
    if ret < 0:
        _raise()
    return ret


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2) for the calling thread (capabilities are per thread: call it before starting threads)."""
    effective, permitted, inheritable = (
        checked(v, f"{what} capabilities", "u64")
        for v, what in ((effective, "effective"), (permitted, "permitted"), (inheritable, "inheritable"))
    )
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
    if _fn("statfs")(c_text(path, "path"), buf) != 0:
        _raise()
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def mprotect(addr: int, length: int, prot: int) -> None:
    if _fn("mprotect")(addr, length, prot) != 0:
        _raise()
