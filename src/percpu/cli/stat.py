"""``percpu stat``: a one-shot report of system calls per CPU, for a duration, a process, or a command's
lifetime."""

from __future__ import annotations

import argparse
import errno
import io
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from .. import plots, process
from ..cpus import cpu_lists
from ..disturb import DisturbDelta
from ..disturb._who import Disturbance
from ..errors import CommandNotRunnable, PercpuError
from ..syscount import (
    SyscallCounter,
    SyscallDelta,
    cgroup2_root,
)
from ..topo import CpuTopology
from . import _disturb, _disturbances, _options, _report, _view
from ._args import int_at_least, seconds
from ._outfile import ReportFile

__all__ = ["register"]


_duration = seconds(hint=": leave -d out to count until Ctrl-C")


class _Output:
    """Writes each interval (or the final report) in the chosen format, and the heat map at the end.

    Output files are checked when this is made, before counting starts, but a regular file is replaced
    only by :meth:`commit`, once the report is complete: a run that fails leaves the old file as it was.

    A report that cannot be written (its pipe's reader went away, a full file system) is not the end of
    the run when something else still needs it: the pictures of the whole run, a command percpu waits for.
    :meth:`wanted` says whether counting on produces anything; :meth:`finish` says on stderr what was
    lost and gives the exit status.

    With a ``command`` the report goes to standard error unless ``-o`` says where (``-o -`` for standard
    output), as ``perf stat`` and ``strace -c`` do: standard output is the command's. A one-shot table
    (no ``--interval``) shows exact counts; interval tables humanize them (``6.2k``)."""

    def __init__(
        self,
        args: argparse.Namespace,
        *,
        command: bool = False,
        disturb: _disturbances.DisturbSession | None = None,
    ) -> None:
        self.fmt = args.format
        self.disturb = disturb  # -I -V -S -T: who disturbs each CPU, beside the syscalls
        self.top: int | None = args.top  # None: not given (every syscall; 20 rows of the opt-in tables)
        self.exact = not args.interval
        self.sum = args.sum
        self.quiet = args.quiet
        self.view = _view.from_args(args, watch=bool(args.heatmap or getattr(args, "timeseries", None)))
        self.attach: str | None = None
        self.first = True
        self.heatmap_path: str | None = args.heatmap
        self.timeseries_path: str | None = getattr(args, "timeseries", None)
        self.intervals: list[SyscallDelta] = []  # what --timeseries draws
        # The run's caveats (a command counted without its children, ...): in every report from when they
        # are known, as warnings in JSON and CSV and footer lines in the table.
        self.caveats: list[_report.Caveat] = []
        self.caveats_unwritten = False
        self.reports = 0  # reports written in full
        self.broken_pipe = False  # the reader of the report went away
        self.report_error: PercpuError | None = None  # the report could not be written
        self.report_was_file = False  # ... and was to replace a regular file
        self.picture_errors: list[str] = []
        self.lost_pictures: list[ReportFile] = []
        if self.timeseries_path and not args.interval:
            raise PercpuError("--timeseries needs --interval (it draws one point per interval)")
        for path, opt in ((self.heatmap_path, "--heatmap"), (self.timeseries_path, "--timeseries")):
            if path:
                plots.check_path(path, opt)  # the format and matplotlib, before counting
        self.out = ReportFile(args.output or "-", "-o", std=2 if command and not args.output else 1)
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

    def add_caveat(self, caveat: _report.Caveat) -> None:
        self.caveats.append(caveat)
        self.caveats_unwritten = True

    @property
    def report_lost(self) -> bool:
        return self.broken_pipe or self.report_error is not None

    def wanted(self) -> bool:
        """Whether counting on produces anything: the report can still be written, or a picture of the
        whole run is due."""
        return not self.report_lost or self.heatmap is not None or self.timeseries is not None

    def _disturbance(self, d: SyscallDelta, dd: DisturbDelta | None) -> Disturbance | None:
        """The disturbance view of an interval (``d`` before --cpus and --by: the view applies them)."""
        if self.disturb is None or dd is None:
            return None
        return self.disturb.view(dd, d)

    def write(self, pair: SyscallDelta | _disturbances.PairDelta) -> None:
        end = time.time()
        d, dd = _split(pair)
        v = self._disturbance(d, dd)
        if self.timeseries_path:
            self.intervals.append(d)  # as counted: drawn at the end with the CPUs of the whole run
        d = self.view(d)
        if self.report_lost:
            return
        if self.fmt == "json":
            obj = _report.to_json(
                d, end_time=end, attach=self.attach, top=self.top, run_caveats=self.caveats, disturbance=v
            )
            text = json.dumps(obj) + "\n"
        elif self.fmt == "csv":
            text = _report.csv_rows(
                d,
                end_time=end,
                header=self.first,
                attach=self.attach,
                top=self.top,
                run_caveats=self.caveats,
                disturbance=v,
            )
        else:
            text = "" if self.first else "\n"
            text += _report.table(d, top=self.top, sum_cpus=self.sum, exact=self.exact)
            if v is not None:
                rows = _report.DEFAULT_ROWS if self.top is None else self.top or None
                text += "\n" + _disturb.table(v, top=rows, rates=False, notes=_disturb.interval_caveats(v))
            text += _report.caveat_lines(self.caveats)
        try:
            self.out.write(text)
            self.out.flush()
        except PercpuError as exc:
            self._lose_report(exc)
            return
        self.first = False
        self.caveats_unwritten = False
        self.reports += 1

    def _lose_report(self, exc: PercpuError) -> None:
        if exc.errno == errno.EPIPE:
            # `percpu stat | head`: the reader has what it wanted. The stream goes to /dev/null from
            # here, so the interpreter's last flush at exit cannot fail on it again.
            self.broken_pipe = True
            if self.out.std_fd is not None:
                _std_to_devnull(self.out.std_fd)
        else:
            self.report_error = exc
            self.report_was_file = self.out.replaces  # before close(), which removes the temporary file
            if self.out.std_fd == 2:
                # Standard error is where the loss would be said: it cannot be, and a note written
                # there later would fail again (the exit status says it: 1).
                _std_to_devnull(2)

    def write_heatmap(self, pair: SyscallDelta | _disturbances.PairDelta) -> None:
        """The pictures, at the end of the run: the heat map of the whole run (CPU x syscall, or with
        -I -V -S -T CPU x source: who disturbed each CPU, the system calls among the sources), the time
        series of the intervals. Written by :meth:`commit`."""
        d, dd = _split(pair)
        v = self._disturbance(d, dd)
        d = self.view(d)
        topology = self.view.topology or _topology_or_none()
        # What the numbers leave out, in the picture itself: it travels without the report.
        notes = [c.text for c in (*_report.caveats(d), *self.caveats)]
        if v is not None:
            notes[len(notes) - len(self.caveats) : len(notes) - len(self.caveats)] = [
                c.text for c in _disturb.interval_caveats(v)
            ]
        if self.heatmap is not None or self.timeseries is not None:
            # matplotlib's font list, when it must be made first, said in percpu's words (not matplotlib's)
            plots.prepare(None if self.quiet else lambda note: print(f"percpu: {note}", file=sys.stderr))
        if self.heatmap is not None and self.heatmap_path is not None:
            buf = io.BytesIO()
            if v is not None:
                from .. import plots_disturb

                plots_disturb.heatmap(v, self.heatmap_path, top=self.top or 25, file=buf, notes=notes)
            else:
                plots.heatmap(
                    d, self.heatmap_path, topology=topology, top=self.top or 30, file=buf, notes=notes
                )
            self._write_picture(self.heatmap, "heat map", buf.getvalue())
        if self.timeseries is not None and self.timeseries_path is not None:
            buf = io.BytesIO()
            intervals = [self.view.apply(x) for x in self.intervals]  # every one with the run's CPUs
            plots.timeseries(intervals, self.timeseries_path, topology=topology, file=buf, notes=notes)
            self._write_picture(self.timeseries, "time series", buf.getvalue())

    def _write_picture(self, f: ReportFile, what: str, data: bytes) -> None:
        try:
            f.write(data)
        except PercpuError as exc:
            self._lose_picture(f, what, exc)

    def _lose_picture(self, f: ReportFile, what: str, exc: PercpuError) -> None:
        kept = f" ({f.path} keeps its old contents)" if f.replaces and f.existed else ""
        self.picture_errors.append(f"{exc}: the {what} was not written{kept}")
        self.lost_pictures.append(f)
        f.close()

    def commit(self) -> None:
        """The run is over and its reports are written: put the files in place."""
        if not self.report_lost:
            try:
                self.out.commit()
            except PercpuError as exc:
                self._lose_report(exc)
        for f, what in ((self.heatmap, "heat map"), (self.timeseries, "time series")):
            if f is None or f in self.lost_pictures:
                continue
            try:
                f.commit()
            except PercpuError as exc:
                self._lose_picture(f, what, exc)
                continue
            if not self.quiet:
                print(f"percpu: {what} written to {f.path}", file=sys.stderr)

    def finish(self, status: int, command: list[str] | None = None) -> int:
        """Say on stderr what the run could not write, and return the exit status: 1 when a report or
        picture was lost to an error; 141 (128 + SIGPIPE, as a shell shows a tool its broken pipe
        killed) when the report's reader went away, unless a command failed, whose status comes first;
        else ``status``."""
        if self.fmt != "table" and not self.quiet and self.out.std_fd != 2:
            for c in self.caveats:  # in the report as warnings; said here too for whoever watches stderr
                print(f"percpu: warning: {c.text}", file=sys.stderr)
        if self.report_error is not None:
            print(f"percpu: {self.report_error}: {self._what_was_lost(status, command)}", file=sys.stderr)
        for message in self.picture_errors:
            print(f"percpu: {message}", file=sys.stderr)
        if self.report_error is not None or self.picture_errors:
            return 1
        if self.broken_pipe:
            pictures = [f"{f.option} {f.path}" for f in (self.heatmap, self.timeseries) if f is not None]
            if pictures and not self.quiet:
                print(
                    f"percpu: the report's reader closed its end after {self.reports} report(s); the run "
                    f"went on to its end for {' and '.join(pictures)}",
                    file=sys.stderr,
                )
            return status or 128 + signal.SIGPIPE
        return status

    def _what_was_lost(self, status: int, command: list[str] | None) -> str:
        if self.report_was_file and self.out.existed:
            lost = f"the report was not written ({self.out.path} keeps its old contents)"
        elif self.report_was_file:
            lost = "the report was not written (no file was made)"
        elif self.reports:
            lost = f"the report is cut short: {self.reports} interval report(s) written, the rest lost"
        else:
            lost = "the report was lost"
        if command:
            return f"{lost}; the command ({shlex.join(command)}) ran to its end, exit status {status}"
        return lost + ("; the pictures were still drawn" if self.heatmap or self.timeseries else "")

    def close(self) -> None:
        for f in (self.heatmap, self.timeseries):
            if f is not None:
                f.close()
        self.out.close()


