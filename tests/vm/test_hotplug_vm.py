"""CPUs taken offline and brought back while percpu counts, in a VM guest whose possible CPUs are far above
its online ones (scripts/vm-matrix boots 5.10, 6.1, 6.12 and 7.x so). Every count lands in its CPU's row
and none is lost or counted twice, and what percpu reports of the CPUs (online lists, topology) follows
the change at the next snapshot.

A guest's CPU is taken offline with ``echo 0 > /sys/devices/system/cpu/cpuN/online`` (and back with 1);
on x86 CPU 0 has no such file. Elsewhere these tests skip and say why: on a machine whose possible CPUs
are all online, or where no CPU can be taken offline, or without root.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import percpu
from percpu.syscalls import syscall_number
from percpu.syscount import Filters, SyscallCounter, SyscallSnapshot

from ..kernel.conftest import assert_counted

pytestmark = pytest.mark.vm

GETPPID = syscall_number("getppid")
WORKLOAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "helpers", "syscall_workload.py")
SYSFS = "/sys/devices/system/cpu"
LISTS = percpu.cpu_lists()


def _victim() -> int | None:
    """The last online CPU that can be taken offline (not the first: something must stay online)."""
    online = list(LISTS.online)
    for cpu in reversed(online[1:]):
        if os.path.exists(f"{SYSFS}/cpu{cpu}/online"):
            return cpu
    return None


VICTIM = _victim()
_WHY = (
    f"needs possible CPUs above online (here possible {LISTS.possible}, online {LISTS.online}); "
    "scripts/vm-matrix boots such guests"
    if len(LISTS.possible) <= len(LISTS.online)
    else "needs root to take a CPU offline"
    if os.geteuid() != 0
    else f"no online CPU but the first can be taken offline here (online {LISTS.online})"
    if VICTIM is None
    else ""
)
needs_hotplug = pytest.mark.skipif(bool(_WHY), reason=_WHY)


def _set_online(cpu: int, on: bool) -> None:
    with open(f"{SYSFS}/cpu{cpu}/online", "w", encoding="ascii") as f:
        f.write("1" if on else "0")
    deadline = time.monotonic() + 60
    while (cpu in percpu.cpu_lists().online) != on:
        assert time.monotonic() < deadline, f"cpu{cpu} did not go {'online' if on else 'offline'} in 60 s"
        time.sleep(0.05)


@contextlib.contextmanager
def offline(cpu: int) -> Iterator[None]:
    """CPU ``cpu`` offline for the block, online again after it whatever happens."""
    _set_online(cpu, False)
    try:
        yield
    finally:
        _set_online(cpu, True)


def work(cpu: int, n: int, comm: str) -> None:
    """Exactly ``n`` getppid calls on CPU ``cpu`` by a process named ``comm``."""
    out = subprocess.run(
        [sys.executable, WORKLOAD, str(n), str(cpu), "--comm", comm],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert json.loads(out.stdout)["calls"] == n


def _getppid(s: SyscallSnapshot, cpu: int) -> int:
    return int(s.counts[list(s.cpus).index(cpu), GETPPID])


@needs_hotplug
def test_counts_and_online_lists_follow_a_cpu_offline_and_back_mid_count() -> None:
    """Calls before, while and after CPU N is offline: each snapshot's online list is the machine's at that
    moment, the offline CPU's row keeps its calls, and the intervals add up to the calls made."""
    assert VICTIM is not None
    victim, keeper = VICTIM, LISTS.online[0]
    with SyscallCounter(filters=Filters(comm="pcpu_hp")) as c:
        s0 = c.snapshot()
        work(victim, 4000, "pcpu_hp")
        s1 = c.snapshot()
        # Calls after the last read of the victim online: the read after it went offline must hold them
        # (with BPF_F_CPU an offline CPU's slots are read once, then no more).
        work(victim, 1000, "pcpu_hp")
        with offline(victim):
            s2 = c.snapshot()
            work(keeper, 3000, "pcpu_hp")
            s3 = c.snapshot()
        work(victim, 2000, "pcpu_hp")
        s4 = c.snapshot()
    assert [victim in (s.online or ()) for s in (s0, s1, s2, s3, s4)] == [True, True, False, False, True]
    steps = [b.delta(a) for a, b in zip((s0, s1, s2, s3), (s1, s2, s3, s4), strict=True)]
    on_victim = [int(d.counts[list(d.cpus).index(victim), GETPPID]) for d in steps]
    on_keeper = [int(d.counts[list(d.cpus).index(keeper), GETPPID]) for d in steps]
    # Runs the kernel skipped (7.x: syscall tracepoints run BPF preemptibly) leave calls out, no more.
    skipped = s4.lost.skipped
    for got, made in zip((*on_victim, *on_keeper), (4000, 1000, 0, 2000, 0, 0, 3000, 0), strict=True):
        assert_counted(got, made, skipped)  # offline: nothing more on its row, nothing lost from it
    assert_counted(_getppid(s4, victim), 7000, skipped)
    assert_counted(int(s4.counts[:, GETPPID].sum()), 10000, skipped)  # nothing twice


@needs_hotplug
def test_topology_read_again_shows_the_cpu_offline_then_back_in_its_place() -> None:
    """sysfs removes cpuN/topology while CPU N is offline: a topology read then has it offline with no
    place (the `unknown` group), and a read after it came back has its core and package again."""
    assert VICTIM is not None
    before = percpu.cpu_lists().topology()[VICTIM]
    with offline(VICTIM):
        during = percpu.cpu_lists().topology()[VICTIM]
    after = percpu.cpu_lists().topology()[VICTIM]
    assert before.online and before.known
    assert not during.online and not during.known and during.package is None
    assert after.online and (after.package, after.core, after.node) == (
        before.package,
        before.core,
        before.node,
    )
