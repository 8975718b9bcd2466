"""A workload with a known syscall count: pins itself to one CPU, names itself, then makes exactly N
getppid() calls and, optionally, K failing close(-1) calls (EBADF).

usage: syscall_workload.py CALLS CPU [--comm NAME] [--fail K] [--wait-stdin]
Prints its pid and the measured calls per second as JSON when done.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("calls", type=int)
    ap.add_argument("cpu", type=int)
    ap.add_argument("--comm", default=None)
    ap.add_argument("--fail", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=0.0, help="instead of CALLS: loop for this long")
    ap.add_argument("--wait-stdin", action="store_true", help="start the loop after a line on stdin")
    args = ap.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    if args.comm:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, os.fsencode(args.comm)[:15], 0, 0, 0)  # PR_SET_NAME; bytes as given, not UTF-8
    if args.wait_stdin:
        sys.stdin.readline()
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
    print(json.dumps({"pid": os.getpid(), "calls": n, "seconds": t1 - t0, "rate": n / (t1 - t0)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
