"""Opening maps, the kernel's side: an fd checked to be a map and its info, an fd from an id, a pinned path
or a name, and a new map's fd (refused first, with its cost, when this process cannot hold it). ``Map``'s
class methods wrap what these return in the typed class."""

from __future__ import annotations

import contextlib
import errno as _errno
import os
from typing import TYPE_CHECKING

import numpy as np

from .. import _machine
from .._libbpf import MapInfo, c_text, checked
from ..errors import (
    BpfError,
    InvalidArgument,
    MapNotFound,
    MapTooLarge,
    MapTypeError,
    PercpuError,
    SizeMismatch,
    from_errno,
)
from ..layout import round8
from ..values import Codec, TypeSpec, codec_for
from ._kinds import (
    ARRAY_TYPES,
    HASH_TYPES,
    MAX_HASH_ENTRIES,
    MAX_VALUE_SIZE,
    PERCPU_TYPES,
    MapType,
    human_bytes,
    memory_bytes,
)
from ._system import check_pin_path, list_maps

if TYPE_CHECKING:
    from .._machine import Kernel

# What the kernel takes in an object's name (bpf_obj_name_cpy(): isalnum(), '_' and '.').
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")


def info_of(fd: int) -> MapInfo:
    """What the kernel says about map fd ``fd``; when it is not a map (a program, a link, another kind of
    file, no open fd at all) the reason is raised, and the fd is left as it was: it is the caller's."""
    fd = checked(fd, "fd", "fd")
    machine = _machine.current()
    other = machine.fd_kind(fd)
    if other in ("program", "link"):
        raise MapTypeError(
            f"fd {fd} is a BPF {other}, not a map; a map's fd comes from percpu.open_map(id or pin path), "
            "BpfObject.map(name) or bpf_map_get_fd_by_id",
            expected="a BPF map",
            actual=f"a BPF {other}",
        )
    try:
        return machine.kernel.map_info(fd)
    except OSError as exc:
        # BPF_OBJ_GET_INFO_BY_FD answers EBADFD (77, "File descriptor in bad state") for an fd that is
        # not open, where other bpf() commands say EBADF.
        if exc.errno in (_errno.EBADF, _errno.EBADFD):
            raise BpfError(
                f"fd {fd} is not an open file descriptor (closed, or never opened); open the map with "
                "percpu.open_map(id or pin path), or pass an fd that is open",
                errno=exc.errno,
            ) from exc
        if exc.errno == _errno.EINVAL:
            raise MapTypeError(
                f"fd {fd} is not a BPF map but another kind of file; a map's fd comes from "
                "percpu.open_map(id or pin path), BpfObject.map(name) or bpf_map_get_fd_by_id",
                expected="a BPF map",
                actual="another kind of file",
            ) from exc
        raise from_errno(exc.errno or 0, f"get map info of fd {fd}") from exc


def fd_by_id(map_id: int) -> int:
    """An fd for the map with kernel id ``map_id`` (as listed by ``percpu maps`` or ``bpftool map``)."""
    map_id = checked(map_id, "map id")
    try:
        return _machine.current().kernel.map_get_fd_by_id(map_id)
    except OSError as exc:
        if exc.errno == _errno.ENOENT:
            raise MapNotFound(f"no BPF map with id {map_id}", errno=exc.errno) from exc
        raise from_errno(exc.errno or 0, f"open map id {map_id}") from exc


def fd_by_pin(path: str | os.PathLike[str]) -> int:
    """An fd for the map pinned at ``path`` in bpffs (e.g. ``/sys/fs/bpf/my_map``).

    A path outside bpffs, a directory, or a pinned program or link is refused with the reason (the
    kernel's own answer for a file elsewhere is EACCES, which reads like a privilege problem).
    """
    p = os.fspath(path)
    c_text(p, "pin path")
    check_pin_path(p)
    kernel = _machine.current().kernel
    try:
        fd = kernel.obj_get(p)
    except OSError as exc:
        if exc.errno == _errno.ENOENT:
            raise MapNotFound(f"nothing is pinned at {p}", errno=exc.errno) from exc
        raise from_errno(exc.errno or 0, f"open pinned map {p}") from exc
    other = _machine.current().fd_kind(fd)
    if other in ("program", "link"):
        with contextlib.suppress(OSError):
            kernel.close(fd)
        raise MapTypeError(
            f"{p} is a pinned BPF {other}, not a map; `percpu maps` lists the maps",
            expected="a BPF map",
            actual=f"a BPF {other}",
        )
    return fd


def id_by_name(name: str) -> int:
    """The id of the one map named ``name`` on the system (kernel names are at most 15 characters)."""
    matches = [info for info in list_maps() if info.name == name[:15]]
    if not matches:
        raise MapNotFound(f"no BPF map named {name!r}; `percpu maps` lists the maps on this system")
    if len(matches) > 1:
        ids = ", ".join(str(m.id) for m in matches)
        raise MapNotFound(f"{len(matches)} maps are named {name!r} (ids {ids}); open one by id")
    return matches[0].id


