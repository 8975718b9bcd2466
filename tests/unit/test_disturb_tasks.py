"""The disturbance counter's task table without a kernel: exited tasks taken out of it (kept by thread id,
then summed by name and kind), deltas across that move, and the expected workload's checks."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from percpu.cpus import CpuList
from percpu.disturb import FOLDED_PID, DisturbSnapshot, Expected, Stints, Tasks
from percpu.disturb import _contract as contract
from percpu.disturb._hooks import stints_of
from percpu.disturb._proc import ThreadRun, thread_runtime
from percpu.disturb._tasks import TaskRows, TaskTable, folded_keys, name_bytes
from percpu.errors import InvalidFilter, PercpuError

from .fake_kernel import FakeKernel

NCPU = 2


@dataclass
class _Snap:
    keys: np.ndarray
    values: np.ndarray


@dataclass
class FakeTable:
    """The kernel's tasks hash: rows by key bytes, each (switches, ns, untimed, flags) per CPU."""

    rows: dict[bytes, np.ndarray] = field(default_factory=dict)
    deleted: int = 0

    def add(self, pid: int, comm: str, cpu: int, switches: int, ns: int = 0, flags: int = 0) -> None:
        k = key(pid, comm)
        v = self.rows.setdefault(k.tobytes(), np.zeros(NCPU, contract.TASK_STAT))
        v["switches"][cpu] += switches
        v["ns"][cpu] += ns
        v["flags"][cpu] |= flags

    def snapshot(self) -> _Snap:
        keys = (
            np.frombuffer(b"".join(self.rows), contract.TASK_KEY)
            if self.rows
            else np.zeros(0, contract.TASK_KEY)
        )
        values = np.array(list(self.rows.values())).reshape(len(self.rows), NCPU).astype(contract.TASK_STAT)
        return _Snap(keys.copy(), values)

    def delete_batch(self, keys: np.ndarray) -> None:
        for k in keys:
            del self.rows[k.tobytes()]
            self.deleted += 1


def key(pid: int, comm: str, tgid: int | None = None) -> np.ndarray:
    k = np.zeros((), contract.TASK_KEY)
    k["pid"] = pid
    k["tgid"] = pid if tgid is None else tgid
    k["comm"] = comm.encode()
    return k


