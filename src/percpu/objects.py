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

import ctypes
import errno as _errno
import os
from typing import Any

from . import _libbpf
from .errors import AttachError, BpfError, LibbpfError, PercpuError, ProgramLoadError, from_errno
from .maps import Map
from .values import TypeSpec

__all__ = ["BpfObject", "Link", "Program"]

_LOG_SIZE = 1 << 20


class Link:
    """An attached program; :meth:`close` detaches it."""

    def __init__(self, lib: _libbpf.Libbpf, ptr: int, program: str) -> None:
        self._lib = lib
        self._ptr: int | None = ptr
        self.program = program

    @property
    def fd(self) -> int:
        if self._ptr is None:
            raise PercpuError(f"link of {self.program} is closed")
        return int(self._lib.fn("bpf_link__fd")(self._ptr))

    def close(self) -> None:
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            self._lib.link_destroy(ptr)

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Link {self.program} {'closed' if self._ptr is None else 'attached'}>"


class Program:
    """One program of a :class:`BpfObject`."""

    def __init__(self, obj: BpfObject, ptr: int) -> None:
        self._obj = obj
        self._ptr = ptr
        self.name = obj._lib.program_name(ptr)
        self.section = obj._lib.program_section(ptr)

    @property
    def autoload(self) -> bool:
        return bool(self._obj._lib.fn("bpf_program__autoload")(self._ptr))

    @autoload.setter
    def autoload(self, on: bool) -> None:
        if self._obj.loaded:
            raise PercpuError(f"program {self.name}: autoload can only change before load()")
        self._obj._lib.program_set_autoload(self._ptr, on)

    @property
    def fd(self) -> int:
        try:
            return self._obj._lib.program_fd(self._ptr)
        except OSError as exc:
            raise PercpuError(f"program {self.name} is not loaded") from exc

    def info(self) -> _libbpf.ProgInfo:
        """Kernel info, including run count and run time when ``kernel.bpf_stats_enabled`` is on."""
        try:
            return self._obj._lib.prog_info(self.fd)
        except OSError as exc:
            raise from_errno(exc.errno or 0, f"info of program {self.name}") from exc

    def attach(self) -> Link:
        """Attach at the hook its section names (``tp_btf/sys_enter``, ``raw_tp/...``, ...)."""
        lib = self._obj._lib
        lib.messages.clear()
        try:
            ptr = lib.program_attach(self._ptr)
        except OSError as exc:
            detail = "; ".join(m for m in lib.messages if m)[-400:]
            err = from_errno(exc.errno or 0, f"attach {self.name} ({self.section})")
            raise AttachError(f"{err}{': ' + detail if detail else ''}", errno=exc.errno) from exc
        link = Link(lib, ptr, self.name)
        self._obj._links.append(link)
        return link

    def __repr__(self) -> str:
        return f"<Program {self.name} ({self.section})>"


class BpfObject:
    """A compiled BPF object file, opened through libbpf. See the module docstring for its states."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lib = _libbpf.libbpf()
        if not os.path.exists(self.path):
            raise PercpuError(f"no BPF object at {self.path}")
        self._log = ctypes.create_string_buffer(_LOG_SIZE)
        try:
            self._obj: int | None = self._lib.object_open(self.path, self._log)
        except OSError as exc:
            detail = "; ".join(self._lib.messages)[-400:]
            raise BpfError(
                f"cannot open BPF object {self.path}: {os.strerror(exc.errno or 0)}"
                f"{': ' + detail if detail else ''}",
                errno=exc.errno,
            ) from exc
        self.loaded = False
        self._links: list[Link] = []
        self.programs: dict[str, Program] = {
            p.name: p for p in (Program(self, ptr) for ptr in self._lib.object_programs(self._obj))
        }
        self._maps: dict[str, int] = {self._lib.map_name(m): m for m in self._lib.object_maps(self._obj)}

    # --- before load --------------------------------------------------------------------------------

    @property
    def _handle(self) -> int:
        if self._obj is None:
            raise PercpuError(f"BPF object {self.path} is closed")
        return self._obj

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

    def rodata(self) -> memoryview:
        """The object's ``.rodata`` (``const volatile`` globals), writable until :meth:`load`.

        Values written here are constants to the verifier, which prunes code they disable.
        """
        if self.loaded:
            raise PercpuError(".rodata is frozen once the object is loaded")
        names = [n for n in self._maps if n.endswith(".rodata")]
        if not names:
            raise PercpuError(f"{os.path.basename(self.path)} has no .rodata section")
        addr, size = self._lib.map_initial_value(self._maps[names[0]])
        return memoryview((ctypes.c_char * size).from_address(addr)).cast("B")

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
        self.loaded = True
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
        return Map.from_fd(os.dup(self.map_fd(name)), key=key, value=value, **kw)

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
        for link in self._links:
            link.close()
        self._links.clear()
        obj, self._obj = self._obj, None
        if obj is not None:
            self._lib.object_close(obj)

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._obj is None else "loaded" if self.loaded else "opened"
        return f"<BpfObject {os.path.basename(self.path)} {state}>"


def load(path: str | os.PathLike[str]) -> BpfObject:
    """Open and load a ``.bpf.o`` in one step (for objects that need no configuration)."""
    obj = BpfObject(path)
    try:
        return obj.load()
    except BaseException:
        obj.close()
        raise


def bundled(name: str) -> str:
    """Path of a BPF object shipped inside the percpu package (``src/percpu/_bpf``)."""
    path = os.path.join(os.path.dirname(__file__), "_bpf", name)
    if not os.path.exists(path):
        raise LibbpfError(f"the percpu package lacks {name}; reinstall percpu (or run scripts/build-bpf)")
    return path
