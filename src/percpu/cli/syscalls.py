"""``percpu top`` (live view) and ``percpu stat`` (one-shot report) of system calls per CPU."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

from ..errors import PercpuError
from ..syscount import ATTACH_MODES, Filters, SyscallCounter, SyscallDelta, cgroup2_root
from . import _report

__all__ = ["register"]


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return v


def _count(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return v


def _add_counter_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to count (filters run in the kernel, set before load)")
    g.add_argument("-p", "--pid", type=int, help="only this process (thread group id)")
    g.add_argument("-t", "--tid", type=int, help="only this thread")
    g.add_argument("-c", "--comm", help="only tasks with this command name (up to 15 characters)")
    g.add_argument("--cgroup", help="only tasks in this cgroup v2 (path under /sys/fs/cgroup, or its id)")
    g.add_argument(
        "-s",
        "--syscall",
        action="append",
        metavar="NAME",
        help="only these system calls (repeat, or comma-separated: -s read,write)",
    )
    g.add_argument("-x", "--failed", action="store_true", help="only calls that failed (returned an error)")
    m = p.add_argument_group("opt-in dimensions")
    m.add_argument("-P", "--per-process", action="store_true", help="also count per process (pid, comm)")
    m.add_argument("-e", "--errors", action="store_true", help="also count failures by errno")
    m.add_argument("-L", "--latency", action="store_true", help="also record log2 latency histograms")
    p.add_argument(
        "--attach",
        choices=("auto", *ATTACH_MODES),
        default="auto",
        help="hook to attach at (default auto: tp_btf, then raw_tp, then the classic tracepoint)",
    )


def _filters(args: argparse.Namespace, pid: int | None = None, cgroup: int | str | None = None) -> Filters:
    names: list[str] | None = None
    if args.syscall:
        names = [n.strip() for s in args.syscall for n in s.split(",") if n.strip()]
    tgid = pid if pid is not None else args.pid
    if tgid is not None and not os.path.exists(f"/proc/{tgid}"):
        raise PercpuError(f"no process with pid {tgid}")
    if args.tid is not None and not os.path.exists(f"/proc/{args.tid}"):
        raise PercpuError(f"no thread with tid {args.tid}")
    cg: int | str | None = cgroup if cgroup is not None else args.cgroup
    if isinstance(cg, str) and cg.isdigit():
        cg = int(cg)
    return Filters(
        tgid=tgid, tid=args.tid, comm=args.comm, cgroup=cg, syscalls=names, failed_only=args.failed
    )


def _counter(args: argparse.Namespace, filters: Filters) -> SyscallCounter:
    _require_root()
    return SyscallCounter(
        filters=filters,
        per_process=args.per_process,
        errors=args.errors,
        latency=args.latency,
        attach=args.attach,
        start=False,
    )


def _require_root() -> None:
    if os.geteuid() != 0:
        # Checked up front: the kernel's EPERM would come later, after work that cannot succeed.
        status = _cap_eff()
        needed = (1 << 38) | (1 << 39)  # CAP_PERFMON, CAP_BPF
        if status & needed != needed and not status & (1 << 21):
            raise PercpuError(
                "counting system calls loads BPF programs: run as root, or grant CAP_BPF and CAP_PERFMON "
                "(e.g. sudo setcap cap_bpf,cap_perfmon+ep on the Python interpreter)"
            )


def _cap_eff() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


# --- percpu stat ------------------------------------------------------------------------------------


class _Output:
    """Writes each interval (or the final report) in the chosen format."""

    def __init__(self, args: argparse.Namespace, attach: str | None) -> None:
        self.fmt = args.format
        self.top = args.top if args.top else None
        self.sum = args.sum
        self.attach = attach
        self.first = True
        self.out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115

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

    def close(self) -> None:
        if self.out is not sys.stdout:
            self.out.close()


@contextlib.contextmanager
def _stat_cgroup() -> Iterator[str | None]:
    """A fresh cgroup v2 for ``percpu stat -- CMD``, so the command's children are counted too."""
    base = cgroup2_root()
    if base is None or not os.path.exists(os.path.join(base, "cgroup.procs")):
        yield None
        return
    path = os.path.join(base, f"percpu-stat-{os.getpid()}")
    try:
        os.mkdir(path)
    except OSError:
        yield None
        return
    try:
        yield path
    finally:
        for _ in range(50):
            try:
                os.rmdir(path)
                break
            except OSError:
                time.sleep(0.02)


