"""argparse value types shared by the percpu commands."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

# The longest duration or interval taken: a year. Longer ones (1e10, inf) overflow the C time types the
# waits use; nothing is lost by refusing them, as Ctrl-C or SIGTERM end an open-ended count anyway.
MAX_SECONDS = 365 * 86400.0


def int_at_least(minimum: int, note: str = "", maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than ``minimum`` (``note`` is added to the error) and,
    when given, no larger than ``maximum``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be {minimum} or more{note}")
        if maximum is not None and v > maximum:
            raise argparse.ArgumentTypeError(f"{text!r} must be {maximum} or less")
        return v

    parse.__name__ = f"whole number >= {minimum}"  # argparse names the type in "invalid ... value"
    return parse


def seconds(minimum: float = 0.0, note: str = "", hint: str = "") -> Callable[[str], float]:
    """An argparse type: a finite number of seconds, above 0 and at least ``minimum``, at most a year.

    ``minimum`` keeps a periodic report from turning into a busy loop (each report reads every map);
    ``note`` is added to the too-short error, ``hint`` to the not-finite and too-long ones."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of seconds{hint}")
        if not v > 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is too short: the least is {minimum:g} s{note}")
        if v > MAX_SECONDS:
            raise argparse.ArgumentTypeError(f"{text!r} is more than a year ({MAX_SECONDS:.0f} s){hint}")
        return v

    parse.__name__ = "seconds"
    return parse
