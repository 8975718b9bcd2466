"""A workload whose calls block: the task is switched out in the middle of each, and half of them return on
another CPU than the one they entered on.

usage: blocking_workload.py READS SLEEPS CPU_A CPU_B --comm NAME

The main thread (named NAME) makes READS blocking one-byte read()s on a pipe, then SLEEPS 100-microsecond
nanosleeps. A helper thread (named otherwise, so a comm filter leaves it out) waits until the reader is
asleep in read(), moves it to the other CPU every second time, then writes the byte. Prints the pid and how
many reads returned after a move as JSON.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import threading
import time

libc = ctypes.CDLL(None, use_errno=True)


def set_comm(name: bytes) -> None:
    libc.prctl(15, name[:15], 0, 0, 0)  # PR_SET_NAME: this thread's name


def state(tid: int) -> str:
    with open(f"/proc/self/task/{tid}/stat", "rb") as f:
        stat = f.read()
    return stat[stat.rindex(b")") + 2 :].split()[0].decode()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("reads", type=int)
    ap.add_argument("sleeps", type=int)
    ap.add_argument("cpu_a", type=int)
    ap.add_argument("cpu_b", type=int)
    ap.add_argument("--comm", required=True)
    args = ap.parse_args()
    r, w = os.pipe()
    reader = threading.get_native_id()
    moved = 0

    def writer() -> None:
        nonlocal moved
        set_comm(b"pcpu-writer")
        for i in range(args.reads):
            while state(reader) != "S":  # asleep: in read(), the only call it makes meanwhile
                time.sleep(0.0002)
            if args.cpu_a != args.cpu_b:
                os.sched_setaffinity(reader, {args.cpu_b if i % 2 == 0 else args.cpu_a})
                moved += i % 2 == 0
            os.write(w, b"x")

    os.sched_setaffinity(0, {args.cpu_a})
    t = threading.Thread(target=writer)
    sleep = time.sleep  # bound before the name changes: nothing to import or look up after it
    read = os.read
    set_comm(os.fsencode(args.comm))
    t.start()
    for _ in range(args.reads):
        read(r, 1)
    for _ in range(args.sleeps):
        sleep(0.0001)
    set_comm(b"pcpu-done")
    t.join()
    print(json.dumps({"pid": os.getpid(), "moved": moved}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
