"""``percpu top``: the live view of system calls per CPU (a table every interval without a terminal)."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any

from ..errors import PercpuError
from ..syscount import SyscallCounter
from . import _options, _report, _view
from ._args import int_at_least
from ._outfile import stdout_closed

__all__ = ["register"]


def _cmd_top(args: argparse.Namespace) -> int:
    from . import _top

    if stdout_closed():
        raise PercpuError(
            "top: standard output was closed when percpu started, so the view would go nowhere: "
            "redirect it (>/dev/null to discard it)"
        )
    filters = _options.filters(args)
    view, _layout = _view.from_args(args)
    counter = _options.counter(args, filters)
    # SIGTERM ends top as q and Ctrl-C do: the terminal is restored and the exit status is 0.
    old = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if args.batch or not sys.stdout.isatty():
            return _top_batch(args, counter, view)
        problem = _top.terminal_problem()
        if problem is not None:
            print(
                f"percpu: top: {problem}: printing a table every interval instead (--batch)", file=sys.stderr
            )
            return _top_batch(args, counter, view)
        with counter:
            return _top.run(counter, interval=args.interval, sort=args.sort, top=args.top or 0, view=view)
    finally:
        signal.signal(signal.SIGTERM, old)


def _top_batch(args: argparse.Namespace, counter: SyscallCounter, view: _view.View | None = None) -> int:
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
                if view is not None:
                    d = view(d)
                sys.stdout.write(_report.table(d, top=args.top, rates=True, sort=args.sort) + "\n")
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
        "and imbalance; with -P, -e or -L a view of each of those tables too. Keys: q quit, Tab (or 1-4) "
        "next view, s next sort key, c sort by a CPU column (again: the next one; C the one before), "
        "left/right scroll CPUs, up/down/PgUp/PgDn scroll rows, +/- refresh interval, p pause, ? help.",
    )
    p.add_argument(
        "-i", "--interval", type=_options.interval, default=1.0, help="refresh interval, seconds (default 1)"
    )
    p.add_argument(
        "--sort",
        choices=("total", "name", "nr", "cpu"),
        default="total",
        help="initial sort key (default total; cpu = the first CPU column, and c moves to the next)",
    )
    p.add_argument(
        "-n",
        "--top",
        type=int_at_least(0, " (0: no limit)"),
        default=None,
        help="show at most N rows of each view (default: fill the screen; with --batch every syscall and 20 "
        "rows of the -P, -e and -L tables; 0: every row)",
    )
    p.add_argument("-b", "--batch", action="store_true", help="print tables instead of the full-screen view")
    p.add_argument(
        "--count",
        type=int_at_least(0, " (0: no limit)"),
        default=0,
        help="with --batch: stop after N intervals",
    )
    _view.add_options(p)
    _options.add_counter_options(p)
    p.set_defaults(func=_cmd_top)
