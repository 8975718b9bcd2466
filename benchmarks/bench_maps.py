"""Reading a whole PERCPU_HASH: percpu's snapshot vs per-key lookups vs `bpftool map dump -j`.

Run as root:  .venv/bin/python benchmarks/bench_maps.py [--sizes 100000 1000000] [--repeat 3] [--json]
[--smoke]

All three readers read the same map in the same run, alternating, and the figures are medians. Per-key
lookups on a large map are timed on a sample of keys and reported as a rate (said in the output).
Memory: the bytes of the arrays a snapshot returns against the raw bytes the kernel copies out
(n * (key_size + possible CPUs * round_up(value_size, 8))), and the peak of memory allocated while the
first snapshot of that map was taken (tracemalloc, which numpy reports its buffers to), returned arrays
included. ``--smoke`` (1,000 keys, one repeat) only checks that the benchmark runs: its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import tracemalloc
from typing import Any

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import percpu
from percpu import _machine

SAMPLE = 100_000


def fill(n: int) -> percpu.PerCpuHash:
    m = percpu.PerCpuHash.create(np.uint32, np.uint64, n, name="bench_map")
    ncpu = len(m.cpus)
    keys = np.arange(n, dtype=np.uint32)
    vals = np.arange(n * ncpu, dtype=np.uint64).reshape(n, ncpu)
    for i in range(0, n, 100_000):
        m.update_batch(keys[i : i + 100_000], vals[i : i + 100_000])
    return m


def time_bare_loop(m: percpu.PerCpuHash, n: int) -> float:
    """The kernel's own limit: BPF_MAP_LOOKUP_BATCH into reused, already faulted-in buffers."""
    b = _machine.current().kernel
    lay = m.layout
    ks, el = lay.key_size, lay.element_bytes
    keys = np.ones((n + 1) * ks, np.uint8)
    vals = np.ones((n + 1) * el, np.uint8)
    tok_in, tok_out, total = None, np.zeros(lay.token_bytes, np.uint8), 0
    t = time.perf_counter()
    while True:
        got, done = b.map_lookup_batch(
            m.fd, tok_in, tok_out, keys[total * ks :], vals[total * el :], n + 1 - total, lay
        )
        total += got
        if done:
            break
        tok_in, tok_out = tok_out, (tok_in if tok_in is not None else np.zeros(lay.token_bytes, np.uint8))
    return time.perf_counter() - t


def time_snapshot(m: percpu.PerCpuHash) -> tuple[float, percpu.Snapshot]:
    t = time.perf_counter()
    s = m.snapshot()
    return time.perf_counter() - t, s


def time_per_key(m: percpu.PerCpuHash, n: int) -> float:
    keys = range(min(n, SAMPLE))
    t = time.perf_counter()
    for k in keys:
        m.lookup(k)
    return (time.perf_counter() - t) / len(keys)  # seconds per key


def time_bpftool(map_id: int) -> tuple[float, float, int]:
    t = time.perf_counter()
    out = subprocess.run(["bpftool", "-j", "map", "dump", "id", str(map_id)], capture_output=True, check=True)
    dump_s = time.perf_counter() - t
    entries = json.loads(out.stdout)
    return dump_s, time.perf_counter() - t, len(entries)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="1,000 keys, one repeat: that it runs, not how fast")
    args = ap.parse_args()
    if args.smoke:
        args.sizes, args.repeat = [1_000], 1
        print(
            f"{ap.prog}: --smoke: a small run, to check that it works; its figures mean nothing",
            file=sys.stderr,
        )
    if os.geteuid() != 0:
        sys.exit("bench_maps: run as root")
    if not shutil.which("bpftool"):
        sys.exit("bench_maps: needs bpftool (apt-get install bpftool)")
    results: list[dict[str, Any]] = []
    for n in args.sizes:
        with fill(n) as m:
            ncpu = len(m.cpus)
            raw = n * (m.layout.key_size + m.layout.element_bytes)
            tracemalloc.start()
            first_s, snap = time_snapshot(m)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert len(snap) == n
            returned = snap.keys.nbytes + snap.values.nbytes
            del snap
            snaps, perkey, dumps, dumps_parsed, bare = [first_s], [], [], [], []
            for _ in range(args.repeat):
                snaps.append(time_snapshot(m)[0])
                bare.append(time_bare_loop(m, n))
                perkey.append(time_per_key(m, n))
                d, dp, count = time_bpftool(m.info.id)
                assert count == n
                dumps.append(d)
                dumps_parsed.append(dp)
            snap_rate = n / statistics.median(snaps)
            key_rate = 1 / statistics.median(perkey)
            tool_rate = n / statistics.median(dumps)
            results.append(
                {
                    "keys": n,
                    "possible_cpus": ncpu,
                    "snapshot_keys_per_s": round(snap_rate),
                    "bare_batch_loop_keys_per_s": round(n / statistics.median(bare)),
                    "per_key_lookup_keys_per_s": round(key_rate),
                    "per_key_sampled": min(n, SAMPLE),
                    "bpftool_dump_keys_per_s": round(tool_rate),
                    "bpftool_dump_and_parse_keys_per_s": round(n / statistics.median(dumps_parsed)),
                    "snapshot_vs_bpftool": round(snap_rate / tool_rate, 1),
                    "snapshot_vs_per_key": round(snap_rate / key_rate, 1),
                    "raw_kernel_bytes": raw,
                    "returned_bytes": returned,
                    "returned_vs_raw": round(returned / raw, 3),
                    "peak_alloc_vs_raw": round(peak / raw, 3),
                }
            )
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(f"PERCPU_HASH u32 -> u64, {r['keys']:,} keys, {r['possible_cpus']} possible CPUs")
        print(f"  snapshot (batch)        {r['snapshot_keys_per_s'] / 1e6:8.2f} M keys/s")
        print(
            f"  bare batch loop         {r['bare_batch_loop_keys_per_s'] / 1e6:8.2f} M keys/s"
            "  (the kernel's limit: reused, faulted-in buffers)"
        )
        print(
            f"  per-key lookups         {r['per_key_lookup_keys_per_s'] / 1e6:8.2f} M keys/s"
            f"  (timed on {r['per_key_sampled']:,} keys)"
        )
        print(
            f"  bpftool map dump -j     {r['bpftool_dump_keys_per_s'] / 1e6:8.2f} M keys/s"
            f"  ({r['bpftool_dump_and_parse_keys_per_s'] / 1e6:.2f} with JSON parsing)"
        )
        print(f"  snapshot / bpftool      {r['snapshot_vs_bpftool']:8.1f} x")
        print(f"  snapshot / per-key      {r['snapshot_vs_per_key']:8.1f} x")
        print(
            f"  memory: returned arrays {r['returned_vs_raw']:.2f} x raw kernel bytes, "
            f"peak allocated while reading {r['peak_alloc_vs_raw']:.2f} x\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
