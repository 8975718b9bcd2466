"""The syscall counter's reads at what the online CPUs cost: a read, an exporter scrape and a top refresh with
one-CPU reads (BPF_F_CPU, Linux 7.0) against the same code forced to whole reads, side by side.

Run as root:  .venv/bin/python benchmarks/bench_cpu_reads.py [--reads 40] [--json] [--smoke]
(on a VM with few CPUs online of many possible: scripts/vm-matrix --only 7-max32 --exec "...").

Two counters run at once, counting the same calls: one reading its per-CPU arrays one CPU at a time
(``SyscallCounter()``: each online CPU's slots at every read, an offline CPU's once after it went
offline), one forced to read every possible CPU's slots (``one_cpu_reads=False``). Each is read alone
(``snapshot()``: the counter's read), by the exporter's collector (a scrape: the read, the metrics, the
exposition text) and by top's refresh (the read, the interval's delta, the CPUs shown, the table of rates
``top -b`` prints), alternating (each goes first half the time), counting whatever the machine does; and
the batch lookups of the counts map alone (the kernel's part of a read: the rest of a read is Python). The
bytes are what the kernel copied into the counter's buffers (every batch lookup's elements x the bytes of
one element for its flags), the times medians and p95. Goals at 2 CPUs online of 32: at least 8x fewer
bytes and 2x less time per read.
``--smoke`` (4 reads) only checks that it runs: its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from percpu import _machine, features
from percpu.cli import _report
from percpu.cpus import CpuList, cpu_lists
from percpu.exporter import SyscallCollector
from percpu.maps import PerCpuArray
from percpu.syscount import SyscallCounter
from percpu.views import shown


class Copied:
    """Counts the value bytes the kernel copies in batch lookups (wrapping the binding's call)."""

    def __init__(self) -> None:
        self.bytes = 0
        lib = _machine.current().libbpf()
        inner = lib.map_lookup_batch

        def counted(*a: Any, **kw: Any) -> tuple[int, bool]:
            n, done = inner(*a, **kw)
            layout = a[6] if len(a) > 6 else kw["layout"]
            flags = kw.get("elem_flags", a[8] if len(a) > 8 else 0)
            self.bytes += n * layout.value_bytes(flags)
            return n, done

        lib.map_lookup_batch = counted  # type: ignore[method-assign]


def measure(fn: Callable[[], object], copied: Copied) -> tuple[float, int]:
    before = copied.bytes
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3, copied.bytes - before


def summary(ms: list[float], sizes: list[int]) -> dict[str, Any]:
    ms = sorted(ms)
    return {
        "median_ms": round(statistics.median(ms), 3),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 3),
        "bytes_per_read": int(statistics.median(sizes)),
    }


def refresh(counter: SyscallCounter, last: list[Any]) -> Callable[[], str]:
    """What top -b does each interval: read, delta, the CPUs shown, the table of rates."""

    def run() -> str:
        snap = counter.snapshot()
        d = shown(snap.delta(last[0]))
        last[0] = snap
        return _report.table(d, rates=True)

    return run


def lookups_alone(counter: SyscallCounter, online: CpuList) -> Callable[[], None]:
    """The kernel's part of a read of the counts map, with as little Python as a read can have: the batch
    lookups of the counter's own kind (each online CPU's slots, or every possible CPU's) into buffers
    kept from one call to the next. What a snapshot adds to them is the rest of the read."""
    m = counter._maps["counts"]
    assert isinstance(m, PerCpuArray)
    readers = [m.reader(cpu=c) for c in online] if counter.reads_one_cpu else [m.reader()]

    def run() -> None:
        for r in readers:
            r.read()

    return run


def run(reads: int) -> dict[str, Any]:
    copied = Copied()
    lists = cpu_lists()
    with SyscallCounter() as one, SyscallCounter(one_cpu_reads=False) as whole:
        pairs = {"one-CPU reads": one, "whole reads": whole}
        scrapes = {k: SyscallCollector(c) for k, c in pairs.items()}
        tops = {k: refresh(c, [c.snapshot()]) for k, c in pairs.items()}
        for k in pairs:  # the first read of each is whole: not measured
            scrapes[k].expose(False)
        out: dict[str, Any] = {}
        reads_only = {k: c.snapshot for k, c in pairs.items()}
        lookups = {k: lookups_alone(c, lists.online) for k, c in pairs.items()}
        for what, fns in (
            ("counter read", reads_only),
            ("exporter scrape", scrapes),
            ("top refresh", tops),
            ("batch lookups alone", lookups),
        ):
            ms: dict[str, list[float]] = {k: [] for k in pairs}
            size: dict[str, list[int]] = {k: [] for k in pairs}
            for i in range(reads):
                for k in list(pairs)[:: 1 if i % 2 else -1]:  # each goes first half the time
                    f = fns[k]
                    call = (lambda f=f: f.expose(False)) if what == "exporter scrape" else f
                    t, b = measure(call, copied)
                    ms[k].append(t)
                    size[k].append(b)
            out[what] = {k: summary(ms[k], size[k]) for k in pairs}
        path = (
            "BPF_F_CPU, one CPU at a time"
            if one.reads_one_cpu
            else f"whole: this kernel has no BPF_F_CPU ({features.CPU_FLAG_FEATURE.needs} adds it), so both "
            "counters read every possible CPU and the ratios say nothing of the goals"
        )
    return {
        "kernel": os.uname().release,
        "possible": str(lists.possible),
        "online": str(lists.online),
        "one_cpu_path": path,
        "reads": reads,
        "results": out,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reads", type=int, default=40, help="reads of each kind (default 40)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="4 reads: that it runs, not how fast")
    args = ap.parse_args()
    if args.smoke:
        args.reads = 4
        print(
            f"{ap.prog}: --smoke: a small run, to check that it works; its figures mean nothing",
            file=sys.stderr,
        )
    r = run(args.reads)
    if args.json:
        json.dump(r, sys.stdout, indent=2)
        print()
        return 0
    print(
        f"kernel {r['kernel']}, possible CPUs {r['possible']}, online {r['online']}; one-CPU path: "
        f"{r['one_cpu_path']}; {r['reads']} reads each, alternating"
    )
    for what, rows in r["results"].items():
        for k, s in rows.items():
            print(
                f"  {what + ', ' + k:<34} median {s['median_ms']:>9.3f} ms  p95 {s['p95_ms']:>9.3f} ms  "
                f"{s['bytes_per_read']:>9} bytes copied"
            )
        a, b = rows["one-CPU reads"], rows["whole reads"]
        print(
            f"  {what}: whole / one-CPU  {b['bytes_per_read'] / max(a['bytes_per_read'], 1):.1f}x bytes, "
            f"{b['median_ms'] / max(a['median_ms'], 1e-9):.2f}x time"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
