"""argparse value types shared by the percpu commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_at_least(minimum: int, note: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than ``minimum`` (``note`` is added to the error)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be {minimum} or more{note}")
        return v

    parse.__name__ = f"whole number >= {minimum}"  # argparse names the type in "invalid ... value"
    return parse
