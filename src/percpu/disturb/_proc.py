"""The kernel's own counters of interrupts, softirqs and switches, parsed from their text files.

Pure functions over the files' text (the callers choose the files, so tests can hand them any text), and
the IRQ names of a sysfs tree:

- ``/proc/interrupts``: a header of online CPUs (``CPU0 CPU1 ...``), then one row per IRQ descriptor
  (``N: counts... chip hwirq type actions``) and the architecture's rows (``LOC: counts... text``); a few
  rows (ERR, MIS on x86 before 7.x) have one machine-wide count. Counts are the kernel's 32-bit
  ``unsigned int``, which wraps: subtract them with :func:`wrapping_delta`.
- ``/proc/softirqs``: the same header, then ``NAME: counts...`` per vector.
- ``/sys/kernel/debug/sched/debug`` (``/proc/sched_debug`` before 5.13): a ``cpu#N`` section per online
  CPU with ``.nr_switches : N``.
- ``/proc/PID/schedstat``: ``sum_exec_runtime run_delay pcount`` (ns, ns, times switched in);
- ``/proc/PID/task/TID/stat`` and ``schedstat``: a thread's state, the CPU it is on or last ran on, and
  its time on the CPU so far (:func:`thread_runtime`).
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

import numpy as np

from ..cpus import CpuList
from ..errors import PercpuError

__all__ = [
    "InterruptRow",
    "Schedstat",
    "ThreadRun",
    "irq_names",
    "parse_interrupts",
    "parse_sched_debug",
    "parse_schedstat",
    "parse_softirqs",
    "per_cpu",
    "thread_runtime",
    "wrapping_delta",
]

_CPU_HEADER = re.compile(r"CPU(\d+)")


class InterruptRow(NamedTuple):
    """One row of /proc/interrupts: ``counts`` per CPU column of the header (empty for a machine-wide row,
    whose count is ``total``), and the text after the counts."""

    label: str
    counts: tuple[int, ...]
    text: str
    total: int | None = None


class ThreadRun(NamedTuple):
    """A thread as /proc shows it now: its state letter, the CPU it is on (or last ran on: field 39 of
    stat) and its time on the CPU (schedstat's first field, sum_exec_runtime, which the kernel brings up
    to date for a task on a CPU when it is read)."""

    state: str
    cpu: int
    runtime_ns: int


class Schedstat(NamedTuple):
    runtime_ns: int  # se.sum_exec_runtime: time on the CPU
    run_delay_ns: int  # time spent runnable, waiting for a CPU
    switches: int  # sched_info.pcount: times switched in


def _header(line: str, what: str) -> tuple[int, ...]:
    cpus = tuple(int(m) for m in _CPU_HEADER.findall(line))
    if not cpus:
        raise PercpuError(f"{what}: the first line names no CPU columns: {line[:80]!r}")
    return cpus


def parse_interrupts(text: str) -> tuple[tuple[int, ...], dict[str, InterruptRow]]:
    """The header's CPU ids (the online CPUs, in column order) and the rows by label (``"36"``, ``"LOC"``)."""
    lines = text.splitlines()
    if not lines:
        raise PercpuError("/proc/interrupts is empty")
    cpus = _header(lines[0], "/proc/interrupts")
    rows: dict[str, InterruptRow] = {}
    for line in lines[1:]:
        label, sep, rest = line.partition(":")
        if not sep:
            continue
        fields = rest.split()
        counts: list[int] = []
        for f in fields[: len(cpus)]:
            if not f.isdigit():
                break
            counts.append(int(f))
        label = label.strip()
        if len(counts) == len(cpus):
            rows[label] = InterruptRow(label, tuple(counts), " ".join(fields[len(cpus) :]))
        elif counts:  # one machine-wide count (ERR, MIS)
            rows[label] = InterruptRow(label, (), " ".join(fields[len(counts) :]), total=counts[0])
    return cpus, rows


