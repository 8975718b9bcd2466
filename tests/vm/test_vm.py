"""Where the trap bites: possible CPUs far above online CPUs. Run inside the VM matrix (scripts/vm-matrix),
which boots kernels with ``-smp 2,maxcpus=8`` and ``maxcpus=64``; on a machine whose possible CPUs are all
online these tests skip and say so."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import percpu
from percpu import _machine
from percpu.cpus import possible_cpus
from percpu.layout import round8 as stride
from percpu.syscalls import syscall_number
from percpu.syscount import Filters, SyscallCounter

from ..kernel.conftest import assert_counted

pytestmark = pytest.mark.vm

TOPO = percpu.cpu_lists()
POSSIBLE = list(TOPO.possible)
ONLINE = list(TOPO.online)
GETPPID = syscall_number("getppid")
WORKLOAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "helpers", "syscall_workload.py")

needs_gap = pytest.mark.skipif(
    len(POSSIBLE) <= len(ONLINE),
    reason=f"needs possible CPUs > online CPUs (here {len(POSSIBLE)} = {len(ONLINE)}); "
    "scripts/vm-matrix runs it",
)


def test_topology_agrees_with_the_kernel() -> None:
    """The VM's CPU lists are what every other test here relies on: sysfs's possible list has the kernel's
    own count, online CPUs are possible ones, and percpu's CPU ids are sysfs's."""
    print(f"\nkernel {os.uname().release}: possible {TOPO.possible} ({len(POSSIBLE)}), online {TOPO.online}")
    assert len(POSSIBLE) == _machine.current().kernel.num_possible_cpus()
    assert ONLINE and set(ONLINE) <= set(POSSIBLE)
    assert list(possible_cpus()) == POSSIBLE


@needs_gap
@pytest.mark.parametrize("size", [4, 8, 12, 100])
def test_one_value_buffer_is_overrun_by_possible_minus_one_strides(size: int) -> None:
    """The trap itself, shown safely: the raw syscall given a one-value buffer writes past it."""
    lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    lib.bpf_map_lookup_elem.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    with percpu.PerCpuArray.create(np.dtype((np.void, size)), 1) as m:
        m.update(0, [bytes([0x11 + (i % 64)]) * size for i in range(len(POSSIBLE))])
        # A "one-value" buffer followed by guard bytes; the whole region is ours, so the overrun lands
        # in memory we own and can measure.
        region = len(POSSIBLE) * stride(size) + 64
        buf = (ctypes.c_ubyte * region)(*([0xAA] * region))
        key = ctypes.c_uint32(0)
        assert lib.bpf_map_lookup_elem(m.fd, ctypes.byref(key), buf) == 0
        raw = bytes(buf)
        past = raw[size:]
        overrun = len(past) - len(past.rstrip(b"\xaa"))
        written_past = len(past) - overrun
        assert written_past == (len(POSSIBLE) - 1) * stride(size) + (stride(size) - size)
        print(
            f"\n{size}-byte value: the kernel wrote {written_past} bytes past a one-value buffer "
            f"({len(POSSIBLE)} possible CPUs, stride {stride(size)})"
        )


@needs_gap
def test_percpu_sizes_by_possible_and_indexes_by_cpu_id() -> None:
    for vt in (np.uint8, np.uint64, np.dtype([("a", "<u4"), ("b", "<u2")]), percpu.Int(3)):
        with percpu.PerCpuHash.create(np.uint32, vt, 4) as m:
            assert m.value_bytes == len(POSSIBLE) * stride(m.info.value_size)
            vals = [(i % 7, i % 5) if isinstance(vt, np.dtype) else i % 7 for i in range(len(POSSIBLE))]
            m.update(1, vals)
            v = m[1]
            assert v.cpus == TOPO.possible and len(v) == len(POSSIBLE)
            for i, cpu in enumerate(POSSIBLE):
                got = v[cpu]
                assert (tuple(got) if isinstance(vt, np.dtype) else got) == vals[i]


@needs_gap
def test_snapshot_shape_is_possible_cpus() -> None:
    with percpu.PerCpuArray.create(np.uint64, 64) as m:
        m.update_batch(np.arange(64), np.arange(64 * len(POSSIBLE), dtype=np.uint64).reshape(64, -1))
        snap = m.snapshot()
        assert snap.values.shape == (64, len(POSSIBLE))
        assert int(snap.cpu(POSSIBLE[-1])[3]) == 3 * len(POSSIBLE) + len(POSSIBLE) - 1


@needs_gap
def test_syscall_counter_cpu_ids_right_for_every_possible_cpu() -> None:
    cpu = ONLINE[-1]
    with SyscallCounter(filters=Filters(comm="pcpu_vm")) as c:
        subprocess.run(
            [sys.executable, WORKLOAD, "20000", str(cpu), "--comm", "pcpu_vm"],
            check=True,
            capture_output=True,
            timeout=300,
        )
        snap = c.snapshot()
    assert snap.counts.shape[0] == len(POSSIBLE)
    col = snap.counts[:, GETPPID]
    assert_counted(int(col[POSSIBLE.index(cpu)]), 20000, snap.lost.skipped)
    assert int(col.sum()) == int(col[POSSIBLE.index(cpu)])  # nothing on the other CPU or offline slots


@needs_gap
def test_hotplug_keeps_slots_and_counts() -> None:
    """A CPU goes offline and back while counting: its slot and counts stay; nothing is lost or doubled."""
    if len(ONLINE) < 2:
        pytest.skip("needs two online CPUs")
    victim = ONLINE[-1]
    ctl = f"/sys/devices/system/cpu/cpu{victim}/online"
    if not os.path.exists(ctl):
        pytest.skip(f"cpu{victim} cannot be taken offline here (no {ctl})")
    keeper = ONLINE[0]

    def work(cpu: int, n: int) -> None:
        out = subprocess.run(
            [sys.executable, WORKLOAD, str(n), str(cpu), "--comm", "pcpu_hot"],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert json.loads(out.stdout)["calls"] == n

    with SyscallCounter(filters=Filters(comm="pcpu_hot")) as c:
        work(victim, 5000)
        before = c.snapshot().counts[:, GETPPID].copy()
        with open(ctl, "w", encoding="ascii") as f:
            f.write("0")
        try:
            assert victim not in percpu.cpu_lists().online
            work(keeper, 3000)  # counting goes on on the other CPU
            during = c.snapshot().counts[:, GETPPID].copy()
        finally:
            with open(ctl, "w", encoding="ascii") as f:
                f.write("1")
            for _ in range(50):
                if victim in percpu.cpu_lists().online:
                    break
                time.sleep(0.1)
        work(victim, 2000)
        last = c.snapshot()
        after = last.counts[:, GETPPID].copy()
    v, k = POSSIBLE.index(victim), POSSIBLE.index(keeper)
    skipped = (
        last.lost.skipped
    )  # runs the kernel skipped (7.x, preemptible syscall tracepoints): short by that
    assert_counted(int(before[v]), 5000, skipped)
    assert int(during[v]) == int(before[v]), "the offline CPU's slot kept its count"
    assert_counted(int(during[k]) - int(before[k]), 3000, skipped)
    assert_counted(int(after[v]) - int(during[v]), 2000, skipped)  # counted again after coming back
    assert_counted(int(after.sum()), 10000, skipped)  # nothing doubled
