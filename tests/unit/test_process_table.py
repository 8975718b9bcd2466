"""The per-process table's accounting (syscount.ProcessTable) on the fake kernel: rows plus lost always equal
the calls counted, whatever processes come and go, with exited processes taken out and kept within bounds."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator

import numpy as np
import pytest

import percpu
from percpu.cpus import CpuList
from percpu.syscount import (
    FOLDED_TGID,
    NR_SLOTS,
    PROC_KEY,
    Lost,
    ProcessTable,
    SyscallSnapshot,
    folded_keys,
)

from .fake_kernel import FakeKernel, installed

NCPU = 4
LINES = 4  # lines of each CPU's cache: small, so keys take lines over from each other


def key(tgid: int, slot: int, comm: bytes) -> bytes:
    return struct.pack("<II16s", tgid, slot, comm)


class Programs:
    """What bpf/syscount.bpf.c does for a call with -P, on the fake kernel's copy of proc_counts: count it
    in the syscall table, then in this CPU's cache line (a line taken over first adds what it held to the
    hash); add_proc inserts a key while the hash has room and counts the calls it cannot take as lost."""

    def __init__(self, kernel: FakeKernel, table: percpu.PerCpuHash) -> None:
        self.data = kernel.maps[table.info.id].data
        self.entries = table.info.max_entries
        self.counts = np.zeros((NCPU, NR_SLOTS), np.uint64)
        self.lost = np.zeros(NCPU, np.uint64)
        self.lost_by_pid: dict[int, int] = {}
        self.calls_by_pid: dict[int, int] = {}
        self.inserts = 0
        self.cache: list[dict[int, tuple[bytes, int]]] = [{} for _ in range(NCPU)]

    def call(self, cpu: int, tgid: int, slot: int, comm: bytes) -> None:
        self.counts[cpu, slot] += 1
        self.calls_by_pid[tgid] = self.calls_by_pid.get(tgid, 0) + 1
        k = key(tgid, slot, comm)
        line = (tgid * 31 + slot) % LINES
        held = self.cache[cpu].get(line)
        if held is not None and held[0] == k:
            self.cache[cpu][line] = (k, held[1] + 1)
            return
        if held is not None:
            self.add(cpu, *held)
        self.cache[cpu][line] = (k, 1)

    def add(self, cpu: int, k: bytes, n: int) -> None:
        if k in self.data:
            v = np.frombuffer(self.data[k], np.uint64).copy()
        elif len(self.data) < self.entries:
            v = np.zeros(NCPU, np.uint64)
            self.inserts += 1
        else:
            self.lost[cpu] += n
            tgid = struct.unpack_from("<I", k)[0]
            self.lost_by_pid[tgid] = self.lost_by_pid.get(tgid, 0) + n
            return
        v[cpu] += n
        self.data[k] = v.tobytes()

    def flush(self, offline: set[int]) -> tuple[np.ndarray, np.ndarray] | None:
        """flush_procs on each online CPU; an offline CPU's lines are read as they are."""
        keys, rows = [], []
        for cpu in range(NCPU):
            if cpu in offline:
                for k, n in self.cache[cpu].values():
                    keys.append(np.frombuffer(k, PROC_KEY)[0])
                    row = np.zeros(NCPU, np.uint64)
                    row[cpu] = n
                    rows.append(row)
                continue
            for k, n in self.cache[cpu].values():
                self.add(cpu, k, n)
            self.cache[cpu].clear()
        if not keys:
            return None
        return np.array(keys, PROC_KEY), np.array(rows, np.uint64)


class Tasks(set[int]):
    """The processes that exist: ``alive`` answers as Machine.process_exists does."""

    def alive(self, pid: int) -> bool:
        return pid in self


@pytest.fixture
def machine() -> Iterator[tuple[FakeKernel, Tasks]]:
    kernel = FakeKernel(NCPU)
    with installed(kernel):
        yield kernel, Tasks()