def _cmd_stat(args: argparse.Namespace) -> int:
    cmd: list[str] = args.command_argv
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if cmd and args.pid is not None:
        raise PercpuError("give either -p PID or a command to run, not both")
    if cmd:
        if shutil.which(cmd[0]) is None:
            raise PercpuError(f"command not found: {cmd[0]}")
        return _stat_command(args, cmd)
    filters = _filters(args)
    counter = _counter(args, filters)
    with counter:
        out = _Output(args, counter.attach_mode)
        _note_start(args, counter)
        try:
            _stat_loop(args, counter, out, child=None)
        finally:
            out.close()
    return 0


def _note_start(args: argparse.Namespace, counter: SyscallCounter) -> None:
    if args.format == "table" and not args.quiet:
        what = f"for {args.duration:g} s" if args.duration else "until Ctrl-C"
        print(f"percpu: counting system calls ({counter.attach_mode}) {what}", file=sys.stderr)


def _stat_loop(args: argparse.Namespace, counter: SyscallCounter, out: _Output, child: int | None) -> int:
    """Report every ``--interval`` (or once at the end); returns the child's exit status if any."""
    start = counter.snapshot()
    last = start
    deadline = time.monotonic() + args.duration if args.duration else None
    status = 0
    intervals = 0
    stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    old = signal.signal(signal.SIGINT, on_signal) if child is None else signal.getsignal(signal.SIGINT)
    try:
        while not stop:
            step = args.interval or 0.05 if child is not None else args.interval or 0.2
            if deadline is not None:
                step = min(step, max(deadline - time.monotonic(), 0))
            time.sleep(step)
            if child is not None:
                pid, st = os.waitpid(child, os.WNOHANG)
                if pid:
                    status = os.waitstatus_to_exitcode(st)
                    stop = True
            if deadline is not None and time.monotonic() >= deadline:
                stop = True
            if args.interval and not stop:
                snap = counter.snapshot()
                if snap.time - last.time >= args.interval * 0.999:
                    out.write(snap.delta(last))
                    last = snap
                    intervals += 1
                    if args.count and intervals >= args.count:
                        break
        end = counter.snapshot()
        if args.interval:
            if end.time - last.time > 0.05 and not (args.count and intervals >= args.count):
                out.write(end.delta(last))
        else:
            d = end.delta(start)
            out.write(d)
            if args.heatmap:
                _write_heatmap(args.heatmap, d)
    finally:
        if child is None:
            signal.signal(signal.SIGINT, old)
    return status


def _write_heatmap(path: str, d: SyscallDelta) -> None:
    if not path.endswith(".svg"):
        raise PercpuError(f"--heatmap {path}: only SVG is written (name the file .svg)")
    with open(path, "w", encoding="utf-8") as f:
        f.write(_report.heatmap_svg(d))
    print(f"percpu: heat map written to {path}", file=sys.stderr)


