"""A workload with a known syscall count: pins itself to one CPU, names itself, then makes exactly N
getppid() calls and, optionally, K failing close(-1) calls (EBADF).

usage: syscall_workload.py CALLS CPU [--comm NAME] [--fail K] [--wait-stdin] [--announce] [--processes N]
Prints its pid and the measured calls per second as JSON when done; with --announce, also a line
"looping" just before its first call, so that a test can start counting on a loop already running.
With --processes N it forks N processes that each do all of that, start together and print a line each;
the parent makes no counted calls. (Forking is what makes dozens of processes affordable in a TCG guest,
where each interpreter start takes seconds.)
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import sys
import time
import traceback


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("calls", type=int)
    ap.add_argument("cpu", type=int)
    ap.add_argument("--comm", default=None)
    ap.add_argument("--fail", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=0.0, help="instead of CALLS: loop for this long")
    ap.add_argument("--wait-stdin", action="store_true", help="start the loop after a line on stdin")
    ap.add_argument("--announce", action="store_true", help='print "looping" just before the first call')
    ap.add_argument("--processes", type=int, default=0, help="fork this many processes that each do it")
    args = ap.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    if args.comm:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, os.fsencode(args.comm)[:15], 0, 0, 0)  # PR_SET_NAME; bytes as given, not UTF-8
    if args.processes:
        return fork_and_run(args)
    if args.wait_stdin:
        sys.stdin.readline()
    if args.announce:
        print("looping", flush=True)
    print(json.dumps(loop(args)), flush=True)
    return 0


def fork_and_run(args: argparse.Namespace) -> int:
    """N children (CPU affinity and name inherited) wait on a pipe, the parent on stdin if asked; then
    they all start at once. Each child writes its line with one write(2), which a pipe keeps whole."""
    sys.stdout.flush()
    go_r, go_w = os.pipe()
    children = []
    for _ in range(args.processes):
        pid = os.fork()
        if pid == 0:
            os.close(go_w)
            code = 1
            try:
                if os.read(go_r, 1) == b"g":
                    os.write(1, (json.dumps(loop(args)) + "\n").encode())
                    code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        children.append(pid)
    os.close(go_r)
    if args.wait_stdin:
        sys.stdin.readline()
    os.write(go_w, b"g" * args.processes)
    os.close(go_w)
    failed = sum(os.waitpid(pid, 0)[1] != 0 for pid in children)
    if failed:
        print(f"{failed} of {args.processes} processes failed", file=sys.stderr)
    return 1 if failed else 0


def loop(args: argparse.Namespace) -> dict[str, float]:
    getppid = os.getppid
    t0 = time.monotonic()
    n = 0
    if args.seconds:
        end = t0 + args.seconds
        while time.monotonic() < end:
            for _ in range(1000):
                getppid()
            n += 1000
    else:
        for _ in range(args.calls):
            getppid()
        n = args.calls
    t1 = time.monotonic()
    for _ in range(args.fail):
        with contextlib.suppress(OSError):
            os.close(-1)
    return {"pid": os.getpid(), "calls": n, "seconds": t1 - t0, "rate": n / (t1 - t0)}


if __name__ == "__main__":
    sys.exit(main())
