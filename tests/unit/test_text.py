"""The one escape for names other users choose (``percpu._text``), shown by stat, top and the exporter."""

from __future__ import annotations

import pytest

from percpu._text import printable


@pytest.mark.parametrize(
    ("raw", "shown"),
    [(b"bash", "bash"), ("café".encode(), "café"), (b"a\tb\r\n", "a\\x09b\\x0d\\x0a"), (b"\x7f", "\\x7f")],
)
def test_printable(raw: bytes, shown: str) -> None:
    assert printable(raw) == shown


def test_every_control_character_and_stray_byte_is_escaped() -> None:
    for b in [*range(0x20), 0x7F, *range(0x80, 0x100)]:  # C0, DEL, bytes not UTF-8 on their own
        shown = printable(bytes([b]))
        assert shown == f"\\x{b:02x}", (b, shown)
    assert printable("\u0085\u202e\u2028".encode()) == "\\x85\\u202e\\u2028"  # C1 NEL, bidi, line sep


def test_distinct_names_stay_distinct() -> None:
    """A name that spells an escape with a backslash cannot pass for the name with the real byte."""
    assert printable(b"a\x1b") != printable(b"a\\x1b")
    assert printable(b"a\x1b") == "a\\x1b" and printable(b"a\\x1b") == "a\\\\x1b"
