"""``percpu top`` (live view) and ``percpu stat`` (one-shot report) of system calls per CPU."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from typing import Any

from .. import process
from ..errors import PercpuError
from ..syscount import (
    SyscallCounter,
    SyscallDelta,
    SyscallSnapshot,
    cgroup2_root,
)
from . import _options, _report
from ._args import int_at_least, seconds
from ._outfile import ReportFile

__all__ = ["register"]


# Each report reads every map: a shorter interval would spend a CPU on reading, not on the workload.
MIN_INTERVAL = 0.1
_interval = seconds(MIN_INTERVAL, " (each report reads every map)")
_duration = seconds(hint=": leave -d out to count until Ctrl-C")


# --- percpu stat ------------------------------------------------------------------------------------


class _Output:
    """Writes each interval (or the final report) in the chosen format, and the heat map at the end.

    Output files are checked when this is made, before counting starts, but a regular file is replaced
    only by :meth:`commit`, once the report is complete: a run that fails leaves the old file as it was."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.fmt = args.format
        self.top = args.top if args.top else None
        self.sum = args.sum
        self.quiet = args.quiet
        self.attach: str | None = None
        self.first = True
        self.heatmap_path: str | None = args.heatmap
        if args.heatmap and not args.heatmap.endswith(".svg"):
            raise PercpuError(f"--heatmap {args.heatmap}: only SVG is written (name the file .svg)")
        self.out = ReportFile(args.output or "-", "-o")
        self.heatmap: ReportFile | None = None
        try:
            if args.heatmap:
                self.heatmap = ReportFile(args.heatmap, "--heatmap")
        except BaseException:
            self.close()
            raise

    def write(self, d: SyscallDelta) -> None:
        end = time.time()
        if self.fmt == "json":
            self.out.write(
                json.dumps(_report.to_json(d, end_time=end, attach=self.attach, top=self.top)) + "\n"
            )
        elif self.fmt == "csv":
            self.out.write(_report.csv_rows(d, end_time=end, header=self.first))
        else:
            if not self.first:
                self.out.write("\n")
            self.out.write(_report.table(d, top=self.top, sum_cpus=self.sum))
        self.first = False
        self.out.flush()

    def write_heatmap(self, d: SyscallDelta) -> None:
        if self.heatmap is None:
            return
        self.heatmap.write(_report.heatmap_svg(d))

    def commit(self) -> None:
        """The run is over and its reports are written: put the files in place."""
        self.out.commit()
        if self.heatmap is not None:
            self.heatmap.commit()
            if not self.quiet:
                print(f"percpu: heat map written to {self.heatmap_path}", file=sys.stderr)

    def close(self) -> None:
        if self.heatmap is not None:
            self.heatmap.close()
        self.out.close()


def _cmd_stat(args: argparse.Namespace) -> int:
    cmd: list[str] = args.command_argv
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if args.count and not args.interval:
        raise PercpuError("--count needs --interval (it stops after N interval reports)")
    if cmd:
        # Like perf stat: the command's lifetime is the measurement; cutting it short is `timeout`'s job.
        for given, opt in (
            (args.pid is not None, "-p PID"),
            (args.duration, "-d/--duration"),
            (args.count, "--count"),
            (args.cgroup is not None, "--cgroup"),
        ):
            if given:
                raise PercpuError(
                    f"{opt} does not go with a command: percpu counts the command (and its children) "
                    "until it exits; to stop it early, run it under `timeout`"
                )
        path = shutil.which(cmd[0])
        if path is None:
            raise PercpuError(f"command not found: {cmd[0]}")
        return _stat_command(args, path, cmd)
    filters = _options.filters(args)
    counter = _options.counter(args, filters)
    watch = process.Watch(args.pid, child=False)
    try:
        out = _Output(args)
        try:
            with counter:
                out.attach = counter.attach_mode
                with watch.signals():
                    start = counter.snapshot()
                    _note_start(args, counter)  # after the handlers: from here on, SIGTERM gets a report
                    _stat_loop(args, counter, out, start, watch)
            out.commit()
        finally:
            out.close()
    finally:
        watch.close()
    return 0


