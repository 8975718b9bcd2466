"""``struct kinds_val`` of bpf/test_maps.bpf.c, written raw, byte by byte, and what ``percpu dump -j`` must
show of it: one value per kind of BTF. The unit tests read it with the shipped object's BTF (no kernel),
the kernel tests from a map the kernel made from that object.

The offsets are C's layout of the struct (natural alignment; ``unsigned __int128`` makes it 16-aligned,
112 bytes), as ``bpftool btf dump file test_maps.bpf.o`` lists them; nothing here asks percpu.
"""

from __future__ import annotations

import struct
from typing import Any

SIZE = 112
COLOR = {"RED": 1, "GREEN": 7, "BLUE": -3}


def pack_bits(size: int, fields: list[tuple[int, int, int]]) -> bytes:
    """``size`` little-endian bytes holding each (bit offset, width, value), as C stores bitfields on x86
    and arm64: the value's two's complement, cut to its width, at its bit offset."""
    n = 0
    for bit, width, value in fields:
        n |= (value & ((1 << width) - 1)) << bit
    return n.to_bytes(size, "little")


# struct bits { int s4:4; unsigned u3:3; enum color c4:4; long long s40:40; unsigned long long u21:21;
# _Bool flag:1; }: bit offsets 0, 4, 7, 11, 64, 85 (s40 ends at bit 51; u21 starts a new long long).
BITS = [(0, 4), (4, 3), (7, 4), (11, 40), (64, 21), (85, 1)]

VARIANTS: list[dict[str, Any]] = [
    {
        "color": -3,
        "other": 5,
        "bits": [-3, 5, -3, -123456789012, 0x1ABCDE, 1],
        "word": struct.pack("<f", 1.5),
        "f": struct.pack("<f", 0.1),
        "d": struct.pack("<d", -2.5e-300),
        "name": b"ab\0cd\xff",
        "names": b"xyz\0w\0\0\0",
        "cv": -2,
        "yes": 1,
        "rp": 0xFFFF888012345678,
        "tagged": 0,
        "big": (1 << 128) - 6,
        "small": -128,
        "half": 0xFFFE,
    },
    {
        "color": 7,
        "other": -9,
        "bits": [-8, 7, 7, (1 << 39) - 1, 0, 0],
        "word": b"\xff\xff\xff\xff",
        "f": struct.pack("<I", 0x7FC00001),
        "d": struct.pack("<d", float("-inf")),
        "name": b"percpu",
        "names": b"\x1b[1m\0\0\0\0",
        "cv": 32767,
        "yes": 2,
        "rp": 0,
        "tagged": 0x1000,
        "big": 0,
        "small": 127,
        "half": 1,
    },
]


def kinds_raw(variant: int) -> bytes:
    """The 112 bytes of one variant, padding zero."""
    v = VARIANTS[variant]
    b = bytearray(SIZE)
    struct.pack_into("<ii", b, 0, v["color"], v["other"])
    b[8:24] = pack_bits(16, [(bit, width, x) for (bit, width), x in zip(BITS, v["bits"], strict=True)])
    b[24:28], b[28:32], b[32:40] = v["word"], v["f"], v["d"]
    b[40:46], b[46:54] = v["name"], v["names"]
    struct.pack_into("<hB", b, 54, v["cv"], v["yes"])
    struct.pack_into("<QQ", b, 64, v["rp"], v["tagged"])
    b[80:96] = v["big"].to_bytes(16, "little")
    struct.pack_into("<bxH", b, 96, v["small"], v["half"])
    return bytes(b)


def kinds_json(variant: int, floats: bool = True) -> dict[str, Any]:
    """What ``percpu dump -j`` shows of one variant. ``floats=False``: a kernel before 5.13 has no BTF
    float, and libbpf loads each as an empty struct of its size, shown as the hex of its bytes."""
    if variant == 0:
        word = {"u": 0x3FC00000, "s": 0x3FC00000, "f": 1.5, "b": [0, 0, 0xC0, 0x3F]}
        out: dict[str, Any] = {
            "color": "BLUE",
            "other": 5,
            "bits": {"s4": -3, "u3": 5, "c4": "BLUE", "s40": -123456789012, "u21": 0x1ABCDE, "flag": True},
            "word": word,
            "f": 0.10000000149011612,  # the float nearest 0.1, exactly, as JSON writes a double
            "d": -2.5e-300,
            "name": {"text": "ab", "hex": "6162006364ff"},
            "names": ["xyz", "w"],
            "cv": -2,
            "yes": True,
            "rp": 0xFFFF888012345678,
            "tagged": 0,
            "big": (1 << 128) - 6,
            "small": -128,
            "_anon14": {"half": 0xFFFE, "shalf": -2},
        }
    else:
        word = {"u": 0xFFFFFFFF, "s": -1, "f": "nan:0xffffffff", "b": [255, 255, 255, 255]}
        out = {
            "color": "GREEN",
            "other": -9,
            "bits": {"s4": -8, "u3": 7, "c4": "GREEN", "s40": (1 << 39) - 1, "u21": 0, "flag": False},
            "word": word,
            "f": "nan:0x7fc00001",
            "d": "-inf",
            "name": "percpu",
            "names": ["\x1b[1m", ""],
            "cv": 32767,
            "yes": 2,
            "rp": 0,
            "tagged": 0x1000,
            "big": 0,
            "small": 127,
            "_anon14": {"half": 1, "shalf": 1},
        }
    if not floats:
        v = VARIANTS[variant]
        word["f"], out["f"], out["d"] = v["word"].hex(), v["f"].hex(), v["d"].hex()
    return out
