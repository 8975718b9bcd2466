"""One CPU's values of a whole per-CPU map: ``snapshot(cpu=N)`` against a full ``snapshot()``.

Run as root, on any kernel:  .venv/bin/python benchmarks/bench_cpu_snapshot.py [--sizes 10000 100000]
[--repeat 5] [--json] [--smoke]

Where the kernel has BPF_F_CPU (Linux 7.0) a one-CPU snapshot asks the batch read for that CPU's values
alone (``elem_flags = BPF_F_CPU | cpu << 32``): the kernel copies ``value_size`` bytes per element instead
of ``round_up(value_size, 8)`` for every possible CPU. Elsewhere percpu reads everything and takes the
column, so the two figures should be close. The output says which path was taken and the bytes each read
let the kernel copy. Figures are medians of alternating runs. ``--smoke`` (1,000 elements, one repeat)
only checks that the benchmark runs: its figures mean nothing.
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

import percpu
from percpu import features


def fill(n: int) -> percpu.PerCpuHash:
    m = percpu.PerCpuHash.create(np.uint32, np.uint64, n, name="bench_cpu_snap")
    keys = np.arange(n, dtype=np.uint32)
    vals = (keys[:, None].astype(np.uint64) * 1000 + np.arange(len(m.cpus), dtype=np.uint64)).astype(
        np.uint64
    )
    for i in range(0, n, 100_000):
        m.update_batch(keys[i : i + 100_000], vals[i : i + 100_000])
    return m


def timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(n: int, repeat: int) -> dict[str, Any]:
    with fill(n) as m:
        cpu = m.cpus[-1]
        full_s, one_s = [], []
        for _ in range(repeat):
            full_s.append(timed(m.snapshot))
            one_s.append(timed(lambda: m.snapshot(cpu=cpu)))
        one = m.snapshot(cpu=cpu)
        assert (np.sort(one.values) == np.sort(m.snapshot().cpu(cpu))).all()
        flag = features.cpu_flag()
        return {
            "elements": n,
            "possible_cpus": len(m.cpus),
            "one_cpu_path": "BPF_F_CPU batch read" if flag else "full read, then the column",
            "full_bytes_copied": n * m.layout.element_bytes,
            "one_cpu_bytes_copied": n * (m.layout.value_size if flag else m.layout.element_bytes),
            "full_ms": statistics.median(full_s) * 1e3,
            "one_cpu_ms": statistics.median(one_s) * 1e3,
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--smoke", action="store_true", help="1,000 elements, one repeat: that it runs, not how fast"
    )
    args = ap.parse_args()
    if args.smoke:
        args.sizes, args.repeat = [1_000], 1
        print(
            f"{ap.prog}: --smoke: a small run, to check that it works; its figures mean nothing",
            file=sys.stderr,
        )
    rows = [run(n, args.repeat) for n in args.sizes]
    if args.json:
        json.dump({"kernel": os.uname().release, "results": rows}, sys.stdout, indent=2)
        print()
        return 0
    print(f"kernel {os.uname().release}; one-CPU path: {rows[0]['one_cpu_path']}")
    head = ("elements", "CPUs", "full ms", "one-CPU ms", "full bytes", "one-CPU bytes")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (10, 5, 9, 11, 12, 14), strict=True)))
    for r in rows:
        print(
            f"{r['elements']:>10} {r['possible_cpus']:>5} {r['full_ms']:>9.2f} {r['one_cpu_ms']:>11.2f} "
            f"{r['full_bytes_copied']:>12} {r['one_cpu_bytes_copied']:>14}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
