"""Compiled BPF objects (``.bpf.o``): open, configure, load, attach, and their maps as typed classes.

This is the layer above maps: it uses libbpf's ``bpf_object__*`` API through the binding module. A
:class:`BpfObject` goes through three states, in order:

1. *opened*: programs and maps are known but nothing is in the kernel; set autoload, map sizes and
   read-only configuration (``.rodata``) now;
2. *loaded*: the verifier accepted the programs; maps exist and can be opened as typed classes;
3. programs *attached* through :class:`Link` objects, each closed on its own.

Everything is a context manager; closing the object destroys its links and releases its maps' file
descriptors (a :class:`~percpu.maps.Map` handed out by :meth:`BpfObject.map` holds its own duplicate).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as _errno
import os
import threading
import weakref
from typing import Any, NoReturn

from . import _fork, _libbpf, _machine
from .errors import (
    AttachError,
    BpfError,
    LibbpfError,
    NotCopyable,
    PercpuError,
    ProgramLoadError,
    from_errno,
)
from .layout import alloc
from .maps import Map
from .values import TypeSpec

__all__ = ["BpfObject", "Link", "Program", "Rodata", "Uncopyable"]

_LOG_SIZE = 1 << 20


class _State:
    """The libbpf handles of one :class:`BpfObject`, apart from the object itself, so that a finalizer, a
    fork handler, its programs and its links can use them without keeping the object alive.

    ``lock`` is held while libbpf memory of the object is used; :meth:`release` takes it too, so a close
    in one thread waits for a reader in another, and everything after it sees ``obj`` is None.
    """

    def __init__(self, lib: _libbpf.Libbpf, obj: int, path: str) -> None:
        self.lib = lib
        self.obj: int | None = obj
        self.path = path
        self.loaded = False
        self.links: dict[int, str] = {}  # bpf_link pointer -> program name
        self.lock = threading.RLock()
        self.pid = os.getpid()

    def handle(self) -> int:
        if self.obj is None:
            raise PercpuError(f"BPF object {self.path} is closed")
        return self.obj

    def release(self) -> None:
        """Detach every link and close the object (idempotent; the finalizer of a dropped object)."""
        with self.lock:
            links, self.links = self.links, {}
            for ptr in links:
                self.lib.link_destroy(ptr)
            obj, self.obj = self.obj, None
            if obj is not None:
                self.lib.object_close(obj)

    def _after_fork_in_child(self) -> None:
        """In a child forked without exec: close the child's copies of the link fds, so the programs stay
        attached only as long as the parent wants them. libbpf's link structures are left alone: destroying
        a perf-event link disables the event, which the parent shares. The lock is the child's own: a
        thread that held it at fork() is not in the child, and would have left it held for good."""
        self.lock = threading.RLock()
        for ptr in self.links:
            with contextlib.suppress(OSError):
                os.close(int(self.lib.fn("bpf_link__fd")(ptr)))
        self.links = {}
        self.pid = os.getpid()


class Uncopyable:
    """One owner: ``copy.copy``, ``copy.deepcopy`` and pickling raise :meth:`_refuse`'s error, which says
    what to do instead (a shallow copy of an owner of libbpf's objects was a second owner that closed the
    original's)."""

    def _refuse(self) -> NotCopyable:
        raise NotImplementedError

    def __copy__(self) -> NoReturn:
        raise self._refuse()

    def __deepcopy__(self, memo: dict[int, Any]) -> NoReturn:
        raise self._refuse()

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise self._refuse()


class _Uncopyable(Uncopyable):
    """libbpf has no way to duplicate an object, a program or a link, and their fds and pointers mean
    nothing in another process: copies and pickles are refused, with what to do instead."""

    def _described(self) -> str:
        raise NotImplementedError

    def _refuse(self) -> NotCopyable:
        return NotCopyable(
            f"{self._described()} cannot be copied or pickled: libbpf cannot duplicate a BPF object, and "
            "its file descriptors mean nothing in another process. Share the object itself; hand out its "
            "maps with BpfObject.map(name) (each holds its own fd; Map.clone() gives another), and pin "
            "what another process needs (Map.pin(path), then percpu.open_map(path) there)"
        )


class Link(_Uncopyable):
    """An attached program; :meth:`close` detaches it."""

    def __init__(self, state: _State, ptr: int, program: str) -> None:
        self._state = state
        self._ptr = ptr
        self.program = program

    @property
    def attached(self) -> bool:
        return self._ptr in self._state.links

    @property
    def fd(self) -> int:
        with self._state.lock:
            if not self.attached:
                raise PercpuError(f"link of {self.program} is closed")
            return int(self._state.lib.fn("bpf_link__fd")(self._ptr))

    def close(self) -> None:
        with self._state.lock:
            if self._state.links.pop(self._ptr, None) is not None:
                self._state.lib.link_destroy(self._ptr)

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Link {self.program} {'attached' if self.attached else 'closed'}>"

    def _described(self) -> str:
        return f"the link of program {self.program} ({os.path.basename(self._state.path)})"


class Program(_Uncopyable):
    """One program of a :class:`BpfObject`. Once the object is closed every use raises
    :class:`PercpuError`: the program's libbpf memory is gone."""

    def __init__(self, state: _State, ptr: int) -> None:
        self._state = state
        self._ptr = ptr
        self.name = state.lib.program_name(ptr)
        self.section = state.lib.program_section(ptr)

    @property
    def autoload(self) -> bool:
        with self._state.lock:
            self._state.handle()
            return bool(self._state.lib.fn("bpf_program__autoload")(self._ptr))

    @autoload.setter
    def autoload(self, on: bool) -> None:
        with self._state.lock:
            self._state.handle()
            if self._state.loaded:
                raise PercpuError(f"program {self.name}: autoload can only change before load()")
            self._state.lib.program_set_autoload(self._ptr, on)

    @property
    def fd(self) -> int:
        with self._state.lock:
            self._state.handle()
            try:
                return self._state.lib.program_fd(self._ptr)
            except OSError as exc:
                raise PercpuError(f"program {self.name} is not loaded") from exc

    def info(self) -> _libbpf.ProgInfo:
        """Kernel info, including run count and run time when ``kernel.bpf_stats_enabled`` is on."""
        with self._state.lock:
            fd = self.fd
            try:
                return self._state.lib.prog_info(fd)
            except OSError as exc:
                raise from_errno(exc.errno or 0, f"info of program {self.name}") from exc

    def attach(self) -> Link:
        """Attach at the hook its section names (``tp_btf/sys_enter``, ``raw_tp/...``, ...)."""
        state = self._state
        lib = state.lib
        with state.lock:
            state.handle()
            lib.messages.clear()
            try:
                ptr = lib.program_attach(self._ptr)
            except OSError as exc:
                detail = "; ".join(m for m in lib.messages if m)[-400:]
                err = from_errno(exc.errno or 0, f"attach {self.name} ({self.section})")
                raise AttachError(f"{err}{': ' + detail if detail else ''}", errno=exc.errno) from exc
            state.links[ptr] = self.name
        return Link(state, ptr, self.name)

    def __repr__(self) -> str:
        return f"<Program {self.name} ({self.section})>"

    def _described(self) -> str:
        return f"program {self.name} of {os.path.basename(self._state.path)}"


class Rodata(_Uncopyable):
    """The object's ``.rodata`` as bytes, writable until the object is loaded. Every access checks that
    libbpf still holds that memory: after :meth:`BpfObject.load` or :meth:`BpfObject.close` it raises
    :class:`PercpuError` instead of touching memory libbpf froze or freed."""

    def __init__(self, state: _State, addr: int, size: int) -> None:
        self._state = state
        self._view = memoryview((ctypes.c_char * size).from_address(addr)).cast("B")

    def _live(self) -> memoryview:
        self._state.handle()
        if self._state.loaded:
            raise PercpuError(".rodata is frozen once the object is loaded")
        return self._view

    def __len__(self) -> int:
        return len(self._view)

    def __getitem__(self, i: Any) -> Any:
        with self._state.lock:
            got = self._live()[i]
            return bytes(got) if isinstance(got, memoryview) else got

    def __setitem__(self, i: Any, data: Any) -> None:
        with self._state.lock:
            self._live()[i] = data

    def tobytes(self) -> bytes:
        with self._state.lock:
            return self._live().tobytes()

    def _described(self) -> str:
        return f"the .rodata of {os.path.basename(self._state.path)} (read it with tobytes())"


class BpfObject(_Uncopyable):
    """A compiled BPF object file, opened through libbpf. See the module docstring for its states.

    Dropped without :meth:`close`, it is closed by its finalizer (links destroyed, object closed); a child
    forked without exec closes its copies of the link fds at once, so it never keeps programs attached.
    It cannot be copied or pickled (nor can its programs, links and ``.rodata``): libbpf cannot duplicate
    an object; its maps can be, see :meth:`map`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lib = _machine.current().libbpf()
        if not os.path.exists(self.path):
            raise PercpuError(f"no BPF object at {self.path}")
        self._log_mem = alloc(_LOG_SIZE)  # the kernel writes the verifier's log here
        self._log = (ctypes.c_char * _LOG_SIZE).from_buffer(self._log_mem.data)
        try:
            obj = self._lib.object_open(self.path, self._log)
        except OSError as exc:
            detail = "; ".join(self._lib.messages)[-400:]
            raise BpfError(
                f"cannot open BPF object {self.path}: {os.strerror(exc.errno or 0)}"
                f"{': ' + detail if detail else ''}",
                errno=exc.errno,
            ) from exc
        self._state = _State(self._lib, obj, self.path)
        self._finalizer = weakref.finalize(self, _State.release, self._state)
        _fork.track(self._state)
        self.programs: dict[str, Program] = {
            p.name: p for p in (Program(self._state, ptr) for ptr in self._lib.object_programs(obj))
        }
        self._maps: dict[str, int] = {self._lib.map_name(m): m for m in self._lib.object_maps(obj)}

    @property
    def loaded(self) -> bool:
        return self._state.loaded

    # --- before load --------------------------------------------------------------------------------

    @property
    def _handle(self) -> int:
        return self._state.handle()

    def _map_ptr(self, name: str) -> int:
        self._handle  # noqa: B018 - raises if closed
        try:
            return self._maps[name]
        except KeyError:
            raise PercpuError(
                f"{os.path.basename(self.path)} has no map {name!r} (maps: {', '.join(sorted(self._maps))})"
            ) from None

    @property
    def map_names(self) -> list[str]:
        return sorted(self._maps)

    def set_max_entries(self, name: str, n: int) -> None:
        if self.loaded:
            raise PercpuError("max_entries can only change before load()")
        try:
            self._lib.map_set_max_entries(self._map_ptr(name), n)
        except OSError as exc:
            raise from_errno(exc.errno or 0, f"set max_entries of {name}") from exc

    def set_autocreate(self, name: str, on: bool) -> None:
        """Whether load() creates map ``name``. A map left out must only be named by code the verifier
        finds dead (e.g. behind a .rodata switch), or the load fails."""
        if self.loaded:
            raise PercpuError("autocreate can only change before load()")
        try:
            self._lib.map_set_autocreate(self._map_ptr(name), on)
        except OSError as exc:
            raise from_errno(exc.errno or 0, f"set autocreate of {name}") from exc

    def rodata(self) -> Rodata:
        """The object's ``.rodata`` (``const volatile`` globals), writable until :meth:`load`.

        Values written here are constants to the verifier, which prunes code they disable.
        """
        with self._state.lock:
            self._handle  # noqa: B018 - raises if closed
            if self.loaded:
                raise PercpuError(".rodata is frozen once the object is loaded")
            names = [n for n in self._maps if n.endswith(".rodata")]
            if not names:
                raise PercpuError(f"{os.path.basename(self.path)} has no .rodata section")
            addr, size = self._lib.map_initial_value(self._maps[names[0]])
            return Rodata(self._state, addr, size)

    def set_rodata(self, data: bytes | ctypes.Structure, offset: int = 0) -> None:
        raw = bytes(data)
        view = self.rodata()
        if offset + len(raw) > len(view):
            raise PercpuError(
                f".rodata of {os.path.basename(self.path)} is {len(view)} bytes; "
                f"{len(raw)} bytes at offset {offset} do not fit"
            )
        view[offset : offset + len(raw)] = raw

    # --- load ---------------------------------------------------------------------------------------

    def load(self) -> BpfObject:
        """Load the programs whose autoload is on, and create the maps. Verifier errors carry the log."""
        self._lib.messages.clear()
        try:
            with self._state.lock:
                self._lib.object_load(self._handle)
        except OSError as exc:
            log = self._log.value.decode(errors="replace")
            libbpf_said = "\n".join(self._lib.messages)
            if exc.errno in (_errno.EPERM, _errno.EACCES) and not log:
                raise from_errno(exc.errno, f"load {os.path.basename(self.path)}") from exc
            tail = "\n".join(log.strip().splitlines()[-12:]) if log else libbpf_said[-1500:]
            raise ProgramLoadError(
                f"the kernel rejected {os.path.basename(self.path)}: {os.strerror(exc.errno or 0)}"
                + (f"\n{tail}" if tail else ""),
                log=log or libbpf_said,
                errno=exc.errno,
            ) from exc
        self._state.loaded = True
        return self

    # --- after load ---------------------------------------------------------------------------------

    def map_fd(self, name: str) -> int:
        """The object's own fd for map ``name`` (valid while the object is open)."""
        if not self.loaded:
            raise PercpuError(f"map {name}: the object is not loaded yet")
        try:
            return self._lib.map_fd(self._map_ptr(name))
        except OSError as exc:
            raise from_errno(exc.errno or 0, f"fd of map {name}") from exc

    def map(self, name: str, *, key: TypeSpec = None, value: TypeSpec = None, **kw: Any) -> Map:
        """Map ``name`` as its typed class (``PerCpuArray``, ``PerCpuHash``, ...), with its own fd."""
        fd = os.dup(self.map_fd(name))
        try:
            return Map.from_fd(fd, key=key, value=value, **kw)
        except BaseException:
            os.close(fd)  # from_fd leaves a refused fd to its caller
            raise

    def program(self, name: str) -> Program:
        try:
            return self.programs[name]
        except KeyError:
            raise PercpuError(
                f"{os.path.basename(self.path)} has no program {name!r} "
                f"(programs: {', '.join(sorted(self.programs))})"
            ) from None

    def attach(self, name: str) -> Link:
        return self.program(name).attach()

    def close(self) -> None:
        """Detach every program and close the object; its programs and .rodata are unusable after."""
        self._finalizer()

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._state.obj is None else "loaded" if self.loaded else "opened"
        return f"<BpfObject {os.path.basename(self.path)} {state}>"

    def _described(self) -> str:
        return f"BPF object {os.path.basename(self.path)}"


# The object sets shipped, by ``uname -m``: each its own directory under ``_bpf`` (scripts/build-bpf builds
# both from the same sources). BPF bytecode is the same everywhere; what differs is the register layout
# the syscall counter reads (struct pt_regs), fixed at compile time by __TARGET_ARCH_*.
_OBJECT_DIRS = {"x86_64": "", "amd64": "", "aarch64": "arm64", "arm64": "arm64"}


def bundled(name: str, machine: str | None = None) -> str:
    """Path of a BPF object shipped inside the percpu package for this machine's architecture
    (``src/percpu/_bpf`` for x86_64, ``src/percpu/_bpf/arm64`` for arm64), as the machine in use answers
    it; ``machine`` (a ``uname -m`` value) asks for another architecture's. Raises :class:`PercpuError` on
    an architecture percpu ships no objects for."""
    m = machine or _machine.current().architecture()
    sub = _OBJECT_DIRS.get(m)
    if sub is None:
        known = ", ".join(sorted({"x86_64", "aarch64"}))
        raise PercpuError(
            f"percpu ships BPF objects for {known} only, not for this {m!r} machine; build them from "
            "bpf/ with clang -target bpf -D__TARGET_ARCH_<arch> and pass the path "
            "(e.g. SyscallCounter(obj_path=...))"
        )
    path = os.path.join(os.path.dirname(__file__), "_bpf", sub, name)
    if not os.path.exists(path):
        raise LibbpfError(
            f"the percpu package lacks {sub + '/' if sub else ''}{name}; reinstall percpu "
            "(or run scripts/build-bpf)"
        )
    return path
