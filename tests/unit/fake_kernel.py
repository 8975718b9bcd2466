"""A fake of the kernel seam (percpu._libbpf.Backend) with the kernel's per-CPU semantics, for unit tests.

Per-CPU maps copy ``round_up(value_size, 8) * possible`` bytes with zeroed padding; arrays cannot delete
(EINVAL); hashes say E2BIG when full; ``get_next_key`` on a missing key restarts from the first key, as
the kernel's hash does; hash batches work a "bucket" of ``bucket`` keys at a time and say ENOSPC when
asked for fewer. Every call is recorded in ``calls`` so tests can assert that nothing reached the kernel.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from percpu._libbpf import BPF_EXIST, BPF_F_CPU, BPF_NOEXIST, MapInfo, PartialBatch
from percpu.maps import PERCPU_TYPES, MapType

ARRAYS = (MapType.ARRAY, MapType.PERCPU_ARRAY)


def _err(e: int) -> OSError:
    return OSError(e, os.strerror(e))


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
        cpu_flag: bool = False,
    ) -> None:
        self.possible = possible
        self.cpu_ids = cpu_ids or tuple(range(possible))  # CPU id of each slot
        self.cpu_flag = cpu_flag  # BPF_F_CPU (Linux 7.0): one CPU's slot, CPU id in flags bits 63..32
        self.bucket = bucket
        self.batch = batch
        self.deny = deny  # every call fails with EPERM, as for an unprivileged user
        self.fail_next: dict[str, int] = {}  # operation -> errno for its next call
        self.on_next_key: Any = None  # hook called before each get_next_key (to delete concurrently)
        self.maps: dict[int, FakeMap] = {}
        self.fds: dict[int, int] = {}
        self.calls: list[str] = []
        self._next = 100

    # --- helpers ------------------------------------------------------------------------------------

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.deny:
            raise _err(errno.EPERM)
        e = self.fail_next.pop(name, None)
        if e is not None:
            raise _err(e)

    def _map(self, fd: int) -> FakeMap:
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

    # --- Backend ------------------------------------------------------------------------------------

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
        if map_type in PERCPU_TYPES and ((value_size + 7) & ~7) > 32768:
            raise _err(errno.E2BIG)
        map_id = len(self.maps) + 1
        info = MapInfo(map_id, map_type, name, key_size, value_size, max_entries, flags, 0, 0, 0, 0)
        m = FakeMap(info)
        if map_type in ARRAYS:
            zero = bytes(self.elem(m))
            m.data = {i.to_bytes(4, "little"): zero for i in range(max_entries)}
        self.maps[map_id] = m
        return self._new_fd(map_id)

    def map_get_fd_by_id(self, map_id: int) -> int:
        self._call("map_get_fd_by_id")
        if map_id not in self.maps:
            raise _err(errno.ENOENT)
        return self._new_fd(map_id)

    def map_get_next_id(self, start: int) -> int | None:
        self._call("map_get_next_id")
        later = [i for i in self.maps if i > start]
        return min(later) if later else None

    def obj_get(self, path: str) -> int:
        self._call("obj_get")
        raise _err(errno.ENOENT)

    def obj_pin(self, fd: int, path: str) -> None:
        self._call("obj_pin")

    def map_info(self, fd: int) -> MapInfo:
        self._call("map_info")
        return self._map(fd).info

    def close(self, fd: int) -> None:
        self.fds.pop(fd, None)

    def map_lookup(self, fd: int, key: np.ndarray, value: np.ndarray, need: int, flags: int = 0) -> None:
        self._call("map_lookup")
        m = self._map(fd)
        k = key.tobytes()
        if flags:
            slot = self._cpu_slot(m, flags)  # EINVAL without BPF_F_CPU support, as on Linux < 7.0
            if k not in m.data:
                raise _err(errno.ENOENT)
            st = (m.info.value_size + 7) & ~7
            raw = m.data[k][slot * st : slot * st + m.info.value_size]
            assert need == len(raw), f"percpu expected {need} bytes, the kernel writes {len(raw)}"
            assert value.nbytes >= len(raw), "percpu handed the kernel a buffer smaller than it writes"
            value.reshape(-1).view(np.uint8)[: len(raw)] = np.frombuffer(raw, np.uint8)
            return
        if k not in m.data:
            raise _err(errno.ENOENT)
        raw = m.data[k]
        assert value.nbytes >= len(raw), "percpu handed the kernel a buffer smaller than it writes"
        assert need == len(raw), f"percpu expected {need} bytes, the kernel writes {len(raw)}"
        value.reshape(-1).view(np.uint8)[: len(raw)] = np.frombuffer(raw, np.uint8)

    def _store(self, m: FakeMap, k: bytes, v: bytes, flags: int) -> None:
        if m.info.type in ARRAYS:
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

    def _cpu_slot(self, m: FakeMap, flags: int) -> int:
        if not (self.cpu_flag and flags & 0xFFFFFFFF & ~3 == BPF_F_CPU and m.info.type in PERCPU_TYPES):
            raise _err(errno.EINVAL)
        cpu = flags >> 32
        if cpu not in self.cpu_ids:
            raise _err(errno.EINVAL)
        return self.cpu_ids.index(cpu)

    def map_update(self, fd: int, key: np.ndarray, value: np.ndarray, need: int, flags: int = 0) -> None:
        self._call("map_update")
        m = self._map(fd)
        if flags & ~3:
            slot = self._cpu_slot(m, flags)
            assert need == m.info.value_size
            k = key.tobytes()
            st = (m.info.value_size + 7) & ~7
            old = bytearray(m.data.get(k, bytes(self.elem(m))))
            old[slot * st : slot * st + need] = value.tobytes()[:need]
            self._store(m, k, bytes(old), flags & 3)
            return
        assert need == self.elem(m)
        self._store(m, key.tobytes(), value.tobytes()[: self.elem(m)], flags)

    def map_delete(self, fd: int, key: np.ndarray) -> None:
        self._call("map_delete")
        m = self._map(fd)
        if m.info.type in ARRAYS:
            raise _err(errno.EINVAL)
        if m.data.pop(key.tobytes(), None) is None:
            raise _err(errno.ENOENT)

    def map_lookup_and_delete(
        self, fd: int, key: np.ndarray, value: np.ndarray, need: int, flags: int = 0
    ) -> None:
        self.map_lookup(fd, key, value, need)
        self.map_delete(fd, key)

    def map_get_next_key(self, fd: int, key: np.ndarray | None, next_key: np.ndarray) -> bool:
        self._call("map_get_next_key")
        if self.on_next_key is not None:
            self.on_next_key()
        m = self._map(fd)
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
        need: int,
        key_size: int,
        delete: bool = False,
        elem_flags: int = 0,
    ) -> tuple[int, bool]:
        self._call("map_lookup_and_delete_batch" if delete else "map_lookup_batch")
        m = self._map(fd)
        if not self.batch:
            raise _err(errno.EINVAL)
        if delete and m.info.type in ARRAYS:
            raise _err(errno.ENOTSUP)
        assert need == self.elem(m)
        assert key_size == m.info.key_size
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
            values[i * need : (i + 1) * need] = np.frombuffer(v, np.uint8)
            if delete:
                del m.data[k]
        end = start + n
        out_batch[:4] = np.frombuffer((0 if delete else end).to_bytes(4, "little"), np.uint8)
        return n, end >= len(items) or (delete and not m.data)

    def map_update_batch(
        self, fd: int, keys: np.ndarray, values: np.ndarray, count: int, need: int, elem_flags: int = 0
    ) -> int:
        self._call("map_update_batch")
        m = self._map(fd)
        if not self.batch:
            raise PartialBatch(errno.EINVAL, 0)
        ks = m.info.key_size
        for i in range(count):
            try:
                self._store(
                    m,
                    keys[i * ks : (i + 1) * ks].tobytes(),
                    values[i * need : (i + 1) * need].tobytes(),
                    elem_flags,
                )
            except OSError as exc:
                raise PartialBatch(exc.errno or 0, i) from exc
        return count

    def map_delete_batch(self, fd: int, keys: np.ndarray, count: int) -> int:
        self._call("map_delete_batch")
        m = self._map(fd)
        if not self.batch:
            raise PartialBatch(errno.EINVAL, 0)
        ks = m.info.key_size
        for i in range(count):
            if m.data.pop(keys[i * ks : (i + 1) * ks].tobytes(), None) is None:
                raise PartialBatch(errno.ENOENT, i)
        return count