def snapshot(t: float, progs: Programs, procs: tuple[np.ndarray, np.ndarray]) -> SyscallSnapshot:
    return SyscallSnapshot(
        t, CpuList(range(NCPU)), progs.counts.copy(), procs=procs, lost=Lost(processes=int(progs.lost.sum()))
    )


@pytest.mark.parametrize("seed", range(4))
def test_rows_plus_lost_equal_the_calls_whatever_processes_do(
    machine: tuple[FakeKernel, Tasks], seed: int
) -> None:
    """400 processes of 30 names come and go on 4 CPUs (one of them goes offline with calls in its cache)
    through a 64-key table, read and drained at random moments: every read's rows plus lost equal the calls
    per CPU, every interval's too, every process kept by pid is whole, and what is kept stays bounded."""
    kernel, m = machine
    rng = random.Random(seed)
    comms = [f"cmd{i}".encode() for i in range(30)]
    offline: set[int] = set()
    with percpu.PerCpuHash.create(PROC_KEY, np.uint64, 64, name="proc_counts") as table:
        progs = Programs(kernel, table)
        pt = ProcessTable(
            table,
            NCPU,
            keep=40,
            fold=12,
            alive=m.alive,
            flush=lambda: progs.flush(offline),
            events=lambda: progs.inserts + int(progs.lost.sum()),
        )
        live: dict[int, bytes] = {}
        before = snapshot(0.0, progs, pt.read())
        for step in range(1, 2001):
            if rng.random() < 0.2 or not live:
                pid = 100 + step
                m.add(pid)
                live[pid] = rng.choice(comms)
            pid = rng.choice(list(live))
            cpu = 3 if step < 300 else rng.randrange(3)  # CPU 3 runs the first calls, then goes offline
            for _ in range(rng.randrange(1, 4)):
                progs.call(cpu, pid, rng.choice((0, 1, 2, 3, 39, 60, 231)), live[pid])
            if step == 300:
                offline.add(3)
            if rng.random() < 0.15:
                gone = rng.choice(list(live))
                del live[gone]
                m.discard(gone)
            if rng.random() < 0.1:
                pt.drain()
            if rng.random() < 0.05 or step == 2000:
                now = snapshot(float(step), progs, pt.read())
                keys, counts = now.procs  # type: ignore[misc]
                assert (counts.sum(axis=0) + progs.lost == progs.counts.sum(axis=1)).all()
                d = now.delta(before)
                assert d.procs is not None
                assert int(d.procs[1].sum()) + d.lost.processes == int(d.counts.sum())
                before = now
        assert pt.taken > 0, "exited processes were taken out of the table"
        assert pt.kept_by_pid <= 40 and pt.kept_by_name <= 12
        keys, counts = pt.read()
        assert len(set(_raw(keys))) == len(keys), "each key once"
        folded = keys["tgid"] == FOLDED_TGID
        assert folded.any() and (~folded).any()
        nameless = folded & (keys["comm"] == b"")
        assert nameless.any(), "the names beyond the fold bound were summed by syscall alone"
        assert nameless.sum() <= 7  # one row per syscall
        assert set(keys["comm"][folded & ~nameless].tolist()) <= set(comms)
        totals = counts.sum(axis=1)
        cached = {struct.unpack_from("<I", k)[0] for k, _ in progs.cache[3].values()}
        for pid in set(keys["tgid"][~folded].tolist()) - cached:
            # A process is kept by pid whole, or not at all: its rows hold all its calls but those lost.
            # (Not one with calls in the offline CPU's cache: those stay by pid until that CPU is back.)
            got = int(totals[keys["tgid"] == pid].sum())
            assert got + progs.lost_by_pid.get(pid, 0) == progs.calls_by_pid[pid]


def _raw(keys: np.ndarray) -> list[bytes]:
    return [k.tobytes() for k in keys]