def _create_typed(
    b: Kernel, map_type: MapType, name: str, kc: Codec, vc: Codec, max_entries: int, flags: int
) -> int:
    """Create the map with BTF for its key and value types, as libbpf and cilium/ebpf do, so that every
    reader (percpu, bpftool, bpftrace) shows its elements typed. Where BTF cannot describe a type
    exactly, or the kernel refuses the BTF (a kernel without a kind, a map type with rules of its own,
    no privilege to load BTF), the map is created without it, as libbpf retries: the types are a
    description, never a reason for the create to fail."""
    from ..btf_write import map_btf

    typed = map_btf(kc, vc, name)
    btf_fd = 0
    if typed is not None:
        try:
            btf_fd = b.btf_load(typed.blob)
        except OSError:
            typed = None
    try:
        if typed is not None:
            try:
                return b.map_create(
                    map_type,
                    name,
                    kc.size,
                    vc.size,
                    max_entries,
                    flags,
                    btf_fd=btf_fd,
                    btf_key_type_id=typed.key_type_id,
                    btf_value_type_id=typed.value_type_id,
                )
            except OSError:
                pass  # created again without BTF: an error that is not the BTF's is raised from there
        return b.map_create(map_type, name, kc.size, vc.size, max_entries, flags)
    finally:
        if btf_fd:
            b.close(btf_fd)  # the map holds its own reference to the BTF


def create(
    map_type: MapType,
    key: TypeSpec,
    value: TypeSpec,
    max_entries: int,
    *,
    key_size: int | None = None,
    name: str = "",
    flags: int = 0,
    check_memory: bool = True,
) -> tuple[int, Codec, Codec]:
    """A new map's fd, and the key and value codecs it was made for. Refused before the syscall: an
    entry count or name the kernel cannot take as given, a per-CPU value over the kernel's limit, and (with
    ``check_memory``) a map whose kernel memory this process cannot have (:class:`MapTooLarge`)."""
    kc = codec_for(key, key_size)
    vc = codec_for(value)
    if isinstance(max_entries, bool) or not isinstance(max_entries, int | np.integer):
        raise TypeError(f"max_entries must be an integer, not {type(max_entries).__name__}")
    max_entries = int(max_entries)
    flags = checked(flags, "map flags")
    if len(name) > 15:
        raise PercpuError(f"map name {name!r} is longer than the kernel's 15 characters")
    c_text(name, "map name")
    if not _NAME_CHARS.issuperset(name):
        raise InvalidArgument(
            f"map name {name!r}: the kernel takes letters, digits, '_' and '.' only",
            argument="map name",
            value=name,
        )
    refuse_geometry(map_type, name, kc, vc, max_entries)
    b = _machine.current().kernel
    if check_memory:
        check_memory_for(map_type, name, kc.size, vc.size, max_entries, flags, b.num_possible_cpus())
    try:
        fd = _create_typed(b, map_type, name, kc, vc, max_entries, flags)
    except OSError as exc:
        raise _create_error(map_type, name, kc, vc, max_entries, exc) from exc
    return fd, kc, vc


def _creating(map_type: MapType, name: str) -> str:
    return f"create {map_type.name} map {name!r}" if name else f"create {map_type.name} map"


