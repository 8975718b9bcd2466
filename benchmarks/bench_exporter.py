"""Time of one exporter scrape (read + build metrics + exposition text), full matrix and real counter.

Run:  .venv/bin/python benchmarks/bench_exporter.py [--scrapes 20] [--json]

"256 CPUs" feeds the collector a snapshot of 256 possible CPUs x every syscall slot the x86_64 table
names, all non-zero (the worst case for series count), through the exporter's own path (expose(), what
`percpu exporter` serves) and through prometheus_client's generate_latest() alone, side by side; "real"
scrapes the live counter on this machine (root needed). Medians and p95 in milliseconds; target 50 ms.
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

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "unit"))

from prometheus_client import CollectorRegistry, generate_latest
from test_exporter import FakeCounter

from percpu.exporter import SyscallCollector
from percpu.syscalls import syscall_table


def time_scrapes(scrape: Callable[[], bytes], n: int) -> dict[str, Any]:
    times, size = [], 0
    for _ in range(n):
        t = time.perf_counter()
        size = len(scrape())
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
        ("256 CPUs x all syscalls", {}),
        ("256 CPUs, --no-cpu-label", {"cpu_label": False}),
        ("256 CPUs, --top-syscalls 50", {"top_syscalls": 50}),
    ):
        col = SyscallCollector(fake, **kw)
        results[f"exporter (expose), {label}"] = time_scrapes(
            lambda c=col: c.expose(openmetrics=True), args.scrapes
        )
        reg = CollectorRegistry(auto_describe=False)
        reg.register(SyscallCollector(fake, **kw))
        results[f"prometheus_client only, {label}"] = time_scrapes(
            lambda r=reg: generate_latest(r), args.scrapes
        )
    if os.geteuid() == 0:
        from percpu.syscount import SyscallCounter

        with SyscallCounter() as c:
            col = SyscallCollector(c)
            time.sleep(0.5)
            results[f"real counter, {len(c.cpus)} possible CPUs"] = time_scrapes(
                lambda: col.expose(openmetrics=True), args.scrapes
            )
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