def test_a_live_process_and_an_unreachable_cache_stay_in_the_table(
    machine: tuple[FakeKernel, Tasks],
) -> None:
    kernel, m = machine
    offline: set[int] = set()
    with percpu.PerCpuHash.create(PROC_KEY, np.uint64, 16, name="proc_counts") as table:
        progs = Programs(kernel, table)
        pt = ProcessTable(table, NCPU, keep=8, fold=8, alive=m.alive, flush=lambda: progs.flush(offline))
        for pid in (7, 8, 9):
            m.add(pid)
        progs.call(0, 7, 1, b"live")
        progs.call(1, 8, 1, b"dead")
        progs.call(2, 9, 1, b"cached")
        pt.read()  # sees 7, 8 and 9 in the table
        progs.call(3, 9, 2, b"cached")  # in CPU 3's cache, which goes offline
        offline.add(3)
        m.discard(8)
        m.discard(9)
        pt.read()
        left = {k[:4] for k in progs.data}
        # 7 lives; 9's key in CPU 3's cache stays until that CPU flushes (its other key is taken out)
        assert struct.pack("<I", 7) in left and struct.pack("<I", 8) not in left
        assert key(9, 1, b"cached") not in progs.data
        keys, counts = pt.read()
        got = {(int(k["tgid"]), int(k["slot"])): int(c.sum()) for k, c in zip(keys, counts, strict=True)}
        assert got == {(7, 1): 1, (8, 1): 1, (9, 1): 1, (9, 2): 1}


def test_drains_when_the_table_fills_and_backs_off_when_nothing_can_go(
    machine: tuple[FakeKernel, Tasks],
) -> None:
    kernel, m = machine
    with percpu.PerCpuHash.create(PROC_KEY, np.uint64, 16, name="proc_counts") as table:
        progs = Programs(kernel, table)
        pt = ProcessTable(
            table,
            NCPU,
            keep=64,
            fold=64,
            alive=m.alive,
            flush=lambda: progs.flush(set()),
            events=lambda: progs.inserts + int(progs.lost.sum()),
        )
        pt.read()
        assert not pt.due(1e9)
        for pid in range(1, 8):  # 7 keys: under half of the 16 entries' room
            m.add(pid)
            progs.add(0, key(pid, 0, b"x"), 1)
        assert not pt.due(1e9)
        m.add(8)
        progs.add(0, key(8, 0, b"x"), 1)
        assert pt.due(1e9)
        pt.read()
        for pid in range(9, 20):  # the table fills with live processes and calls are lost
            m.add(pid)
            progs.add(0, key(pid, 0, b"x"), 1)
        assert progs.lost.sum() == 3
        assert pt.due(1e9)
        pt.drain()  # frees nothing: all of them live
        assert not pt.due(0.0), "a drain that freed nothing is not repeated at once"
        for pid in range(1, 20):
            m.discard(pid)
        pt.drain()
        assert len(progs.data) == 0 and pt.taken == 16


def test_an_interval_does_not_count_again_what_moved_to_a_name() -> None:
    cpus = CpuList(range(2))
    zero = np.zeros((2, NR_SLOTS), np.uint64)
    k = np.zeros(1, PROC_KEY)
    k["tgid"], k["slot"], k["comm"] = 5, 1, b"cc"
    before = SyscallSnapshot(0.0, cpus, zero, procs=(k, np.array([[3, 1]], np.uint64)))
    named = np.frombuffer(folded_keys(k.tobytes())[0], PROC_KEY).copy()
    now = SyscallSnapshot(1.0, cpus, zero, procs=(named, np.array([[10, 1]], np.uint64)))
    d = now.delta(before)
    assert d.procs is not None
    assert d.procs[1].tolist() == [[7, 0]]
    nameless = np.frombuffer(folded_keys(k.tobytes())[1], PROC_KEY).copy()
    later = SyscallSnapshot(2.0, cpus, zero, procs=(nameless, np.array([[4, 2]], np.uint64)))
    d = later.delta(before)
    assert d.procs is not None
    assert d.procs[1].tolist() == [[1, 1]]
