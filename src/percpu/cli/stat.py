"""``percpu stat``: a one-shot report of system calls per CPU, for a duration, a process, or a command's
lifetime."""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import time
from typing import Any

from .. import plots, process
from ..cpus import cpu_lists
from ..errors import PercpuError
from ..syscount import (
    SyscallCounter,
    SyscallDelta,
    SyscallSnapshot,
    cgroup2_root,
)
from ..topo import CpuTopology
from . import _options, _report, _view
from ._args import int_at_least, seconds
from ._outfile import ReportFile

__all__ = ["register"]


_duration = seconds(hint=": leave -d out to count until Ctrl-C")


class _Output:
    """Writes each interval (or the final report) in the chosen format, and the heat map at the end.

    Output files are checked when this is made, before counting starts, but a regular file is replaced
    only by :meth:`commit`, once the report is complete: a run that fails leaves the old file as it was."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.fmt = args.format
        self.top = args.top if args.top else None
        self.sum = args.sum
        self.quiet = args.quiet
        self.view, self.topology = _view.from_args(args)  # a bad --cpus fails here, before counting
        self.attach: str | None = None
        self.first = True
        self.heatmap_path: str | None = args.heatmap
        self.timeseries_path: str | None = getattr(args, "timeseries", None)
        self.intervals: list[SyscallDelta] = []  # what --timeseries draws
        if self.timeseries_path and not args.interval:
            raise PercpuError("--timeseries needs --interval (it draws one point per interval)")
        for path, opt in ((self.heatmap_path, "--heatmap"), (self.timeseries_path, "--timeseries")):
            if path:
                plots.check_path(path, opt)  # the format and matplotlib, before counting
        self.out = ReportFile(args.output or "-", "-o")
        self.heatmap: ReportFile | None = None
        self.timeseries: ReportFile | None = None
        try:
            if self.heatmap_path:
                self.heatmap = ReportFile(self.heatmap_path, "--heatmap", binary=True)
            if self.timeseries_path:
                self.timeseries = ReportFile(self.timeseries_path, "--timeseries", binary=True)
        except BaseException:
            self.close()
            raise

    def write(self, d: SyscallDelta) -> None:
        end = time.time()
        if self.view is not None:
            d = self.view(d)
        if self.timeseries_path:
            self.intervals.append(d)
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
        """The pictures, at the end of the run: the heat map of ``d`` (the whole run), the time series of
        the intervals. Written by :meth:`commit`."""
        topology = self.topology or _topology_or_none()
        if self.heatmap is not None and self.heatmap_path is not None:
            if self.view is not None:
                d = self.view(d)
            buf = io.BytesIO()
            plots.heatmap(d, self.heatmap_path, topology=topology, top=self.top or 30, file=buf)
            self.heatmap.write(buf.getvalue())
        if self.timeseries is not None and self.timeseries_path is not None:
            buf = io.BytesIO()
            plots.timeseries(self.intervals, self.timeseries_path, topology=topology, file=buf)
            self.timeseries.write(buf.getvalue())

    def commit(self) -> None:
        """The run is over and its reports are written: put the files in place."""
        self.out.commit()
        for f, what in ((self.heatmap, "heat map"), (self.timeseries, "time series")):
            if f is not None:
                f.commit()
                if not self.quiet:
                    print(f"percpu: {what} written to {f.path}", file=sys.stderr)

    def close(self) -> None:
        for f in (self.heatmap, self.timeseries):
            if f is not None:
                f.close()
        self.out.close()


def _topology_or_none() -> CpuTopology | None:
    """The machine's topology to order a picture's CPUs by; a picture is still drawn without it."""
    try:
        return cpu_lists().topology()
    except PercpuError:
        return None


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
    try:
        cmd_run = process.GatedCommand(path, cmd, cgroup2_root())
        try:
            filters = (
                _options.filters(args, cgroup=cmd_run.cgroup_path)
                if cmd_run.in_cgroup
                else _options.filters(args, pid=cmd_run.pid)
            )
            watch = cmd_run.watch
            with _options.counter(args, filters) as counter:
                out.attach = counter.attach_mode
                start = counter.snapshot()  # before the command runs: its first calls are counted
                with watch.signals():
                    cmd_run.release()
                    _stat_loop(args, counter, out, start, watch)
            out.commit()
        finally:
            cmd_run.close()
    finally:
        out.close()
    if not cmd_run.removed:
        print(
            f"percpu: could not remove the cgroup {cmd_run.cgroup_path}; the next run removes it",
            file=sys.stderr,
        )
    cg = cmd_run.cgroup
    if args.format == "table" and not args.quiet:
        if not cmd_run.in_cgroup:
            why = (
                "no cgroup v2 here" if cg.root == "" else "no cgroup could be made for it under percpu's own"
            )
            print(f"percpu: {why}: counted the command's own process only", file=sys.stderr)
        if cmd_run.moved:
            print(
                f"percpu: the command left {cmd_run.moved} process(es) running; they were counted until "
                "it exited",
                file=sys.stderr,
            )
        for stale in cg.removed_stale:
            print(f"percpu: removed {stale}, left by a percpu that was killed", file=sys.stderr)
    return cmd_run.status


def register(sub: Any) -> None:
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
    s.add_argument(
        "-i", "--interval", type=_options.interval, help="print a report every N seconds instead of once"
    )
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
        metavar="FILE",
        help="also draw a heat map of CPU x syscall for the whole run (with --interval too); PNG, SVG or PDF "
        "by the file's extension; needs matplotlib (pip install 'percpu[plots]')",
    )
    s.add_argument(
        "--timeseries",
        metavar="FILE",
        help="with --interval: also draw calls per second per CPU (or per --by group) over the intervals; "
        "PNG, SVG or PDF by the file's extension; needs matplotlib",
    )
    s.add_argument("-q", "--quiet", action="store_true", help="no progress notes on stderr")
    _view.add_options(s)
    _options.add_counter_options(s)
    s.add_argument(
        "command_argv", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="command to run and count"
    )
    s.set_defaults(func=_cmd_stat)
