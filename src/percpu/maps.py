"""Typed BPF maps, per-CPU ones first.

The kernel copies ``round_up(value_size, 8) * possible CPUs`` bytes on every user-space lookup of a per-CPU
map. Every buffer here is allocated by this module from the kernel's own map info and the possible-CPU
count, so no call can hand the kernel a buffer smaller than what it writes. Values come back as
:class:`~percpu.values.PerCpuValue`, indexed by CPU id; bulk reads come back as numpy arrays
(:class:`Snapshot`).
"""

from __future__ import annotations

import contextlib
import enum
import errno as _errno
import os
import threading
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from . import _libbpf, _procfs
from ._libbpf import BPF_ANY, BPF_EXIST, BPF_F_CPU, BPF_NOEXIST, MapInfo
from .cpus import CpuList, Topology, topology
from .errors import (
    BpfError,
    CpuNotPossible,
    KeyNotFound,
    MapNotFound,
    MapTypeError,
    NotSupported,
    PercpuError,
    SizeMismatch,
    from_errno,
)
from .values import (
    Codec,
    Int,
    PerCpuValue,
    TypeSpec,
    check_size,
    codec_for,
    integer_array,
    is_numeric,
    reduce_cpus,
    stride,
)

__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_NOEXIST",
    "Array",
    "Hash",
    "LruPerCpuHash",
    "Map",
    "MapType",
    "PerCpuArray",
    "PerCpuCgroupStorage",
    "PerCpuHash",
    "PerCpuMap",
    "Snapshot",
    "open_map",
]

M = TypeVar("M", bound="Map")

MAX_VALUE_SIZE = 32768  # per-CPU values: round_up(value_size, 8) <= PCPU_MIN_UNIT_SIZE
SNAPSHOT_PREALLOC = 64 << 20  # bytes a snapshot allocates before it knows how many elements there are


class MapType(enum.IntEnum):
    """``enum bpf_map_type`` (uapi/linux/bpf.h)."""

    UNSPEC = 0
    HASH = 1
    ARRAY = 2
    PROG_ARRAY = 3
    PERF_EVENT_ARRAY = 4
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    STACK_TRACE = 7
    CGROUP_ARRAY = 8
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    LPM_TRIE = 11
    ARRAY_OF_MAPS = 12
    HASH_OF_MAPS = 13
    DEVMAP = 14
    SOCKMAP = 15
    CPUMAP = 16
    XSKMAP = 17
    SOCKHASH = 18
    CGROUP_STORAGE = 19
    REUSEPORT_SOCKARRAY = 20
    PERCPU_CGROUP_STORAGE = 21
    QUEUE = 22
    STACK = 23
    SK_STORAGE = 24
    DEVMAP_HASH = 25
    STRUCT_OPS = 26
    RINGBUF = 27
    INODE_STORAGE = 28
    TASK_STORAGE = 29
    BLOOM_FILTER = 30
    USER_RINGBUF = 31
    CGRP_STORAGE = 32
    ARENA = 33

    @classmethod
    def name_of(cls, value: int) -> str:
        try:
            return cls(value).name.lower()
        except ValueError:
            return f"type_{value}"

    @property
    def percpu(self) -> bool:
        return self in PERCPU_TYPES


PERCPU_TYPES = frozenset(
    {MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH, MapType.PERCPU_CGROUP_STORAGE}
)

# struct bpf_cgroup_storage_key { __u64 cgroup_inode_id; __u32 attach_type; } (16 bytes with padding)
CGROUP_STORAGE_KEY = np.dtype(
    {
        "names": ["cgroup_inode_id", "attach_type"],
        "formats": ["<u8", "<u4"],
        "offsets": [0, 8],
        "itemsize": 16,
    }
)


def user_value_bytes(map_type: int, value_size: int, possible: int) -> int:
    """Bytes one user-space lookup of an element writes: the rule a correct reader follows."""
    if map_type in PERCPU_TYPES:
        return stride(value_size) * possible
    return value_size


@dataclass(frozen=True)
class Snapshot:
    """A whole map read at once: ``keys`` (n,) and ``values`` (n, possible CPUs, ...) numpy arrays.

    Column i of ``values`` is CPU ``cpus[i]``. For maps that are not per-CPU, ``values`` is (n, ...).
    The arrays are read-only.
    """

    keys: np.ndarray
    values: np.ndarray
    cpus: CpuList
    percpu: bool

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def sum(self) -> np.ndarray:
        """Per-key totals over all CPUs: 64-bit accumulators, records summed field by field into a widened
        record (see :func:`percpu.values.reduce_cpus`)."""
        if not self.percpu:
            return self.values
        if not is_numeric(self.values.dtype):
            raise TypeError(f"sum() needs numeric values; {self.values.dtype} is not")
        out: np.ndarray = np.asarray(reduce_cpus(self.values, "sum", axis=1))
        return out

    def cpu(self, cpu: int) -> np.ndarray:
        """Every key's value on CPU id ``cpu``."""
        if not self.percpu:
            raise TypeError("this snapshot is not of a per-CPU map")
        try:
            return self.values[:, self.cpus.ids.index(cpu)]
        except ValueError:
            raise CpuNotPossible(cpu, str(self.cpus)) from None

    def to_dict(self) -> dict[Any, Any]:
        """``{key: values row}``, keys as Python scalars where they are scalars (small maps only)."""
        out: dict[Any, Any] = {}
        for k, v in zip(self.keys, self.values, strict=True):
            kk = k.item() if self.keys.dtype.kind in "iu" else bytes(np.asarray(k).tobytes())
            out[kk] = v
        return out


