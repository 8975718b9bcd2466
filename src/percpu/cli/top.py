"""``percpu top``: the live view of system calls per CPU, and of who disturbs each CPU with -I -V -S -T (a
table every interval without a terminal)."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any

from ..errors import PercpuError
from ..syscount import SyscallCounter
from . import _disturb, _disturbances, _options, _report, _view
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
    view = _view.from_args(args)
    disturb = _disturbances.session(args)  # a bad -E fails here, before anything is loaded
    counter = _options.counter(args, filters)
    # SIGTERM ends top as q and Ctrl-C do: the terminal is restored and the exit status is 0.
    old = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if args.batch or not sys.stdout.isatty():
            return _top_batch(args, counter, view, disturb)
        problem = _top.terminal_problem()
        if problem is not None:
            print(
                f"percpu: top: {problem}: printing a table every interval instead (--batch)", file=sys.stderr
            )
            return _top_batch(args, counter, view, disturb)
        with counter:
            if disturb is not None:
                disturb.start()  # what it cannot count is in its view's footer
            return _top.run(
                counter, interval=args.interval, sort=args.sort, top=args.top or 0, view=view, disturb=disturb
            )
    finally:
        signal.signal(signal.SIGTERM, old)
        if disturb is not None:
            disturb.close()


def _top_batch(
    args: argparse.Namespace,
    counter: SyscallCounter,
    view: _view.View | None = None,
    disturb: _disturbances.DisturbSession | None = None,
) -> int:
    """Without a terminal: print a table every interval (like top -b), and who disturbed each CPU after
    it (-I -V -S -T); what this kernel cannot count is said once, on stderr."""
    if view is None:
        view = _view.from_args(args)
    with counter:
        if disturb is not None:
            disturb.start()
            for c in disturb.run_caveats():
                print(f"percpu: top: warning: {c.text}", file=sys.stderr, flush=True)
        both = _disturbances.Both(counter, disturb)
        last = both.snapshot()
        view.remember(last.sys.online)
        n = 0
        try:
            while not args.count or n < args.count:
                time.sleep(args.interval)
                snap = both.snapshot()
                pair = snap.delta(last)
                last = snap
                d = view(pair.sys)
                text = _report.table(d, top=args.top, rates=True, sort=args.sort) + "\n"
                if disturb is not None and pair.dist is not None:
                    v = disturb.view(pair.dist, pair.sys)
                    rows = 20 if args.top is None else args.top
                    text += _disturb.table(v, top=rows, rates=True, notes=_disturb.interval_caveats(v)) + "\n"
                sys.stdout.write(text)
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
        "and imbalance; with -P, -e or -L a view of each of those tables too, and with -I -V -S -T (-D) who "
        "disturbs each CPU: a row per interrupt, softirq, task and process. Keys: q quit, Tab (or 1-5) "
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
    _options.add_counter_options(p, disturb=True)
    p.set_defaults(func=_cmd_top)
