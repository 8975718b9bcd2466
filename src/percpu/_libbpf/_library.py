"""Loading ``libbpf.so.1``: the one table of the prototypes percpu declares for libbpf, the process-wide
print hook, the signals held back while libbpf may print, the checks every buffer passes before it reaches
C, and :class:`Library`, the loaded library with what every kind of BPF object shares (fds, pins, info).
The calls for maps (:mod:`._maps`) and for objects, programs and BTF (:mod:`._objects`) build on it."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import threading
from collections import deque
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

import numpy as np

from .. import _fork
from .._libc import c_text, checked
from .._uapi import BtfLoadOpts, MapBatchOpts, MapCreateOpts, ObjectOpenOpts, TestRunOpts
from ..errors import LibbpfError
from ..layout import alloc

MIN_LIBBPF = (1, 0)

_P = ctypes.c_void_p
_I = ctypes.c_int
_U32 = ctypes.c_uint32
_U64 = ctypes.c_uint64
_SZ = ctypes.c_size_t
_S = ctypes.c_char_p
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)

# name: (restype, argtypes). Kept in one table so the whole surface percpu uses is visible at a glance.
_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "libbpf_major_version": (_U32, []),
    "libbpf_minor_version": (_U32, []),
    "libbpf_version_string": (_S, []),
    "libbpf_num_possible_cpus": (_I, []),
    "libbpf_set_print": (_P, [_PRINT_FN]),
    "libbpf_probe_bpf_map_type": (_I, [_I, _P]),
    "libbpf_probe_bpf_helper": (_I, [_I, _I, _P]),
    "bpf_map_create": (_I, [_I, _S, _U32, _U32, _U32, ctypes.POINTER(MapCreateOpts)]),
    "bpf_map_lookup_elem_flags": (_I, [_I, _P, _P, _U64]),
    "bpf_map_update_elem": (_I, [_I, _P, _P, _U64]),
    "bpf_map_delete_elem": (_I, [_I, _P]),
    "bpf_map_lookup_and_delete_elem_flags": (_I, [_I, _P, _P, _U64]),
    "bpf_map_get_next_key": (_I, [_I, _P, _P]),
    "bpf_map_lookup_batch": (_I, [_I, _P, _P, _P, _P, ctypes.POINTER(_U32), ctypes.POINTER(MapBatchOpts)]),
    "bpf_map_lookup_and_delete_batch": (
        _I,
        [_I, _P, _P, _P, _P, ctypes.POINTER(_U32), ctypes.POINTER(MapBatchOpts)],
    ),
    "bpf_map_update_batch": (_I, [_I, _P, _P, ctypes.POINTER(_U32), ctypes.POINTER(MapBatchOpts)]),
    "bpf_map_delete_batch": (_I, [_I, _P, ctypes.POINTER(_U32), ctypes.POINTER(MapBatchOpts)]),
    "bpf_map_get_next_id": (_I, [_U32, ctypes.POINTER(_U32)]),
    "bpf_map_get_fd_by_id": (_I, [_U32]),
    "bpf_btf_get_fd_by_id": (_I, [_U32]),
    "bpf_prog_get_fd_by_id": (_I, [_U32]),
    "bpf_obj_get": (_I, [_S]),
    "bpf_obj_pin": (_I, [_I, _S]),
    "bpf_obj_get_info_by_fd": (_I, [_I, _P, ctypes.POINTER(_U32)]),
    "bpf_enable_stats": (_I, [_I]),
    "bpf_prog_test_run_opts": (_I, [_I, ctypes.POINTER(TestRunOpts)]),
    "bpf_prog_load": (_I, [_I, _S, _S, _P, _SZ, _P]),
    "bpf_prog_attach": (_I, [_I, _I, _I, _U32]),
    "bpf_prog_detach2": (_I, [_I, _I, _I]),
    "bpf_btf_load": (_I, [_P, _SZ, ctypes.POINTER(BtfLoadOpts)]),
    "bpf_object__open_file": (_P, [_S, ctypes.POINTER(ObjectOpenOpts)]),
    "bpf_object__load": (_I, [_P]),
    "bpf_object__close": (None, [_P]),
    "bpf_object__next_map": (_P, [_P, _P]),
    "bpf_object__next_program": (_P, [_P, _P]),
    "bpf_map__name": (_S, [_P]),
    "bpf_map__fd": (_I, [_P]),
    "bpf_map__set_max_entries": (_I, [_P, _U32]),
    "bpf_map__set_autocreate": (_I, [_P, ctypes.c_bool]),
    "bpf_map__max_entries": (_U32, [_P]),
    "bpf_map__initial_value": (_P, [_P, ctypes.POINTER(_SZ)]),
    "bpf_map__set_initial_value": (_I, [_P, _P, _SZ]),
    "bpf_program__name": (_S, [_P]),
    "bpf_program__section_name": (_S, [_P]),
    "bpf_program__set_autoload": (_I, [_P, ctypes.c_bool]),
    "bpf_program__autoload": (ctypes.c_bool, [_P]),
    "bpf_program__fd": (_I, [_P]),
    "bpf_program__attach": (_P, [_P]),
    "bpf_link__destroy": (_I, [_P]),
    "bpf_link__fd": (_I, [_P]),
}


# libbpf's print hook is process-wide: one thunk, created on first use and kept for the life of the
# process. A thunk per Libbpf instance would dangle once its instance was collected, and libbpf's next
# message would jump into freed memory.
_MESSAGES: deque[str] = deque(maxlen=200)
_print_lock = threading.Lock()
_print_thunk: Any = None
_vsnprintf: Any = None


def _on_print(level: int, fmt: bytes | None, args: int | None) -> int:
    if fmt is None or _vsnprintf is None:
        return 0
    buf = ctypes.create_string_buffer(1024)
    # On x86_64 and arm64 a va_list argument arrives as a pointer, which vsnprintf accepts as is.
    _vsnprintf(buf, len(buf), fmt, args)
    _MESSAGES.append(buf.value.decode(errors="replace").rstrip())
    return 0


def _install_print_hook(lib: ctypes.CDLL) -> None:
    global _print_thunk, _vsnprintf  # noqa: PLW0603 - one hook per process, as libbpf has
    with _print_lock:
        if _print_thunk is not None:
            return
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        vsnprintf = libc.vsnprintf
        vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        vsnprintf.restype = ctypes.c_int
        _vsnprintf = vsnprintf
        # libbpf prints warnings on stderr by default; keep them for error messages instead.
        _print_thunk = _PRINT_FN(_on_print)
        lib.libbpf_set_print(_print_thunk)


# Python runs a signal's handler at the next bytecode it executes, and while libbpf works that is the print
# hook above: the KeyboardInterrupt raised there is swallowed by ctypes ("Exception ignored on calling
# ctypes callback function"), so a Ctrl-C while programs load was lost. Around the calls that may print
# (libbpf.c's API, the names with "__", and the possible-CPU count; bpf.c's syscall wrappers and the
# probes print nothing) the handlers of these signals only note them; each is handed to its real handler
# once libbpf has returned, in the caller's frame.
_DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _may_print(name: str) -> bool:
    return "__" in name or name == "libbpf_num_possible_cpus"


def _signals_after(f: Any) -> Any:
    """``f`` (a libbpf function that may print) called with :data:`_DEFERRED_SIGNALS` held back until it
    returns."""

    def call(*args: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return f(*args)  # Python runs handlers in the main thread only: none can run in the hook here
        caught: list[int] = []
        held: dict[int, Callable[[int, FrameType | None], Any]] = {}
        for sig in _DEFERRED_SIGNALS:
            handler = signal.getsignal(sig)
            if callable(handler):  # SIG_DFL and SIG_IGN are the kernel's to act on
                held[sig] = handler
                signal.signal(sig, lambda signum, _frame: caught.append(signum))
        try:
            return f(*args)
        finally:
            for signum, real in held.items():
                signal.signal(signum, real)
            for signum in caught:
                held[signum](signum, None)

    return call


def _ptr(buf: np.ndarray | None) -> int | None:
    return None if buf is None else int(buf.ctypes.data)


def _require(buf: np.ndarray, need: int, what: str) -> None:
    if not buf.flags.c_contiguous or not buf.flags.writeable:
        raise ValueError(f"{what}: buffer must be C-contiguous and writable")
    if buf.nbytes < need:
        # A bug in percpu, never user input: the layer above sizes every buffer from the map's info.
        raise ValueError(f"{what}: buffer of {buf.nbytes} bytes, the kernel writes {need}")


_T = TypeVar("_T", bound=ctypes.Structure)


def _struct(cls: type[_T]) -> _T:
    """A zeroed ``cls`` the kernel writes into, in memory from :func:`percpu.layout.alloc` (guard pages
    in the proof mode)."""
    return cls.from_buffer(alloc(ctypes.sizeof(cls)).data)


def _require_key(buf: np.ndarray, need: int, what: str) -> None:
    """Buffers the kernel only reads (keys, tokens): at least ``need`` bytes, contiguous."""
    if not buf.flags.c_contiguous:
        raise ValueError(f"{what}: buffer must be C-contiguous")
    if buf.nbytes < need:
        raise ValueError(f"{what}: key buffer of {buf.nbytes} bytes, the kernel reads {need}")


def _check(ret: int) -> int:
    if ret < 0:
        raise OSError(-ret, os.strerror(-ret))
    return ret


@_fork.at_fork_in_child
def _renew_lock() -> None:
    global _print_lock  # noqa: PLW0603 - a thread holding it at fork() is not in the child
    _print_lock = threading.Lock()


class Library:
    """``libbpf.so.1`` loaded (libbpf >= 1.0, where calls return ``-errno``), its prototypes set, with
    the calls every kind of BPF object shares."""

    def __init__(self, path: str | None = None) -> None:
        name = path or "libbpf.so.1"
        try:
            self._lib = ctypes.CDLL(name, use_errno=True)
        except OSError as exc:
            raise LibbpfError(
                f"cannot load {name}: {exc}. Install libbpf 1.0 or newer "
                "(Debian/Ubuntu: apt-get install libbpf1; Fedora: dnf install libbpf)"
            ) from exc
        for fn, (restype, argtypes) in _PROTOTYPES.items():
            f = getattr(self._lib, fn, None)
            if f is None:
                continue  # checked on use, so an older libbpf still serves what it has
            f.restype = restype
            f.argtypes = argtypes
        if not hasattr(self._lib, "libbpf_major_version"):
            raise LibbpfError(f"{name} is older than libbpf 0.6; percpu needs libbpf 1.0 or newer")
        self.version = (int(self._lib.libbpf_major_version()), int(self._lib.libbpf_minor_version()))
        if self.version < MIN_LIBBPF:
            raise LibbpfError(
                f"{name} is libbpf {self.version[0]}.{self.version[1]}; percpu needs 1.0 or newer "
                "(Debian bookworm and Ubuntu 22.10+ ship it as libbpf1)"
            )
        self.path = name
        self._possible: int | None = None
        # Shared by every instance: libbpf has one print hook per process (see _install_print_hook).
        self.messages = _MESSAGES
        _install_print_hook(self._lib)

    def fn(self, name: str) -> Any:
        f = getattr(self._lib, name, None)
        if f is None:
            raise LibbpfError(
                f"{self.path} (libbpf {self.version[0]}.{self.version[1]}) lacks {name}; upgrade libbpf"
            )
        return _signals_after(f) if _may_print(name) else f

    @property
    def version_string(self) -> str:
        s = self.fn("libbpf_version_string")()
        return s.decode() if s else f"v{self.version[0]}.{self.version[1]}"

    # --- topology -------------------------------------------------------------------------------------

    def num_possible_cpus(self) -> int:
        """The kernel's own count of possible CPUs: what sizes every per-CPU buffer."""
        if self._possible is None:
            self._possible = _check(int(self.fn("libbpf_num_possible_cpus")()))
        return self._possible

    # --- any BPF object's fd ------------------------------------------------------------------------

    def obj_get(self, path: str) -> int:
        return _check(self.fn("bpf_obj_get")(c_text(path, "path")))

    def obj_pin(self, fd: int, path: str) -> None:
        _check(self.fn("bpf_obj_pin")(checked(fd, "fd", "fd"), c_text(path, "path")))

    def dup(self, fd: int) -> int:
        """Another fd on the same kernel object, close-on-exec (Python's fds are never inherited)."""
        return os.dup(checked(fd, "fd", "fd"))

    def close(self, fd: int) -> None:
        os.close(fd)

    def _info(self, fd: int, info: ctypes.Structure) -> None:
        size = _U32(ctypes.sizeof(info))
        _check(
            self.fn("bpf_obj_get_info_by_fd")(checked(fd, "fd", "fd"), ctypes.byref(info), ctypes.byref(size))
        )
