"""A fake machine for unit tests: a fake kernel (percpu._machine.Kernel) with the kernel's per-CPU
semantics, and :class:`FakeMachine` (percpu._machine.Machine) whose /proc and /sys are a directory of its
own. The machine is whole: the kernel's possible-CPU count and the sysfs CPU lists come from the same
``cpu_ids``, so they cannot disagree. ``with installed(kernel):`` puts the kernel's machine in use.

Per-CPU maps copy ``round_up(value_size, 8) * possible`` bytes with zeroed padding; a map is created only
with the sizes its type's ``map_alloc_check`` takes (EINVAL, or E2BIG for a hash of more than 2**31
entries); arrays and cgroup storage cannot delete (EINVAL) and have no batch delete (ENOTSUPP); cgroup
storage updates only the elements there are (ENOENT; EINVAL for BPF_NOEXIST); hashes say E2BIG when full;
a batch update takes no element flags but BPF_F_LOCK (EINVAL before its first element); info on an fd
that is not open is EBADFD, as BPF_OBJ_GET_INFO_BY_FD says; pins live under ``bpffs`` (EEXIST, ENOENT for
a missing directory, EPERM outside it); ``get_next_key`` on a missing key restarts from the first key, as
the kernel's hash does; hash batches work a "bucket" of ``bucket`` keys at a time and say ENOSPC when
asked for fewer. With ``cpu_flag`` the fake has Linux 7.0's BPF_F_CPU / BPF_F_ALL_CPUS: one unpadded
``value_size`` value per element, EINVAL for a CPU id without BPF_F_CPU, both flags at once, or a map type
that is not per-CPU (and for BPF_F_ALL_CPUS on lookups), ERANGE for a CPU id past the possible CPUs.

Every call is recorded in ``calls`` so tests can assert that nothing reached the kernel. Integers are
checked as the real binding checks them (``percpu._libbpf.checked``): what the layers above pass must be
what a C integer holds, so a narrowing bug fails here as it would on the real kernel.
"""

from __future__ import annotations

import errno
import functools
import os
import platform
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from percpu import _machine
from percpu._libbpf import (
    BPF_EXIST,
    BPF_F_ALL_CPUS,
    BPF_F_CPU,
    BPF_NOEXIST,
    MapInfo,
    PartialBatch,
    c_text,
    checked,
)
from percpu.cpus import format_cpu_list
from percpu.layout import Layout
from percpu.maps import PERCPU_TYPES, MapType

ARRAYS = (MapType.ARRAY, MapType.PERCPU_ARRAY)
NO_DELETE = (*ARRAYS, MapType.PERCPU_CGROUP_STORAGE)  # elements user space cannot delete
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")
ENOTSUPP = 524  # the kernel's own "not supported", which reaches user space from bpf()


def _err(e: int) -> OSError:
    return OSError(e, os.strerror(e))


def _alloc_check(map_type: int, key_size: int, value_size: int, max_entries: int) -> None:
    """The map types' own checks at creation (array_map_alloc_check, htab_map_alloc_check and
    htab_map_alloc, cgroup_storage_map_alloc)."""
    if map_type in PERCPU_TYPES and ((value_size + 7) & ~7) > 32768:
        raise _err(errno.E2BIG)
    if map_type == MapType.PERCPU_CGROUP_STORAGE:
        if key_size not in (8, 16) or value_size == 0 or max_entries:
            raise _err(errno.EINVAL)
    elif map_type in ARRAYS:
        if key_size != 4 or value_size == 0 or max_entries == 0:
            raise _err(errno.EINVAL)
    elif key_size == 0 or value_size == 0 or max_entries == 0:
        raise _err(errno.EINVAL)
    elif max_entries > 1 << 31:
        raise _err(errno.E2BIG)