def _note_start(args: argparse.Namespace, counter: SyscallCounter) -> None:
    if not args.quiet:  # stderr: never mixed with a JSON or CSV report
        what = f"for {args.duration:g} s" if args.duration else "until Ctrl-C"
        if args.pid is not None:
            what += f" or until pid {args.pid} exits"
        print(f"percpu: counting system calls ({counter.attach_mode}) {what}", file=sys.stderr)


def _stat_loop(
    args: argparse.Namespace,
    counter: SyscallCounter,
    out: _Output,
    start: SyscallSnapshot,
    watch: process.Watch,
) -> None:
    """Report every ``--interval`` (or once at the end) until the deadline, a signal, or the watched
    process's exit; the heat map covers the whole run."""
    last = start
    deadline = start.time + args.duration if args.duration else None
    due = start.time + args.interval if args.interval else None
    intervals = 0
    while not watch.stop:
        now = time.monotonic()
        wake = min((t for t in (deadline, due) if t is not None), default=now + 3600.0)
        watch.wait(wake - now)
        if watch.exited():
            break
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        if due is not None and now >= due:
            snap = counter.snapshot()
            out.write(snap.delta(last))
            last = snap
            intervals += 1
            if args.count and intervals >= args.count:
                out.write_heatmap(snap.delta(start))
                return
            due += args.interval
            if due <= now:  # fell behind (a slow read, SIGSTOP, suspend): no near-empty catch-up report
                due = now + args.interval
    end = counter.snapshot()
    if not args.interval:
        out.write(end.delta(start))
    elif intervals == 0 or end.time - last.time > 0.05:
        out.write(end.delta(last))  # the part of an interval left when the run ended
    out.write_heatmap(end.delta(start))


def _stat_command(args: argparse.Namespace, path: str, cmd: list[str]) -> int:
    """Run ``cmd`` with counting already attached, count it and its children, report at its exit."""
    _options.require_root()
    # Every check that can fail runs before the command is started: filters, output files.
    _options.counter(args, _options.filters(args, pid=os.getpid()))
    out = _Output(args)
    cg = process.CommandCgroup(cgroup2_root())
    in_cgroup = False
    removed, moved = True, 0
    try:
        child, gate_w = process.spawn_gated(path, cmd)
        watch: process.Watch | None = None
        try:
            watch = process.Watch(child, child=True)
            in_cgroup = cg.add(child)
            filters = (
                _options.filters(args, cgroup=cg.path) if in_cgroup else _options.filters(args, pid=child)
            )
            with _options.counter(args, filters) as counter:
                out.attach = counter.attach_mode
                start = counter.snapshot()  # before the command runs: its first calls are counted
                with watch.signals():
                    os.write(gate_w, b"x")
                    os.close(gate_w)
                    gate_w = -1
                    _stat_loop(args, counter, out, start, watch)
            out.commit()
            status = watch.status
        finally:
            if gate_w >= 0:
                os.close(gate_w)  # the child sees EOF and exits without running the command
            if watch is None or watch.pid is not None:
                process.reap(child)
            if watch is not None:
                watch.close()
    finally:
        cg_path = cg.path
        removed, moved = cg.remove()  # only now: a cgroup cannot be removed while the command is in it
        out.close()
    if not removed:
        print(f"percpu: could not remove the cgroup {cg_path}; the next run removes it", file=sys.stderr)
    if args.format == "table" and not args.quiet:
        if not in_cgroup:
            why = (
                "no cgroup v2 here" if cg.root == "" else "no cgroup could be made for it under percpu's own"
            )
            print(f"percpu: {why}: counted the command's own process only", file=sys.stderr)
        if moved:
            print(
                f"percpu: the command left {moved} process(es) running; they were counted until it exited",
                file=sys.stderr,
            )
        for stale in cg.removed_stale:
            print(f"percpu: removed {stale}, left by a percpu that was killed", file=sys.stderr)
    return status


# --- percpu top ---------------------------------------------------------------------------------------