def _split(pair: SyscallDelta | _disturbances.PairDelta) -> tuple[SyscallDelta, DisturbDelta | None]:
    """An interval's syscall counts and its disturbances (None: not counted)."""
    if isinstance(pair, _disturbances.PairDelta):
        return pair.sys, pair.dist
    return pair, None


def _std_to_devnull(std: int) -> None:
    """Point standard output (1) or error (2) at /dev/null, if it is a real file."""
    try:
        fd = (sys.stdout if std == 1 else sys.stderr).fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a test's capture): nothing flushes it at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


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
        try:
            path = process.resolve_command(cmd[0])
        except CommandNotRunnable as exc:
            print(f"percpu: {exc}", file=sys.stderr)
            return exc.status  # 127 or 126, as a shell says it (and as the command's own status would be)
        return _stat_command(args, path, cmd)
    filters = _options.filters(args)
    counter = _options.counter(args, filters)
    watch = process.Watch(args.pid, child=False)
    try:
        disturb = _disturbances.session(args)  # a bad -E fails here, before counting
        out = _Output(args, disturb=disturb)
        try:
            with counter:
                out.attach = counter.attach_mode
                reader = _start_disturb(counter, disturb, out)
                with watch.signals():
                    start = reader.snapshot()
                    _note_start(args, counter, disturb)  # after the handlers: SIGTERM gets a report
                    _stat_loop(args, reader, out, start, watch)
            out.commit()
        finally:
            out.close()
            if disturb is not None:
                disturb.close()
    finally:
        watch.close()
    return out.finish(0)