class FakeBpffs:
    """Pins as bpf_obj_pin_user() makes them: paths under ``root`` are this fake's own (its directories
    ``dirs``, its pins by path), the others the host's. The path is made first (ENOENT without its
    directory, EEXIST when it is there), then refused unless its directory is in bpffs (EPERM)."""

    def __init__(self, root: str = "/sys/fs/bpf") -> None:
        self.root = root
        self.dirs: set[str] = {root}
        self.pins: dict[str, int] = {}  # path -> map id

    def _mine(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root.rstrip("/") + "/")

    def pin(self, path: str, map_id: int) -> None:
        path = os.path.abspath(path)
        parent = os.path.dirname(path)
        if self._mine(parent):
            if parent not in self.dirs:
                raise _err(errno.ENOENT)
            if path in self.pins or path in self.dirs:
                raise _err(errno.EEXIST)
            self.pins[path] = map_id
            return
        if not os.path.isdir(parent):
            raise _err(errno.ENOENT)
        if os.path.lexists(path):
            raise _err(errno.EEXIST)
        raise _err(errno.EPERM)

    def get(self, path: str) -> int:
        """The map id pinned at ``path``; ENOENT when nothing is."""
        if os.path.abspath(path) not in self.pins:
            raise _err(errno.ENOENT)
        return self.pins[os.path.abspath(path)]


@dataclass
class FakeMap:
    info: MapInfo
    data: dict[bytes, bytes] = field(default_factory=dict)  # key -> the bytes a lookup writes