def _cmd_top(args: argparse.Namespace) -> int:
    from . import _top

    filters = _options.filters(args)
    counter = _options.counter(args, filters)
    # SIGTERM ends top as q and Ctrl-C do: the terminal is restored and the exit status is 0.
    old = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if args.batch or not sys.stdout.isatty():
            return _top_batch(args, counter)
        problem = _top.terminal_problem()
        if problem is not None:
            print(
                f"percpu: top: {problem}: printing a table every interval instead (--batch)", file=sys.stderr
            )
            return _top_batch(args, counter)
        with counter:
            return _top.run(counter, interval=args.interval, sort=args.sort, top=args.top)
    finally:
        signal.signal(signal.SIGTERM, old)


def _top_batch(args: argparse.Namespace, counter: SyscallCounter) -> int:
    """Without a terminal: print a table every interval (like top -b)."""
    with counter:
        last = counter.snapshot()
        n = 0
        try:
            while not args.count or n < args.count:
                time.sleep(args.interval)
                snap = counter.snapshot()
                d = snap.delta(last)
                last = snap
                sys.stdout.write(_report.table(d, top=args.top or None, rates=True, sort=args.sort) + "\n")
                sys.stdout.flush()
                n += 1
        except KeyboardInterrupt:
            pass
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "top",
        help="live per-CPU x syscall view in the terminal",
        description="Live view of system calls per CPU: rates per second, heat-map colours, per-CPU totals "
        "and imbalance. Keys: q quit, s next sort key, c sort by the selected CPU column, left/right scroll "
        "CPUs, +/- refresh interval, p pause.",
    )
    p.add_argument(
        "-i", "--interval", type=_interval, default=1.0, help="refresh interval, seconds (default 1)"
    )
    p.add_argument(
        "--sort",
        choices=("total", "name", "nr", "cpu"),
        default="total",
        help="initial sort key (default total; cpu = the first CPU shown)",
    )
    p.add_argument(
        "-n",
        "--top",
        type=int_at_least(0, " (0: no limit)"),
        default=0,
        help="show at most N syscalls (default: fill the screen)",
    )
    p.add_argument("-b", "--batch", action="store_true", help="print tables instead of the full-screen view")
    p.add_argument(
        "--count",
        type=int_at_least(0, " (0: no limit)"),
        default=0,
        help="with --batch: stop after N intervals",
    )
    _options.add_counter_options(p)
    p.set_defaults(func=_cmd_top)

    s = sub.add_parser(
        "stat",
        help="count system calls per CPU for a duration, a process, or a command's lifetime",
        description="One-shot report of system calls per CPU, like `strace -c` or `perf stat`. Without a "
        "command it counts until --duration ends or Ctrl-C; with `-- COMMAND ARGS...` it starts counting "
        "before the command runs, counts the command and its children (in a cgroup of their own), and "
        "reports when it exits, with the command's exit status (128+N if signal N ended it). With -p PID it "
        "stops when that process exits. SIGTERM ends a count like Ctrl-C; with a command it is passed on "
        "to the command.",
        usage="percpu stat [options] [-- COMMAND [ARGS...]]",
    )
    s.add_argument(
        "-d", "--duration", type=_duration, help="stop after this many seconds (not with a command)"
    )
    s.add_argument("-i", "--interval", type=_interval, help="print a report every N seconds instead of once")
    s.add_argument(
        "--count",
        type=int_at_least(0, " (0: no limit)"),
        default=0,
        help="with --interval: stop after N reports",
    )
    s.add_argument(
        "-f",
        "--format",
        choices=("table", "json", "csv"),
        default="table",
        help="table (default), json (one object per interval, one per line) or csv",
    )
    s.add_argument("-o", "--output", help="write the report to this file instead of stdout")
    s.add_argument(
        "-n",
        "--top",
        type=int_at_least(0, " (0: no limit)"),
        default=0,
        help="show at most N syscalls (default all)",
    )
    s.add_argument("--sum", action="store_true", help="table: totals only, no column per CPU")
    s.add_argument(
        "--heatmap",
        metavar="FILE.svg",
        help="also write an SVG heat map of CPU x syscall, for the whole run (with --interval too)",
    )
    s.add_argument("-q", "--quiet", action="store_true", help="no progress notes on stderr")
    _options.add_counter_options(s)
    s.add_argument(
        "command_argv", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="command to run and count"
    )
    s.set_defaults(func=_cmd_stat)
