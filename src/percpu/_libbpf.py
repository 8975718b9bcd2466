"""The one module that talks to libbpf (``libbpf.so.1``) and through it to the bpf() syscall.

Nothing else in percpu declares ctypes prototypes for libbpf. Everything above this layer calls a
:class:`Libbpf` object, reached through :func:`backend`; unit tests swap in a fake with :func:`use_backend`.

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
* Failures raise :class:`OSError` with the kernel's errno. The layer above translates them once, with
  :func:`percpu.errors.from_errno`, adding the map's name. ENOENT that means "end of iteration" is not an
  error here: it is a return value.
* libbpf is loaded on first use, never at import time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, NamedTuple, Protocol, TypeVar

import numpy as np

from . import _fork
from ._libc import c_text, checked
from ._uapi import (
    BPF_ANY,
    BPF_EXIST,
    BPF_F_ALL_CPUS,
    BPF_F_CPU,
    BPF_F_TEST_RUN_ON_CPU,
    BPF_NOEXIST,
    BpfBtfInfo,
    BpfInsn,
    BpfMapInfo,
    BpfProgInfo,
    BtfLoadOpts,
    MapBatchOpts,
    MapCreateOpts,
    ObjectOpenOpts,
    TestRunOpts,
)
from .errors import LibbpfError
from .layout import Layout, alloc

__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_F_ALL_CPUS",
    "BPF_F_CPU",
    "BPF_NOEXIST",
    "Backend",
    "Libbpf",
    "MapInfo",
    "ProgInfo",
    "backend",
    "c_text",
    "checked",
    "use_backend",
]

MIN_LIBBPF = (1, 0)


class MapInfo(NamedTuple):
    """What the kernel says about a map (``struct bpf_map_info``)."""

    id: int
    type: int
    name: str
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    btf_id: int
    btf_key_type_id: int
    btf_value_type_id: int
    map_extra: int


class ProgInfo(NamedTuple):
    """The parts of ``struct bpf_prog_info`` percpu uses."""

    id: int
    type: int
    name: str
    tag: str
    run_time_ns: int
    run_cnt: int
    recursion_misses: int  # runs the kernel skipped: the program was already running on that CPU
    map_ids: tuple[int, ...]
    btf_id: int


class Backend(Protocol):
    """What the layers above need from the kernel; :class:`Libbpf` is the real one."""

    def num_possible_cpus(self) -> int: ...
    def map_create(
        self,
        map_type: int,
        name: str,
        key_size: int,
        value_size: int,
        max_entries: int,
        flags: int = 0,
        btf_fd: int = 0,
        btf_key_type_id: int = 0,
        btf_value_type_id: int = 0,
    ) -> int: ...
    def btf_load(self, data: bytes) -> int: ...
    def map_get_fd_by_id(self, map_id: int) -> int: ...
    def map_get_next_id(self, start: int) -> int | None: ...
    def obj_get(self, path: str) -> int: ...
    def obj_pin(self, fd: int, path: str) -> None: ...
    def map_info(self, fd: int) -> MapInfo: ...
    def dup(self, fd: int) -> int: ...
    def close(self, fd: int) -> None: ...
    def map_lookup(
        self, fd: int, key: np.ndarray, value: np.ndarray, layout: Layout, flags: int = 0
    ) -> None: ...
    def map_update(
        self, fd: int, key: np.ndarray, value: np.ndarray, layout: Layout, flags: int = 0
    ) -> None: ...
    def map_delete(self, fd: int, key: np.ndarray, layout: Layout) -> None: ...
    def map_lookup_and_delete(
        self, fd: int, key: np.ndarray, value: np.ndarray, layout: Layout, flags: int = 0
    ) -> None: ...
    def map_get_next_key(
        self, fd: int, key: np.ndarray | None, next_key: np.ndarray, layout: Layout
    ) -> bool: ...
    def map_lookup_batch(
        self,
        fd: int,
        in_batch: np.ndarray | None,
        out_batch: np.ndarray,
        keys: np.ndarray,
        values: np.ndarray,
        count: int,
        layout: Layout,
        delete: bool = False,
        elem_flags: int = 0,
    ) -> tuple[int, bool]: ...
    def map_update_batch(
        self, fd: int, keys: np.ndarray, values: np.ndarray, count: int, layout: Layout, elem_flags: int = 0
    ) -> int: ...
    def map_delete_batch(self, fd: int, keys: np.ndarray, count: int, layout: Layout) -> int: ...


_P = ctypes.c_void_p
_I = ctypes.c_int
_U32 = ctypes.c_uint32
_U64 = ctypes.c_uint64
_SZ = ctypes.c_size_t
_S = ctypes.c_char_p
_BTF_LOG_BYTES = 1 << 16  # the kernel's BTF verifier log of a refused blob: its last line says why
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


class Libbpf:
    """ctypes binding to ``libbpf.so.1`` (libbpf >= 1.0, where calls return ``-errno``)."""

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

    # --- maps: lifetime -------------------------------------------------------------------------------

    def map_create(
        self,
        map_type: int,
        name: str,
        key_size: int,
        value_size: int,
        max_entries: int,
        flags: int = 0,
        btf_fd: int = 0,
        btf_key_type_id: int = 0,
        btf_value_type_id: int = 0,
    ) -> int:
        opts = MapCreateOpts(sz=ctypes.sizeof(MapCreateOpts), map_flags=checked(flags, "map flags"))
        if btf_fd:
            opts.btf_fd = checked(btf_fd, "BTF fd", "fd")
            opts.btf_key_type_id = checked(btf_key_type_id, "BTF key type id")
            opts.btf_value_type_id = checked(btf_value_type_id, "BTF value type id")
        cname = c_text(name, "map name", limit=15) if name else None
        return _check(
            self.fn("bpf_map_create")(
                checked(map_type, "map type", "i32"),
                cname,
                checked(key_size, "key size"),
                checked(value_size, "value size"),
                checked(max_entries, "max_entries"),
                ctypes.byref(opts),
            )
        )

    def btf_load(self, data: bytes) -> int:
        """Load a BTF blob into the kernel and return the BTF object's fd (a map created with it keeps
        its own reference). A refusal raises OSError whose text ends with the kernel's reason: its
        verifier log, asked for on a second attempt only, as libbpf does."""
        blob = alloc(len(data))
        blob[:] = np.frombuffer(data, dtype=np.uint8)
        opts = _struct(BtfLoadOpts)
        opts.sz = ctypes.sizeof(BtfLoadOpts)
        load = self.fn("bpf_btf_load")
        ret = int(load(_ptr(blob), len(data), ctypes.byref(opts)))
        if ret >= 0:
            return ret
        log = alloc(_BTF_LOG_BYTES)
        opts.log_buf = _ptr(log)
        opts.log_size = _BTF_LOG_BYTES
        opts.log_level = 1
        again = int(load(_ptr(blob), len(data), ctypes.byref(opts)))
        if again >= 0:
            return again
        lines = log.tobytes().split(b"\0", 1)[0].decode(errors="replace").strip().splitlines()
        why = os.strerror(-ret)
        raise OSError(-ret, f"{why}: {lines[-1].strip()}" if lines else why)

    def map_get_fd_by_id(self, map_id: int) -> int:
        return _check(self.fn("bpf_map_get_fd_by_id")(checked(map_id, "map id")))

    def map_get_next_id(self, start: int) -> int | None:
        out = _U32(0)
        ret = self.fn("bpf_map_get_next_id")(checked(start, "map id"), ctypes.byref(out))
        if ret == -_errno.ENOENT:
            return None
        _check(ret)
        return int(out.value)

    def btf_get_fd_by_id(self, btf_id: int) -> int:
        return _check(self.fn("bpf_btf_get_fd_by_id")(checked(btf_id, "BTF id")))

    def prog_get_fd_by_id(self, prog_id: int) -> int:
        """A fd for a loaded program (benchmarks/bench_syscalls.py reads other tools' programs' stats)."""
        return _check(self.fn("bpf_prog_get_fd_by_id")(checked(prog_id, "program id")))

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

    def map_info(self, fd: int) -> MapInfo:
        i = _struct(BpfMapInfo)
        self._info(fd, i)
        return MapInfo(
            id=i.id,
            type=i.type,
            name=i.name.decode(errors="replace"),
            key_size=i.key_size,
            value_size=i.value_size,
            max_entries=i.max_entries,
            flags=i.map_flags,
            btf_id=i.btf_id,
            btf_key_type_id=i.btf_key_type_id,
            btf_value_type_id=i.btf_value_type_id,
            map_extra=i.map_extra,
        )

    def prog_run_on_cpu(self, fd: int, cpu: int) -> int:
        """Run a raw_tp program once on ``cpu`` (BPF_PROG_TEST_RUN, Linux 5.10: an interrupt on that CPU
        when it is not this thread's) and return its return value. ENXIO: the CPU is offline."""
        opts = _struct(TestRunOpts)
        opts.sz = ctypes.sizeof(TestRunOpts)
        opts.flags = BPF_F_TEST_RUN_ON_CPU
        opts.cpu = checked(cpu, "cpu")
        _check(self.fn("bpf_prog_test_run_opts")(checked(fd, "fd", "fd"), ctypes.byref(opts)))
        return int(opts.retval)

    def prog_recursion_misses(self, fd: int) -> int:
        """Runs of the program the kernel skipped (one info call, without the map ids prog_info asks)."""
        i = _struct(BpfProgInfo)
        self._info(fd, i)
        return int(i.recursion_misses)

    def prog_info(self, fd: int) -> ProgInfo:
        i = _struct(BpfProgInfo)
        self._info(fd, i)
        n = i.nr_map_ids
        ids = alloc(4 * n).view(np.uint32)
        if n:
            j = _struct(BpfProgInfo)
            j.nr_map_ids = n
            j.map_ids = ids.ctypes.data
            self._info(fd, j)
            i = j
        return ProgInfo(
            id=i.id,
            type=i.type,
            name=i.name.decode(errors="replace"),
            tag=bytes(i.tag).hex(),
            run_time_ns=i.run_time_ns,
            run_cnt=i.run_cnt,
            recursion_misses=i.recursion_misses,
            map_ids=tuple(int(x) for x in ids[: min(n, i.nr_map_ids)]),
            btf_id=i.btf_id,
        )

    def btf_raw(self, btf_id: int) -> bytes:
        """The raw BTF blob (header, types, strings) the kernel holds under ``btf_id``."""
        fd = self.btf_get_fd_by_id(btf_id)
        try:
            first = _struct(BpfBtfInfo)
            self._info(fd, first)
            data = alloc(first.btf_size)
            second = _struct(BpfBtfInfo)
            second.btf = data.ctypes.data
            second.btf_size = first.btf_size
            self._info(fd, second)
            return data[: min(second.btf_size, first.btf_size)].tobytes()
        finally:
            os.close(fd)

    def enable_stats(self) -> int:
        """Turn on run-time stats (BPF_STATS_RUN_TIME) for as long as the returned fd stays open."""
        return _check(self.fn("bpf_enable_stats")(0))

    # --- maps: elements -------------------------------------------------------------------------------

    def _sized(self, layout: Layout) -> Layout:
        """``layout``, refused unless its CPU count is the kernel's own: every size guard below then checks
        against what the kernel copies, whatever the caller believed."""
        if layout.percpu and layout.possible_cpus != self.num_possible_cpus():
            raise ValueError(
                f"layout for {layout.possible_cpus} possible CPUs; the kernel has {self.num_possible_cpus()}"
            )
        return layout

    def map_lookup(self, fd: int, key: np.ndarray, value: np.ndarray, layout: Layout, flags: int = 0) -> None:
        lay = self._sized(layout)
        _require_key(key, lay.key_size, "lookup")
        flags = checked(flags, "flags", "u64")
        _require(value, lay.value_bytes(flags), "lookup")
        _check(self.fn("bpf_map_lookup_elem_flags")(checked(fd, "fd", "fd"), _ptr(key), _ptr(value), flags))

    def map_update(self, fd: int, key: np.ndarray, value: np.ndarray, layout: Layout, flags: int = 0) -> None:
        lay = self._sized(layout)
        _require_key(key, lay.key_size, "update")
        flags = checked(flags, "flags", "u64")
        need = lay.value_bytes(flags)
        if value.nbytes < need:
            raise ValueError(f"update: value buffer of {value.nbytes} bytes, the kernel reads {need}")
        _check(self.fn("bpf_map_update_elem")(checked(fd, "fd", "fd"), _ptr(key), _ptr(value), flags))

    def map_delete(self, fd: int, key: np.ndarray, layout: Layout) -> None:
        _require_key(key, layout.key_size, "delete")
        _check(self.fn("bpf_map_delete_elem")(checked(fd, "fd", "fd"), _ptr(key)))

    def map_lookup_and_delete(
        self, fd: int, key: np.ndarray, value: np.ndarray, layout: Layout, flags: int = 0
    ) -> None:
        lay = self._sized(layout)
        _require_key(key, lay.key_size, "lookup_and_delete")
        flags = checked(flags, "flags", "u64")
        _require(value, lay.value_bytes(flags), "lookup_and_delete")
        _check(
            self.fn("bpf_map_lookup_and_delete_elem_flags")(
                checked(fd, "fd", "fd"), _ptr(key), _ptr(value), flags
            )
        )

    def map_get_next_key(self, fd: int, key: np.ndarray | None, next_key: np.ndarray, layout: Layout) -> bool:
        if key is not None:
            _require_key(key, layout.key_size, "get_next_key")
        _require(next_key, layout.key_size, "get_next_key next_key")
        ret = self.fn("bpf_map_get_next_key")(checked(fd, "fd", "fd"), _ptr(key), _ptr(next_key))
        if ret == -_errno.ENOENT:
            return False
        _check(ret)
        return True

    def map_lookup_batch(
        self,
        fd: int,
        in_batch: np.ndarray | None,
        out_batch: np.ndarray,
        keys: np.ndarray,
        values: np.ndarray,
        count: int,
        layout: Layout,
        delete: bool = False,
        elem_flags: int = 0,
    ) -> tuple[int, bool]:
        """One batch call. Returns (elements read, reached the end).

        ``out_batch`` receives the kernel's position token (a u32 bucket index for hashes, a key for
        arrays); ``in_batch`` is the previous call's.
        """
        lay = self._sized(layout)
        fd = checked(fd, "fd", "fd")
        count = checked(count, "count")
        elem_flags = checked(elem_flags, "elem_flags", "u64")
        _require(values, lay.values_bytes(count, elem_flags), "lookup_batch values")
        _require(keys, lay.keys_bytes(count), "lookup_batch keys")
        _require(out_batch, lay.token_bytes, "lookup_batch out_batch")
        if in_batch is not None:
            _require_key(in_batch, lay.token_bytes, "lookup_batch in_batch")
        n = _U32(count)
        opts = MapBatchOpts(sz=ctypes.sizeof(MapBatchOpts), elem_flags=elem_flags)
        name = "bpf_map_lookup_and_delete_batch" if delete else "bpf_map_lookup_batch"
        ret = self.fn(name)(
            fd, _ptr(in_batch), _ptr(out_batch), _ptr(keys), _ptr(values), ctypes.byref(n), ctypes.byref(opts)
        )
        if ret == -_errno.ENOENT:
            return int(n.value), True
        _check(ret)
        return int(n.value), False

    def map_update_batch(
        self, fd: int, keys: np.ndarray, values: np.ndarray, count: int, layout: Layout, elem_flags: int = 0
    ) -> int:
        lay = self._sized(layout)
        fd = checked(fd, "fd", "fd")
        count = checked(count, "count")
        elem_flags = checked(elem_flags, "elem_flags", "u64")
        _require_key(keys, lay.keys_bytes(count), "update_batch keys")
        if values.nbytes < lay.values_bytes(count, elem_flags):
            raise ValueError("update_batch: value buffer smaller than the kernel reads")
        n = _U32(count)
        opts = MapBatchOpts(sz=ctypes.sizeof(MapBatchOpts), elem_flags=elem_flags)
        ret = self.fn("bpf_map_update_batch")(
            fd, _ptr(keys), _ptr(values), ctypes.byref(n), ctypes.byref(opts)
        )
        if ret < 0:
            raise PartialBatch(-ret, int(n.value))
        return int(n.value)

    def map_delete_batch(self, fd: int, keys: np.ndarray, count: int, layout: Layout) -> int:
        fd = checked(fd, "fd", "fd")
        count = checked(count, "count")
        _require_key(keys, layout.keys_bytes(count), "delete_batch keys")
        n = _U32(count)
        opts = MapBatchOpts(sz=ctypes.sizeof(MapBatchOpts))
        ret = self.fn("bpf_map_delete_batch")(fd, _ptr(keys), ctypes.byref(n), ctypes.byref(opts))
        if ret < 0:
            raise PartialBatch(-ret, int(n.value))
        return int(n.value)

    # --- probes ---------------------------------------------------------------------------------------

    def probe_map_type(self, map_type: int) -> bool:
        ret = int(self.fn("libbpf_probe_bpf_map_type")(checked(map_type, "map type", "i32"), None))
        if ret < 0:
            raise OSError(-ret, os.strerror(-ret))
        return ret == 1

    def probe_helper(self, prog_type: int, helper_id: int) -> bool:
        """Whether programs of ``prog_type`` may call BPF helper ``helper_id`` on this kernel."""
        ret = int(
            self.fn("libbpf_probe_bpf_helper")(
                checked(prog_type, "program type", "i32"), checked(helper_id, "helper id", "i32"), None
            )
        )
        if ret < 0:
            raise OSError(-ret, os.strerror(-ret))
        return ret == 1

    # --- programs from raw instructions (tests, probes) ---------------------------------------------

    def prog_load_insns(self, prog_type: int, name: str, insns: list[tuple[int, int, int, int]]) -> int:
        """Load a program given as (code, regs, off, imm) tuples; used for probes and tests."""
        mem = alloc(ctypes.sizeof(BpfInsn) * len(insns))
        arr = (BpfInsn * len(insns)).from_buffer(mem.data)
        for slot, (c, r, o, i) in zip(arr, insns, strict=True):
            regs = checked(r, "instruction registers", "u8")
            slot.code = checked(c, "instruction code", "u8")
            slot.dst_reg, slot.src_reg = regs & 0xF, regs >> 4
            slot.off = checked(o, "instruction offset", "i16")
            slot.imm = checked(i, "instruction immediate", "i32")
        return _check(
            self.fn("bpf_prog_load")(
                checked(prog_type, "program type", "i32"),
                c_text(name, "program name", limit=15),
                b"GPL",
                ctypes.addressof(arr),
                len(insns),
                None,
            )
        )

    def prog_attach(self, prog_fd: int, target_fd: int, attach_type: int) -> None:
        _check(
            self.fn("bpf_prog_attach")(
                checked(prog_fd, "program fd", "fd"),
                checked(target_fd, "target fd", "fd"),
                checked(attach_type, "attach type", "i32"),
                0,
            )
        )

    def prog_detach(self, prog_fd: int, target_fd: int, attach_type: int) -> None:
        _check(
            self.fn("bpf_prog_detach2")(
                checked(prog_fd, "program fd", "fd"),
                checked(target_fd, "target fd", "fd"),
                checked(attach_type, "attach type", "i32"),
            )
        )

    # --- objects (bpf_object__*) ---------------------------------------------------------------------

    def object_open(self, path: str, log_buf: ctypes.Array[ctypes.c_char]) -> int:
        opts = ObjectOpenOpts(
            sz=ctypes.sizeof(ObjectOpenOpts),
            kernel_log_buf=ctypes.cast(log_buf, ctypes.c_char_p),
            kernel_log_size=len(log_buf),
            kernel_log_level=0,  # libbpf retries a failed load with level 1 into this buffer
        )
        ctypes.set_errno(0)
        obj = self.fn("bpf_object__open_file")(c_text(path, "path"), ctypes.byref(opts))
        if not obj:
            err = ctypes.get_errno() or _errno.EINVAL
            raise OSError(err, os.strerror(err))
        return int(obj)

    def object_load(self, obj: int) -> None:
        _check(self.fn("bpf_object__load")(obj))

    def object_close(self, obj: int) -> None:
        self.fn("bpf_object__close")(obj)

    def object_maps(self, obj: int) -> Iterator[int]:
        m = self.fn("bpf_object__next_map")(obj, None)
        while m:
            yield int(m)
            m = self.fn("bpf_object__next_map")(obj, m)

    def object_programs(self, obj: int) -> Iterator[int]:
        p = self.fn("bpf_object__next_program")(obj, None)
        while p:
            yield int(p)
            p = self.fn("bpf_object__next_program")(obj, p)

    def map_name(self, m: int) -> str:
        return bytes(self.fn("bpf_map__name")(m) or b"").decode()

    def map_fd(self, m: int) -> int:
        return _check(self.fn("bpf_map__fd")(m))

    def map_set_max_entries(self, m: int, n: int) -> None:
        _check(self.fn("bpf_map__set_max_entries")(m, checked(n, "max_entries")))

    def map_set_autocreate(self, m: int, on: bool) -> None:
        # libbpf (1.1+) turns a loaded program's references to a map it did not create into a call that
        # fails verification if reached: code the verifier finds dead may name such a map.
        _check(self.fn("bpf_map__set_autocreate")(m, on))

    def map_initial_value(self, m: int) -> tuple[int, int]:
        """(address, size) of a global-data map's contents before load, e.g. .rodata."""
        size = _SZ(0)
        p = self.fn("bpf_map__initial_value")(m, ctypes.byref(size))
        if not p:
            raise OSError(_errno.EINVAL, "map has no initial value")
        return int(p), int(size.value)

    def program_name(self, p: int) -> str:
        return bytes(self.fn("bpf_program__name")(p) or b"").decode()

    def program_section(self, p: int) -> str:
        return bytes(self.fn("bpf_program__section_name")(p) or b"").decode()

    def program_set_autoload(self, p: int, on: bool) -> None:
        _check(self.fn("bpf_program__set_autoload")(p, on))

    def program_fd(self, p: int) -> int:
        return _check(self.fn("bpf_program__fd")(p))

    def program_attach(self, p: int) -> int:
        ctypes.set_errno(0)
        link = self.fn("bpf_program__attach")(p)
        if not link:
            err = ctypes.get_errno() or _errno.EINVAL
            raise OSError(err, os.strerror(err))
        return int(link)

    def link_destroy(self, link: int) -> None:
        self.fn("bpf_link__destroy")(link)


class PartialBatch(OSError):
    """A batch update/delete failed after ``done`` elements went through."""

    def __init__(self, err: int, done: int) -> None:
        super().__init__(err, os.strerror(err))
        self.done = done


_backend: Backend | None = None
_backend_lock = threading.Lock()


@_fork.at_fork_in_child
def _renew_locks() -> None:
    global _backend_lock, _print_lock  # noqa: PLW0603 - a thread holding one at fork() is not in the child
    _backend_lock = threading.Lock()
    _print_lock = threading.Lock()


def backend() -> Backend:
    """The kernel seam in use: the real libbpf unless a test installed a fake with :func:`use_backend`."""
    global _backend  # noqa: PLW0603 - a process-wide seam, like a logging handler
    if _backend is None:
        _fork.install()  # the kernel's first use: from now on a fork renews the locks of every layer
        with _backend_lock:
            if _backend is None:
                _backend = Libbpf()
    return _backend


def libbpf() -> Libbpf:
    """The real binding, for the layers that need libbpf itself (objects, programs, BTF)."""
    b = backend()
    if not isinstance(b, Libbpf):
        raise LibbpfError("this operation needs the real libbpf, not the test backend in use")
    return b


@contextmanager
def use_backend(fake: Backend) -> Iterator[Backend]:
    """Install ``fake`` as the kernel for a ``with`` block. Only :func:`percpu._machine.use` calls this:
    a kernel is installed with the machine it belongs to, so its CPU count and CPU lists agree."""
    global _backend  # noqa: PLW0603
    _fork.install()
    with _backend_lock:
        old, _backend = _backend, fake
    try:
        yield fake
    finally:
        with _backend_lock:
            _backend = old
