"""Time of one exporter scrape (read + build metrics + exposition text), full matrix and real counter.

Run:  .venv/bin/python benchmarks/bench_exporter.py [--scrapes 20] [--json]

"synthetic" feeds the collector a snapshot of 256 possible CPUs x every syscall slot the x86_64 table
names, all non-zero (the worst case for series count); "real" scrapes the live counter on this machine
(root needed). Medians and p95 in milliseconds, against the 50 ms target.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "unit"))

from prometheus_client import CollectorRegistry, generate_latest
from test_exporter import FakeCounter

from percpu.exporter import SyscallCollector
from percpu.syscalls import syscall_table


def time_scrapes(reg: CollectorRegistry, n: int) -> dict[str, Any]:
    times, size = [], 0
    for _ in range(n):
        t = time.perf_counter()
        size = len(generate_latest(reg))
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[int(0.95 * (n - 1))], 2),
        "bytes": size,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scrapes", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results: dict[str, Any] = {}
    fake = FakeCounter(256)
    slots = sorted(syscall_table("x86_64"))
    fake.counts[:, slots] = np.arange(1, 257, dtype=np.uint64)[:, None]
    for label, kw in (
        ("synthetic 256 CPUs x all syscalls", {}),
        ("synthetic, --no-cpu-label", {"cpu_label": False}),
        ("synthetic, --top-syscalls 50", {"top_syscalls": 50}),
    ):
        reg = CollectorRegistry(auto_describe=False)
        reg.register(SyscallCollector(fake, **kw))
        results[label] = {**time_scrapes(reg, args.scrapes), "series": 256 * len(slots) if not kw else None}
    if os.geteuid() == 0:
        from percpu.syscount import SyscallCounter

        with SyscallCounter() as c:
            reg = CollectorRegistry(auto_describe=False)
            reg.register(SyscallCollector(c))
            time.sleep(0.5)
            results[f"real counter, {len(c.cpus)} possible CPUs"] = time_scrapes(reg, args.scrapes)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"one scrape, {args.scrapes} scrapes each (target: under 50 ms)")
    for label, r in results.items():
        print(
            f"  {label:<36} median {r['median_ms']:8.2f} ms   p95 {r['p95_ms']:8.2f} ms   "
            f"{r['bytes'] / 1e6:6.2f} MB of text"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
