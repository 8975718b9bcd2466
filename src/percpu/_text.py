"""Names other users choose (a task's ``comm``), made safe for whoever reads them: a terminal, a scrape.

One escape for every place percpu shows such a name (``stat``/``top`` tables, the exporter's ``comm``
label), so the same process reads the same everywhere.
"""

from __future__ import annotations

import unicodedata

__all__ = ["printable"]


def printable(raw: bytes) -> str:
    """A name chosen by another user, made safe to show: UTF-8 where it is valid, ``\\xNN`` for other
    bytes, and every control or format character (C0 such as ESC and CR, DEL, C1, bidi overrides, line and
    paragraph separators) escaped, so a process name cannot move the cursor, retitle the window, reorder
    the text around it or start a new line in a scrape. A backslash is doubled so the escapes cannot be
    forged: distinct names stay distinct."""
    text = raw.decode("utf-8", errors="surrogateescape")
    out: list[str] = []
    for ch in text:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # an undecodable byte
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)
