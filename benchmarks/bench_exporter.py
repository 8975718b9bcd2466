"""Time of one exporter scrape (read + build metrics + exposition text), full matrix and real counter.

Run:  .venv/bin/python benchmarks/bench_exporter.py [--scrapes 20] [--cpus 256] [--json] [--smoke]

"256 CPUs" feeds the collector a snapshot of 256 possible CPUs x every syscall slot the x86_64 table
names, all non-zero (the worst case for series count), and every count changes between scrapes (the worst
case for the exporter's row cache, which reuses rows whose counts did not change). The same samples go
through the exporter's own path (expose(), what `percpu exporter` serves) and through prometheus_client
(the collector as a prometheus_client Collector, generate_latest()), interleaved in one run; the ratio of
the medians is printed (target: at least 50x). "real" scrapes the live counter on this machine (root
needed). Medians and p95 in milliseconds. ``--smoke`` (8 CPUs, 2 scrapes) only checks that the benchmark
runs: its figures mean nothing.
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
# tests.unit.synthetic: the fake counter the exporter's unit tests scrape too (a data module, not a test)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from prometheus_client import CollectorRegistry, generate_latest
from tests.unit.synthetic import FakeCounter

from percpu.exporter import SyscallCollector
from percpu.syscalls import syscall_table


def summary(times: list[float], size: int) -> dict[str, Any]:
    times = sorted(times)
    return {
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
        "bytes": size,
    }


def side_by_side(
    fake: FakeCounter, ours: Callable[[], bytes], theirs: Callable[[], bytes], n: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Alternate the two, every count changing before each scrape of either."""
    a: list[float] = []
    b: list[float] = []
    sa = sb = 0
    for _ in range(n):
        for scrape, times in ((ours, a), (theirs, b)):
            fake.counts[fake.counts != 0] += np.uint64(7)
            t = time.perf_counter()
            size = len(scrape())
            times.append((time.perf_counter() - t) * 1e3)
            if times is a:
                sa = size
            else:
                sb = size
    return summary(a, sa), summary(b, sb)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scrapes", type=int, default=20)
    ap.add_argument("--cpus", type=int, default=256, help="possible CPUs of the synthetic snapshot")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="8 CPUs, 2 scrapes: that it runs, not how fast")
    args = ap.parse_args()
    if args.smoke:
        args.cpus, args.scrapes = 8, 2
        print(
            f"{ap.prog}: --smoke: a small run, to check that it works; its figures mean nothing",
            file=sys.stderr,
        )
    results: dict[str, Any] = {}
    ratios: dict[str, float] = {}
    fake = FakeCounter(args.cpus)
    slots = sorted(syscall_table("x86_64"))
    fake.counts[:, slots] = np.arange(1, args.cpus + 1, dtype=np.uint64)[:, None]
    full = f"{args.cpus} CPUs x all syscalls"
    for label, kw in (
        (full, {}),
        (f"{args.cpus} CPUs, --no-cpu-label", {"cpu_label": False}),
        (f"{args.cpus} CPUs, --top-syscalls 50", {"top_syscalls": 50}),
    ):
        col = SyscallCollector(fake, **kw)
        reg = CollectorRegistry(auto_describe=False)
        reg.register(SyscallCollector(fake, **kw))
        ours, theirs = side_by_side(
            fake, lambda c=col: c.expose(openmetrics=False), lambda r=reg: generate_latest(r), args.scrapes
        )
        results[f"exporter (expose), {label}"] = ours
        results[f"prometheus_client, {label}"] = theirs
        ratios[label] = round(theirs["median_ms"] / ours["median_ms"], 1)
    if os.geteuid() == 0:
        from percpu.syscount import SyscallCounter

        with SyscallCounter() as c:
            real = SyscallCollector(c)
            time.sleep(0.5)
            times, size = [], 0
            for _ in range(args.scrapes):
                t = time.perf_counter()
                size = len(real.expose(openmetrics=False))
                times.append((time.perf_counter() - t) * 1e3)
            results[f"real counter, {len(c.cpus)} possible CPUs"] = summary(times, size)
    if args.json:
        out = {"results": results, "ratio_prometheus_client_to_exporter": ratios, "loadavg": os.getloadavg()}
        print(json.dumps(out, indent=2))
        return 0
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"one scrape, {args.scrapes} scrapes each, the two paths interleaved; every count changes "
        f"(load average {load})"
    )
    for label, r in results.items():
        print(
            f"  {label:<44} median {r['median_ms']:8.2f} ms   p95 {r['p95_ms']:8.2f} ms   "
            f"{r['bytes'] / 1e6:6.2f} MB of text"
        )
    for label, ratio in ratios.items():
        target = "  (target: at least 50x)" if label == "256 CPUs x all syscalls" else ""
        print(f"  prometheus_client / exporter, {label:<28} {ratio:6.1f}x{target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
