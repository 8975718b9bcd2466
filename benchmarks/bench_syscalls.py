"""Added cost per system call of percpu's BPF programs, against the floor of empty programs.

Run as root:  .venv/bin/python benchmarks/bench_syscalls.py [--calls 2000000] [--rounds 5] [--json]

For each configuration the same C loop (getppid_loop.c, compiled here with cc) makes CALLS getppid()
calls pinned to a CPU, with 1 CPU busy and with every online CPU busy at once. The added cost is the time
per call minus the time per call with nothing attached, measured in the same round; configurations are
interleaved round by round so the machine's noise hits all of them alike. Ratios compare each percpu mode
with the empty programs at the same hooks (sys_enter alone for the default mode; sys_enter plus sys_exit
for the modes that need the exit hook).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from percpu.cpus import topology  # noqa: E402
from percpu.objects import BpfObject, bundled  # noqa: E402
from percpu.syscount import SyscallCounter  # noqa: E402


def build_loop(tmp: str) -> str:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        sys.exit("bench_syscalls: needs a C compiler (apt-get install gcc) for the getppid loop")
    exe = os.path.join(tmp, "getppid_loop")
    subprocess.run([cc, "-O2", "-o", exe, os.path.join(HERE, "getppid_loop.c")], check=True)
    return exe


def run_loop(exe: str, calls: int, cpus: list[int]) -> float:
    """Mean ns per call over the CPUs, all loops running at once."""
    procs = [subprocess.Popen([exe, str(calls), str(c)], stdout=subprocess.PIPE, text=True) for c in cpus]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError("getppid loop failed")
    return statistics.mean(float(o) for o in outs)


@contextmanager
def floor(programs: tuple[str, ...]) -> Iterator[None]:
    with BpfObject(bundled("floor.bpf.o")) as obj:
        for name, prog in obj.programs.items():
            prog.autoload = name in programs
        obj.load()
        for name in programs:
            obj.attach(name)
        yield


@contextmanager
def counter(**kw: Any) -> Iterator[None]:
    with SyscallCounter(**kw):
        yield


@contextmanager
def external(cmd: list[str], ready: str, settle: float = 0.5) -> Iterator[None]:
    """Run a tracing tool until the block ends; wait until it prints ``ready``."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert p.stdout is not None
        deadline = time.monotonic() + 90
        seen = ""
        while ready not in seen:
            line = p.stdout.readline()
            if not line:
                raise RuntimeError(f"{cmd[0]} exited: {seen[-500:]}")
            seen += line
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[0]} did not start: {seen[-500:]}")
        time.sleep(settle)
        yield
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


Config = Callable[[], AbstractContextManager[None]]


def configs(with_external: bool) -> dict[str, tuple[Config, str | None]]:
    """name -> (context manager factory, floor it is compared with)."""
    c: dict[str, tuple[Config, str | None]] = {
        "none": (nullcontext, None),
        "floor: empty sys_enter": (lambda: floor(("enter_btf",)), None),
        "floor: empty sys_enter+sys_exit": (lambda: floor(("enter_btf", "exit_btf")), None),
        "reference: minimal counter": (lambda: floor(("count_btf",)), "floor: empty sys_enter"),
        "percpu default": (counter, "floor: empty sys_enter"),
        "percpu -P -e (process+errno)": (
            lambda: counter(per_process=True, errors=True),
            "floor: empty sys_enter+sys_exit",
        ),
        "percpu -L (latency)": (lambda: counter(latency=True), "floor: empty sys_enter+sys_exit"),
    }
    if with_external:
        if shutil.which("bpftrace"):
            c["bpftrace @[id]=count()"] = (
                lambda: external(
                    ["bpftrace", "-e", "tracepoint:raw_syscalls:sys_enter { @[args->id] = count(); }"],
                    "Attaching",
                ),
                "floor: empty sys_enter",
            )
        for tool in ("syscount-bpfcc", "/usr/share/bcc/tools/syscount"):
            if shutil.which(tool) or os.path.exists(tool):
                c["bcc syscount"] = (lambda t=tool: external([t], "Tracing"), "floor: empty sys_enter")
                c["bcc syscount -L"] = (
                    lambda t=tool: external([t, "-L"], "Tracing"),
                    "floor: empty sys_enter+sys_exit",
                )
                break
    return c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2_000_000, help="getppid calls per loop (default 2M)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--no-external", action="store_true", help="leave out bpftrace and bcc")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_syscalls: run as root (it attaches BPF programs)")
    online = list(topology().online)
    busy_sets = {"1 busy CPU": online[:1], f"{len(online)} busy CPUs": online}
    cfgs = configs(not args.no_external)
    skipped: dict[str, str] = {}
    for name in [n for n in cfgs if n.startswith(("bpftrace", "bcc"))]:
        try:
            with cfgs[name][0]():
                pass
        except RuntimeError as exc:  # e.g. bcc without kernel headers for the running kernel
            skipped[name] = str(exc).strip().splitlines()[-1][:200]
            del cfgs[name]
    samples: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_loop(tmp)
        for r in range(args.rounds):
            for name, (make, _floor) in cfgs.items():
                with make():
                    for busy, cpus in busy_sets.items():
                        samples.setdefault((name, busy), []).append(run_loop(exe, args.calls, cpus))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    results: list[dict[str, Any]] = []
    for busy in busy_sets:
        base = samples[("none", busy)]
        added = {
            name: statistics.median(s - b for s, b in zip(samples[(name, busy)], base, strict=True))
            for name in cfgs
        }
        for name, (_make, fl) in cfgs.items():
            results.append(
                {
                    "busy": busy,
                    "config": name,
                    "ns_per_call": round(statistics.median(samples[(name, busy)]), 2),
                    "added_ns": round(added[name], 2),
                    "floor": fl,
                    "ratio_to_floor": round(added[name] / added[fl], 3) if fl and added[fl] > 0 else None,
                }
            )
    if args.json:
        print(json.dumps({"results": results, "did_not_run": skipped}, indent=2))
        return 0
    print(f"getppid loop, {args.calls:,} calls x {args.rounds} rounds, medians; kernel {os.uname().release}")
    for busy in busy_sets:
        print(f"\n{busy}:")
        print(f"  {'configuration':<34} {'ns/call':>8} {'added ns':>9} {'x floor':>8}")
        for row in results:
            if row["busy"] == busy:
                ratio = f"{row['ratio_to_floor']:.2f}" if row["ratio_to_floor"] is not None else ""
                print(f"  {row['config']:<34} {row['ns_per_call']:>8.1f} {row['added_ns']:>9.1f} {ratio:>8}")
    for name, why in skipped.items():
        print(f"\n{name} did not run here: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
