"""``Map``: construction from an fd, id, pin or name; lifetime; encoding; element operations; batch
writes. Whole-map reads are :class:`~percpu.maps._bulk.BulkReader`'s."""

from __future__ import annotations

import contextlib
import operator
import os
import threading
from collections.abc import Iterator
from typing import Any, ClassVar, TypeVar

import numpy as np

from .. import _fork, _libbpf, features
from .._libbpf import BPF_ANY, MapInfo, c_text, checked
from ..cpus import CpuList, possible_cpus
from ..errors import (
    NOT_SUPPORTED_ERRNOS,
    BpfError,
    CpuNotPossible,
    KeyNotFound,
    MapTypeError,
    NotCopyable,
    NotSupported,
    PercpuError,
    from_errno,
)
from ..layout import Layout
from ..values import (
    Codec,
    TypeSpec,
    check_size,
    codec_for,
)
from . import _open
from ._batch import BatchWriter
from ._bulk import BulkReader, walk_items, walk_keys
from ._encoding import Encoding, btf_codec
from ._errors import lookup_error, update_error
from ._kinds import MapType, Snapshot, memory_bytes

M = TypeVar("M", bound="Map")


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
    """

    map_types: ClassVar[tuple[MapType, ...]] = ()
    percpu: ClassVar[bool] = False

    def __init__(self, fd: int, info: MapInfo, *, key: TypeSpec = None, value: TypeSpec = None) -> None:
        # The fd is taken over only once the map is fully checked: a constructor that raises must not leave
        # an object whose finalizer closes an fd the caller (from_fd) closes too, by then maybe reused.
        self._fd: int | None = None
        self._lock = threading.RLock()
        self.info = info
        self.name = info.name
        self.type = MapType(info.type) if info.type in MapType._value2member_map_ else info.type
        self._b = _libbpf.backend()
        self.key_codec: Codec = self._key_codec(key)
        self.value_codec: Codec = self._value_codec(value)
        check_size(self.key_codec, info.key_size, "key", info.name)
        check_size(self.value_codec, info.value_size, "value", info.name)
        # Sizes follow the kernel's own possible-CPU count; the CPU ids naming the slots must agree with it.
        self.cpus = possible_cpus() if self.percpu else CpuList(())
        self.layout = Layout(info.key_size, info.value_size, self._b.num_possible_cpus(), self.percpu)
        self._slot_of = {c: i for i, c in enumerate(self.cpus)}
        self.enc = Encoding(info.name, self.key_codec, self.value_codec, self.layout, self.cpus)
        self._fd = fd
        _fork.track(self)

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
    def from_fd(cls: type[M], fd: int, *, key: TypeSpec = None, value: TypeSpec = None) -> M:
        """Wrap a map file descriptor; the map takes ownership and closes it. Checks the map's type."""
        return _open.from_fd(cls, fd, key=key, value=value, base=Map)

    @classmethod
    def from_id(cls: type[M], map_id: int, **kw: Any) -> M:
        """Open the map with kernel id ``map_id`` (as listed by ``percpu maps`` or ``bpftool map``)."""
        return _open.from_id(cls, map_id, **kw)

    @classmethod
    def from_pin(cls: type[M], path: str | os.PathLike[str], **kw: Any) -> M:
        """Open a map pinned in bpffs (e.g. ``/sys/fs/bpf/my_map``).

        A path outside bpffs, a directory, or a pinned program or link is refused with the reason (the
        kernel's own answer for a file elsewhere is EACCES, which reads like a privilege problem).
        """
        return _open.from_pin(cls, path, **kw)

    @classmethod
    def from_name(cls: type[M], name: str, **kw: Any) -> M:
        """Open the one map named ``name`` on the system (kernel names are at most 15 characters)."""
        return _open.from_name(cls, name, **kw)

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
        return _open.create(
            cls,
            map_type,
            key,
            value,
            max_entries,
            key_size=key_size,
            name=name,
            flags=flags,
            check_memory=check_memory,
        )

    # --- lifetime -----------------------------------------------------------------------------------

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise PercpuError(f"map {self.name!r} is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd is None

    @contextlib.contextmanager
    def _held(self) -> Iterator[int]:
        """The fd, held open for one operation: :meth:`close` in another thread waits for it, so no call
        ever reaches the kernel with an fd number that was closed and maybe reused by another map."""
        with self._lock:
            yield self.fd

    def _after_fork_in_child(self) -> None:
        # The thread that held the lock at fork() is not in the child, and its call does not go on there:
        # the child's map gets a free lock, and its fd (inherited) stays usable.
        self._lock = threading.RLock()

    def clone(self: M) -> M:
        """Another handle on the same kernel map, with its own duplicate of the fd (close-on-exec), as
        cilium/ebpf's ``Map.Clone``: closing either leaves the other open, and a write through either is
        seen by both. The map's contents are not copied (``snapshot()`` and ``update_batch()`` into a new
        map do that). ``copy.copy`` and ``copy.deepcopy`` of a map call this."""
        with self._held() as fd:
            try:
                dup = self._b.dup(fd)
            except OSError as exc:
                raise self._error(exc, "duplicate the fd") from exc
        twin = type(self).__new__(type(self))
        # Everything else (info, codecs, layout, CPU list) is immutable and shared; the fd and the lock
        # are the twin's own. Its fd is set last, so a failure before leaves no finalizer to close it.
        twin.__dict__.update(self.__dict__, _fd=None, _lock=threading.RLock())
        twin._fd = dup
        _fork.track(twin)
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
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            self._b.close(fd)

    def __enter__(self: M) -> M:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A map dropped without close(): release its fd through the same seam that opened it.
        fd = getattr(self, "_fd", None)
        if fd is not None:
            self._fd = None
            with contextlib.suppress(Exception):
                self._b.close(fd)

    def pin(self, path: str | os.PathLike[str]) -> None:
        """Pin the map in bpffs so it outlives this process."""
        c_text(os.fspath(path), "pin path", where=f"map {self.name!r}: ")
        try:
            with self._held() as fd:
                self._b.obj_pin(fd, os.fspath(path))
        except OSError as exc:
            raise self._error(exc, f"pin at {os.fspath(path)}") from exc

    def __repr__(self) -> str:
        state = "closed" if self._fd is None else f"fd={self._fd}"
        return (
            f"<{type(self).__name__} {self.name!r} id={self.info.id} key={self.key_codec.name} "
            f"value={self.value_codec.name} max_entries={self.info.max_entries} {state}>"
        )

    # --- encoding -----------------------------------------------------------------------------------

    @property
    def type_name(self) -> str:
        """The kernel's name of the map type, e.g. ``PERCPU_HASH``."""
        return MapType.name_of(self.info.type).upper()

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

    def _error(self, exc: OSError, what: str) -> BpfError:
        return from_errno(exc.errno or 0, what, map_name=self.name)

    def _slot(self, cpu: int) -> int:
        """The slot of CPU id ``cpu`` in this map's values. Raises :class:`CpuNotPossible`, also for what
        is not an integer: ``True`` and ``1.0`` hash like CPU 1 and would have found its slot."""
        try:
            if isinstance(cpu, bool):
                raise TypeError(cpu)
            return self._slot_of[operator.index(cpu)]
        except (KeyError, TypeError):
            raise CpuNotPossible(cpu, str(self.cpus), map_name=self.name) from None

    # --- single elements ----------------------------------------------------------------------------

    def lookup(self, key: Any) -> Any:
        """The value at ``key`` (a :class:`PerCpuValue` for per-CPU maps). Raises :class:`KeyNotFound`."""
        k = self.enc.key(key)
        buf = self.layout.value_buffer()
        try:
            with self._held() as fd:
                self._b.map_lookup(fd, k, buf, self.layout)
        except OSError as exc:
            raise lookup_error(self, exc, key) from exc
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
        k = self.enc.key(key)
        v = self.enc.encode_value(value)
        self._update_raw(k, v, flags, key)

    def _update_raw(self, k: np.ndarray, v: np.ndarray, flags: int, key: Any) -> None:
        try:
            with self._held() as fd:
                self._b.map_update(fd, k, v, self.layout, flags)
        except OSError as exc:
            raise update_error(self, exc, flags, key) from exc

    def delete(self, key: Any) -> None:
        """Remove ``key``. Raises :class:`KeyNotFound` if absent; arrays have no delete."""
        self._no_delete_on_arrays("delete")
        k = self.enc.key(key)
        try:
            with self._held() as fd:
                self._b.map_delete(fd, k, self.layout)
        except OSError as exc:
            raise lookup_error(self, exc, key) from exc

    def lookup_and_delete(self, key: Any) -> Any:
        """Read and remove ``key`` in one syscall (hash maps; per-CPU hashes since Linux 5.14)."""
        self._no_delete_on_arrays("lookup_and_delete")
        k = self.enc.key(key)
        buf = self.layout.value_buffer()
        try:
            with self._held() as fd:
                self._b.map_lookup_and_delete(fd, k, buf, self.layout)
        except OSError as exc:
            if exc.errno in NOT_SUPPORTED_ERRNOS and self.percpu:
                features.record(features.LOOKUP_AND_DELETE, self.info.type, False)
                raise NotSupported(
                    f"map {self.name!r}: lookup-and-delete of a {self.type_name} element is not supported "
                    "by this kernel (per-CPU hashes need Linux 5.14)",
                    feature="lookup_and_delete_elem",
                    min_kernel="5.14",
                    errno=exc.errno,
                    map_name=self.name,
                ) from exc
            raise lookup_error(self, exc, key) from exc
        return self.enc.decode_value(buf)

    def _no_delete_on_arrays(self, what: str) -> None:
        if self._is_array:
            raise MapTypeError(
                f"map {self.name!r}: {what}: {self.type_name} elements cannot be deleted (an array always "
                "holds max_entries elements); write zeros with update() instead",
                expected="a hash map",
                actual=self.type_name,
                map_name=self.name,
            )

    @property
    def _is_array(self) -> bool:
        return self.info.type in (MapType.ARRAY, MapType.PERCPU_ARRAY)

    # --- traversals (maps/_bulk.py) and batch writes (maps/_batch.py) ------------------------------

    def keys(self) -> Iterator[Any]:
        """Every key, bounded by ``max_entries`` and safe under concurrent deletes (see :meth:`items`)."""
        for raw in walk_keys(self):
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

        Uses ``BPF_MAP_LOOKUP_BATCH`` (hashes: Linux 5.6, arrays: 5.13) and falls back to a key walk
        where the kernel or map type has no batch operation. ``batch=False`` forces the walk,
        ``batch=True`` forbids the fallback.
        """
        return BulkReader(self).snapshot(delete=False, batch=batch)

    def lookup_and_delete_batch(self) -> Snapshot:
        """Read and remove every element, bucket by bucket (hash maps)."""
        self._no_delete_on_arrays("lookup_and_delete_batch")
        return BulkReader(self).snapshot(delete=True, batch=True)

    def update_batch(self, keys: Any, values: Any, flags: int = BPF_ANY) -> None:
        """Write many elements in one syscall (falls back to one update each without batch support).

        ``values`` is (n, possible CPUs) for per-CPU maps, or (n,) to give each key one value on every
        CPU.
        """
        BatchWriter(self).update(keys, values, self._flags(flags))

    def delete_batch(self, keys: Any) -> None:
        """Remove many keys in one syscall (hash maps; falls back to one delete each)."""
        BatchWriter(self).delete(keys)
