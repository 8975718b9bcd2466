"""``PerCpuMap``: what only per-CPU maps do, one CPU's value at a time (BPF_F_CPU / BPF_F_ALL_CPUS where
the kernel has :data:`~percpu.features.CPU_FLAG_FEATURE`, read-modify-write of the whole element
elsewhere) and one CPU's snapshot."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import features
from .._libbpf import BPF_ANY, BPF_EXIST, BPF_NOEXIST
from ..cpus import CpuList
from ..errors import KeyNotFound, NotSupported
from ..layout import BPF_F_ALL_CPUS, BPF_F_CPU
from ..values import PerCpuValue
from ._base import Map
from ._bulk import BulkReader
from ._errors import Op, key_exists, no_key
from ._kinds import Snapshot


class PerCpuMap(Map):
    """Base of the per-CPU maps: values are :class:`PerCpuValue` with one slot per possible CPU."""

    percpu = True

    def _cpu_flags(self, cpu: int) -> int:
        # A CPU that is not possible is refused here, before any syscall; the id is then the list's own
        # Python int (a numpy uint32 shifted by 32 in its own type is 0, which names CPU 0).
        return BPF_F_CPU | (self.cpus[self.enc.slot(cpu)] << 32)

    def lookup_cpu(self, key: Any, cpu: int) -> Any:
        """CPU ``cpu``'s value at ``key``: one value read with BPF_F_CPU where the kernel has it
        (:data:`~percpu.features.CPU_FLAG_FEATURE`), else the whole element read and one CPU's value
        taken from it."""
        flags = self._cpu_flags(cpu)
        if features.cpu_flag():
            h = self.handle
            k = self.enc.key(key)
            buf = self.layout.value_buffer(1, flags)
            h.call(Op("lookup", key=key, flags=flags), h.kernel.map_lookup, k, buf, self.layout, flags)
            return self.enc.decode_one(buf)
        value: PerCpuValue = self.lookup(key)
        return value[cpu]

    def update_all(self, key: Any, value: Any, flags: int = BPF_ANY) -> None:
        """Write the same ``value`` on every possible CPU in one syscall: one value buffer with
        BPF_F_ALL_CPUS where the kernel has it (:data:`~percpu.features.CPU_FLAG_FEATURE`), else the whole
        per-CPU element."""
        flags = self._flags(flags)
        if features.cpu_flag():
            self._update_raw(self.enc.key(key), self.enc.encode_one(value), flags | BPF_F_ALL_CPUS, key)
            return
        self.update(key, [value] * self.layout.slots, flags)

    def update_cpu(self, key: Any, cpu: int, value: Any, flags: int = BPF_ANY) -> None:
        """Write CPU ``cpu``'s value at ``key``, leaving the other CPUs' values as they are.

        With BPF_F_CPU (:data:`~percpu.features.CPU_FLAG_FEATURE`) this is one syscall touching one CPU's
        value. Older kernels have no such operation: percpu then reads all slots, changes one and writes
        all back. That read-modify-write is not atomic: a BPF program writing another CPU's slot in
        between loses that write. A key that does not exist yet is created with zeros on the other CPUs.
        """
        flags = self._flags(flags)
        cpu_flags = self._cpu_flags(cpu)
        slot = self.enc.slot(cpu)
        k = self.enc.key(key)
        raw = np.frombuffer(self.value_codec.encode(value), np.uint8)
        if features.cpu_flag() and flags & 3 != BPF_NOEXIST:
            try:
                self._update_raw(k, self.enc.encode_one(value), BPF_EXIST | cpu_flags, key)
                return
            except KeyNotFound:
                if flags & 3 == BPF_EXIST:
                    raise
            # A new key. The first kernels with BPF_F_CPU left stale values in the other CPUs' slots of a
            # hash element created that way: create it whole, zeros on the other CPUs.
            whole = self.layout.value_buffer()
            off = self.layout.slot_offset(slot)
            whole[off : off + raw.size] = raw
            self._update_raw(k, whole, BPF_NOEXIST, key)
            return
        buf = self.layout.value_buffer()
        h = self.handle
        try:
            h.call(Op("lookup"), h.kernel.map_lookup, k, buf, self.layout)
        except KeyNotFound as exc:
            if flags == BPF_EXIST:
                raise no_key(self.info, key, replace=True, errno=exc.errno) from exc
            buf[:] = 0
        else:
            if flags == BPF_NOEXIST:
                raise key_exists(self.info, key)
        off = self.layout.slot_offset(slot)
        buf[off : off + raw.size] = raw
        self._update_raw(k, buf, flags, key)

    def snapshot(self, *, batch: bool | None = None, cpu: int | None = None) -> Snapshot:
        """Read the whole map into numpy (see :meth:`Map.snapshot`).

        With ``cpu``, only CPU ``cpu``'s values: ``values`` is (n, ...) and ``cpus`` that one CPU. Where
        the kernel has BPF_F_CPU (:data:`~percpu.features.CPU_FLAG_FEATURE`) the batch read copies just
        that CPU's values; elsewhere the whole map is read and the column taken.
        """
        if cpu is None:
            return super().snapshot(batch=batch)
        flags = self._cpu_flags(cpu)
        if features.cpu_flag() and batch is not False:
            reader = BulkReader(self, elem_flags=flags)
            try:
                keys, vals, n = reader.read(delete=False, batch=True)
            except NotSupported:
                if batch:
                    raise
            else:
                return self._one_cpu_snapshot(keys, vals, n, cpu)
        full = super().snapshot(batch=batch)
        col = np.ascontiguousarray(full.cpu(cpu))
        col.flags.writeable = False
        return Snapshot(full.keys, col, CpuList((cpu,)), False, self.key_codec, self.value_codec)

    def _one_cpu_snapshot(self, keys: np.ndarray, vals: np.ndarray, n: int, cpu: int) -> Snapshot:
        ks, vs = self.info.key_size, self.info.value_size
        k = keys[: n * ks].copy().view(self.key_codec.dtype)
        v = vals[: n * vs].copy().view(self.value_codec.dtype)
        k.flags.writeable = False
        v.flags.writeable = False
        return Snapshot(k, v, CpuList((cpu,)), False, self.key_codec, self.value_codec)