def refuse_geometry(map_type: MapType, name: str, kc: Codec, vc: Codec, max_entries: int) -> None:
    """Refuse, before the syscall and with the kernel's own rule, a key size, value size or entry count
    the map type cannot have; the kernel's answer is a bare EINVAL or E2BIG. The rules are those of the
    types' ``map_alloc_check``/``map_alloc`` (kernel/bpf/arraymap.c, hashtab.c, local_storage.c)."""
    what, kind = _creating(map_type, name), map_type.name

    def refuse(argument: str, value: object, rule: str) -> InvalidArgument:
        return InvalidArgument(f"{what}: {rule}", argument=argument, value=value, map_name=name or None)

    if not 0 <= max_entries <= 0xFFFFFFFF:
        raise refuse(
            "max_entries", max_entries, f"max_entries {max_entries} is out of range (0..{0xFFFFFFFF})"
        )
    if map_type in PERCPU_TYPES and round8(vc.size) > MAX_VALUE_SIZE:
        raise SizeMismatch(
            f"{what}: per-CPU values are limited to {MAX_VALUE_SIZE} bytes (rounded up to 8); {vc.name} is "
            f"{vc.size}: declare a smaller value type",
            what="value",
            expected=MAX_VALUE_SIZE,
            actual=vc.size,
            map_name=name or None,
        )
    if vc.size == 0:
        raise refuse(
            "value", vc.name, f"value type {vc.name} is 0 bytes: the kernel takes values of 1 byte or more"
        )
    if map_type == MapType.PERCPU_CGROUP_STORAGE:
        if kc.size not in (8, 16):
            raise refuse(
                "key",
                kc.name,
                f"key type {kc.name} is {kc.size} bytes: a {kind} key is struct bpf_cgroup_storage_key (16 "
                "bytes: the cgroup's inode id and the attach type, percpu.maps.CGROUP_STORAGE_KEY) or the "
                "cgroup's u64 inode id (8 bytes)",
            )
        if max_entries:
            raise refuse(
                "max_entries",
                max_entries,
                f"max_entries {max_entries}: a {kind} map takes 0, the kernel making one element per "
                "cgroup a program using it is attached to",
            )
        return
    if map_type in ARRAY_TYPES and kc.size != 4:
        raise refuse(
            "key", kc.name, f"key type {kc.name} is {kc.size} bytes: an array's key is its 4-byte index (u32)"
        )
    if kc.size == 0:
        raise refuse(
            "key", kc.name, f"key type {kc.name} is 0 bytes: the kernel takes keys of 1 byte or more"
        )
    if map_type in ARRAY_TYPES | HASH_TYPES and max_entries == 0:
        raise refuse(
            "max_entries",
            0,
            f"max_entries 0: a {kind} map holds 1 element or more; give the number of elements it holds",
        )
    if map_type in HASH_TYPES and max_entries > MAX_HASH_ENTRIES:
        raise refuse(
            "max_entries",
            max_entries,
            f"max_entries {max_entries:,}: a {kind} map holds at most {MAX_HASH_ENTRIES:,} (2**31) entries "
            "(the kernel sizes its buckets as the next power of two, which must fit 32 bits); create it "
            "with fewer",
        )


def _create_error(
    map_type: MapType, name: str, kc: Codec, vc: Codec, max_entries: int, exc: OSError
) -> PercpuError:
    """The error for the kernel's refusal to create the map."""
    what = _creating(map_type, name)
    err = from_errno(exc.errno or 0, what)
    err.map_name = name or None
    if exc.errno in (_errno.E2BIG, _errno.ENOMEM) and vc.size > 4096:
        # Kernels before 6.1 cap cgroup storage values at a page (E2BIG); older ones answer ENOMEM to a
        # per-CPU value they cannot allocate.
        return SizeMismatch(
            f"{what}: this kernel refused {vc.size}-byte values ({err}); declare a smaller value type "
            "(Linux 5.10 takes at most 4096 bytes in a cgroup storage's values, later ones 32768)",
            what="value",
            expected=MAX_VALUE_SIZE,
            actual=vc.size,
            map_name=name or None,
        )
    if exc.errno == _errno.E2BIG:
        return BpfError(
            f"{what}: the kernel refused it as too large (E2BIG): {kc.size}-byte keys, {vc.size}-byte "
            f"values, {max_entries:,} entries; a hash element's key and value together stay under the "
            "kernel's largest allocation (4 MiB on most machines)",
            errno=exc.errno,
            map_name=name or None,
        )
    return err


def check_memory_for(
    map_type: MapType, name: str, key_size: int, value_size: int, max_entries: int, flags: int, possible: int
) -> None:
    """Refuse, before the syscall, a map whose creation would take more kernel memory than this process
    can still have (:meth:`percpu._machine.Machine.memory_available`). The kernel allocates a per-CPU map's
    values for every possible CPU at once, and a creation it cannot satisfy wakes the out-of-memory
    killer, which may end any process on the machine before the syscall returns."""
    cost = memory_bytes(map_type, key_size, value_size, max_entries, possible, flags, at_creation=True)
    room = _machine.current().memory_available()
    if room is None or cost <= room[0]:
        return
    available, limit = room
    lo, hi = 0, max_entries  # the most entries that fit: the cost grows with them
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if memory_bytes(map_type, key_size, value_size, mid, possible, flags, at_creation=True) <= available:
            lo = mid
        else:
            hi = mid - 1
    what = f"map {name!r}" if name else "the map"
    per_cpu = f" x {possible} possible CPUs" if map_type in PERCPU_TYPES else ""
    raise MapTooLarge(
        f"{what}: a {map_type.name} of {max_entries:,} entries x round_up({value_size}, 8) = "
        f"{round8(value_size)}-byte values{per_cpu} takes {human_bytes(cost)} ({cost:,} bytes) of kernel "
        f"memory, allocated when it is created; this process can have {human_bytes(available)} ({limit}). "
        f"At most {lo:,} entries fit: create it with fewer, or pass check_memory=False to try anyway",
        cost=cost,
        available=available,
        limit=limit,
        map_name=name or None,
    )
