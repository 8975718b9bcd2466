"""Synthetic syscall snapshots for the unit tests of syscount and of the report rendering."""

from __future__ import annotations

import numpy as np

from percpu.cpus import CpuList
from percpu.syscount import NR_SLOTS, SyscallSnapshot

CPUS = CpuList([0, 2, 3])  # a possible list with a gap: column 1 is CPU 2


def snap(t: float, pairs: dict[tuple[int, int], int], **kw: object) -> SyscallSnapshot:
    """A snapshot at time t whose counts are zero but for {(row, slot): count}."""
    counts = np.zeros((len(CPUS), NR_SLOTS), dtype=np.uint64)
    for (row, slot), v in pairs.items():
        counts[row, slot] = v
    return SyscallSnapshot(time=t, cpus=CPUS, counts=counts, arch="x86_64", **kw)  # type: ignore[arg-type]