class FakeKernel:
    def __init__(
        self,
        possible: int,
        *,
        bucket: int = 4,
        batch: bool = True,
        deny: bool = False,
        cpu_ids: tuple[int, ...] | None = None,
        online: tuple[int, ...] | None = None,
        cpu_flag: bool = False,
    ) -> None:
        self.possible = possible
        self.cpu_ids = tuple(cpu_ids or range(possible))  # CPU id of each slot
        assert len(self.cpu_ids) == possible, "a fake machine's CPU ids and possible count agree"
        self.online = tuple(online or self.cpu_ids)
        self.cpu_flag = cpu_flag  # BPF_F_CPU (Linux 7.0): one CPU's slot, CPU id in flags bits 63..32
        self.bucket = bucket
        self.batch = batch
        self.deny = deny  # every call fails with EPERM, as for an unprivileged user
        self.fail_next: dict[str, int] = {}  # operation -> errno for its next call
        self.deny_ops: set[str] = set()  # operations that always fail with EPERM (e.g. map_create)
        self.on_next_key: Any = None  # hook called before each get_next_key (to delete concurrently)
        self.maps: dict[int, FakeMap] = {}
        self.fds: dict[int, int] = {}
        self.btfs: dict[int, bytes] = {}  # BTF id -> the blob loaded (ids count from 1)
        self.btf_fds: dict[int, int] = {}  # open BTF fd -> BTF id
        self.calls: list[str] = []
        self.bytes_out = 0  # value bytes copied to user space: shows a one-CPU read copied one CPU's values
        self.bpffs = FakeBpffs()
        self._next = 100

    @functools.cached_property
    def machine(self) -> FakeMachine:
        """The whole machine this kernel belongs to (its CPU lists written from ``cpu_ids``)."""
        return FakeMachine(self)

    # --- helpers ------------------------------------------------------------------------------------

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.deny or name in self.deny_ops:
            raise _err(errno.EPERM)
        e = self.fail_next.pop(name, None)
        if e is not None:
            raise _err(e)

    def _map(self, fd: int) -> FakeMap:
        fd = checked(fd, "fd", "fd")
        if fd not in self.fds:
            raise _err(errno.EBADF)
        return self.maps[self.fds[fd]]

    def elem(self, m: FakeMap) -> int:
        v = m.info.value_size
        return ((v + 7) & ~7) * self.possible if m.info.type in PERCPU_TYPES else v

    def _new_fd(self, map_id: int) -> int:
        self._next += 1
        self.fds[self._next] = map_id
        return self._next

    # --- Kernel ---------------------------------------------------------------------------------------

    def num_possible_cpus(self) -> int:
        return self.possible

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
        self._call("map_create")
        for v, what in ((key_size, "key size"), (value_size, "value size"), (max_entries, "max_entries")):
            checked(v, what)
        checked(flags, "map flags")
        if name:
            c_text(name, "map name", limit=15)
        if not set(name) <= NAME_CHARS:
            raise _err(errno.EINVAL)  # bpf_obj_name_cpy()
        _alloc_check(map_type, key_size, value_size, max_entries)
        btf_id = 0
        if btf_fd:
            if btf_fd not in self.btf_fds:
                raise _err(errno.EBADF)
            btf_id = self.btf_fds[btf_fd]
        map_id = len(self.maps) + 1
        info = MapInfo(
            map_id,
            map_type,
            name,
            key_size,
            value_size,
            max_entries,
            flags,
            btf_id,
            btf_key_type_id if btf_id else 0,
            btf_value_type_id if btf_id else 0,
            0,
        )
        m = FakeMap(info)
        # An array's elements are made here, as the kernel allocates them: a test that reaches this with a
        # map of gigabytes would have made the real kernel try (never create one for real in a test).
        assert map_type not in ARRAYS or max_entries * self.elem(m) <= 1 << 30, "the fake holds no such map"
        if map_type in ARRAYS:
            zero = bytes(self.elem(m))
            m.data = {i.to_bytes(4, "little"): zero for i in range(max_entries)}
        self.maps[map_id] = m
        return self._new_fd(map_id)

    def attach_storage(self, fd: int, key: bytes) -> None:
        """What attaching a program that uses cgroup storage map ``fd`` to a cgroup does: the kernel makes
        the element for ``key`` (struct bpf_cgroup_storage_key, or the cgroup's u64 id), zeroed."""
        m = self._map(fd)
        assert m.info.type == MapType.PERCPU_CGROUP_STORAGE and len(key) == m.info.key_size
        m.data[key] = bytes(self.elem(m))

    def btf_load(self, data: bytes) -> int:
        """Takes any blob: what the kernel would say of it is the kernel tests' to see."""
        self._call("btf_load")
        btf_id = len(self.btfs) + 1
        self.btfs[btf_id] = bytes(data)
        self._next += 1
        self.btf_fds[self._next] = btf_id
        return self._next

    def map_get_fd_by_id(self, map_id: int) -> int:
        self._call("map_get_fd_by_id")
        map_id = checked(map_id, "map id")
        if map_id not in self.maps:
            raise _err(errno.ENOENT)
        return self._new_fd(map_id)

    def map_get_next_id(self, start: int) -> int | None:
        self._call("map_get_next_id")
        later = [i for i in self.maps if i > start]
        return min(later) if later else None

    def obj_get(self, path: str) -> int:
        self._call("obj_get")
        return self._new_fd(self.bpffs.get(path))

    def obj_pin(self, fd: int, path: str) -> None:
        self._call("obj_pin")
        self.bpffs.pin(path, self._map(fd).info.id)

    def map_info(self, fd: int) -> MapInfo:
        self._call("map_info")
        if checked(fd, "fd", "fd") not in self.fds:
            raise _err(errno.EBADFD)  # BPF_OBJ_GET_INFO_BY_FD's answer, where the other commands say EBADF
        return self._map(fd).info

    def btf_raw(self, btf_id: int) -> bytes:
        self._call("btf_raw")
        if btf_id not in self.btfs:
            raise _err(errno.ENOENT)
        return self.btfs[btf_id]

    def dup(self, fd: int) -> int:
        self._call("dup")
        return self._new_fd(self._map(fd).info.id)

    def close(self, fd: int) -> None:
        self.fds.pop(fd, None)
        self.btf_fds.pop(fd, None)

    def _check_buffers(self, m: FakeMap, layout: Layout, key: np.ndarray | None = None) -> None:
        # What percpu believes must be what this kernel is: anything else is a sizing bug in percpu.
        assert layout.key_size == m.info.key_size and layout.value_size == m.info.value_size
        assert not layout.percpu or layout.possible_cpus == self.possible, "layout from another machine"
        if key is not None:
            assert key.nbytes >= m.info.key_size, "percpu handed the kernel a key smaller than it reads"

    def one_value(self, m: FakeMap, flags: int) -> bool:
        return bool(flags & (BPF_F_CPU | BPF_F_ALL_CPUS)) and m.info.type in PERCPU_TYPES

    def map_lookup(self, fd: int, key: np.ndarray, value: np.ndarray, layout: Layout, flags: int = 0) -> None:
        self._call("map_lookup")
        flags = checked(flags, "flags", "u64")
        m = self._map(fd)
        self._check_buffers(m, layout, key)
        k = key.tobytes()
        if flags:
            slot = self._cpu_slot(m, flags, lookup=True)
            if k not in m.data:
                raise _err(errno.ENOENT)
            st = (m.info.value_size + 7) & ~7
            raw = m.data[k][slot * st : slot * st + m.info.value_size]
            assert value.nbytes >= len(raw), "percpu handed the kernel a buffer smaller than it writes"
            value.reshape(-1).view(np.uint8)[: len(raw)] = np.frombuffer(raw, np.uint8)
            self.bytes_out += len(raw)
            return
        if k not in m.data:
            raise _err(errno.ENOENT)
        raw = m.data[k]
        assert value.nbytes >= len(raw), "percpu handed the kernel a buffer smaller than it writes"
        value.reshape(-1).view(np.uint8)[: len(raw)] = np.frombuffer(raw, np.uint8)
        self.bytes_out += len(raw)

    def _store(self, m: FakeMap, k: bytes, v: bytes, flags: int) -> None:
        if m.info.type == MapType.PERCPU_CGROUP_STORAGE:
            if flags not in (0, BPF_EXIST):
                raise _err(errno.EINVAL)  # the kernel makes the elements; user space only updates them
            if k not in m.data:
                raise _err(errno.ENOENT)
        elif m.info.type in ARRAYS:
            if k not in m.data:
                raise _err(errno.E2BIG if int.from_bytes(k, "little") >= m.info.max_entries else errno.EINVAL)
            if flags == BPF_NOEXIST:
                raise _err(errno.EEXIST)
        else:
            if flags == BPF_NOEXIST and k in m.data:
                raise _err(errno.EEXIST)
            if flags == BPF_EXIST and k not in m.data:
                raise _err(errno.ENOENT)
            if k not in m.data and len(m.data) >= m.info.max_entries:
                raise _err(errno.E2BIG)
        if m.info.type in PERCPU_TYPES:
            # The kernel keeps each slot's first value_size bytes; padding reads back as zeros.
            st = (m.info.value_size + 7) & ~7
            slots = [
                v[i * st : i * st + m.info.value_size] + bytes(st - m.info.value_size)
                for i in range(self.possible)
            ]
            v = b"".join(slots)
        m.data[k] = v

    def _cpu_slot(self, m: FakeMap, flags: int, *, lookup: bool = False) -> int:
        """The slot a BPF_F_CPU operation touches (-1 for BPF_F_ALL_CPUS), or the kernel's error."""
        low = flags & 0xFFFFFFFF
        if not self.cpu_flag or m.info.type not in PERCPU_TYPES:
            raise _err(errno.EINVAL)  # Linux < 7.0 knows neither flag; other map types never take them
        if low & BPF_F_CPU and low & BPF_F_ALL_CPUS:
            raise _err(errno.EINVAL)
        if flags >> 32 and not low & BPF_F_CPU:
            raise _err(errno.EINVAL)
        if lookup and low & ~BPF_F_CPU:
            raise _err(errno.EINVAL)  # lookups take BPF_F_CPU only
        if not lookup and low & ~(BPF_F_CPU | BPF_F_ALL_CPUS | BPF_EXIST):
            raise _err(errno.EINVAL)  # with either flag, updates take BPF_EXIST at most
        if low & BPF_F_ALL_CPUS:
            return -1
        cpu = flags >> 32
        if cpu not in self.cpu_ids:
            raise _err(errno.ERANGE)
        return self.cpu_ids.index(cpu)

    def map_update(self, fd: int, key: np.ndarray, value: np.ndarray, layout: Layout, flags: int = 0) -> None:
        self._call("map_update")
        flags = checked(flags, "flags", "u64")
        m = self._map(fd)
        self._check_buffers(m, layout, key)
        self._update_one(m, key.tobytes(), value.tobytes(), flags)

    def _update_one(self, m: FakeMap, k: bytes, v: bytes, flags: int) -> None:
        if flags & ~3:
            slot = self._cpu_slot(m, flags)
            vs = m.info.value_size
            assert len(v) >= vs, "percpu handed the kernel a value smaller than it reads"
            st = (vs + 7) & ~7
            old = bytearray(m.data.get(k, bytes(self.elem(m))))
            for s in range(self.possible) if slot < 0 else (slot,):
                old[s * st : s * st + vs] = v[:vs]
            self._store(m, k, bytes(old), flags & 3)
            return
        assert len(v) >= self.elem(m), "percpu handed the kernel a value smaller than it reads"
        self._store(m, k, v[: self.elem(m)], flags)

    def map_delete(self, fd: int, key: np.ndarray, layout: Layout) -> None:
        self._call("map_delete")
        m = self._map(fd)
        self._check_buffers(m, layout, key)
        if m.info.type in NO_DELETE:
            raise _err(errno.EINVAL)
        if m.data.pop(key.tobytes(), None) is None:
            raise _err(errno.ENOENT)

    def map_lookup_and_delete(
        self, fd: int, key: np.ndarray, value: np.ndarray, layout: Layout, flags: int = 0
    ) -> None:
        self.map_lookup(fd, key, value, layout)
        self.map_delete(fd, key, layout)

    def map_get_next_key(self, fd: int, key: np.ndarray | None, next_key: np.ndarray, layout: Layout) -> bool:
        self._call("map_get_next_key")
        if self.on_next_key is not None:
            self.on_next_key()
        m = self._map(fd)
        self._check_buffers(m, layout, key)
        assert next_key.nbytes >= m.info.key_size, "next_key buffer smaller than the kernel writes"
        keys = list(m.data)
        if not keys:
            return False
        k = None if key is None else key.tobytes()
        if k is None or k not in m.data:
            nxt = keys[0]  # the kernel's hash restarts from the first bucket
        else:
            i = keys.index(k)
            if i + 1 >= len(keys):
                return False
            nxt = keys[i + 1]
        next_key[:] = np.frombuffer(nxt, np.uint8)
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
        self._call("map_lookup_and_delete_batch" if delete else "map_lookup_batch")
        count, elem_flags = checked(count, "count"), checked(elem_flags, "elem_flags", "u64")
        m = self._map(fd)
        if not self.batch:
            raise _err(errno.EINVAL)
        if delete and m.info.type in ARRAYS:
            raise _err(errno.ENOTSUP)
        self._check_buffers(m, layout)
        slot = None
        if elem_flags:
            if delete:
                raise _err(errno.EINVAL)  # lookup-and-delete batches take no CPU flag
            slot = self._cpu_slot(m, elem_flags, lookup=True)
        key_size = m.info.key_size
        vs = m.info.value_size
        st = (vs + 7) & ~7
        need = vs if slot is not None else self.elem(m)
        assert values.nbytes >= need * count, "batch buffer smaller than the kernel writes"
        assert keys.nbytes >= key_size * count, "batch key buffer smaller than the kernel writes"
        start = 0 if in_batch is None else int.from_bytes(in_batch[:4].tobytes(), "little")
        items = list(m.data.items())
        step = 1 if m.info.type in ARRAYS else self.bucket
        if start >= len(items):
            return 0, True
        if step > count:
            raise _err(errno.ENOSPC)
        n = min(count - count % step, len(items) - start)
        ks = m.info.key_size
        for i, (k, v) in enumerate(items[start : start + n]):
            keys[i * ks : (i + 1) * ks] = np.frombuffer(k, np.uint8)
            out = v if slot is None else v[slot * st : slot * st + vs]
            values[i * need : (i + 1) * need] = np.frombuffer(out, np.uint8)
            self.bytes_out += len(out)
            if delete:
                del m.data[k]
        end = start + n
        out_batch[:4] = np.frombuffer((0 if delete else end).to_bytes(4, "little"), np.uint8)
        return n, end >= len(items) or (delete and not m.data)

    def map_update_batch(
        self, fd: int, keys: np.ndarray, values: np.ndarray, count: int, layout: Layout, elem_flags: int = 0
    ) -> int:
        self._call("map_update_batch")
        count, elem_flags = checked(count, "count"), checked(elem_flags, "elem_flags", "u64")
        m = self._map(fd)
        if not self.batch:
            raise PartialBatch(errno.EINVAL, 0)
        if elem_flags and not (self.cpu_flag and self.one_value(m, elem_flags)):
            # generic_map_update_batch() takes BPF_F_LOCK alone (for a value with a bpf_spin_lock, which
            # this fake never has) and returns before touching the count.
            raise PartialBatch(errno.EINVAL, count)
        self._check_buffers(m, layout)
        ks = m.info.key_size
        need = m.info.value_size if self.one_value(m, elem_flags) else self.elem(m)
        assert keys.nbytes >= ks * count and values.nbytes >= need * count
        for i in range(count):
            try:
                self._update_one(
                    m,
                    keys[i * ks : (i + 1) * ks].tobytes(),
                    values[i * need : (i + 1) * need].tobytes(),
                    elem_flags,
                )
            except OSError as exc:
                raise PartialBatch(exc.errno or 0, i) from exc
        return count

    def map_delete_batch(self, fd: int, keys: np.ndarray, count: int, layout: Layout) -> int:
        self._call("map_delete_batch")
        m = self._map(fd)
        self._check_buffers(m, layout)
        assert keys.nbytes >= m.info.key_size * count
        if not self.batch:
            raise PartialBatch(errno.EINVAL, 0)
        if m.info.type in NO_DELETE:
            raise PartialBatch(ENOTSUPP, count)  # no map_delete_batch op: bpf_map_do_batch() says ENOTSUPP
        ks = m.info.key_size
        for i in range(count):
            if m.data.pop(keys[i * ks : (i + 1) * ks].tobytes(), None) is None:
                raise PartialBatch(errno.ENOENT, i)
        return count