def _start_disturb(
    counter: SyscallCounter, disturb: _disturbances.DisturbSession | None, out: _Output
) -> _disturbances.Both:
    """Attach the disturbance counter beside the syscall counter (when asked for); what this kernel cannot
    count becomes the run's caveats, in every report. Returns what the run reads at each report."""
    if disturb is not None:
        disturb.start()
        for c in disturb.run_caveats():
            out.add_caveat(_report.Caveat(c.code, c.text, c.count))
    return _disturbances.Both(counter, disturb)


def _note_start(
    args: argparse.Namespace, counter: SyscallCounter, disturb: _disturbances.DisturbSession | None = None
) -> None:
    if not args.quiet:  # stderr: never mixed with a JSON or CSV report
        what = f"system calls ({counter.attach_mode})"
        if disturb is not None and disturb.failed is None:
            what += f" and disturbances ({disturb.counter.attach_mode})"
        print(f"percpu: counting {what} {run_end(args)}", file=sys.stderr)


def run_end(args: argparse.Namespace) -> str:
    """What ends a run without a command, as the start note says it: ``for 5 s``, ``for 2 reports (one
    every 1 s)``, ``until Ctrl-C, a report every 1 s``, ``..., or until pid 7 exits``. Ctrl-C (and
    SIGTERM) end any run; it is named when nothing else will."""
    ends = []
    if args.count:
        ends.append(f"{args.count} report{'s' if args.count > 1 else ''} (one every {args.interval:g} s)")
    if args.duration:
        ends.append(f"{args.duration:g} s")
    what = "for " + " or ".join(ends) if ends else "until Ctrl-C"
    if len(ends) > 1:
        what += ", whichever ends first"
    if args.pid is not None:
        what += f", or until pid {args.pid} exits"
    if args.interval and not args.count:
        what += f", a report every {args.interval:g} s"
    return what