def parse_softirqs(text: str) -> tuple[tuple[int, ...], dict[str, tuple[int, ...]]]:
    """The header's CPU ids and each vector's counts by name (``"TIMER"``), in the file's (vector) order."""
    lines = text.splitlines()
    if not lines:
        raise PercpuError("/proc/softirqs is empty")
    cpus = _header(lines[0], "/proc/softirqs")
    rows: dict[str, tuple[int, ...]] = {}
    for line in lines[1:]:
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        counts = tuple(int(f) for f in rest.split()[: len(cpus)])
        if len(counts) != len(cpus):
            raise PercpuError(f"/proc/softirqs: row {name.strip()} has {len(counts)} counts, not {len(cpus)}")
        rows[name.strip()] = counts
    return cpus, rows


_SECTION = re.compile(r"^cpu#(\d+)")
_NR_SWITCHES = re.compile(r"^\s*\.nr_switches\s*:\s*(\d+)")


def parse_sched_debug(text: str) -> dict[int, int]:
    """nr_switches by CPU id, from the scheduler's debug file (one ``cpu#N`` section per online CPU)."""
    out: dict[int, int] = {}
    cpu: int | None = None
    for line in text.splitlines():
        m = _SECTION.match(line)
        if m:
            cpu = int(m.group(1))
            continue
        m = _NR_SWITCHES.match(line)
        if m and cpu is not None and cpu not in out:
            out[cpu] = int(m.group(1))
    if not out:
        raise PercpuError("the scheduler's debug file has no cpu#N section with .nr_switches")
    return out


def parse_schedstat(text: str) -> Schedstat:
    fields = text.split()
    if len(fields) != 3 or not all(f.isdigit() for f in fields):
        raise PercpuError(f"schedstat: expected three numbers, got {text.strip()[:80]!r}")
    return Schedstat(int(fields[0]), int(fields[1]), int(fields[2]))


def thread_runtime(procfs: str, tgid: int, tid: int) -> ThreadRun | None:
    """Thread ``tid`` of process ``tgid`` (numbers of the pid namespace ``procfs`` shows): stat, then
    schedstat. None when it is gone (or either file does not parse: a thread on its way out)."""
    task = os.path.join(procfs, str(tgid), "task", str(tid))
    try:
        with open(os.path.join(task, "stat"), "rb") as f:
            stat = f.read()
        with open(os.path.join(task, "schedstat"), encoding="ascii") as f:
            runtime = parse_schedstat(f.read()).runtime_ns
    except (OSError, UnicodeDecodeError, PercpuError):
        return None
    # The name (field 2) may hold spaces and parentheses: the fields after it follow its last ')'.
    fields = stat[stat.rfind(b")") + 1 :].split()
    if len(fields) < 37 or not fields[36].isdigit():
        return None
    return ThreadRun(fields[0].decode("ascii", "replace"), int(fields[36]), runtime)


def per_cpu(columns: tuple[int, ...], counts: tuple[int, ...], cpus: CpuList) -> np.ndarray:
    """Counts given per header column as an array over ``cpus`` (the possible CPUs): a CPU with no column
    (offline) gets 0."""
    out = np.zeros(len(cpus), dtype=np.uint64)
    where = {cpu: i for i, cpu in enumerate(cpus)}
    for cpu, n in zip(columns, counts, strict=True):
        if cpu not in where:
            raise PercpuError(f"CPU {cpu} has a column but is not a possible CPU ({cpus})")
        out[where[cpu]] = n
    return out


def wrapping_delta(later: np.ndarray, earlier: np.ndarray, bits: int = 32) -> np.ndarray:
    """later - earlier for counters of ``bits`` bits that wrap (the kernel's unsigned int counts)."""
    mask = (1 << bits) - 1
    out: np.ndarray = (later.astype(np.uint64) - earlier.astype(np.uint64)) & np.uint64(mask)
    return out


def irq_names(sysfs: str = "/sys") -> dict[int, str]:
    """Each IRQ's actions (``/sys/kernel/irq/N/actions``, Linux 4.17 with SPARSE_IRQ), by number; an IRQ
    with no action, or that went away while being read, is left out."""
    root = os.path.join(sysfs, "kernel", "irq")
    out: dict[int, str] = {}
    try:
        entries = os.listdir(root)
    except OSError:
        return out
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(root, entry, "actions"), encoding="utf-8", errors="replace") as f:
                name = f.read().strip()
        except OSError:
            continue
        if name:
            out[int(entry)] = name
    return out