ALL_CAPS = (1 << 41) - 1
# A usual machine's file systems: the ones percpu looks for (bpffs, cgroup2, tracefs) where they usually are.
MOUNTS = (
    ("/dev/root", "/", "ext4"),
    ("sysfs", "/sys", "sysfs"),
    ("cgroup2", "/sys/fs/cgroup", "cgroup2"),
    ("bpf", "/sys/fs/bpf", "bpf"),
    ("tracefs", "/sys/kernel/tracing", "tracefs"),
)


class FakeMachine(_machine.Machine):
    """A machine whose /proc and /sys are files of its own, written from ``kernel``'s CPU ids.

    ``caps`` is CapEff, ``seccomp`` the Seccomp mode (2: a filter, as a container has), ``mounts`` the
    mount table (source, point, fstype), ``sysctls`` dotted names to values, ``pid_namespace`` this
    process's (None: the initial one), ``euid`` its user, ``cgroup`` its cgroup v2 path (None: no v2
    line), ``arch`` what ``uname -m`` says (the host's unless given),
    ``statfs`` directories to the f_type statfs(2) gives for the files under them (the longest match
    wins; nothing else answers), ``mem_available`` the bytes /proc/meminfo's MemAvailable says (None: no
    such line), ``cgroup_memory`` what the memory cgroup has left under its limit and which limit that is
    (None: no limit; the real machine's cgroup files are never read). An fd is a map when the fake kernel
    has it open, as fdinfo would say.
    Other processes: :meth:`add_task`.
    """

    def __init__(
        self,
        kernel: FakeKernel,
        *,
        caps: int | None = ALL_CAPS,
        seccomp: int = 0,
        mounts: tuple[tuple[str, str, str], ...] = MOUNTS,
        sysctls: dict[str, str] | None = None,
        pid_namespace: tuple[int, int] | None = None,
        euid: int = 0,
        cgroup: str | None = "/",
        arch: str | None = None,
        statfs: dict[str, int] | None = None,
        mem_available: int | None = 64 << 30,
        cgroup_memory: tuple[int, str] | None = None,
    ) -> None:
        root = tempfile.mkdtemp(prefix="percpu-fake-machine-")
        weakref.finalize(self, shutil.rmtree, root, True)
        super().__init__(kernel, proc=os.path.join(root, "proc"), sys=os.path.join(root, "sys"))
        self.fake = kernel
        self.pidns = pid_namespace
        self.uid = euid
        self.arch = arch or platform.machine()
        self.statfs = dict(statfs or {})
        self.cgroup_memory = cgroup_memory
        files = {
            os.path.join(self.cpu_root, "possible"): format_cpu_list(kernel.cpu_ids),
            os.path.join(self.cpu_root, "present"): format_cpu_list(kernel.cpu_ids),
            os.path.join(self.cpu_root, "online"): format_cpu_list(kernel.online),
            os.path.join(self.proc, "self", "mounts"): "\n".join(" ".join(m) + " rw 0 0" for m in mounts),
        }
        if mem_available is not None:
            files[os.path.join(self.proc, "meminfo")] = (
                f"MemTotal:       {2 * mem_available // 1024} kB\nMemAvailable:   {mem_available // 1024} kB"
            )
        if caps is not None:
            files[os.path.join(self.proc, "self", "status")] = (
                f"Name:\tpython\nCapEff:\t{caps:016x}\nSeccomp:\t{seccomp}\n"
            )
        if cgroup is not None:
            files[os.path.join(self.proc, "self", "cgroup")] = f"12:memory:/other\n0::{cgroup}"
        for name, value in (sysctls or {}).items():
            files[os.path.join(self.proc, "sys", *name.split("."))] = value
        self._write(files)

    def _write(self, files: dict[str, str]) -> None:
        for path, text in files.items():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text + "\n")

    def add_task(
        self, pid: int, *, state: str = "S", ns_pids: tuple[int, ...] = (), cmdline: str = "sleep\x0060"
    ) -> None:
        """A process (or thread) ``pid`` in this machine's /proc: its state letter, its pid in each pid
        namespace below this one (``ns_pids``), its NUL-separated arguments."""
        task = os.path.join(self.proc, str(pid))
        nspid = "\t".join(str(p) for p in (pid, *ns_pids))
        self._write(
            {
                os.path.join(task, "stat"): f"{pid} (a) odd) name) {state} 1 {pid} {pid} 0",
                os.path.join(task, "status"): f"Name:\tx\nPid:\t{pid}\nNSpid:\t{nspid}",
                os.path.join(task, "cmdline"): cmdline,
            }
        )

    def set_thread(self, tgid: int, tid: int, *, state: str = "R", cpu: int = 0, runtime: int = 0) -> None:
        """Thread ``tid`` of process ``tgid`` as /proc/TGID/task/TID shows it: its state letter, the CPU it
        is on (stat's field 39) and its time on the CPU (schedstat's first field); written again on each
        call, as the kernel's files change."""
        task = os.path.join(self.proc, str(tgid), "task", str(tid))
        fields = [state, *(["0"] * 49)]
        fields[36] = str(cpu)  # field 39: fields here start at the state, field 3
        self._write(
            {
                os.path.join(task, "stat"): f"{tid} (a (b) c) " + " ".join(fields),
                os.path.join(task, "schedstat"): f"{runtime} 0 1",
            }
        )

    def end_thread(self, tgid: int, tid: int) -> None:
        """The thread exited: its /proc directory is gone."""
        shutil.rmtree(os.path.join(self.proc, str(tgid), "task", str(tid)))

    def architecture(self) -> str:
        return self.arch

    def cgroup_memory_left(self) -> tuple[int, str] | None:
        return self.cgroup_memory

    def fs_magic(self, path: str) -> int | None:
        real = os.path.realpath(path)
        under = [d for d in self.statfs if real == d or real.startswith(d.rstrip("/") + "/")]
        return self.statfs[max(under, key=len)] if under else None

    def fd_kind(self, fd: int) -> str | None:
        return "map" if fd in self.fake.fds else None

    def threads(self) -> int:
        return 1

    def pid_namespace(self) -> tuple[int, int] | None:
        return self.pidns

    def euid(self) -> int:
        return self.uid


@contextmanager
def installed(kernel: FakeKernel, machine: FakeMachine | None = None) -> Iterator[FakeKernel]:
    """Put ``kernel``'s machine (or ``machine``, built on it) in use for a ``with`` block."""
    with _machine.use(machine or kernel.machine):
        yield kernel