def _stat_loop(
    args: argparse.Namespace,
    counter: _disturbances.Both,
    out: _Output,
    start: _disturbances.Pair,
    watch: process.Watch,
    at_end: Callable[[], None] | None = None,
) -> None:
    """Report every ``--interval`` (or once at the end) until the deadline, a signal, or the watched
    process's exit; the heat map covers the whole run. ``at_end`` runs once the run is over, before the
    last report (it may add caveats to it).

    A report that can no longer be written ends the run early, unless pictures of the whole run are due
    or a command runs: percpu waits for its command whatever happens to its report."""
    out.view.remember(start.sys.online)  # a CPU online at the start keeps its column
    last = start
    deadline = start.time + args.duration if args.duration else None
    due = start.time + args.interval if args.interval else None
    intervals = 0
    while not watch.stop and (out.wanted() or watch.child):
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
    if at_end is not None:
        at_end()
    end = counter.snapshot()
    if not args.interval:
        out.write(end.delta(start))
    elif intervals == 0 or end.time - last.time > 0.05 or out.caveats_unwritten:
        out.write(end.delta(last))  # the part of an interval left when the run ended
    out.write_heatmap(end.delta(start))


def _stat_command(args: argparse.Namespace, path: str, cmd: list[str]) -> int:
    """Run ``cmd`` with counting already attached, count it and its children, report at its exit."""
    _options.require_root()
    # Every check that can fail runs before the command is started: filters, output files.
    _options.counter(args, _options.filters(args, pid=os.getpid()))
    disturb = _disturbances.session(args)
    out = _Output(args, command=True, disturb=disturb)
    try:
        cmd_run = process.GatedCommand(path, cmd, cgroup2_root())
        try:
            filters = (
                _options.filters(args, cgroup=cmd_run.cgroup_path)
                if cmd_run.in_cgroup
                else _options.filters(args, pid=cmd_run.pid)
            )
            watch = cmd_run.watch
            cg = cmd_run.cgroup
            if not cmd_run.in_cgroup:
                why = (
                    "no cgroup v2 here"
                    if cg.root == ""
                    else "no cgroup could be made for the command under percpu's own"
                )
                text = f"{why}: counted the command's own process only, not the processes it started"
                out.add_caveat(_report.Caveat("own-process-only", text))

            def left_running() -> None:
                n = cmd_run.left_running()
                if n:
                    text = (
                        f"the command left {n} process(es) running; they were counted until it exited, "
                        "not after"
                    )
                    out.add_caveat(_report.Caveat("left-running", text, n))

            with _options.counter(args, filters) as counter:
                out.attach = counter.attach_mode
                reader = _start_disturb(counter, disturb, out)
                start = reader.snapshot()  # before the command runs: its first calls are counted
                with watch.signals():
                    cmd_run.release()
                    _stat_loop(args, reader, out, start, watch, at_end=left_running)
            out.commit()
        finally:
            cmd_run.close()
    finally:
        out.close()
        if disturb is not None:
            disturb.close()
    if not cmd_run.removed:
        print(
            f"percpu: could not remove the cgroup {cmd_run.cgroup_path}; the next run removes it",
            file=sys.stderr,
        )
    if not args.quiet:
        for stale in cmd_run.cgroup.removed_stale:
            print(f"percpu: removed {stale}, left by a percpu that was killed", file=sys.stderr)
    return out.finish(cmd_run.status, cmd)


