"""The ``percpu`` command: one entry point, one module per sub-command (listed in ``_MODULES``, in the
order ``percpu --help`` shows them).

Each module registers its sub-command with :func:`register` and does its work only when called; errors
from the library (:class:`~percpu.errors.PercpuError`) become one line on stderr and exit status 1, a bad
command line exits 2 (argparse), Ctrl-C exits 130, an OS error nothing else caught is one line and status
1, and standard output whose reader went away (``percpu dump | head``) exits 141 without a word, the status
a shell shows for a tool its broken pipe killed. No traceback reaches the user. A standard fd that was
closed at the start (``2>&-``) is opened on /dev/null first, so nothing lands in the wrong stream.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from .. import _machine
from .._privileges import refusal_why
from .._version import __version__
from ..errors import PercpuError, PermissionDenied
from ._outfile import open_standard_fds

__all__ = ["main"]

_MODULES = ("top", "stat", "maps", "dump", "doctor", "explain", "export", "topology")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="percpu",
        description="Per-CPU eBPF maps done right, and per-CPU system-call statistics.",
        epilog="Run `percpu COMMAND --help` for a command's options. Most commands need root "
        "(or CAP_BPF and CAP_PERFMON).",
    )
    parser.add_argument("--version", action="version", version=f"percpu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import importlib

    for name in _MODULES:
        try:
            mod = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        open_standard_fds()
        parser = build_parser()  # imports the command modules: a Ctrl-C here is a Ctrl-C like any other
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        rc: int = args.func(args)
        return rc
    except PermissionDenied as exc:
        # The library's message says what to do; this says why it applies here.
        machine = _machine.current()
        why = refusal_why(machine.effective_caps(), machine.euid(), machine.seccomp_mode())
        print(f"percpu: {exc}" + (f" ({why})" if why else ""), file=sys.stderr)
        return 1
    except PercpuError as exc:
        print(f"percpu: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `percpu dump ... | head`: the reader went away and has what it wanted; nothing else is lost
        # (stat, whose pictures would be, handles its own). Exit as a tool its broken pipe killed would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as exc:
        # An output file that became unwritable mid-run (disk full, a pipe's reader gone with an error):
        # a one-line message like any other failure, never a traceback.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"percpu: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