def _stat_command(args: argparse.Namespace, cmd: list[str]) -> int:
    """Run ``cmd`` with counting already attached, count it and its children, report at its exit."""
    _require_root()
    gate_r, gate_w = os.pipe()
    child = os.fork()
    if child == 0:  # the command: wait until the counter is attached, then exec
        os.close(gate_w)
        try:
            if not os.read(gate_r, 1):
                os._exit(125)
            os.close(gate_r)
            os.execvp(cmd[0], cmd)
        except OSError as exc:
            os.write(2, f"percpu: cannot run {cmd[0]}: {exc.strerror}\n".encode())
        os._exit(127)
    os.close(gate_r)
    status = 1
    try:
        with _stat_cgroup() as cg:
            if cg is not None:
                with open(os.path.join(cg, "cgroup.procs"), "w", encoding="ascii") as f:
                    f.write(str(child))
                filters = _filters(args, cgroup=cg)
            else:
                filters = _filters(args, pid=child)
            counter = _counter(args, filters)
            with counter:
                out = _Output(args, counter.attach_mode)
                try:
                    os.write(gate_w, b"x")
                    os.close(gate_w)
                    gate_w = -1
                    # Ctrl-C goes to the command; percpu reports when it exits.
                    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
                    try:
                        status = _stat_loop(args, counter, out, child=child)
                    finally:
                        signal.signal(signal.SIGINT, old)
                finally:
                    out.close()
            if cg is None and args.format == "table" and not args.quiet:
                print("percpu: no cgroup v2 here: counted the command's own process only", file=sys.stderr)
    finally:
        if gate_w >= 0:
            os.close(gate_w)  # the child sees EOF and exits without running the command
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child, 0)
    return status


# --- percpu top ---------------------------------------------------------------------------------------


def _cmd_top(args: argparse.Namespace) -> int:
    from . import _top

    filters = _filters(args)
    counter = _counter(args, filters)
    if not sys.stdout.isatty() or args.batch:
        return _top_batch(args, counter)
    with counter:
        return _top.run(counter, interval=args.interval, sort=args.sort, top=args.top)


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
                sys.stdout.write(_report.table(d, top=args.top or None, rates=True) + "\n")
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
        "-i", "--interval", type=_positive, default=1.0, help="refresh interval, seconds (default 1)"
    )
    p.add_argument(
        "--sort",
        choices=("total", "name", "nr", "cpu"),
        default="total",
        help="initial sort key (default total; cpu = the first CPU shown)",
    )
    p.add_argument(
        "-n", "--top", type=_count, default=0, help="show at most N syscalls (default: fill the screen)"
    )
    p.add_argument("-b", "--batch", action="store_true", help="print tables instead of the full-screen view")
    p.add_argument("--count", type=_count, default=0, help="with --batch: stop after N intervals")
    _add_counter_options(p)
    p.set_defaults(func=_cmd_top)

    s = sub.add_parser(
        "stat",
        help="count system calls per CPU for a duration, a process, or a command's lifetime",
        description="One-shot report of system calls per CPU, like `strace -c` or `perf stat`. Without a "
        "command it counts until --duration ends or Ctrl-C; with `-- COMMAND ARGS...` it starts counting "
        "before the command runs, counts the command and its children (in a cgroup of their own), and "
        "reports when it exits, with the command's exit status.",
        usage="percpu stat [options] [-- COMMAND [ARGS...]]",
    )
    s.add_argument("-d", "--duration", type=_positive, help="stop after this many seconds")
    s.add_argument("-i", "--interval", type=_positive, help="print a report every N seconds instead of once")
    s.add_argument("--count", type=_count, default=0, help="with --interval: stop after N reports")
    s.add_argument(
        "-f",
        "--format",
        choices=("table", "json", "csv"),
        default="table",
        help="table (default), json (one object per interval, one per line) or csv",
    )
    s.add_argument("-o", "--output", help="write the report to this file instead of stdout")
    s.add_argument("-n", "--top", type=_count, default=0, help="show at most N syscalls (default all)")
    s.add_argument("--sum", action="store_true", help="table: totals only, no column per CPU")
    s.add_argument("--heatmap", metavar="FILE.svg", help="also write an SVG heat map of CPU x syscall")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress notes on stderr")
    _add_counter_options(s)
    s.add_argument(
        "command_argv", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="command to run and count"
    )
    s.set_defaults(func=_cmd_stat)
