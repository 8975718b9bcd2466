"""``Map``: construction from an fd, id, pin or name; lifetime; encoding; element operations. The kernel
is called through the map's :class:`~percpu.maps._handle.MapHandle`; whole-map reads are
:class:`~percpu.maps._bulk.BulkReader`'s, batch writes :class:`~percpu.maps._batch.BatchWriter`'s."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, ClassVar, TypeVar

import numpy as np

from .. import _machine, features
from .._libbpf import BPF_ANY, MapInfo, c_text, checked
from ..cpus import CpuList, possible_cpus
from ..errors import KeyNotFound, MapTypeError, NotCopyable, NotSupported
from ..layout import Layout
from ..values import Codec, TypeSpec, check_size, codec_for
from . import _open
from ._batch import BatchWriter
from ._bulk import BulkReader, walk_items, walk_keys
from ._encoding import Encoding, btf_codec
from ._errors import Op, label, no_delete
from ._handle import MapHandle
from ._kinds import MapType, Snapshot, memory_bytes
from ._system import check_pin_target

M = TypeVar("M", bound="Map")

# map type -> the class that opens it; the typed subclasses register themselves (``_types``).
_CLASS_BY_TYPE: dict[int, type[Map]] = {}


def register(*classes: type[Map]) -> None:
    """Make ``classes`` the ones :func:`open_map` and ``Map.from_*`` pick for their map types."""
    for cls in classes:
        for t in cls.map_types:
            _CLASS_BY_TYPE[t] = cls


def cpu_flag_supported() -> bool:
    """Whether the kernel takes BPF_F_CPU (one CPU's value) on per-CPU maps: see
    :func:`percpu.features.cpu_flag`. Raises :class:`PermissionDenied` without the privilege to probe."""
    return features.cpu_flag(strict=True)


class Map:
    """A BPF map opened by file descriptor. Use the typed subclasses, or :func:`open_map` to pick one.

    ``key`` and ``value`` declare the element types (numpy dtype, ctypes type, :class:`~percpu.Int`,
    ``bytes``); a declared type whose size differs from the map's raises :class:`SizeMismatch` before any
    syscall. A map is a context manager; :meth:`close` releases its file descriptor. Closing is safe
    against operations running in other threads: they finish first, and later ones raise
    :class:`PercpuError`.

    ``copy.copy`` and ``copy.deepcopy`` give :meth:`clone`: another handle, with its own file descriptor,
    on the same kernel map. A map cannot be pickled (its fd means nothing in another process): pickle
    ``info.id`` or a pin path and reopen it there with :func:`open_map`. A child forked while another
    thread was inside a call on the map finds the map usable, with a lock of its own.

    ``handle`` (:class:`~percpu.maps._handle.MapHandle`) holds the fd, its lock and the kernel, and is
    what calls the kernel; ``enc`` (:class:`~percpu.maps._encoding.Encoding`) turns keys and values into
    the buffers ``layout`` sizes and back.
    """

    map_types: ClassVar[tuple[MapType, ...]] = ()
    percpu: ClassVar[bool] = False

    def __init__(self, fd: int, info: MapInfo, *, key: TypeSpec = None, value: TypeSpec = None) -> None:
        self.info = info
        self.name = info.name
        self.type = MapType(info.type) if info.type in MapType._value2member_map_ else info.type
        self.key_codec: Codec = self._key_codec(key)
        self.value_codec: Codec = self._value_codec(value)
        check_size(self.key_codec, info.key_size, "key", info.name)
        check_size(self.value_codec, info.value_size, "value", info.name)
        # Sizes follow the kernel's own possible-CPU count; the CPU ids naming the slots must agree with it.
        machine = _machine.current()
        self.cpus = possible_cpus() if self.percpu else CpuList(())
        self.layout = Layout(info.key_size, info.value_size, machine.num_possible_cpus(), self.percpu)
        self.enc = Encoding(info.name, self.key_codec, self.value_codec, self.layout, self.cpus)
        # The fd is taken over only once the map is fully checked: a constructor that raises must not leave
        # a handle whose finalizer closes an fd the caller (from_fd) closes too, by then maybe reused.
        self.handle = MapHandle(fd, info, self.layout, machine.kernel)

    # --- construction -------------------------------------------------------------------------------

    def _key_codec(self, spec: TypeSpec) -> Codec:
        if spec is None:
            return self._default_key_codec()
        return codec_for(spec, self.info.key_size)

    def _default_key_codec(self) -> Codec:
        if self.info.btf_key_type_id:
            c = btf_codec(self.info.btf_id, self.info.btf_key_type_id, self.info.key_size)
            if c is not None:
                return c
        return codec_for(bytes, self.info.key_size)

    def _value_codec(self, spec: TypeSpec) -> Codec:
        if spec is None:
            if self.info.btf_value_type_id:
                c = btf_codec(self.info.btf_id, self.info.btf_value_type_id, self.info.value_size)
                if c is not None:
                    return c
            return codec_for(bytes, self.info.value_size)
        return codec_for(spec, self.info.value_size)

    @classmethod
    def _class_for(cls, info: MapInfo) -> type[Map]:
        """The class to open ``info``'s map as: ``cls``, or for a base class the one its type calls for.
        A map of a type ``cls`` does not open is refused, naming the class that does."""
        got = MapType.name_of(info.type).upper()
        if cls.map_types and info.type not in cls.map_types:
            want = " or ".join(t.name for t in cls.map_types)
            other = _CLASS_BY_TYPE.get(info.type)
            hint = f"; open it with percpu.open_map() or as {other.__name__}" if other else ""
            raise MapTypeError(
                f"map {info.name!r} (id {info.id}) is a {got} map, not {want}{hint}",
                expected=want,
                actual=got,
                map_name=info.name,
            )
        if cls.map_types:
            return cls
        target = _CLASS_BY_TYPE.get(info.type, Map)
        if cls.percpu and not target.percpu:
            raise MapTypeError(
                f"map {info.name!r} (id {info.id}) is a {got} map, not a per-CPU map",
                expected="a per-CPU map type",
                actual=got,
                map_name=info.name,
            )
        return target

    @classmethod
    def from_fd(cls: type[M], fd: int, *, key: TypeSpec = None, value: TypeSpec = None) -> M:
        """Wrap a map file descriptor, checking the map's type and the declared key and value types.

        The map returned owns the fd: its :meth:`close` (or its finalizer) closes it. When ``from_fd``
        raises (``fd`` is not open, not a map, a map of another type, or the types do not fit), the fd
        stays the caller's, open: close it, or try again."""
        fd = checked(fd, "fd", "fd")
        info = _open.info_of(fd)
        return cls._class_for(info)(fd, info, key=key, value=value)  # type: ignore[return-value]

    @classmethod
    def _adopt(cls: type[M], fd: int, **kw: Any) -> M:
        """:meth:`from_fd` of an fd percpu opened for the caller (by id, pin or creation), closed when no
        map can be made of it: nobody else holds it."""
        try:
            return cls.from_fd(fd, **kw)
        except BaseException:
            with contextlib.suppress(OSError):
                _machine.current().kernel.close(fd)
            raise

    @classmethod
    def from_id(cls: type[M], map_id: int, **kw: Any) -> M:
        """Open the map with kernel id ``map_id`` (as listed by ``percpu maps`` or ``bpftool map``)."""
        return cls._adopt(_open.fd_by_id(map_id), **kw)

    @classmethod
    def from_pin(cls: type[M], path: str | os.PathLike[str], **kw: Any) -> M:
        """Open a map pinned in bpffs (e.g. ``/sys/fs/bpf/my_map``).

        A path outside bpffs, a directory, or a pinned program or link is refused with the reason (the
        kernel's own answer for a file elsewhere is EACCES, which reads like a privilege problem).
        """
        return cls._adopt(_open.fd_by_pin(path), **kw)

    @classmethod
    def from_name(cls: type[M], name: str, **kw: Any) -> M:
        """Open the one map named ``name`` on the system (kernel names are at most 15 characters)."""
        return cls.from_id(_open.id_by_name(name), **kw)

    @classmethod
    def _create(
        cls: type[M],
        map_type: MapType,
        key: TypeSpec,
        value: TypeSpec,
        max_entries: int,
        *,
        key_size: int | None = None,
        name: str = "",
        flags: int = 0,
        check_memory: bool = True,
    ) -> M:
        fd, kc, vc = _open.create(
            map_type,
            key,
            value,
            max_entries,
            key_size=key_size,
            name=name,
            flags=flags,
            check_memory=check_memory,
        )
        return cls._adopt(fd, key=kc, value=vc)

    # --- lifetime -----------------------------------------------------------------------------------

    @property
    def fd(self) -> int:
        return self.handle.fd

    @property
    def closed(self) -> bool:
        return self.handle.closed

    def clone(self: M) -> M:
        """Another handle on the same kernel map, with its own duplicate of the fd (close-on-exec), as
        cilium/ebpf's ``Map.Clone``: closing either leaves the other open, and a write through either is
        seen by both. The map's contents are not copied (``snapshot()`` and ``update_batch()`` into a new
        map do that). ``copy.copy`` and ``copy.deepcopy`` of a map call this."""
        handle = self.handle.clone()
        twin = type(self).__new__(type(self))
        # Everything else (info, codecs, layout, CPU list) is immutable and shared; the handle (the fd and
        # its lock) is the twin's own.
        twin.__dict__.update(self.__dict__, handle=handle)
        return twin

    def __copy__(self: M) -> M:
        return self.clone()

    def __deepcopy__(self: M, memo: dict[int, Any]) -> M:
        return self.clone()

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise NotCopyable(
            f"map {self.name!r} (id {self.info.id}) cannot be pickled: it holds a file descriptor, which "
            "means nothing in another process. Send the map's id (m.info.id) or a path it is pinned at "
            f"(m.pin(path)) instead, and reopen it there with percpu.open_map({self.info.id}) or "
            "percpu.open_map(path)",
            map_name=self.name,
        )

    def close(self) -> None:
        """Release the file descriptor (the kernel frees the map when nothing else holds it)."""
        self.handle.close()

    def __enter__(self: M) -> M:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pin(self, path: str | os.PathLike[str]) -> None:
        """Pin the map in bpffs so it outlives this process (``percpu.open_map(path)`` opens it again).

        A path outside bpffs is refused before the call (the kernel's EPERM reads like a privilege
        problem); a path that exists, or whose directory does not, raises :class:`BpfError` saying so."""
        p = os.fspath(path)
        c_text(p, "pin path", where=f"map {self.name!r}: ")
        check_pin_target(p, label(self.info), self.name)
        self.handle.call(Op("pin", path=p), self.handle.kernel.obj_pin, p)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name!r} id={self.info.id} key={self.key_codec.name} "
            f"value={self.value_codec.name} max_entries={self.info.max_entries} {self.handle.state}>"
        )

    # --- encoding -----------------------------------------------------------------------------------

    @property
    def type_name(self) -> str:
        """The kernel's name of the map type, e.g. ``PERCPU_HASH``."""
        return self.handle.type_name

    @property
    def value_bytes(self) -> int:
        """Bytes one lookup writes: ``round_up(value_size, 8) * possible CPUs`` for per-CPU maps."""
        return self.layout.element_bytes

    def _flags(self, flags: int) -> int:
        """A caller's flag word, refused unless the kernel would see exactly it (flags ``2**64`` reached
        the kernel as 0 through ctypes)."""
        return checked(flags, "flags", "u64", where=f"map {self.name!r}: ", map_name=self.name)

    @property
    def memory_bytes(self) -> int:
        """Bytes of kernel memory this map takes when full, by the kernel's own accounting (see
        :func:`percpu.maps.memory_bytes`): for a per-CPU map, ``max_entries x round_up(value_size, 8) x
        possible CPUs`` plus the keys, pointers and header. The kernel's own figure for a map fd is the
        ``memlock`` line of ``/proc/self/fdinfo/FD`` (Linux 6.4 and later count it this way)."""
        i = self.info
        return memory_bytes(
            i.type, i.key_size, i.value_size, i.max_entries, self.layout.possible_cpus, i.flags
        )

    # --- single elements ----------------------------------------------------------------------------

    def lookup(self, key: Any) -> Any:
        """The value at ``key`` (a :class:`PerCpuValue` for per-CPU maps). Raises :class:`KeyNotFound`."""
        k = self.enc.key(key)
        buf = self.layout.value_buffer()
        self.handle.call(Op("lookup", key=key), self.handle.kernel.map_lookup, k, buf, self.layout)
        return self.enc.decode_value(buf)

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self.lookup(key)
        except KeyNotFound:
            return default

    def __getitem__(self, key: Any) -> Any:
        return self.lookup(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.update(key, value)

    def __delitem__(self, key: Any) -> None:
        self.delete(key)

    def __contains__(self, key: Any) -> bool:
        return self.get(key) is not None

    def update(self, key: Any, value: Any, flags: int = BPF_ANY) -> None:
        """Write ``value`` at ``key``. For per-CPU maps ``value`` holds one value per possible CPU.

        ``flags``: ``BPF_ANY`` (create or replace), ``BPF_NOEXIST`` (create only), ``BPF_EXIST`` (replace
        only).
        """
        flags = self._flags(flags)
        self._update_raw(self.enc.key(key), self.enc.encode_value(value), flags, key)

    def _update_raw(self, k: np.ndarray, v: np.ndarray, flags: int, key: Any) -> None:
        h = self.handle
        h.call(Op("update", key=key, flags=flags), h.kernel.map_update, k, v, self.layout, flags)

    def delete(self, key: Any) -> None:
        """Remove ``key``. Raises :class:`KeyNotFound` if absent; arrays and cgroup storage have no
        delete (:class:`MapTypeError`)."""
        self._no_delete("delete")
        k = self.enc.key(key)
        self.handle.call(Op("delete", key=key), self.handle.kernel.map_delete, k, self.layout)

    def lookup_and_delete(self, key: Any) -> Any:
        """Read and remove ``key`` in one syscall (hash maps; per-CPU hashes need
        :data:`~percpu.features.LOOKUP_AND_DELETE_PERCPU_HASH`)."""
        self._no_delete("lookup_and_delete")
        h = self.handle
        k = self.enc.key(key)
        buf = self.layout.value_buffer()
        try:
            h.call(Op("lookup_and_delete", key=key), h.kernel.map_lookup_and_delete, k, buf, self.layout)
        except NotSupported:
            if self.percpu:
                features.record(features.LOOKUP_AND_DELETE, self.info.type, False)
            raise
        return self.enc.decode_value(buf)

    def _no_delete(self, what: str) -> None:
        refused = no_delete(self.info, what)
        if refused is not None:
            raise refused

    # --- traversals (maps/_bulk.py) and batch writes (maps/_batch.py) ------------------------------

    def keys(self) -> Iterator[Any]:
        """Every key, bounded by ``max_entries`` and safe under concurrent deletes (see :meth:`items`)."""
        for raw in walk_keys(self.handle):
            yield self.enc.decode_key(raw)

    def __iter__(self) -> Iterator[Any]:
        return self.keys()

    def items(self) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` for every key, one lookup each; keys deleted during the walk are skipped.

        For large maps, :meth:`snapshot` reads everything in a few batch syscalls instead.
        """
        return walk_items(self)

    def values(self) -> Iterator[Any]:
        for _, v in self.items():
            yield v

    def snapshot(self, *, batch: bool | None = None) -> Snapshot:
        """Read the whole map into numpy: ``keys`` (n,) and ``values`` (n, possible CPUs, ...).

        Uses ``BPF_MAP_LOOKUP_BATCH`` (:data:`~percpu.features.BATCH_HASH`,
        :data:`~percpu.features.BATCH_ARRAY`) and falls back, where the kernel or map type has no batch
        operation, to a key walk (a hash) or a lookup at each index (an array). ``batch=False`` forces the
        fallback, ``batch=True`` forbids it.
        """
        return BulkReader(self).snapshot(delete=False, batch=batch)

    def lookup_and_delete_batch(self) -> Snapshot:
        """Read and remove every element, bucket by bucket (hash maps)."""
        self._no_delete("lookup_and_delete_batch")
        return BulkReader(self).snapshot(delete=True, batch=True)

    def update_batch(self, keys: Any, values: Any, flags: int = BPF_ANY) -> None:
        """Write many elements in one syscall (falls back to one update each without batch support).

        ``values`` is (n, possible CPUs) for per-CPU maps, or (n,) to give each key one value on every
        CPU. ``flags`` stays ``BPF_ANY``: the kernel's batch update refuses BPF_NOEXIST and BPF_EXIST
        (:class:`~percpu.errors.InvalidArgument` before the call; :meth:`update` takes them, key by key),
        and takes BPF_F_LOCK only for values holding a ``bpf_spin_lock``, which per-CPU values never do.
        Elements are written in order; a failure says which key stopped it and how many were written.
        """
        BatchWriter(self).update(keys, values, self._flags(flags))

    def delete_batch(self, keys: Any) -> None:
        """Remove many keys in one syscall (hash maps; falls back to one delete each). Arrays and cgroup
        storage have no delete (:class:`MapTypeError`)."""
        BatchWriter(self).delete(keys)
