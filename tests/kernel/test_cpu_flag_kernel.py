"""BPF_F_CPU / BPF_F_ALL_CPUS (Linux 7.0) against the running kernel, probed and never required.

On a kernel with the flags, the one-CPU operations must take the one-value path: the bytes passed through
the kernel seam are counted and must be one value per element, not one per possible CPU. On an older
kernel (6.18 here) the feature must be reported absent and every fallback must be exact. A kernel of 7.0
or later that says it lacks the flags fails, it does not skip.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import percpu
from percpu import _libbpf, _machine, features
from percpu.layout import BPF_F_ALL_CPUS, BPF_F_CPU, Layout


def kernel_version() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    assert m, os.uname().release
    return int(m.group(1)), int(m.group(2))


class Counting:
    """The real binding, counting the value bytes each call lets the kernel copy, and the flags used."""

    def __init__(self, real: _libbpf.Libbpf) -> None:
        self.real = real
        self.value_bytes = 0
        self.flags: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def map_lookup(self, fd: int, key: np.ndarray, value: np.ndarray, layout: Layout, flags: int = 0) -> None:
        self.real.map_lookup(fd, key, value, layout, flags)
        self.value_bytes += layout.value_bytes(flags)
        self.flags.append(flags)

    def map_update(self, fd: int, key: np.ndarray, value: np.ndarray, layout: Layout, flags: int = 0) -> None:
        self.real.map_update(fd, key, value, layout, flags)
        self.value_bytes += layout.value_bytes(flags)
        self.flags.append(flags)

    def map_lookup_batch(self, *args: Any, **kw: Any) -> tuple[int, bool]:
        n, done = self.real.map_lookup_batch(*args, **kw)
        layout: Layout = args[6]
        elem_flags = kw.get("elem_flags", args[8] if len(args) > 8 else 0)
        self.value_bytes += n * layout.value_bytes(elem_flags)
        self.flags.append(elem_flags)
        return n, done


@pytest.fixture
def counting() -> Iterator[Counting]:
    c = Counting(_machine.current().libbpf())
    with _machine.use(_machine.Machine(c)):  # type: ignore[arg-type]
        yield c


def has_flag() -> bool:
    got = features.cpu_flag(strict=True)
    if kernel_version() >= (7, 0):
        assert got, f"Linux {os.uname().release} should take BPF_F_CPU (7.0+), the probe says no"
    else:
        assert not got, f"Linux {os.uname().release} predates BPF_F_CPU, the probe says yes"
    return got


@pytest.mark.parametrize("cls", [percpu.PerCpuArray, percpu.PerCpuHash, percpu.LruPerCpuHash])
def test_one_cpu_lookup_and_update(counting: Counting, cls: type[percpu.PerCpuMap]) -> None:
    flag = has_flag()
    dt = np.dtype([("a", "<u4"), ("b", "<u2")])  # 6 bytes: stride 8, padding in every slot
    m = percpu.PerCpuArray.create(dt, 4) if cls is percpu.PerCpuArray else cls.create(np.uint32, dt, 4)
    with m:
        cpus = list(m.cpus)
        m.update(1, [(100 + c, c) for c in cpus])
        last = cpus[-1]
        counting.value_bytes, counting.flags = 0, []
        got = m.lookup_cpu(1, last)
        assert (int(got["a"]), int(got["b"])) == (100 + last, last)
        assert counting.value_bytes == (6 if flag else m.layout.element_bytes)
        assert bool(counting.flags[-1] & BPF_F_CPU) == flag
        counting.value_bytes = 0
        m.update_cpu(1, last, (7, 8))
        if flag:  # counted before the check below reads the whole element
            assert counting.value_bytes == 6  # one value written, nothing read first
        want = {c: (7, 8) if c == last else (100 + c, c) for c in cpus}
        assert {c: (int(v["a"]), int(v["b"])) for c, v in m[1].items()} == want
        counting.flags = []
        m.update_all(2, (9, 9))
        assert all((int(v["a"]), int(v["b"])) == (9, 9) for v in m[2])
        assert bool(counting.flags[0] & BPF_F_ALL_CPUS) == flag


@pytest.mark.parametrize("cls", [percpu.PerCpuArray, percpu.PerCpuHash])
def test_one_cpu_snapshot(counting: Counting, cls: type[percpu.PerCpuMap]) -> None:
    flag = has_flag()
    n = 64
    m = (
        percpu.PerCpuArray.create(np.uint32, n)
        if cls is percpu.PerCpuArray
        else cls.create(np.uint32, np.uint32, n)
    )
    with m:
        ncpu = len(m.cpus)
        keys = np.arange(n, dtype=np.uint32)
        vals = (keys[:, None] * 1000 + np.arange(ncpu)).astype(np.uint32)
        m.update_batch(keys, vals)
        full = m.snapshot()
        for i, cpu in enumerate(m.cpus):
            counting.value_bytes = 0
            one = m.snapshot(cpu=cpu)
            assert one.cpus == (cpu,) and len(one) == n
            order = np.argsort(one.keys)
            assert (one.keys[order] == keys).all() and (one.values[order] == vals[:, i]).all()
            assert (np.sort(full.cpu(cpu)) == np.sort(one.values)).all()
            # One u32 per element with the flag; every possible CPU's padded u32 without it.
            assert counting.value_bytes == n * (4 if flag else m.layout.element_bytes)


def test_the_syscall_counter_reads_what_the_online_cpus_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    """The counter's counts map (2,048 u64 slots) was read whole: every possible CPU's slots, 30 of 32 in
    the 7.x guest being CPUs that run nothing. With BPF_F_CPU a read copies the online CPUs' slots (the
    offline ones were read once, by the first read; the small dropped map stays a whole read, one lookup
    being cheaper than one per CPU, and the lost map is read only with a table that counts in it), and
    the counts are those of the counter forced to whole reads. Without BPF_F_CPU, or with every possible
    CPU online, both read everything."""
    import subprocess
    import sys

    from percpu.syscalls import syscall_number
    from percpu.syscount import Filters, SyscallCounter

    flag = has_flag()
    lib = _machine.current().libbpf()
    assert _machine.current().kernel is lib
    # The counter needs the real binding: its batch reads are counted in place.
    copied = [0]
    inner = lib.map_lookup_batch

    def counted(*args: Any, **kw: Any) -> tuple[int, bool]:
        n, done = inner(*args, **kw)
        copied[0] += n * args[6].value_bytes(kw.get("elem_flags", args[8] if len(args) > 8 else 0))
        return n, done

    monkeypatch.setattr(lib, "map_lookup_batch", counted)
    workload = os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "helpers", "syscall_workload.py"
    )
    online = list(percpu.cpu_lists().online)
    only = Filters(comm="pcpu_1cpu")
    with SyscallCounter(filters=only) as c, SyscallCounter(filters=only, one_cpu_reads=False) as whole:
        assert c.reads_one_cpu == flag and not whole.reads_one_cpu
        possible = len(c.cpus)
        c.snapshot()  # the first read is whole
        subprocess.run(
            [sys.executable, workload, "3000", str(online[-1]), "--comm", "pcpu_1cpu"],
            check=True,
            timeout=600,
        )
        copied[0] = 0
        snap = c.snapshot()
        one_cpu_bytes = copied[0]
        copied[0] = 0
        snap_whole = whole.snapshot()
        whole_bytes = copied[0]
    per_cpu = 2048 * 8  # the counts map: one u64 per slot and CPU
    small = 1 * 8  # dropped (1 slot), read whole; lost is read only with a table that counts in it
    assert whole_bytes == (per_cpu + small) * possible
    fewer = flag and len(online) * (4096 + per_cpu) < 4096 + per_cpu * possible
    assert one_cpu_bytes == per_cpu * (len(online) if fewer else possible) + small * possible
    for s in (snap, snap_whole):
        assert int(s.counts[list(s.cpus).index(online[-1]), syscall_number("getppid")]) == 3000
        assert int(s.counts[:, syscall_number("getppid")].sum()) == 3000
    assert (snap.counts == snap_whole.counts).all()
