"""Reading the counter's per-CPU arrays at what the online CPUs cost.

A whole-map read copies every possible CPU's slot of every key: on a VM with 2 CPUs online of 32 possible,
30 of every 32 values copied are the zeros, or the unchanging counts, of CPUs that are not running. On a
kernel with BPF_F_CPU (:data:`percpu.features.CPU_FLAG_FEATURE`, Linux 7.0) :class:`CpuReads` reads one
CPU's slots at a time: each online CPU's at every read, and each offline CPU's once after it is seen
offline, since a CPU that is offline runs nothing and its counts cannot change. Elsewhere, or when told
to (``one_cpu=False``), every read is the whole map, as before.

Each CPU read so is one batch lookup, where the whole map is one: a map whose values are a few bytes (the
counter's ``dropped`` and ``lost``) costs less read whole, and so does any map when most possible CPUs are
online. :class:`CpuReads` reads one CPU at a time only where that copies at least
:data:`SYSCALL_BYTES` fewer bytes for each lookup it adds.

A CPU that comes online, makes calls and goes offline again between two reads is never seen online:
its slots, read once when it went offline the time before, would stay as they were. Every
:data:`FULL_READ_EVERY` seconds the whole map is read again, which bounds how long such calls can wait to
be counted; they are late then, never lost or counted twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from .. import features
from ..cpulist import CpuList
from ..errors import NotSupported
from ..maps import ArrayReader, Map, PerCpuArray

__all__ = ["FULL_READ_EVERY", "SYSCALL_BYTES", "CpuReads"]

# Seconds between whole-map reads when reading one CPU at a time (see the module's docstring).
FULL_READ_EVERY = 60.0

# What one more batch lookup is taken to cost, in bytes copied: a syscall's entry and exit and the batch
# set-up cost about as much as copying a page.
SYSCALL_BYTES = 4096


class CpuReads:
    """Reads of per-CPU arrays (keys the same on every CPU) for one counter, ``cpus`` the possible CPUs.
    ``one_cpu=False`` makes every read whole even where the kernel could read one CPU's slots.

    Either way a map read after its first is a batch lookup into buffers kept from one read to the next
    (where the kernel has batch lookups of arrays), its arguments worked out once: a snapshot would
    allocate and zero its own at every read. Read one CPU at a time, a map's last values are kept by
    CPU, each CPU's values in one run of memory, copied there from that CPU's reader after each read."""

    def __init__(
        self,
        cpus: CpuList,
        *,
        one_cpu: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cpus = cpus
        self._one_cpu: bool | None = None if one_cpu else False  # None: ask the kernel
        self._clock = clock
        self._online: np.ndarray | None = None  # by slot: whether the CPU is online (None: unknown)
        self._online_list: CpuList | None = None  # what _online was made from
        self._whole = True
        self._full_due = 0.0
        # Per map: its keys; its whole reads after the first; when read one CPU at a time, the last values
        # read of each possible CPU (CPUs, n, ...) and each CPU's reader, copied into its row; the last
        # whole read's values while the rows do not hold them yet; which CPUs' values are final (read
        # after the CPU was seen offline) by the last whole read or the one-CPU reads since.
        self._keys: dict[str, np.ndarray] = {}
        self._wholes: dict[str, ArrayReader] = {}
        self._rows: dict[str, np.ndarray] = {}
        self._row_reads: dict[str, dict[int, ArrayReader]] = {}
        self._read_last: dict[str, np.ndarray] = {}
        self._final: dict[str, np.ndarray] = {}

    @property
    def one_cpu(self) -> bool:
        """Whether reads may take one CPU's slots at a time (BPF_F_CPU, unless told otherwise)."""
        if self._one_cpu is None:
            self._one_cpu = features.cpu_flag()
        return self._one_cpu

    def begin(self, online: CpuList | None) -> None:
        """Before a snapshot's maps are read: the CPUs online now (None: unknown, and the reads are whole)
        and whether a whole read is due."""
        if online is None or not self.one_cpu:
            self._online = self._online_list = None
        elif online != self._online_list:
            on = frozenset(online)
            self._online = np.fromiter((c in on for c in self.cpus), dtype=bool, count=len(self.cpus))
            self._online_list = online
        now = self._clock()
        self._whole = self._online is None or now >= self._full_due
        if self._whole and self._online is not None:
            self._full_due = now + FULL_READ_EVERY

    def read(self, name: str, m: Map) -> tuple[np.ndarray, np.ndarray]:
        """The keys and values (n, possible CPUs, ...) of per-CPU array ``m`` (called ``name``), both
        read-only. The values may be this reader's own array, changed by the next read of ``name``: copy
        what is kept past it."""
        if not self.one_cpu:
            return self._whole_values(name, m)
        online = self._online
        final = self._final.get(name)
        if self._whole or online is None or final is None:
            return self._read_whole(name, m, online)
        todo = np.flatnonzero(online | ~final)
        if not self._cheaper(m, len(todo)) or name not in self._wholes:  # (no batch lookups: no BPF_F_CPU)
            return self._read_whole(name, m, online)
        assert isinstance(m, PerCpuArray), name
        rows = self._by_cpu(name)
        reads = self._row_reads[name]
        for slot in todo.tolist():
            reader = reads.get(slot)
            if reader is None:
                reader = reads[slot] = m.reader(cpu=self.cpus[slot])
            try:
                values = reader.read()
            except NotSupported:
                # A kernel that takes BPF_F_CPU in lookups but not in batch lookups: whole reads, as before.
                self._one_cpu = False
                return self._whole_values(name, m)
            if len(values) != rows.shape[1]:
                return self._read_whole(name, m, online)  # not an array's every key: not a row to keep
            rows[slot] = values
        final[todo] = ~online[todo]
        return self._keys[name], _read_only(rows.swapaxes(0, 1))

    def _by_cpu(self, name: str) -> np.ndarray:
        """The map's last values by CPU, with the last whole read's in them if it came after."""
        last = self._read_last.pop(name, None)
        rows = self._rows.get(name)
        if rows is None:
            assert last is not None, name
            rows = self._rows[name] = np.array(last.swapaxes(0, 1), order="C")  # a copy, writable
            self._row_reads[name] = {}
        elif last is not None:
            np.copyto(rows, last.swapaxes(0, 1))  # the rows stay where each CPU's reads write
        return rows

    def _cheaper(self, m: Map, reads: int) -> bool:
        """Whether ``reads`` one-CPU batch lookups cost less than one whole read (see SYSCALL_BYTES)."""
        n = max(m.info.max_entries, 1)
        whole = SYSCALL_BYTES + n * m.layout.element_bytes
        return reads * (SYSCALL_BYTES + n * m.layout.value_size) < whole

    def _whole_values(self, name: str, m: Map) -> tuple[np.ndarray, np.ndarray]:
        """The whole map: its first read a snapshot (which learns whether the kernel has batch lookups of
        its type, and reads each index where not), the next ones into the buffers kept for them."""
        whole = self._wholes.get(name)
        if whole is not None:
            try:
                values = whole.read()
            except NotSupported:
                del self._wholes[name]
            else:
                if len(values) == whole.n:
                    return self._keys[name], values
        snap = m.snapshot()
        self._keys[name] = snap.keys
        if isinstance(m, PerCpuArray) and features.known(features.BATCH_OPS, m.info.type):
            self._wholes[name] = m.reader()
        return snap.keys, snap.values

    def _read_whole(self, name: str, m: Map, online: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        keys, values = self._whole_values(name, m)
        # Put in the rows by CPU only when a one-CPU read follows (a map that one CPU's reads cost more
        # to read, such as the 1-key dropped, is read whole every time): that read copies it then.
        self._read_last[name] = values
        # Read after the CPUs were seen offline: what it holds of them is final. Online unknown: none is.
        self._final[name] = ~online if online is not None else np.zeros(len(self.cpus), dtype=bool)
        return keys, values


def _read_only(a: np.ndarray) -> np.ndarray:
    v: np.ndarray = a.view()
    v.flags.writeable = False
    return v