_cpu_flag_lock = threading.Lock()
_cpu_flag_supported: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def cpu_flag_supported() -> bool:
    """Whether the kernel takes BPF_F_CPU (one CPU's slot) on per-CPU map lookups: probed, not guessed.

    Probed once per backend (the kernel, or a test's fake). The probe's buffer holds every possible CPU's
    value, so even a kernel that ignored the flag could not write past it.
    """
    b = _libbpf.backend()
    with _cpu_flag_lock:
        known = _cpu_flag_supported.get(b)
        if known is not None:
            return known
        try:
            fd = b.map_create(MapType.PERCPU_ARRAY, "percpu_probe", 4, 8, 1)
        except OSError as exc:
            raise from_errno(exc.errno or 0, "probe BPF_F_CPU: create map") from exc
        try:
            key = np.zeros(4, np.uint8)
            full = 8 * b.num_possible_cpus()
            val = np.zeros(full, np.uint8)
            b.map_lookup(fd, key, val, 8, BPF_F_CPU)
            known = True
        except OSError:
            known = False
        finally:
            b.close(fd)
        _cpu_flag_supported[b] = known
        return known


class Map:
    """A BPF map opened by file descriptor. Use the typed subclasses, or :func:`open_map` to pick one.

    ``key`` and ``value`` declare the element types (numpy dtype, ctypes type, :class:`~percpu.Int`,
    ``bytes``); a declared type whose size differs from the map's raises :class:`SizeMismatch` before any
    syscall. A map is a context manager; :meth:`close` releases its file descriptor.
    """

    map_types: ClassVar[tuple[MapType, ...]] = ()
    percpu: ClassVar[bool] = False

    def __init__(
        self,
        fd: int,
        info: MapInfo,
        *,
        key: TypeSpec = None,
        value: TypeSpec = None,
        topology: Topology | None = None,
    ) -> None:
        # The fd is taken over only once the map is fully checked: a constructor that raises must not leave
        # an object whose finalizer closes an fd the caller (from_fd) closes too, by then maybe reused.
        self._fd: int | None = None
        self.info = info
        self.name = info.name
        self.type = MapType(info.type) if info.type in MapType._value2member_map_ else info.type
        self._topo = topology or _default_topology()
        self._b = _libbpf.backend()
        self.key_codec: Codec = self._key_codec(key)
        self.value_codec: Codec = self._value_codec(value)
        check_size(self.key_codec, info.key_size, "key", info.name)
        check_size(self.value_codec, info.value_size, "value", info.name)
        if self.percpu:
            self.cpus = self._topo.possible
            self._slots = len(self.cpus)
            self._stride = stride(info.value_size)
        else:
            self.cpus = CpuList(())
            self._slots = 1
            self._stride = info.value_size
        self._elem = self._slots * self._stride
        self._batch_ok: bool | None = None
        self._fd = fd

    # --- construction -------------------------------------------------------------------------------

    def _key_codec(self, spec: TypeSpec) -> Codec:
        if spec is None:
            return self._default_key_codec()
        return codec_for(spec, self.info.key_size)

    def _default_key_codec(self) -> Codec:
        if self.info.btf_key_type_id:
            c = _btf_codec(self.info.btf_id, self.info.btf_key_type_id, self.info.key_size)
            if c is not None:
                return c
        return codec_for(bytes, self.info.key_size)

    def _value_codec(self, spec: TypeSpec) -> Codec:
        if spec is None:
            if self.info.btf_value_type_id:
                c = _btf_codec(self.info.btf_id, self.info.btf_value_type_id, self.info.value_size)
                if c is not None:
                    return c
            return codec_for(bytes, self.info.value_size)
        return codec_for(spec, self.info.value_size)

    @classmethod
    def _check_type(cls, info: MapInfo) -> None:
        if cls.map_types and info.type not in cls.map_types:
            want = " or ".join(t.name for t in cls.map_types)
            got = MapType.name_of(info.type).upper()
            hint = (
                f"; open it with percpu.open_map() or as {_CLASS_BY_TYPE[info.type].__name__}"
                if (info.type in _CLASS_BY_TYPE)
                else ""
            )
            raise MapTypeError(
                f"map {info.name!r} (id {info.id}) is a {got} map, not {want}{hint}",
                expected=want,
                actual=got,
                map_name=info.name,
            )

    @classmethod
    def from_fd(
        cls: type[M],
        fd: int,
        *,
        key: TypeSpec = None,
        value: TypeSpec = None,
        topology: Topology | None = None,
    ) -> M:
        """Wrap a map file descriptor; the map takes ownership and closes it. Checks the map's type."""
        b = _libbpf.backend()
        other = _procfs.fd_kind(fd)
        if other in ("program", "link"):
            with contextlib.suppress(OSError):
                b.close(fd)
            raise MapTypeError(
                f"fd {fd} is a BPF {other}, not a map", expected="a BPF map", actual=f"a BPF {other}"
            )
        try:
            info = b.map_info(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                b.close(fd)
            if exc.errno == _errno.EBADF:
                raise BpfError(f"fd {fd} is not an open file descriptor", errno=exc.errno) from exc
            if exc.errno == _errno.EINVAL:
                raise MapTypeError(
                    f"fd {fd} is not a BPF map", expected="a BPF map", actual="another kind of file"
                ) from exc
            raise from_errno(exc.errno or 0, "get map info") from exc
        try:
            cls._check_type(info)
            target: type[Map] = cls
            if not cls.map_types:  # a base class: pick the class the kernel type calls for
                target = _CLASS_BY_TYPE.get(info.type, Map)
                if cls is PerCpuMap and not issubclass(target, PerCpuMap):
                    raise MapTypeError(
                        f"map {info.name!r} (id {info.id}) is a {MapType.name_of(info.type).upper()} map, "
                        "not a per-CPU map",
                        expected="a per-CPU map type",
                        actual=MapType.name_of(info.type).upper(),
                        map_name=info.name,
                    )
            return target(fd, info, key=key, value=value, topology=topology)  # type: ignore[return-value]
        except BaseException:
            with contextlib.suppress(OSError):
                b.close(fd)
            raise

    @classmethod
    def from_id(cls: type[M], map_id: int, **kw: Any) -> M:
        """Open the map with kernel id ``map_id`` (as listed by ``percpu maps`` or ``bpftool map``)."""
        try:
            fd = _libbpf.backend().map_get_fd_by_id(map_id)
        except OSError as exc:
            if exc.errno == _errno.ENOENT:
                raise MapNotFound(f"no BPF map with id {map_id}", errno=exc.errno) from exc
            raise from_errno(exc.errno or 0, f"open map id {map_id}") from exc
        return cls.from_fd(fd, **kw)

    @classmethod
    def from_pin(cls: type[M], path: str | os.PathLike[str], **kw: Any) -> M:
        """Open a map pinned in bpffs (e.g. ``/sys/fs/bpf/my_map``).

        A path outside bpffs, a directory, or a pinned program or link is refused with the reason (the
        kernel's own answer for a file elsewhere is EACCES, which reads like a privilege problem).
        """
        p = os.fspath(path)
        check_pin_path(p)
        b = _libbpf.backend()
        try:
            fd = b.obj_get(p)
        except OSError as exc:
            if exc.errno == _errno.ENOENT:
                raise MapNotFound(f"nothing is pinned at {p}", errno=exc.errno) from exc
            raise from_errno(exc.errno or 0, f"open pinned map {p}") from exc
        other = _procfs.fd_kind(fd)
        if other in ("program", "link"):
            with contextlib.suppress(OSError):
                b.close(fd)
            raise MapTypeError(
                f"{p} is a pinned BPF {other}, not a map; `percpu maps` lists the maps",
                expected="a BPF map",
                actual=f"a BPF {other}",
            )
        return cls.from_fd(fd, **kw)

    @classmethod
    def from_name(cls: type[M], name: str, **kw: Any) -> M:
        """Open the one map named ``name`` on the system (kernel names are at most 15 characters)."""
        matches = [info for info in list_maps() if info.name == name[:15]]
        if not matches:
            raise MapNotFound(f"no BPF map named {name!r}; `percpu maps` lists the maps on this system")
        if len(matches) > 1:
            ids = ", ".join(str(m.id) for m in matches)
            raise MapNotFound(f"{len(matches)} maps are named {name!r} (ids {ids}); open one by id")
        return cls.from_id(matches[0].id, **kw)

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
        topology: Topology | None = None,
    ) -> M:
        kc = codec_for(key, key_size)
        vc = codec_for(value)
        if isinstance(max_entries, bool) or not isinstance(max_entries, int | np.integer):
            raise TypeError(f"max_entries must be an integer, not {type(max_entries).__name__}")
        if not 0 <= max_entries <= 0xFFFFFFFF:
            raise PercpuError(f"max_entries {max_entries} is out of range (0..{0xFFFFFFFF})")
        if map_type in PERCPU_TYPES and stride(vc.size) > MAX_VALUE_SIZE:
            raise SizeMismatch(
                f"per-CPU values are limited to {MAX_VALUE_SIZE} bytes (rounded up to 8); {vc.name} is "
                f"{vc.size}",
                what="value",
                expected=MAX_VALUE_SIZE,
                actual=vc.size,
                map_name=name or None,
            )
        if len(name) > 15:
            raise PercpuError(f"map name {name!r} is longer than the kernel's 15 characters")
        b = _libbpf.backend()
        try:
            fd = b.map_create(map_type, name, kc.size, vc.size, max_entries, flags)
        except OSError as exc:
            err = from_errno(exc.errno or 0, f"create {map_type.name} map", map_name=name or None)
            if exc.errno == _errno.E2BIG or (exc.errno == _errno.ENOMEM and vc.size > 4096):
                raise SizeMismatch(
                    f"the kernel refused a {vc.size}-byte {map_type.name} value ({err})",
                    what="value",
                    expected=MAX_VALUE_SIZE,
                    actual=vc.size,
                    map_name=name or None,
                ) from exc
            raise err from exc
        return cls.from_fd(fd, key=kc, value=vc, topology=topology)

    # --- lifetime -----------------------------------------------------------------------------------

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise PercpuError(f"map {self.name!r} is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd is None

    def close(self) -> None:
        """Release the file descriptor (the kernel frees the map when nothing else holds it)."""
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
        try:
            self._b.obj_pin(self.fd, os.fspath(path))
        except OSError as exc:
            raise self._error(exc, f"pin at {os.fspath(path)}") from exc

    def __repr__(self) -> str:
        state = "closed" if self._fd is None else f"fd={self._fd}"
        return (
            f"<{type(self).__name__} {self.name!r} id={self.info.id} key={self.key_codec.name} "
            f"value={self.value_codec.name} max_entries={self.info.max_entries} {state}>"
        )

    # --- layout helpers -----------------------------------------------------------------------------

    @property
    def type_name(self) -> str:
        """The kernel's name of the map type, e.g. ``PERCPU_HASH``."""
        return MapType.name_of(self.info.type).upper()

    @property
    def value_bytes(self) -> int:
        """Bytes one lookup writes: ``round_up(value_size, 8) * possible CPUs`` for per-CPU maps."""
        return self._elem

    def _error(self, exc: OSError, what: str) -> BpfError:
        return from_errno(exc.errno or 0, what, map_name=self.name)

    def _key(self, key: Any) -> np.ndarray:
        try:
            raw = self.key_codec.encode(key)
        except SizeMismatch as exc:
            raise SizeMismatch(
                f"map {self.name!r}: key {key!r}: {exc}",
                what="key",
                expected=self.info.key_size,
                actual=exc.actual,
                map_name=self.name,
            ) from exc
        out: np.ndarray = np.frombuffer(raw, dtype=np.uint8).copy()
        return out

    def _decode_key(self, raw: np.ndarray) -> Any:
        # The constructor, not view(): numpy cannot view() bytes as a sub-array type (u32[2] keys).
        return self.key_codec.decode(
            np.ndarray((), dtype=self.key_codec.dtype, buffer=np.ascontiguousarray(raw))
        )

    def _new_value_buf(self, n: int = 1) -> np.ndarray:
        return np.zeros(n * self._elem, dtype=np.uint8)

    def _typed(self, buf: np.ndarray, n: int) -> np.ndarray:
        """View (n, slots) of the value dtype over a raw buffer with the kernel's stride."""
        dt = self.value_codec.dtype
        if self._stride == dt.itemsize and dt.subdtype is None:  # numpy cannot view() as a sub-array
            arr = buf[: n * self._elem].view(dt).reshape(n, self._slots)
        else:
            arr = np.ndarray(
                (n, self._slots), dtype=dt, buffer=buf, strides=(self._elem, self._stride)
            ).copy()
        return arr

    def _decode_value(self, buf: np.ndarray) -> Any:
        arr = self._typed(buf, 1)[0]
        if self.percpu:
            return PerCpuValue(arr, self.cpus, self.value_codec)
        return self.value_codec.decode(arr[0])

    def _encode_value(self, value: Any) -> np.ndarray:
        buf = self._new_value_buf()
        rows = buf.reshape(self._slots, self._stride)
        size = self.value_codec.size
        if self.percpu:
            if not isinstance(value, PerCpuValue | Mapping | list | tuple | np.ndarray):
                raise TypeError(
                    f"map {self.name!r} is per-CPU: give one value per possible CPU ({len(self.cpus)}: "
                    f"{self.cpus}) as a list, a {{cpu: value}} mapping or a PerCpuValue; "
                    "update_all() writes one value to every CPU, update_cpu() one CPU's value"
                )
            pv = PerCpuValue.from_values(value, self.cpus, self.value_codec)
            rows[:, :size] = pv.to_numpy().view(np.uint8).reshape(self._slots, size)
        else:
            rows[0, :size] = np.frombuffer(self.value_codec.encode(value), np.uint8)
        return buf

    # --- single elements ----------------------------------------------------------------------------

    def lookup(self, key: Any) -> Any:
        """The value at ``key`` (a :class:`PerCpuValue` for per-CPU maps). Raises :class:`KeyNotFound`."""
        k = self._key(key)
        buf = self._new_value_buf()
        try:
            self._b.map_lookup(self.fd, k, buf, self._elem)
        except OSError as exc:
            raise self._lookup_error(exc, key) from exc
        return self._decode_value(buf)

    def _lookup_error(self, exc: OSError, key: Any) -> BpfError:
        if exc.errno == _errno.ENOENT:
            return KeyNotFound(f"map {self.name!r}: no key {key!r}", errno=exc.errno, map_name=self.name)
        return self._error(exc, "lookup")

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
        k = self._key(key)
        v = self._encode_value(value)
        self._update_raw(k, v, flags, key)

    def _update_raw(
        self, k: np.ndarray, v: np.ndarray, flags: int, key: Any, need: int | None = None
    ) -> None:
        try:
            self._b.map_update(self.fd, k, v, self._elem if need is None else need, flags)
        except OSError as exc:
            if exc.errno == _errno.ENOENT and flags == BPF_EXIST:
                raise KeyNotFound(
                    f"map {self.name!r}: no key {key!r} to replace", errno=exc.errno, map_name=self.name
                ) from exc
            if exc.errno == _errno.EEXIST:
                raise BpfError(
                    f"map {self.name!r}: key {key!r} exists (BPF_NOEXIST)",
                    errno=exc.errno,
                    map_name=self.name,
                ) from exc
            if exc.errno == _errno.E2BIG:
                what = (
                    f"index {key!r} is out of range (the array has {self.info.max_entries} elements)"
                    if self._is_array
                    else f"is full ({self.info.max_entries} entries)"
                )
                raise BpfError(f"map {self.name!r}: {what}", errno=exc.errno, map_name=self.name) from exc
            raise self._error(exc, "update") from exc

    def delete(self, key: Any) -> None:
        """Remove ``key``. Raises :class:`KeyNotFound` if absent; arrays have no delete."""
        self._no_delete_on_arrays("delete")
        k = self._key(key)
        try:
            self._b.map_delete(self.fd, k)
        except OSError as exc:
            raise self._lookup_error(exc, key) from exc

    def lookup_and_delete(self, key: Any) -> Any:
        """Read and remove ``key`` in one syscall (hash maps; per-CPU hashes since Linux 5.14)."""
        self._no_delete_on_arrays("lookup_and_delete")
        k = self._key(key)
        buf = self._new_value_buf()
        try:
            self._b.map_lookup_and_delete(self.fd, k, buf, self._elem)
        except OSError as exc:
            if exc.errno in (_errno.EINVAL, _errno.ENOTSUP, 524) and self.percpu:
                raise NotSupported(
                    f"map {self.name!r}: lookup-and-delete of a {self.type_name} element is not supported "
                    "by this kernel (per-CPU hashes need Linux 5.14)",
                    feature="lookup_and_delete_elem",
                    min_kernel="5.14",
                    errno=exc.errno,
                    map_name=self.name,
                ) from exc
            raise self._lookup_error(exc, key) from exc
        return self._decode_value(buf)

    def _no_delete_on_arrays(self, what: str) -> None:
        if self._is_array:
            raise MapTypeError(
                f"map {self.name!r}: {what}: {self.type_name} elements cannot be deleted (an array always "
                "holds max_entries elements); write zeros with update() instead",
                expected="a hash map",
                actual=self.type_name,
                map_name=self.name,
            )

    # --- iteration ----------------------------------------------------------------------------------

    def _iter_bound(self) -> int:
        return self.info.max_entries or 65536

    def _raw_keys(self) -> Iterator[np.ndarray]:
        """Keys as raw buffers, at most once each and at most ``max_entries`` of them.

        ``get_next_key`` on a hash restarts from the first bucket when the current key was deleted
        meanwhile, so a naive loop can repeat keys or never end under concurrent deletes. Keys already
        seen are skipped and the walk is bounded, so iteration always ends and never repeats a key; keys
        added or removed during the walk may or may not be seen.
        """
        bound = self._iter_bound()
        seen: set[bytes] = set()
        cur: np.ndarray | None = None
        steps = 0
        ks = self.info.key_size
        while len(seen) < bound and steps < 4 * bound + 16:
            nxt = np.zeros(ks, dtype=np.uint8)
            try:
                more = self._b.map_get_next_key(self.fd, cur, nxt)
            except OSError as exc:
                raise self._error(exc, "get_next_key") from exc
            if not more:
                return
            steps += 1
            b = nxt.tobytes()
            cur = nxt
            if b in seen:
                continue
            seen.add(b)
            yield nxt

    def keys(self) -> Iterator[Any]:
        """Every key, bounded by ``max_entries`` and safe under concurrent deletes (see :meth:`items`)."""
        for raw in self._raw_keys():
            yield self._decode_key(raw)

    def __iter__(self) -> Iterator[Any]:
        return self.keys()

    def items(self) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` for every key, one lookup each; keys deleted during the walk are skipped.

        For large maps, :meth:`snapshot` reads everything in a few batch syscalls instead.
        """
        buf = self._new_value_buf()
        for raw in self._raw_keys():
            try:
                self._b.map_lookup(self.fd, raw, buf, self._elem)
            except OSError as exc:
                if exc.errno == _errno.ENOENT:
                    continue
                raise self._error(exc, "lookup") from exc
            yield self._decode_key(raw), self._decode_value(buf)

    def values(self) -> Iterator[Any]:
        for _, v in self.items():
            yield v

    # --- batches ------------------------------------------------------------------------------------

    def snapshot(self, *, batch: bool | None = None) -> Snapshot:
        """Read the whole map into numpy: ``keys`` (n,) and ``values`` (n, possible CPUs, ...).

        Uses ``BPF_MAP_LOOKUP_BATCH`` (hashes: Linux 5.6, arrays: 5.13) and falls back to a key walk
        where the kernel or map type has no batch operation. ``batch=False`` forces the walk,
        ``batch=True`` forbids the fallback.
        """
        keys, vals, n = self._read_all(delete=False, batch=batch)
        return self._make_snapshot(keys, vals, n)

    def lookup_and_delete_batch(self) -> Snapshot:
        """Read and remove every element, bucket by bucket (hash maps)."""
        self._no_delete_on_arrays("lookup_and_delete_batch")
        keys, vals, n = self._read_all(delete=True, batch=True)
        return self._make_snapshot(keys, vals, n)

    def _make_snapshot(self, keys: np.ndarray, vals: np.ndarray, n: int) -> Snapshot:
        ks = self.info.key_size
        kdt = self.key_codec.dtype
        if n * 3 < keys.nbytes // max(ks, 1) * 2:  # mostly unused capacity: do not keep it alive
            keys = keys[: n * ks].copy()
            vals = vals[: n * self._elem].copy()
        k = np.ndarray((n,), dtype=kdt, buffer=keys[: n * ks])  # not view(): sub-array keys (u32[2])
        v = self._typed(vals, n)
        if not self.percpu:
            v = v.reshape((n, *v.shape[2:]))
        k.flags.writeable = False
        v.flags.writeable = False
        return Snapshot(keys=k, values=v, cpus=self.cpus, percpu=self.percpu)

    def _read_all(self, *, delete: bool, batch: bool | None) -> tuple[np.ndarray, np.ndarray, int]:
        if batch is True or (batch is None and self._batch_ok is not False):
            try:
                return self._read_batched(delete)
            except NotSupported:
                if not delete:  # lookup-and-delete can be missing where plain batch lookups work
                    self._batch_ok = False
                if batch:
                    raise
        if delete:
            raise NotSupported(
                f"map {self.name!r}: this kernel has no batch lookup-and-delete for {self.type_name} maps",
                feature="lookup_and_delete_batch",
                min_kernel="5.6",
                map_name=self.name,
            )
        return self._read_walk()

    def _initial_capacity(self) -> int:
        """Elements to allocate room for before the first read: all of max_entries when that is at most
        :data:`SNAPSHOT_PREALLOC` bytes (one exact allocation, no copy), else that much, grown as needed:
        a sparse map with a large max_entries must not cost max_entries x possible CPUs up front."""
        per = self.info.key_size + self._elem
        return max(1, min(self.info.max_entries, SNAPSHOT_PREALLOC // per))

    def _alloc(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            return np.empty(n * self.info.key_size, np.uint8), np.empty(n * self._elem, np.uint8)
        except MemoryError as exc:
            raise PercpuError(
                f"map {self.name!r}: not enough memory for {n} elements of {self.info.key_size + self._elem} "
                f"bytes ({n * (self.info.key_size + self._elem) / 2**20:.0f} MiB)",
                map_name=self.name,
            ) from exc

    def _grow_to(self, keys: np.ndarray, vals: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        k2, v2 = self._alloc(n)
        k2[: keys.size] = keys
        v2[: vals.size] = vals
        return k2, v2

    def _read_batched(self, delete: bool) -> tuple[np.ndarray, np.ndarray, int]:
        ks = self.info.key_size
        limit = max(self.info.max_entries, 1)
        cap = self._initial_capacity()
        keys, vals = self._alloc(cap)
        tok_in: np.ndarray | None = None
        tok_out = np.zeros(max(ks, 8), dtype=np.uint8)
        total = 0
        probe = 16  # extra room asked for once max_entries are read and the kernel has not said "end"
        while True:
            if total >= cap:
                # Full, and the kernel has not said "end": double up to max_entries, then a little more
                # at a time (a hash walked under concurrent inserts and deletes can return more than
                # max_entries elements).
                cap = min(cap * 2, limit) if cap < limit else cap + probe
                keys, vals = self._grow_to(keys, vals, cap)
            want = cap - total
            try:
                n, done = self._b.map_lookup_batch(
                    self.fd,
                    tok_in,
                    tok_out,
                    keys[total * ks :],
                    vals[total * self._elem :],
                    want,
                    self._elem,
                    ks,
                    delete,
                )
            except OSError as exc:
                if exc.errno == _errno.ENOSPC:
                    # One hash bucket holds more elements than we asked for; nothing was copied.
                    probe = max(probe, want) * 2
                    cap = total + probe
                    keys, vals = self._grow_to(keys, vals, cap)
                    continue
                if total == 0 and tok_in is None and exc.errno in (_errno.EINVAL, _errno.ENOTSUP, 524):
                    raise NotSupported(
                        f"map {self.name!r}: no batch operations for {self.type_name} on this kernel "
                        "(hashes need Linux 5.6, per-CPU arrays 5.13)",
                        feature="map batch operations",
                        min_kernel="5.6",
                        errno=exc.errno,
                        map_name=self.name,
                    ) from exc
                raise self._error(exc, "lookup_batch") from exc
            self._batch_ok = True
            total += n
            if done or (self._is_array and total >= self.info.max_entries):
                return keys, vals, total
            tok_in, tok_out = tok_out, (tok_in if tok_in is not None else np.zeros_like(tok_out))

    @property
    def _is_array(self) -> bool:
        return self.info.type in (MapType.ARRAY, MapType.PERCPU_ARRAY)

    def _read_walk(self) -> tuple[np.ndarray, np.ndarray, int]:
        ks = self.info.key_size
        cap = self._initial_capacity()
        keys, vals = self._alloc(cap)
        n = 0
        for raw in self._raw_keys():
            if n == cap:
                cap *= 2
                keys, vals = self._grow_to(keys, vals, cap)
            slot = vals[n * self._elem : (n + 1) * self._elem]
            try:
                self._b.map_lookup(self.fd, raw, slot, self._elem)
            except OSError as exc:
                if exc.errno == _errno.ENOENT:
                    continue
                raise self._error(exc, "lookup") from exc
            keys[n * ks : (n + 1) * ks] = raw
            n += 1
        return keys, vals, n

    def _batch_values(self, values: Any, n: int) -> np.ndarray:
        """Raw (n * elem) buffer from (n, slots) per-CPU values, or (n,) values for every CPU."""
        vc = self.value_codec
        try:
            if vc.dtype.kind in "iu":
                arr = integer_array(values, vc.dtype, vc.name)
            else:
                arr = np.asarray(values, dtype=vc.dtype)
        except PercpuError as exc:
            raise PercpuError(f"map {self.name!r}: values: {exc}", map_name=self.name) from exc
        except (TypeError, ValueError, OverflowError) as exc:
            raise PercpuError(f"map {self.name!r}: values are not {vc.name}: {exc}") from exc
        sub = vc.dtype.shape if vc.dtype.subdtype else ()
        base = arr.shape[: arr.ndim - len(sub)]
        if self.percpu and base == (n,):
            arr = np.repeat(arr[:, None], self._slots, axis=1)
        elif base != ((n, self._slots) if self.percpu else (n,)):
            want = f"({n}, {self._slots}) or ({n},)" if self.percpu else f"({n},)"
            raise SizeMismatch(
                f"map {self.name!r}: values have shape {base}, expected {want}",
                what="value",
                expected=n * self._slots,
                actual=int(np.prod(base)),
                map_name=self.name,
            )
        buf = np.zeros(n * self._elem, dtype=np.uint8)
        rows = buf.reshape(n * self._slots, self._stride)
        size = vc.size
        rows[:, :size] = np.ascontiguousarray(arr).view(np.uint8).reshape(n * self._slots, size)
        return buf

    def _batch_keys(self, keys: Any) -> tuple[np.ndarray, int]:
        kc = self.key_codec
        try:
            if kc.dtype.kind in "iu":
                arr = np.ascontiguousarray(integer_array(keys, kc.dtype, kc.name))
            else:
                arr = np.ascontiguousarray(np.asarray(keys, dtype=kc.dtype))
        except PercpuError as exc:
            raise PercpuError(f"map {self.name!r}: keys: {exc}", map_name=self.name) from exc
        except (TypeError, ValueError, OverflowError) as exc:
            raise PercpuError(f"map {self.name!r}: keys are not {kc.name}: {exc}") from exc
        if arr.ndim != 1:
            raise PercpuError(f"map {self.name!r}: keys must be one-dimensional, got shape {arr.shape}")
        return arr.view(np.uint8).copy(), int(arr.shape[0])

    def update_batch(self, keys: Any, values: Any, flags: int = BPF_ANY) -> None:
        """Write many elements in one syscall (falls back to one update each without batch support).

        ``values`` is (n, possible CPUs) for per-CPU maps, or (n,) to give each key one value on every
        CPU.
        """
        kbuf, n = self._batch_keys(keys)
        vbuf = self._batch_values(values, n)
        if n == 0:
            return
        done = 0
        if self._batch_ok is not False:
            try:
                done = self._b.map_update_batch(self.fd, kbuf, vbuf, n, self._elem, flags)
                self._batch_ok = True
                return
            except _libbpf.PartialBatch as exc:
                if not (_batch_unsupported(exc) or (exc.done == 0 and exc.errno == _errno.EINVAL)):
                    raise self._error(exc, f"update_batch (after {exc.done} of {n} elements)") from exc
        ks = self.info.key_size
        for i in range(done, n):
            k = kbuf[i * ks : (i + 1) * ks]
            self._update_raw(k, vbuf[i * self._elem : (i + 1) * self._elem], flags, k.tobytes())

    def delete_batch(self, keys: Any) -> None:
        """Remove many keys in one syscall (hash maps; falls back to one delete each)."""
        kbuf, n = self._batch_keys(keys)
        if n == 0:
            return
        if self._batch_ok is not False:
            try:
                self._b.map_delete_batch(self.fd, kbuf, n)
                return
            except _libbpf.PartialBatch as exc:
                if exc.errno == _errno.ENOENT:
                    raise KeyNotFound(
                        f"map {self.name!r}: delete_batch: key {exc.done} of {n} is not in the map",
                        errno=exc.errno,
                        map_name=self.name,
                    ) from exc
                if not (_batch_unsupported(exc) or (exc.done == 0 and exc.errno == _errno.EINVAL)):
                    raise self._error(exc, f"delete_batch (after {exc.done} of {n} keys)") from exc
        ks = self.info.key_size
        for i in range(n):
            k = kbuf[i * ks : (i + 1) * ks]
            try:
                self._b.map_delete(self.fd, k)
            except OSError as exc:
                raise self._lookup_error(exc, k.tobytes()) from exc


def _batch_unsupported(exc: _libbpf.PartialBatch) -> bool:
    """The map type has no batch operation at all (ENOTSUPP, 524: per-CPU arrays before 5.13). The kernel
    then returns before touching the count, which still holds the number asked for: nothing was done."""
    return exc.errno in (_errno.ENOTSUP, 524)


class PerCpuMap(Map):
    """Base of the per-CPU maps: values are :class:`PerCpuValue` with one slot per possible CPU."""

    percpu = True

    def lookup_cpu(self, key: Any, cpu: int) -> Any:
        """CPU ``cpu``'s value at ``key``: one slot read with BPF_F_CPU where the kernel has it."""
        slot = self._topo.slot(cpu)
        if cpu_flag_supported():
            k = self._key(key)
            buf = np.zeros(self._stride, dtype=np.uint8)
            try:
                self._b.map_lookup(self.fd, k, buf, self.info.value_size, BPF_F_CPU | (cpu << 32))
            except OSError as exc:
                raise self._lookup_error(exc, key) from exc
            return self.value_codec.decode(
                buf[: self.value_codec.size].view(self.value_codec.dtype).reshape(())
            )
        value: PerCpuValue = self.lookup(key)
        return value[self.cpus[slot]]

    def update_all(self, key: Any, value: Any, flags: int = BPF_ANY) -> None:
        """Write the same ``value`` on every possible CPU (one syscall, the whole per-CPU buffer)."""
        self.update(key, [value] * self._slots, flags)

    def update_cpu(self, key: Any, cpu: int, value: Any, flags: int = BPF_ANY) -> None:
        """Write CPU ``cpu``'s value at ``key``, leaving the other CPUs' values as they are.

        With BPF_F_CPU (Linux 7.0) this is one syscall touching one slot. Older kernels have no such
        operation: percpu then reads all slots, changes one and writes all back. That read-modify-write
        is not atomic: a BPF program writing another CPU's slot in between loses that write. A key that
        does not exist yet is created with zeros on the other CPUs.
        """
        slot = self._topo.slot(cpu)
        k = self._key(key)
        raw = np.frombuffer(self.value_codec.encode(value), np.uint8)
        if cpu_flag_supported():
            buf = np.zeros(self._stride, dtype=np.uint8)
            buf[: raw.size] = raw
            self._update_raw(k, buf, flags | BPF_F_CPU | (cpu << 32), key, need=self.info.value_size)
            return
        buf = self._new_value_buf()
        try:
            self._b.map_lookup(self.fd, k, buf, self._elem)
            if flags == BPF_NOEXIST:
                raise BpfError(f"map {self.name!r}: key {key!r} exists (BPF_NOEXIST)", map_name=self.name)
        except OSError as exc:
            if exc.errno != _errno.ENOENT:
                raise self._error(exc, "lookup") from exc
            if flags == BPF_EXIST:
                raise KeyNotFound(
                    f"map {self.name!r}: no key {key!r} to replace", errno=exc.errno, map_name=self.name
                ) from exc
            buf[:] = 0
        buf[slot * self._stride : slot * self._stride + raw.size] = raw
        self._update_raw(k, buf, flags, key)


class PerCpuArray(PerCpuMap):
    """BPF_MAP_TYPE_PERCPU_ARRAY: ``max_entries`` slots indexed by a 32-bit integer."""

    map_types = (MapType.PERCPU_ARRAY,)

    def _default_key_codec(self) -> Codec:
        return codec_for(Int(4), 4) if self.info.key_size == 4 else super()._default_key_codec()

    @classmethod
    def create(
        cls,
        value: TypeSpec,
        max_entries: int,
        *,
        name: str = "",
        flags: int = 0,
        topology: Topology | None = None,
    ) -> PerCpuArray:
        """Create a per-CPU array of ``max_entries`` values of type ``value``."""
        return cls._create(
            MapType.PERCPU_ARRAY, np.uint32, value, max_entries, name=name, flags=flags, topology=topology
        )

    def __len__(self) -> int:
        return self.info.max_entries


class PerCpuHash(PerCpuMap):
    """BPF_MAP_TYPE_PERCPU_HASH."""

    map_types = (MapType.PERCPU_HASH,)
    _create_type = MapType.PERCPU_HASH

    @classmethod
    def create(
        cls,
        key: TypeSpec,
        value: TypeSpec,
        max_entries: int,
        *,
        name: str = "",
        flags: int = 0,
        topology: Topology | None = None,
    ) -> PerCpuHash:
        return cls._create(
            cls._create_type, key, value, max_entries, name=name, flags=flags, topology=topology
        )


class LruPerCpuHash(PerCpuHash):
    """BPF_MAP_TYPE_LRU_PERCPU_HASH: the least recently used elements are evicted when full."""

    map_types = (MapType.LRU_PERCPU_HASH,)
    _create_type = MapType.LRU_PERCPU_HASH


class PerCpuCgroupStorage(PerCpuMap):
    """BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE: one element per (cgroup, attach type), made by the kernel when
    a program using the map is attached to a cgroup. User space can look up and update existing
    elements; it cannot create or delete them. Deprecated upstream in favour of cgroup local storage,
    which is not per-CPU."""

    map_types = (MapType.PERCPU_CGROUP_STORAGE,)

    def _default_key_codec(self) -> Codec:
        if self.info.key_size == 16:
            return codec_for(CGROUP_STORAGE_KEY)
        if self.info.key_size == 8:
            return codec_for(np.uint64)
        return super()._default_key_codec()

    @classmethod
    def create(
        cls,
        value: TypeSpec,
        *,
        key: TypeSpec = CGROUP_STORAGE_KEY,
        name: str = "",
        topology: Topology | None = None,
    ) -> PerCpuCgroupStorage:
        """Create the map (max_entries is 0: the kernel sizes it by attachments)."""
        return cls._create(MapType.PERCPU_CGROUP_STORAGE, key, value, 0, name=name, topology=topology)


class Array(Map):
    """BPF_MAP_TYPE_ARRAY (shared by all CPUs), for comparison with the per-CPU array."""

    map_types = (MapType.ARRAY,)

    def _default_key_codec(self) -> Codec:
        return codec_for(Int(4), 4) if self.info.key_size == 4 else super()._default_key_codec()

    @classmethod
    def create(cls, value: TypeSpec, max_entries: int, *, name: str = "", flags: int = 0) -> Array:
        return cls._create(MapType.ARRAY, np.uint32, value, max_entries, name=name, flags=flags)

    def __len__(self) -> int:
        return self.info.max_entries


class Hash(Map):
    """BPF_MAP_TYPE_HASH (shared by all CPUs), for comparison with the per-CPU hash."""

    map_types = (MapType.HASH,)

    @classmethod
    def create(
        cls, key: TypeSpec, value: TypeSpec, max_entries: int, *, name: str = "", flags: int = 0
    ) -> Hash:
        return cls._create(MapType.HASH, key, value, max_entries, name=name, flags=flags)


_CLASS_BY_TYPE: dict[int, type[Map]] = {
    MapType.PERCPU_ARRAY: PerCpuArray,
    MapType.PERCPU_HASH: PerCpuHash,
    MapType.LRU_PERCPU_HASH: LruPerCpuHash,
    MapType.PERCPU_CGROUP_STORAGE: PerCpuCgroupStorage,
    MapType.ARRAY: Array,
    MapType.HASH: Hash,
}


def _default_topology() -> Topology:
    return topology()


def _btf_codec(btf_id: int, type_id: int, size: int) -> Codec | None:
    """The codec BTF describes for a map's key or value, or None where BTF cannot say."""
    if not btf_id or not type_id:
        return None
    try:
        from .btf import codec_from_btf
    except ImportError:  # pragma: no cover - btf support is part of the package
        return None
    return codec_from_btf(btf_id, type_id, size)


def check_pin_path(path: str, mounts: str = _procfs.MOUNTS) -> None:
    """Refuse a path that cannot hold a pinned map, saying why, before any bpf() call.

    Without this the kernel's answer for a file elsewhere is EACCES, which reads like a privilege
    problem even as root. Says nothing when the mount table cannot be read.
    """
    table = _procfs.mounts(mounts)
    where = _procfs.mount_of(path, table)
    if where is None:
        return
    if where.fstype != "bpf":
        bpffs = [m.point for m in table if m.fstype == "bpf"]
        hint = (
            f"pinned maps live under {', '.join(bpffs)}"
            if bpffs
            else "no bpffs is mounted here (mount -t bpf bpf /sys/fs/bpf)"
        )
        raise MapNotFound(f"{path} is not in a BPF file system (bpffs); {hint}")
    if os.path.isdir(path):
        raise MapNotFound(
            f"{path} is a directory in bpffs, not a pinned map; give the path of a map pinned under "
            "it, or a map id from `percpu maps`"
        )


def list_maps() -> list[MapInfo]:
    """Info on every BPF map on the system (needs CAP_SYS_ADMIN or root to see others' maps)."""
    b = _libbpf.backend()
    out: list[MapInfo] = []
    cur = 0
    while True:
        try:
            nxt = b.map_get_next_id(cur)
        except OSError as exc:
            raise from_errno(exc.errno or 0, "list maps") from exc
        if nxt is None:
            return out
        cur = nxt
        try:
            fd = b.map_get_fd_by_id(nxt)
        except OSError as exc:
            if exc.errno == _errno.ENOENT:
                continue  # freed between the two calls
            raise from_errno(exc.errno or 0, f"open map id {nxt}") from exc
        try:
            out.append(b.map_info(fd))
        except OSError as exc:
            raise from_errno(exc.errno or 0, f"map info of id {nxt}") from exc
        finally:
            b.close(fd)


def open_map(spec: int | str | os.PathLike[str], **kw: Any) -> Map:
    """Open a map by id (``42``, ``"42"``), pinned path (``"/sys/fs/bpf/x"``) or name, as its typed class."""
    if isinstance(spec, int):
        return Map.from_id(spec, **kw)
    s = os.fspath(spec)
    if s.isdigit():
        return Map.from_id(int(s), **kw)
    if "/" in s:
        return Map.from_pin(s, **kw)
    return Map.from_name(s, **kw)
