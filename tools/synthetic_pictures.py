"""Render percpu's pictures from SYNTHETIC counts on a SYNTHETIC 256-CPU machine (2 packages = 2 NUMA
nodes, 64 cores each, SMT-2 numbered the Intel way, CPUs 248-255 offline, cores 60-63 of package 0
isolated), to check that they stay readable at that size.

usage: python tools/synthetic_pictures.py OUTDIR [--seed N]
Writes OUTDIR/synthetic-256-heatmap.png, synthetic-256-heatmap-by-node.png and
synthetic-256-timeseries.png. No kernel access: the machine is a sysfs tree under a temporary directory.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile

import numpy as np

from percpu import plots
from percpu.cpus import CpuList
from percpu.syscalls import syscall_number
from percpu.syscount import NR_SLOTS, SyscallSnapshot
from percpu.topo import CpuTopology, read_topology
from percpu.views import view

NCPU = 256
ISOLATED = "60-63,188-191"


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="ascii") as f:
        f.write(text + "\n")


def fake_machine(root: str) -> CpuTopology:
    cpu, node = os.path.join(root, "cpu"), os.path.join(root, "node")
    _write(os.path.join(cpu, "possible"), f"0-{NCPU - 1}")
    _write(os.path.join(cpu, "present"), f"0-{NCPU - 1}")
    _write(os.path.join(cpu, "online"), "0-247")
    _write(os.path.join(cpu, "isolated"), ISOLATED)
    for c in range(248):
        t = os.path.join(cpu, f"cpu{c}", "topology")
        pkg, core = c % 128 // 64, c % 64
        _write(os.path.join(t, "physical_package_id"), str(pkg))
        _write(os.path.join(t, "core_id"), str(core))
        _write(os.path.join(t, "die_id"), "0")
        _write(os.path.join(t, "thread_siblings_list"), f"{c % 128},{c % 128 + 128}")
    for n in (0, 1):
        lo = n * 64
        _write(
            os.path.join(node, f"node{n}", "cpulist"), f"{lo}-{lo + 63},{128 + lo}-{min(128 + lo + 63, 247)}"
        )
    return read_topology(cpu, node_root=node, cgroup_root=None)


def counts_for(rng: np.random.Generator, topology: CpuTopology, scale: float) -> np.ndarray:
    """A busy server: a few hot syscalls everywhere, a long tail, quiet isolated CPUs but for one spinner."""
    counts = np.zeros((NCPU, NR_SLOTS), np.uint64)
    online = np.array([c.online for c in topology.cpus])
    iso = np.array([c.is_isolated for c in topology.cpus])
    names = [
        "read",
        "write",
        "futex",
        "epoll_wait",
        "recvfrom",
        "sendto",
        "openat",
        "close",
        "mmap",
        "munmap",
        "newfstatat",
        "clock_nanosleep",
        "ioctl",
        "poll",
        "lseek",
        "getpid",
        "brk",
        "rt_sigprocmask",
        "sched_yield",
        "madvise",
        "writev",
        "pread64",
        "accept4",
        "fcntl",
        "getrandom",
    ]
    for k, name in enumerate(names):
        base = 40000.0 * scale / (k + 1) ** 1.6
        col = rng.gamma(2.0, base / 2.0, NCPU) * online * ~iso
        col[rng.random(NCPU) < 0.05 * k] = 0  # the tail is patchy
        counts[:, syscall_number(name, "x86_64")] = col.astype(np.uint64)
    counts[61, syscall_number("getppid", "x86_64")] = int(250000 * scale)  # the latency-critical spinner
    counts[189, syscall_number("clock_gettime", "x86_64")] = int(900 * scale)  # a rare disturbance
    return counts


def _palette(path: str) -> None:
    """256 colours instead of 24-bit: the 256-column heat map, a count in each of its 7,000 cells, is a
    2 MB PNG otherwise (docs/pictures keeps it)."""
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=256)
    small.save(path, optimize=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.outdir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        topology = fake_machine(tmp)
    cpus = topology.possible
    online = CpuList(range(248))
    total = np.zeros((NCPU, NR_SLOTS), np.uint64)
    snaps = [SyscallSnapshot(0.0, cpus, total.copy(), arch="x86_64", online=online)]
    for i in range(30):
        total += counts_for(rng, topology, 1.0 + 0.8 * np.sin(i / 4.0) ** 2)
        snaps.append(SyscallSnapshot(float(i + 1), cpus, total.copy(), arch="x86_64", online=online))
    whole = snaps[-1].delta(snaps[0])
    title = "SYNTHETIC data, 256 CPUs: system calls per CPU, {:,} calls in {:.0f} s"
    out = os.path.join(args.outdir, "synthetic-256-heatmap.png")
    plots.heatmap(whole, out, topology=topology, title=title.format(int(whole.counts.sum()), whole.seconds))
    _palette(out)
    by_node = view(whole, topology, by="node")
    plots.heatmap(
        by_node,
        os.path.join(args.outdir, "synthetic-256-heatmap-by-node.png"),
        topology=topology,
        title="SYNTHETIC data, 256 CPUs grouped by NUMA node (--by node)",
    )
    intervals = [b.delta(a) for a, b in itertools.pairwise(snaps)]
    plots.timeseries(
        intervals,
        os.path.join(args.outdir, "synthetic-256-timeseries.png"),
        topology=topology,
        title="SYNTHETIC data, 256 CPUs: calls per second (stat -i 1 --timeseries)",
    )
    print(f"wrote 3 pictures to {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