def register(sub: Any) -> None:
    s = sub.add_parser(
        "stat",
        help="count system calls per CPU for a duration, a process, or a command's lifetime",
        description="One-shot report of system calls per CPU, like `strace -c` or `perf stat`. Without a "
        "command it counts until --duration ends or Ctrl-C; with `-- COMMAND ARGS...` it starts counting "
        "before the command runs, counts the command and its children (in a cgroup of their own), and "
        "reports when it exits, with the command's exit status (128+N if signal N ended it; 127 when the "
        "command is not found, 126 when it cannot be run). With a command the report goes to standard "
        "error, as perf stat's does, unless -o names a file (-o - for standard output): standard output is "
        "the command's. With -p PID it stops when that process exits. SIGTERM ends a count like Ctrl-C; "
        "with a command it is passed on to the command. A report of the whole run shows exact counts; "
        "interval reports (-i) round them (6.2k).",
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
        help="table (default), json (one object per interval, one per line) or csv (one count a row, its "
        "kind in the record column: syscall, process, error, latency, lost, warning, ...)",
    )
    s.add_argument(
        "-o",
        "--output",
        help="write the report to this file (- for standard output) instead of standard output, or "
        "standard error with a command",
    )
    s.add_argument(
        "-n",
        "--top",
        type=int_at_least(0, " (0: no limit)"),
        default=None,
        help="show at most N syscalls (the rest summed in JSON and CSV) and N rows of each -P, -e and -L "
        "table (default: every syscall, 20 rows of those tables in the table format; 0: every row)",
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
    _options.add_counter_options(s, disturb=True)
    s.add_argument(
        "command_argv", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="command to run and count"
    )
    s.set_defaults(func=_cmd_stat)