class Clock:
    """Each reading is a second after the one before: every drain comes after the last one's grace."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def table(fake: FakeTable, alive: set[int], *, keep: int, fold: int, entries: int = 16) -> TaskTable:
    return TaskTable(fake, NCPU, entries, keep=keep, fold=fold, alive=lambda t: t in alive, clock=Clock())


def as_tasks(rows: TaskRows) -> Tasks:
    return Tasks(
        rows.keys,
        (rows.flags & contract.TASK_KTHREAD) != 0,
        (rows.flags & contract.TASK_IDLE) != 0,
        rows.switches,
        rows.ns,
        rows.untimed,
        (rows.flags & contract.TASK_EXPECTED) != 0,
        (rows.flags & contract.TASK_OUTSIDE) != 0,
    )


def totals(rows: TaskRows) -> tuple[int, int]:
    return int(rows.switches.sum()), int(rows.ns.sum())


def test_an_exited_task_leaves_the_kernels_table_after_two_checks_and_keeps_its_counts() -> None:
    """Found gone at one drain, taken out at a later one past its grace (its last switch away from the CPU
    comes after it is released); its row is then kept here, under its own key, and nothing is lost or
    counted twice."""
    fake, alive = FakeTable(), {10, 11}
    fake.add(10, "worker", 0, 3, 300)
    fake.add(11, "worker", 1, 2, 200)
    t = table(fake, alive, keep=8, fold=8)
    assert totals(t.read()) == (5, 500)
    alive.discard(10)
    assert totals(t.read()) == (5, 500) and fake.deleted == 0  # seen gone once: still in the kernel's
    fake.add(10, "worker", 0, 0, 50)  # its last stint, charged after it was released
    rows = t.read()
    assert fake.deleted == 1 and list(fake.rows) == [key(11, "worker").tobytes()]
    assert totals(rows) == (5, 550)
    (i,) = np.nonzero(rows.keys["pid"] == 10)[0]
    assert rows.switches[i].tolist() == [3, 0] and rows.ns[i].tolist() == [350, 0]
    # a row that comes back all the same is added to the one kept
    fake.add(10, "worker", 1, 1, 5)
    t.read()
    rows = t.read()
    (i,) = np.nonzero(rows.keys["pid"] == 10)[0]
    assert rows.switches[i].tolist() == [3, 1] and totals(rows) == (6, 555)


def test_past_keep_exited_tasks_are_summed_by_name_and_kind_then_by_kind() -> None:
    """Memory stays bounded: keep rows by thread id, fold more by (name, flags), then one row per kind."""
    fake, alive = FakeTable(), set()
    for pid, comm, flags in [
        (1, "a", 0),
        (2, "b", 0),
        (3, "b", 0),
        (4, "b", contract.TASK_KTHREAD),
        (5, "c", 0),
        (6, "d", 0),
    ]:
        fake.add(pid, comm, pid % 2, 1, 10, flags)
    t = table(fake, alive, keep=1, fold=2)
    t.read()
    t.read()
    rows = t.read()
    assert not fake.rows and totals(rows) == (6, 60)
    got = {
        (int(k["pid"]), int(k["tgid"]), name_bytes(k["comm"]).rstrip(b"\0")): int(s)
        for k, s in zip(rows.keys, rows.switches.sum(axis=1), strict=True)
    }
    assert got == {
        (1, 1, b"a"): 1,  # kept by thread id
        (FOLDED_PID, 0, b"b"): 2,  # two user tasks named b
        (FOLDED_PID, contract.TASK_KTHREAD, b"b"): 1,  # a kernel thread named b stays apart
        (FOLDED_PID, 0, b""): 2,  # c and d: no room left for their names
    }
    assert t.kept_by_pid == 1 and t.kept_by_name == 2 and t.taken == 6


def test_rows_of_tasks_outside_the_namespace_are_never_taken_out() -> None:
    fake = FakeTable()
    fake.add(0, "host-task", 0, 4, flags=contract.TASK_OUTSIDE)
    t = table(fake, set(), keep=8, fold=8)
    for _ in range(3):
        rows = t.read()
    assert fake.deleted == 0 and totals(rows) == (4, 0)


def test_names_compare_up_to_their_nul() -> None:
    assert name_bytes(b"ab\0stale-bytes\0\0") == name_bytes(b"ab") == b"ab".ljust(16, b"\0")
    named, bare = folded_keys(7, contract.TASK_KTHREAD, b"kworker/0:1\0xx")
    assert int(named["pid"][0]) == FOLDED_PID and int(named["tgid"][0]) == contract.TASK_KTHREAD
    assert bytes(named["comm"][0]) == b"kworker/0:1" and bytes(bare["comm"][0]) == b""


def test_a_delta_across_a_fold_does_not_count_the_task_again() -> None:
    """Between two snapshots an exited task's row moved into its name's row: the delta subtracts what the
    earlier snapshot showed for it there, so each switch is shown once."""
    fake, alive = FakeTable(), {20}
    fake.add(20, "job", 0, 5, 500)
    t = table(fake, alive, keep=0, fold=8)
    before = as_tasks(t.read())
    fake.add(20, "job", 0, 2, 100)
    alive.clear()
    t.read()
    after = as_tasks(t.read())
    assert int(after.keys[0]["pid"]) == FOLDED_PID and after.pid(0) is None
    d = after.minus(before)
    assert d.switches.tolist() == [[2, 0]] and d.ns is not None and d.ns.tolist() == [[100, 0]]


def test_tasks_check_their_flag_arrays() -> None:
    k = np.zeros(2, contract.TASK_KEY)
    z = np.zeros(2, bool)
    with pytest.raises(PercpuError, match="2 task keys but 1 expected flags"):
        Tasks(k, z, z, np.zeros((2, NCPU), np.uint64), expected=np.zeros(1, bool))


@pytest.mark.parametrize(
    ("kw", "error", "message"),
    [
        ({}, PercpuError, "names a pid, a comm or a cgroup"),
        ({"pid": 0}, InvalidFilter, "must be in 1"),
        ({"comm": "a-name-of-16-byte"}, InvalidFilter, "kernel keeps 15 bytes"),
        ({"comm": ""}, InvalidFilter, "comm filter is empty"),
        ({"cgroup": -1}, InvalidFilter, "cgroup"),
    ],
)
def test_an_expected_workload_is_checked_as_the_filters_are(
    kw: dict[str, Any], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        Expected(**kw)


def test_an_expected_workload_describes_itself() -> None:
    assert Expected(pid=42, comm="app").describe() == "pid 42 or comm app"
    assert Expected(cgroup="/app.slice").describe() == "cgroup /app.slice"


class Sched:
    """The sched map of the fake kernel's switch program: per CPU the task switched in last (an address),
    its runtime then and its key; the idle task's switch-in writes pid 0 in the key, as
    bpf/disturb.bpf.c does."""

    def __init__(self) -> None:
        self.values = np.zeros(NCPU, contract.SCHED_CPU)
        self.reads = 0

    def switch_in(self, cpu: int, pid: int, comm: str, runtime: int) -> None:
        self.values["task"][cpu] = 0xFFFF000000000000 + pid * 0x1000
        self.values["task_runtime"][cpu] = runtime
        self.values["key"][cpu] = np.frombuffer(key(pid, comm).tobytes(), np.uint64)

    def idle(self, cpu: int) -> None:
        self.values["task"][cpu] = 0xFFFF000000000000 + cpu
        self.values["task_runtime"][cpu] = 0
        self.values["key"][cpu][0] = 0

    def read(self) -> np.ndarray:
        self.reads += 1
        return self.values.copy()


def disturb_snapshot(t: float, fake: FakeTable, stints: Stints | None) -> DisturbSnapshot:
    rows = TaskRows.from_table(*fake.snapshot().__dict__.values(), NCPU)
    return DisturbSnapshot(
        time=t,
        cpus=CpuList(range(NCPU)),
        switches=np.zeros(NCPU, np.uint64),
        tasks=as_tasks(rows),
        stints=stints,
    )


def test_a_task_running_through_windows_gets_each_windows_time() -> None:
    """A task that stays on CPU 1 through three snapshots: each window gets the time it ran there (its
    runtime now, less its runtime when it was switched in, credited at each snapshot), the window in which
    the kernel charges the stint gets the rest, and the windows add up to what the kernel's table holds.
    Once counting stopped no stint is credited: that snapshot is the table. Before, the windows it ran
    through had no time for it and the last all of it."""
    machine, sched, fake = FakeKernel(NCPU).machine, Sched(), FakeTable()
    cpus = CpuList(range(NCPU))
    fake.add(7, "busy", 1, 1)  # switched in on CPU 1, its runtime then 1000
    sched.switch_in(1, 7, "busy", 1000)
    sched.idle(0)
    last: Stints | None = None
    snaps = []
    for t, runtime in enumerate((1000, 1100, 1250)):
        machine.set_thread(7, 7, cpu=1, runtime=runtime)
        last = stints_of(sched.read, cpus, lambda tgid, tid: thread_runtime(machine.proc, tgid, tid), last)
        snaps.append(disturb_snapshot(float(t), fake, last))
    fake.add(7, "busy", 1, 0, 300)  # switched out at 1300: the kernel charges the whole stint
    sched.idle(1)
    machine.set_thread(7, 7, state="S", cpu=1, runtime=1300)
    snaps.append(disturb_snapshot(3.0, fake, stints_of(sched.read, cpus, lambda g, t: None, last)))
    snaps.append(disturb_snapshot(4.0, fake, None))  # counting stopped
    windows = []
    for a, b in itertools.pairwise(snaps):
        d = b.delta(a).tasks
        assert d is not None and d.ns is not None
        windows.append(d.ns[:, 1].sum().tolist())
    assert windows == [100, 150, 50, 0]
    assert sum(windows) == 300 == int(fake.rows[key(7, "busy").tobytes()]["ns"][1])
    assert snaps[1].since_start().tasks is not None and int(snaps[1].since_start().tasks.ns.sum()) == 100
    assert snaps[-1].since_start().tasks is not None and int(snaps[-1].since_start().tasks.ns.sum()) == 300


def test_a_stint_is_credited_only_when_it_is_certainly_running() -> None:
    """No credit for the idle task (pid 0 in the key), a task asleep, on another CPU (the kernel switched
    without the tracepoint), gone, read below its switch-in's runtime, or switched between the two reads
    of the map; a stint credited before keeps that credit while it is still the one in progress."""
    machine, sched = FakeKernel(NCPU).machine, Sched()
    cpus = CpuList(range(NCPU))

    def thread(tgid: int, tid: int) -> ThreadRun | None:
        return thread_runtime(machine.proc, tgid, tid)

    sched.switch_in(0, 5, "a", 100)
    sched.switch_in(1, 6, "b", 100)
    machine.set_thread(5, 5, cpu=0, runtime=130)
    machine.set_thread(6, 6, cpu=1, runtime=160)
    first = stints_of(sched.read, cpus, thread)
    assert first.ns.tolist() == [30, 60] and first.keys["pid"].tolist() == [5, 6]
    assert sched.reads == 2  # before and after the tasks

    def credit(**thread6: Any) -> list[int]:
        machine.set_thread(6, 6, **{"cpu": 1, "runtime": 170, **thread6})
        return stints_of(sched.read, cpus, thread).ns.tolist()

    assert credit(state="S") == [30, 0]
    assert credit(cpu=0) == [30, 0]
    assert credit(runtime=90) == [30, 0]
    sched.idle(1)
    assert credit() == [30, 0]
    machine.end_thread(6, 6)
    sched.switch_in(1, 6, "b", 100)
    assert stints_of(sched.read, cpus, thread).ns.tolist() == [30, 0]
    sched.switch_in(1, 6, "b", 100)
    assert credit() == [30, 70]
    assert stints_of(sched.read, cpus, thread, first).ns.tolist() == [30, 70]
    machine.set_thread(6, 6, state="D", cpu=1, runtime=170)  # on its way to sleep, still on the CPU
    assert stints_of(sched.read, cpus, thread, first).ns.tolist() == [30, 60]

    def switching() -> np.ndarray:
        out = sched.read()
        sched.switch_in(1, 9, "c", 500)  # a switch on CPU 1 between the two reads
        return out

    assert stints_of(switching, cpus, thread).ns.tolist() == [30, 0]
