"""The BTF parser on blobs built here, byte by byte, in the layout of include/uapi/linux/btf.h.

Nothing here needs a kernel: each test builds the types it needs with :class:`BtfBuilder`, parses the blob
with :func:`parse_btf` and checks the numpy layout against the one BTF describes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from percpu import btf as btf_mod
from percpu.btf import Btf, parse_btf
from percpu.btf._decode import ValueDecoder
from percpu.errors import PercpuError

from .btf_kinds import pack_bits

# Kinds and int encodings from include/uapi/linux/btf.h.
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = 12, 13, 14, 15, 16, 17, 18, 19
INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4
HDR_LEN = 24


class BtfBuilder:
    """Emits a BTF blob: ``struct btf_header``, then the type section, then the string section.

    Each ``add`` method returns the new type's id. With ``base`` the blob is split BTF: ids continue after
    the base's last id and string offsets after the base's string section, as the kernel numbers them.
    """

    def __init__(self, base: BtfBuilder | None = None) -> None:
        self.base = base
        self.types = bytearray()
        # A base string section starts with "\0" (offset 0 is the empty name); a split one continues the
        # base's, so its own part may start anywhere (libbpf starts it empty).
        self.strings = bytearray() if base else bytearray(b"\0")
        self.str_start: int = base.str_start + len(base.strings) if base else 0
        self.next_id: int = base.next_id if base else 1

    def name(self, s: str) -> int:
        """Offset of ``s`` in the string sections (the base's first), appending it if new."""
        if not s:
            return 0
        if self.base is not None:
            off = self.base._find_str(s)
            if off is not None:
                return off
        off = self._find_str(s)
        if off is None:
            off = self.str_start + len(self.strings)
            self.strings += s.encode() + b"\0"
        return off

    def _find_str(self, s: str) -> int | None:
        needle = s.encode() + b"\0"
        i = 0
        while (i := self.strings.find(needle, i)) >= 0:
            if i == 0 or self.strings[i - 1] == 0:
                return self.str_start + i
            i += 1
        if self.base is not None:
            return self.base._find_str(s)
        return None

    def add(
        self,
        kind: int,
        name: str = "",
        size_or_type: int = 0,
        vlen: int = 0,
        kflag: bool = False,
        data: bytes = b"",
    ) -> int:
        info = (vlen & 0xFFFF) | (kind << 24) | (int(kflag) << 31)
        self.types += struct.pack("<III", self.name(name), info, size_or_type) + data
        self.next_id += 1
        return self.next_id - 1

    def int_(self, name: str, size: int, enc: int = 0, bits: int | None = None, bit_offset: int = 0) -> int:
        nr_bits = size * 8 if bits is None else bits
        return self.add(INT, name, size, data=struct.pack("<I", (enc << 24) | (bit_offset << 16) | nr_bits))

    def ptr(self, target: int) -> int:
        return self.add(PTR, "", target)

    def array(self, elem: int, nelems: int, index_type: int = 0) -> int:
        return self.add(ARRAY, "", 0, data=struct.pack("<III", elem, index_type, nelems))

    def struct(
        self,
        name: str,
        size: int,
        members: list[tuple[str, int, int]] | list[tuple[str, int, int, int]],
        kind: int = STRUCT,
        kflag: bool = False,
    ) -> int:
        """Members are (name, type, bit offset), or with ``kflag`` (name, type, bit offset, bitfield size)."""
        data = b""
        for m in members:
            off = m[2] | (m[3] << 24 if len(m) == 4 else 0)
            data += struct.pack("<III", self.name(m[0]), m[1], off)
        return self.add(kind, name, size, vlen=len(members), kflag=kflag, data=data)

    def union(self, name: str, size: int, members: list[tuple[str, int, int]]) -> int:
        return self.struct(name, size, members, kind=UNION)

    def enum(self, name: str, size: int, values: dict[str, int], signed: bool = False) -> int:
        # The value's 32 bits whatever the sign: clang before 15 writes -3 unflagged, as 0xfffffffd.
        data = b"".join(struct.pack("<II", self.name(n), v & 0xFFFFFFFF) for n, v in values.items())
        return self.add(ENUM, name, size, vlen=len(values), kflag=signed, data=data)

    def enum64(self, name: str, values: dict[str, int], signed: bool = False) -> int:
        data = b""
        for n, v in values.items():
            u = v & ((1 << 64) - 1)
            data += struct.pack("<III", self.name(n), u & 0xFFFFFFFF, u >> 32)
        return self.add(ENUM64, name, 8, vlen=len(values), kflag=signed, data=data)

    def typedef(self, name: str, target: int) -> int:
        return self.add(TYPEDEF, name, target)

    def const(self, target: int) -> int:
        return self.add(CONST, "", target)

    def volatile(self, target: int) -> int:
        return self.add(VOLATILE, "", target)

    def blob(
        self,
        *,
        magic: int = 0xEB9F,
        version: int = 1,
        hdr_len: int = HDR_LEN,
        type_len: int | None = None,
        str_off: int | None = None,
        str_len: int | None = None,
    ) -> bytes:
        """The blob; the keyword arguments override header fields to make it malformed."""
        tl = len(self.types) if type_len is None else type_len
        so = len(self.types) if str_off is None else str_off
        sl = len(self.strings) if str_len is None else str_len
        header = struct.pack("<HBBIIIII", magic, version, 0, hdr_len, 0, tl, so, sl)
        return header + bytes(self.types) + bytes(self.strings)

    def parse(self) -> Btf:
        return parse_btf(self.blob(), self.base.parse() if self.base else None)


def dt(spec: dict[str, Any]) -> np.dtype[Any]:
    """A struct dtype from numpy's dict form: names, formats, offsets, itemsize."""
    return np.dtype(spec)  # type: ignore[call-overload, no-any-return]


def offsets(d: np.dtype[Any] | None) -> dict[str, int]:
    """{field: byte offset} of a struct dtype."""
    assert d is not None and d.fields is not None
    return {name: f[1] for name, f in d.fields.items()}


# --- integers and qualifiers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "enc", "expected"),
    [
        (1, 0, "<u1"),
        (1, INT_SIGNED, "<i1"),
        (2, 0, "<u2"),
        (2, INT_SIGNED, "<i2"),
        (4, 0, "<u4"),
        (4, INT_SIGNED, "<i4"),
        (8, 0, "<u8"),
        (8, INT_SIGNED, "<i8"),
        (1, INT_BOOL, "?"),
        (1, INT_CHAR | INT_SIGNED, "<i1"),
        (1, INT_CHAR, "<u1"),
    ],
)
def test_int_widths_and_signedness(size: int, enc: int, expected: str) -> None:
    b = BtfBuilder()
    tid = b.int_("x", size, enc)
    btf = b.parse()
    assert btf.dtype(tid) == np.dtype(expected)
    assert btf.size(tid) == size


def test_int_wider_than_numpy_or_narrower_than_its_bytes_keeps_its_raw_storage() -> None:
    b = BtfBuilder()
    i128 = b.int_("__int128", 16, INT_SIGNED)
    narrow = b.int_("u3", 4, bits=3)
    offset = b.int_("at8", 4, bits=24, bit_offset=8)
    past = b.int_("shifted", 4, bits=32, bit_offset=8)
    btf = b.parse()
    assert btf.dtype(i128) == np.dtype((np.void, 16))
    # numpy has no 3-bit integer: the bytes stay raw, and Btf.value() reads the bits.
    assert btf.dtype(narrow) == np.dtype((np.void, 4))
    assert btf.dtype(offset) == np.dtype((np.void, 4))
    assert btf.value(narrow, bytes([0xFF, 0xFF, 0, 0])) == 7
    assert btf.value(offset, bytes([0xFF, 1, 2, 3])) == 0x030201
    assert btf.value(i128, ((1 << 128) - 5).to_bytes(16, "little")) == -5
    with pytest.raises(PercpuError, match=r"holds 32 bits from bit 8, past its 4 bytes"):
        btf.dtype(past)
    with pytest.raises(PercpuError, match=r"holds 32 bits from bit 8, past its 4 bytes"):
        btf.value(past, bytes(4))


def test_typedef_const_volatile_chain_resolves_to_the_int() -> None:
    b = BtfBuilder()
    u64 = b.int_("unsigned long long", 8)
    td = b.typedef("__u64", u64)
    cv = b.const(b.volatile(b.typedef("u64_t", td)))
    btf = b.parse()
    assert btf.dtype(cv) == np.dtype("<u8")
    assert btf.size(cv) == 8
    assert btf.resolve(cv).id == u64
    assert btf.type_name(cv) == "const volatile u64_t"
    assert btf.find("__u64") == td and btf.find("__u64", "typedef") == td
    with pytest.raises(PercpuError, match="no BTF type named"):
        btf.find("__u64", "struct")


@pytest.mark.parametrize(
    ("name", "enc"),
    [
        ("char", INT_SIGNED),  # what clang and pahole emit for char (x86_64, arm64 and bpf targets alike)
        ("signed char", INT_SIGNED),
        ("unsigned char", 0),
        ("my_char", INT_CHAR),  # the kernel's encoding bit, which no toolchain sets: honoured all the same
    ],
)
def test_char_array_is_a_byte_string_and_pointer_is_u64(name: str, enc: int) -> None:
    """Shapes as the toolchains emit them; tests/unit/test_btf_real.py reads the compiled objects."""
    b = BtfBuilder()
    char = b.int_(name, 1, enc)
    comm = b.array(char, 16)
    const_comm = b.array(b.const(b.volatile(char)), 4)
    p = b.ptr(char)
    btf = b.parse()
    assert btf.dtype(comm) == np.dtype("S16")
    assert btf.dtype(const_comm) == np.dtype("S4")
    assert btf.type_name(comm) == f"{name}[16]"
    assert btf.dtype(p) == np.dtype("<u8") and btf.size(p) == 8
    assert btf.type_name(p) == f"{name} *"


def test_arrays_of_byte_integers_that_are_not_char_stay_numbers() -> None:
    b = BtfBuilder()
    u8 = b.typedef("__u8", b.int_("unsigned char", 1))  # linux/types.h: __u8 addr[16] holds numbers
    s8 = b.typedef("__s8", b.int_("signed char", 1, INT_SIGNED))
    byte = b.int_("u8", 1)  # a 1-byte int under another name
    arrays = {b.array(u8, 16): "<u1", b.array(s8, 16): "<i1", b.array(byte, 16): "<u1"}
    btf = b.parse()
    for arr, want in arrays.items():
        assert btf.dtype(arr) == np.dtype((want, (16,)))
        assert not btf.is_char(btf.type(arr).extra[0])


def test_kinds_without_a_layout_are_skipped_and_ids_stay_in_step() -> None:
    b = BtfBuilder()
    u32 = b.int_("u32", 4)
    proto = b.add(FUNC_PROTO, "", u32, vlen=2, data=struct.pack("<IIII", b.name("a"), u32, b.name("b"), u32))
    func = b.add(FUNC, "handler", proto, vlen=1)
    var = b.add(VAR, "counter", u32, data=struct.pack("<I", 1))
    sec = b.add(DATASEC, ".bss", 4, vlen=1, data=struct.pack("<III", var, 0, 4))
    tag = b.add(DECL_TAG, "tag", func, data=struct.pack("<i", -1))
    fwd = b.add(FWD, "opaque")
    f64 = b.add(FLOAT, "double", 8)
    tagged = b.add(TYPE_TAG, "user", b.ptr(u32))
    btf = b.parse()
    assert [btf.type(i).kind for i in (proto, func, var, sec, tag, fwd, f64)] == [
        "func_proto", "func", "var", "datasec", "decl_tag", "fwd", "float"
    ]  # fmt: skip
    assert btf.type(f64).name == "double" and btf.count == tagged
    assert btf.dtype(f64) == np.dtype("<f8")
    assert btf.dtype(tagged) == np.dtype("<u8")
    assert btf.dtype(fwd) is None and btf.dtype(proto) is None
    with pytest.raises(PercpuError, match="has no size"):
        btf.size(fwd)


# --- structs and arrays ----------------------------------------------------------------------------------


def test_struct_padding_and_explicit_offsets_match_btf() -> None:
    b = BtfBuilder()
    u8, u16, u32, u64 = (b.int_(n, s) for n, s in (("u8", 1), ("u16", 2), ("u32", 4), ("u64", 8)))
    # struct s { u8 a; u32 b; u64 c; u16 d; }: 3 bytes after a, 6 after d.
    s = b.struct("s", 24, [("a", u8, 0), ("b", u32, 32), ("c", u64, 64), ("d", u16, 128)])
    btf = b.parse()
    d = btf.dtype(s)
    assert d == dt({"names": ["a", "b", "c", "d"], "formats": ["<u1", "<u4", "<u8", "<u2"],
                    "offsets": [0, 4, 8, 16], "itemsize": 24})  # fmt: skip
    assert d is not None and d.itemsize == btf.size(s) == 24
    assert offsets(d) == {"a": 0, "b": 4, "c": 8, "d": 16}
    # The layout decodes bytes packed the way C lays the struct out.
    v = np.frombuffer(struct.pack("<B3xIQH6x", 7, 0xDEADBEEF, 1 << 40, 513), dtype=d)[0]
    assert (v["a"], v["b"], v["c"], v["d"]) == (7, 0xDEADBEEF, 1 << 40, 513)
    assert btf.type_name(s) == "struct s"
    assert btf.describe(s).splitlines() == [
        "struct s {  /* 24 bytes */",
        "    u8 a;  /* offset 0 */",
        "    u32 b;  /* offset 4 */",
        "    u64 c;  /* offset 8 */",
        "    u16 d;  /* offset 16 */",
        "}",
    ]


def test_nested_structs_and_arrays() -> None:
    b = BtfBuilder()
    u32 = b.int_("u32", 4)
    u64 = b.int_("u64", 8)
    inner = b.struct("inner", 16, [("count", u64, 0), ("flags", u32, 64)])
    grid = b.array(b.array(u32, 3), 2)  # u32 grid[2][3]
    outer = b.struct(
        "outer",
        104,
        [
            ("in", inner, 0),
            ("arr", b.array(u32, 4), 128),
            ("items", b.array(inner, 2), 256),
            ("grid", grid, 512),
        ],
    )
    btf = b.parse()
    inner_dt = dt({"names": ["count", "flags"], "formats": ["<u8", "<u4"], "offsets": [0, 8], "itemsize": 16})
    assert btf.dtype(inner) == inner_dt
    assert btf.dtype(grid) == np.dtype(("<u4", (2, 3)))
    assert btf.size(grid) == 24
    assert btf.type_name(grid) == "u32[3][2]"
    d = btf.dtype(outer)
    assert d is not None and d.itemsize == 104
    assert d.names == ("in", "arr", "items", "grid")
    assert d["in"] == inner_dt
    assert d["arr"] == np.dtype(("<u4", (4,)))
    assert d["items"].shape == (2,) and d["items"].base == inner_dt
    assert d["grid"].shape == (2, 3) and d["grid"].base == np.dtype("<u4")
    assert offsets(d) == {"in": 0, "arr": 16, "items": 32, "grid": 64}
    v = np.zeros((), dtype=d)
    v["grid"][1, 2] = 5
    v["items"][1]["flags"] = 9
    raw = v.tobytes()
    assert struct.unpack_from("<I", raw, 64 + 5 * 4) == (5,)
    assert struct.unpack_from("<I", raw, 32 + 16 + 8) == (9,)


def test_top_level_array_of_structs() -> None:
    b = BtfBuilder()
    u16 = b.int_("u16", 2)
    pair = b.struct("pair", 4, [("lo", u16, 0), ("hi", u16, 16)])
    arr = b.array(pair, 3)
    btf = b.parse()
    d = btf.dtype(arr)
    assert d is not None and d.shape == (3,) and d.itemsize == 12 == btf.size(arr)
    assert d.base == dt({"names": ["lo", "hi"], "formats": ["<u2", "<u2"], "offsets": [0, 2], "itemsize": 4})


def test_self_referencing_struct_through_a_pointer() -> None:
    b = BtfBuilder()
    u64 = b.int_("u64", 8)
    node = b.next_id + 1
    p = b.ptr(node)
    assert b.struct("node", 16, [("val", u64, 0), ("next", p, 64)]) == node
    btf = b.parse()
    assert btf.dtype(node) == dt({"names": ["val", "next"], "formats": ["<u8", "<u8"], "offsets": [0, 8],
                                   "itemsize": 16})  # fmt: skip
    assert btf.type_name(p) == "struct node *"


def test_anonymous_members_get_positional_names() -> None:
    b = BtfBuilder()
    u32 = b.int_("u32", 4)
    anon = b.struct("", 4, [("x", u32, 0)])
    s = b.struct("s", 8, [("a", u32, 0), ("", anon, 32)])
    btf = b.parse()
    d = btf.dtype(s)
    assert d is not None and d.names == ("a", "_anon1")
    assert btf.type_name(anon) == "struct (anonymous)"


def test_struct_with_bitfields_keeps_its_raw_storage() -> None:
    b = BtfBuilder()
    u32 = b.int_("u32", 4)
    # struct { u32 a; u32 b:3; u32 c:5; }, with kind_flag: bitfield_size << 24 | bit_offset
    s = b.struct("bits", 8, [("a", u32, 0, 0), ("b", u32, 32, 3), ("c", u32, 35, 5)], kflag=True)
    # kind_flag set but no bitfield: offsets are plain bit offsets and the struct lays out normally.
    plain = b.struct("plain", 8, [("a", u32, 0, 0), ("b", u32, 32, 0)], kflag=True)
    # The older encoding (no kind_flag): the member's int type is narrow and its bit offset unaligned.
    u3 = b.int_("u3", 4, bits=3)
    old = b.struct("old", 8, [("a", u32, 0), ("b", u3, 32)])
    unaligned = b.struct("unaligned", 8, [("a", u32, 0), ("b", u32, 33)])
    btf = b.parse()
    # numpy has no field of a few bits: the dtype is the struct's bytes, which Btf.value() decodes.
    assert btf.dtype(s) == np.dtype((np.void, 8))
    assert btf.size(s) == 8
    assert btf.describe(s).splitlines()[1:4] == [
        "    u32 a;  /* offset 0 */",
        "    u32 b;  /* bit 32, 3 bits */",
        "    u32 c;  /* bit 35, 5 bits */",
    ]
    assert btf.dtype(plain) == dt({"names": ["a", "b"], "formats": ["<u4", "<u4"], "offsets": [0, 4],
                                    "itemsize": 8})  # fmt: skip
    assert btf.dtype(old) == np.dtype((np.void, 8))
    assert btf.dtype(unaligned) == np.dtype((np.void, 8))
    # A struct holding one keeps its other fields, the bitfield struct as bytes; an array of them too.
    u64 = b.int_("u64", 8)
    wrap = b.struct("wrap", 16, [("x", u64, 0), ("y", s, 64)])
    arr = b.array(s, 2)
    btf = b.parse()
    assert btf.dtype(wrap) == dt({"names": ["x", "y"], "formats": ["<u8", "V8"], "offsets": [0, 8],
                                   "itemsize": 16})  # fmt: skip
    assert btf.dtype(arr) == np.dtype(("V8", (2,)))


def test_union_is_opaque_bytes_of_its_size() -> None:
    b = BtfBuilder()
    u32 = b.int_("u32", 4)
    u64 = b.int_("u64", 8)
    un = b.union("u", 8, [("word", u32, 0), ("dword", u64, 0)])
    s = b.struct("s", 16, [("tag", u32, 0), ("v", un, 64)])
    btf = b.parse()
    assert btf.dtype(un) == np.dtype((np.void, 8))
    assert btf.size(un) == 8
    assert btf.type_name(un) == "union u"
    d = btf.dtype(s)
    assert d is not None and d.itemsize == 16
    assert d["v"] == np.dtype((np.void, 8)) and offsets(d)["v"] == 8


# --- enums -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "signed"), [(1, False), (2, True), (4, False), (4, True), (8, False)])
def test_enum_is_an_integer_of_its_width(size: int, signed: bool) -> None:
    b = BtfBuilder()
    values = (
        {"NEG": -1, "ZERO": 0, "TWO": 2} if signed else {"ZERO": 0, "BIG": 0x7FFFFFFF if size >= 4 else 9}
    )
    e = b.enum("proto", size, values, signed=signed)
    btf = b.parse()
    assert btf.dtype(e) == np.dtype(f"<{'i' if signed else 'u'}{size}")
    assert btf.size(e) == size
    assert btf.enum_values(e) == {v: n for n, v in values.items()}
    assert btf.type_name(e) == "enum proto"


@pytest.mark.parametrize("signed", [False, True])
def test_enum64_is_an_eight_byte_integer(signed: bool) -> None:
    b = BtfBuilder()
    values = {"SMALL": 1, "HUGE": 1 << 40, "TOP": -2 if signed else (1 << 64) - 1}
    e = b.enum64("wide", values, signed=signed)
    td = b.typedef("wide_t", e)
    btf = b.parse()
    assert btf.dtype(td) == np.dtype("<i8" if signed else "<u8")
    assert btf.size(td) == 8
    assert btf.enum_values(td) == {v: n for n, v in values.items()}
    assert btf.type_name(e) == "enum wide"


def test_enum_values_of_a_non_enum_is_empty() -> None:
    b = BtfBuilder()
    u32 = b.int_("u32", 4)
    assert b.parse().enum_values(u32) == {}


# --- exact decoding: Btf.value() --------------------------------------------------------------------------


def test_value_decodes_kind_flag_bitfields_signed_and_unsigned() -> None:
    """struct { int s4:4; unsigned u3:3; enum color c4:4; long long s40:40; unsigned long long u21:21;
    _Bool flag:1; } as clang emits it: kind_flag set, each member's bitfield size beside its bit offset."""
    b = BtfBuilder()
    int_ = b.int_("int", 4, INT_SIGNED)
    uint = b.int_("unsigned int", 4)
    color = b.enum("color", 4, {"RED": 1, "GREEN": 7, "BLUE": -3}, signed=True)
    s64 = b.int_("long long", 8, INT_SIGNED)
    u64 = b.int_("unsigned long long", 8)
    bool_ = b.int_("_Bool", 1, INT_BOOL)
    members = [("s4", int_, 0, 4), ("u3", uint, 4, 3), ("c4", color, 7, 4), ("s40", s64, 11, 40),
               ("u21", u64, 64, 21), ("flag", bool_, 85, 1)]  # fmt: skip
    bits = b.struct("bits", 16, members, kflag=True)
    btf = b.parse()
    raw = pack_bits(16, [(0, 4, -3), (4, 3, 5), (7, 4, -3), (11, 40, -123456789012), (64, 21, 0x1ABCDE),
                         (85, 1, 1)])  # fmt: skip
    v = btf.value(bits, raw)
    assert v == {"s4": -3, "u3": 5, "c4": -3, "s40": -123456789012, "u21": 0x1ABCDE, "flag": True}
    assert isinstance(v["c4"], btf_mod.EnumValue) and v["c4"].name == "BLUE"
    assert v["flag"] is True
    # The extremes of each width: a signed field's top bit is its sign, an unsigned one's is not.
    raw = pack_bits(16, [(0, 4, -8), (4, 3, 7), (7, 4, 7), (11, 40, (1 << 39) - 1), (64, 21, (1 << 21) - 1)])
    v = btf.value(bits, raw)
    assert (v["s4"], v["u3"], v["c4"], v["s40"], v["u21"], v["flag"]) == (-8, 7, 7, (1 << 39) - 1,
                                                                           (1 << 21) - 1, False)  # fmt: skip
    assert v["c4"].name == "GREEN"


def test_value_decodes_bitfields_of_the_encoding_before_kind_flag() -> None:
    """Without kind_flag a bitfield's int type carries its width and a bit offset of its own
    (Documentation/bpf/btf.rst: member at bit 100, int offset 2, 4 bits -> bits 102..105)."""
    b = BtfBuilder()
    s4 = b.int_("int", 4, INT_SIGNED, bits=4)
    u4_at2 = b.int_("unsigned int", 4, bits=4, bit_offset=2)
    u32 = b.int_("unsigned int", 4)
    color = b.enum("color", 4, {"RED": 1, "BLUE": -3})  # no kind_flag: a negative enumerator
    s = b.struct("old", 24, [("a", s4, 0), ("b", u4_at2, 100), ("whole", u32, 33), ("e", color, 129)])
    btf = b.parse()
    assert btf.dtype(s) == np.dtype((np.void, 24))
    raw = pack_bits(24, [(0, 4, -3), (102, 4, 9), (33, 32, 0xDEADBEEF), (129, 32, -3)])
    v = btf.value(s, raw)
    assert v == {"a": -3, "b": 9, "whole": 0xDEADBEEF, "e": -3}
    assert v["e"].name == "BLUE"


def test_enum_names_and_signedness() -> None:
    b = BtfBuilder()
    # clang before 15 (and libbpf loading into a kernel before 6.0): no kind_flag, values as __s32.
    color = b.enum("color", 4, {"RED": 1, "GREEN": 7, "BLUE": -3})
    level = b.enum("level", 4, {"LOW": 0, "HIGH": 2})
    alias = b.enum("alias", 4, {"FIRST": 5, "SAME": 5})
    tiny = b.enum("tiny", 1, {"M1": -1, "ONE": 1})  # a packed enum: its value sign-extended to 32 bits
    btf = b.parse()
    assert not btf.enum_signed(level) and btf.enum_signed(color) and btf.enum_signed(tiny)
    assert btf.dtype(color) == np.dtype("<i4") and btf.dtype(level) == np.dtype("<u4")
    assert btf.enum_values(color) == {1: "RED", 7: "GREEN", -3: "BLUE"}
    assert btf.enum_values(alias) == {5: "FIRST"}  # the first enumerator of a value names it
    for tid, raw, want, name in [
        (color, struct.pack("<i", -3), -3, "BLUE"),
        (color, struct.pack("<i", 7), 7, "GREEN"),
        (color, struct.pack("<i", -9), -9, None),  # no enumerator: the number, with its sign
        (level, struct.pack("<I", 0xFFFFFFFD), 0xFFFFFFFD, None),
        (alias, struct.pack("<I", 5), 5, "FIRST"),
        (tiny, b"\xff", -1, "M1"),
    ]:
        v = btf.value(tid, raw)
        assert (v, v.name, repr(v)) == (want, name, name or str(want))
        assert type(v) is btf_mod.EnumValue


def test_enum_kind_flag_marks_signedness_where_the_blob_has_it() -> None:
    """With the kind_flag (Linux 6.0, clang 15, pahole 1.24) an unmarked enum is unsigned, even one whose
    enumerator has the top bit set; enum64 holds 64-bit values, signed or not."""
    b = BtfBuilder()
    signed = b.enum("s", 4, {"NEG": -3, "POS": 3}, signed=True)
    top = b.enum("flags", 4, {"LOW": 1, "TOP": 0x80000000})
    wide = b.enum64("wide", {"BIG": 1 << 40, "TOP": (1 << 64) - 1})
    swide = b.enum64("swide", {"NEG": -(1 << 40), "HUGE": (1 << 62)}, signed=True)
    btf = b.parse()
    assert btf.enum_signed(signed) and not btf.enum_signed(top) and not btf.enum_signed(wide)
    assert btf.enum_signed(swide)
    assert btf.dtype(top) == np.dtype("<u4") and btf.dtype(swide) == np.dtype("<i8")
    assert btf.value(top, struct.pack("<I", 0x80000001)) == 0x80000001
    assert btf.value(top, struct.pack("<I", 0x80000000)).name == "TOP"
    assert btf.value(wide, struct.pack("<Q", (1 << 64) - 1)).name == "TOP"
    assert btf.value(wide, struct.pack("<Q", 1 << 41)) == 1 << 41
    v = btf.value(swide, struct.pack("<q", -(1 << 40)))
    assert (v, v.name) == (-(1 << 40), "NEG")
    assert btf.value(swide, struct.pack("<q", -1)) == -1
    # An enum64 alone marks the blob too (no compiler that writes one leaves a signed enum unmarked).
    b = BtfBuilder()
    top = b.enum("flags", 4, {"TOP": 0x80000000})
    b.enum64("wide", {"BIG": 1 << 40})
    assert not b.parse().enum_signed(top)
    b = BtfBuilder()
    top = b.enum("flags", 4, {"TOP": 0x80000000})
    assert b.parse().enum_signed(top)  # no mark anywhere: __s32 0x80000000 is negative


def test_value_decodes_every_member_of_a_union() -> None:
    b = BtfBuilder()
    u32 = b.int_("u32", 4)
    s32 = b.int_("s32", 4, INT_SIGNED)
    f32 = b.add(FLOAT, "float", 4)
    u8 = b.typedef("__u8", b.int_("unsigned char", 1))
    u16 = b.int_("u16", 2)
    un = b.union("word", 4, [("u", u32, 0), ("s", s32, 0), ("f", f32, 0), ("b", b.array(u8, 4), 0),
                             ("hi", u16, 16)])  # fmt: skip
    outer = b.struct("outer", 8, [("tag", u32, 0), ("", un, 32)])
    btf = b.parse()
    raw = struct.pack("<f", -1.5)
    assert btf.value(un, raw) == {"u": 0xBFC00000, "s": -1077936128, "f": -1.5, "b": [0, 0, 0xC0, 0xBF],
                                  "hi": 0xBFC0}  # fmt: skip
    assert btf.value(outer, b"\x07\0\0\0" + raw)["_anon1"]["f"] == -1.5  # as dtype() names it


def test_value_decodes_floats_exactly() -> None:
    b = BtfBuilder()
    sizes = (("_Float16", 2), ("float", 4), ("double", 8), ("long double", 16))
    f16, f32, f64, f128 = (b.add(FLOAT, n, size) for n, size in sizes)
    btf = b.parse()
    assert btf.value(f16, struct.pack("<e", -0.5)) == -0.5
    assert btf.value(f32, struct.pack("<f", 0.1)) == float(np.float32(0.1))  # the float's own value
    assert btf.value(f64, struct.pack("<d", -2.5e-300)) == -2.5e-300
    assert btf.value(f64, struct.pack("<d", float("-inf"))) == float("-inf")
    nan = btf.value(f32, struct.pack("<I", 0x7FC00001))
    assert isinstance(nan, btf_mod.NanValue) and (nan.bits, nan.size) == (0x7FC00001, 4)
    assert btf.value(f16, struct.pack("<H", 0xFE00)).bits == 0xFE00
    raw = bytes(range(16))
    v = btf.value(f128, raw)
    assert v == raw and isinstance(v, btf_mod.RawBytes)  # no Python type holds it: its bytes
    assert btf.dtype(f128) == np.dtype("V16")


def test_value_keeps_every_byte_of_a_char_array() -> None:
    b = BtfBuilder()
    char = b.int_("char", 1, INT_SIGNED)
    name = b.array(char, 6)
    names = b.array(b.array(char, 4), 2)
    btf = b.parse()
    v = btf.value(name, b"ab\0cd\xff")
    assert v == b"ab\0cd\xff" and isinstance(v, btf_mod.CharArray) and v.c_string == b"ab"
    assert btf.value(names, b"xyz\0w\0\0\0") == [b"xyz\0", b"w\0\0\0"]


def test_value_follows_typedef_const_volatile_restrict_and_type_tag() -> None:
    b = BtfBuilder()
    s16 = b.int_("short", 2, INT_SIGNED)
    cv = b.typedef("cv_s16", b.const(b.volatile(b.typedef("__s16", s16))))
    ptr = b.add(RESTRICT, "", b.ptr(b.int_("char", 1, INT_SIGNED)))
    tagged = b.ptr(b.add(TYPE_TAG, "user", b.int_("int", 4, INT_SIGNED)))
    s = b.struct("q", 24, [("cv", cv, 0), ("rp", ptr, 64), ("tp", tagged, 128)])
    btf = b.parse()
    raw = struct.pack("<h6xQQ", -2, 0xFFFF888012345678, 0)
    assert btf.value(s, raw) == {"cv": -2, "rp": 0xFFFF888012345678, "tp": 0}
    assert btf.type_name(ptr) == "restrict char *"
    assert btf.type_name(tagged) == "int *"  # a type tag is an annotation, not part of the C name


def test_value_of_ints_booleans_and_raw_bytes() -> None:
    b = BtfBuilder()
    u128 = b.int_("unsigned __int128", 16)
    bool_ = b.int_("_Bool", 1, INT_BOOL)
    i24 = b.int_("i24", 3, INT_SIGNED)
    empty = b.struct("", 4, [])  # what libbpf puts where a kernel before 5.13 has no BTF float
    btf = b.parse()
    assert btf.value(u128, ((1 << 128) - 6).to_bytes(16, "little")) == (1 << 128) - 6
    assert btf.value(bool_, b"\x01") is True and btf.value(bool_, b"\x00") is False
    assert btf.value(bool_, b"\x02") == 2  # the byte the program wrote, not True
    assert btf.value(i24, b"\xfe\xff\xff") == -2
    v = btf.value(empty, b"\xcd\xcc\xcc\x3d")
    assert v == b"\xcd\xcc\xcc\x3d" and isinstance(v, btf_mod.RawBytes)


def _inner(b: BtfBuilder, u32: int) -> int:
    return b.struct("t", 4, [("x", u32, 0)])


@pytest.mark.parametrize(
    ("what", "build", "message"),
    [
        ("member past the end", lambda b, u32: b.struct("s", 4, [("a", u32, 32)]), "lies past the 4 bytes"),
        ("bitfield past the end", lambda b, u32: b.struct("s", 4, [("a", u32, 30, 3)], kflag=True),
         "3 bits at bit 30"),
        ("bitfield of a struct", lambda b, u32: b.struct("s", 8, [("a", _inner(b, u32), 0, 3)], kflag=True),
         "its type is struct"),
        ("struct at a bit offset", lambda b, u32: b.struct("s", 8, [("a", _inner(b, u32), 3)]),
         "its type is struct"),
        ("two members of one name", lambda b, u32: b.struct("s", 8, [("a", u32, 0), ("a", u32, 32)]),
         "two members named 'a'"),
        ("a function", lambda b, u32: b.add(FUNC_PROTO, "", u32), "has no value to decode"),
        ("2**32-1 empty structs", lambda b, u32: b.array(b.struct("e", 0, []), 0xFFFFFFFF),
         "more than 65,536 values"),
        ("100,000 u32", lambda b, u32: b.array(u32, 100_000), "more than 65,536 values"),
    ],
)  # fmt: skip
def test_value_refuses_what_cannot_be_decoded_with_a_typed_error(
    what: str, build: Callable[[BtfBuilder, int], int], message: str
) -> None:
    b = BtfBuilder()
    t = build(b, b.int_("u32", 4))
    btf = b.parse()
    with pytest.raises(btf_mod.BtfError, match=message):
        btf.value(t, bytes(min(btf.size(t), 1 << 20)) if btf.type(t).kind != "func_proto" else b"")


def test_value_needs_all_the_bytes_of_its_type() -> None:
    b = BtfBuilder()
    u64 = b.int_("u64", 8)
    with pytest.raises(
        btf_mod.BtfError, match=r"4 bytes given for a value of BTF type 1 \(u64\), which has 8"
    ):
        b.parse().value(u64, bytes(4))


def test_value_decoders_are_built_once_per_type(monkeypatch: pytest.MonkeyPatch) -> None:
    b, top = _dag(5)  # 8**5 u64 leaves: 37,449 values, one decoder per type
    btf = b.parse()
    built: list[int] = []
    real = ValueDecoder._build_decoder

    def counting(self: ValueDecoder, type_id: int, depth: int, busy: set[int]) -> Any:
        built.append(type_id)
        return real(self, type_id, depth, busy)

    monkeypatch.setattr(ValueDecoder, "_build_decoder", counting)
    raw = np.arange(8**5, dtype="<u8").tobytes()
    v = btf.value(top, raw)
    assert sorted(built) == list(range(1, top + 1))
    assert v["f7"]["f7"]["f7"]["f7"]["f7"] == 8**5 - 1
    with pytest.raises(btf_mod.BtfError, match="more than 65,536 values"):
        b6, top6 = _dag(6)
        b6.parse().value(top6, bytes(8 * 8**6))


def test_btf_codec_takes_enumerator_names_and_refuses_what_numpy_cannot_hold() -> None:
    b = BtfBuilder()
    color = b.enum("color", 4, {"RED": 1, "BLUE": -3})
    u32 = b.int_("u32", 4)
    bits = b.struct("bits", 4, [("a", u32, 0, 3)], kflag=True)
    btf = b.parse()
    codec = btf_mod.btf_codec(btf, color, 4)
    assert codec is not None
    assert codec.encode("BLUE") == struct.pack("<i", -3) and codec.encode(7) == struct.pack("<i", 7)
    with pytest.raises(PercpuError, match=r"'GREEN' is not an enumerator of enum color \(RED, BLUE\)"):
        codec.encode("GREEN")
    codec = btf_mod.btf_codec(btf, bits, 4)
    assert codec is not None and codec.value(b"\x05\0\0\0") == {"a": 5}
    assert codec.encode(memoryview(b"\x05\0\0\0")) == codec.encode(bytearray(b"\x05\0\0\0")) == b"\x05\0\0\0"
    with pytest.raises(PercpuError, match=r"numpy has no exact layout for it .* give its 4 bytes"):
        codec.encode({"a": 5})


# --- split BTF -------------------------------------------------------------------------------------------


def test_split_btf_continues_ids_and_strings_after_the_base() -> None:
    base = BtfBuilder()
    u32 = base.int_("unsigned int", 4)
    base_s = base.struct("base_s", 8, [("x", u32, 0), ("y", u32, 32)])
    split = BtfBuilder(base)
    td = split.typedef("mod_u32", u32)
    mod_s = split.struct("mod_s", 16, [("b", base_s, 0), ("n", td, 64), ("x", u32, 96)])
    assert (td, mod_s) == (3, 4)
    # Split string offsets start at the base's string section length: "mod_u32" is the first split string,
    # while "x" (a base string) is reused at its base offset.
    assert split.name("mod_u32") == len(base.strings)
    assert split.name("x") < len(base.strings)

    base_btf = parse_btf(base.blob())
    btf = parse_btf(split.blob(), base_btf)
    assert base_btf.count == 2 and btf.count == 4
    assert btf.type(u32) is base_btf.type(u32)
    assert btf.type(td).name == "mod_u32" and btf.type(td).id == td
    assert btf.find("base_s") == base_s and btf.find("mod_s", "struct") == mod_s
    assert btf.type_name(td) == "mod_u32" and btf.type_name(mod_s) == "struct mod_s"
    assert btf.dtype(td) == np.dtype("<u4")
    d = btf.dtype(mod_s)
    assert d is not None and d.names == ("b", "n", "x") and d.itemsize == 16
    assert d["b"] == btf.dtype(base_s) == base_btf.dtype(base_s)
    assert offsets(d) == {"b": 0, "n": 8, "x": 12}
    with pytest.raises(PercpuError, match="does not exist"):
        btf.type(5)
    with pytest.raises(PercpuError, match="does not exist"):
        btf.type(0)


def test_split_on_split_btf() -> None:
    base = BtfBuilder()
    u8 = base.int_("u8", 1)
    mid = BtfBuilder(base)
    arr = mid.array(u8, 4)
    top = BtfBuilder(mid)
    s = top.struct("top_s", 4, [("bytes", arr, 0)])
    btf = top.parse()
    assert btf.count == 3 and btf.type(s).name == "top_s"
    assert btf.dtype(s) == dt({"names": ["bytes"], "formats": [("<u1", (4,))], "offsets": [0], "itemsize": 4})


# --- codec_from_btf --------------------------------------------------------------------------------------


def test_codec_from_btf(monkeypatch: pytest.MonkeyPatch) -> None:
    b = BtfBuilder()
    u32 = b.int_("u32", 4)
    s = b.struct("stat_val", 8, [("hits", u32, 0), ("misses", u32, 32)])
    bits = b.struct("bits", 4, [("a", u32, 0, 1)], kflag=True)
    loop = b.add(TYPEDEF, "loop", b.next_id)
    fwd = b.add(FWD, "opaque")
    btf = b.parse()
    monkeypatch.setattr(btf_mod, "load_btf", lambda _btf_id: btf)
    codec = btf_mod.codec_from_btf(1, s, 8)
    assert codec is not None and codec.size == 8 and codec.name == "struct stat_val"
    assert btf_mod.codec_from_btf(1, s, 16) is None  # the map's own size disagrees
    # Bitfields: the raw storage, named by its type, given and returned as bytes.
    codec = btf_mod.codec_from_btf(1, bits, 4)
    assert codec is not None and codec.dtype == np.dtype("V4") and codec.name == "struct bits"
    assert codec.encode(b"\x01\0\0\0") == b"\x01\0\0\0"
    assert btf_mod.codec_from_btf(1, loop, 4) is None
    assert btf_mod.codec_from_btf(1, fwd, 4) is None
    assert btf_mod.codec_from_btf(1, 99, 4) is None


# --- malformed input -------------------------------------------------------------------------------------


def good() -> BtfBuilder:
    b = BtfBuilder()
    u32 = b.int_("u32", 4)
    b.struct("s", 8, [("a", u32, 0), ("b", u32, 32)])
    return b


MALFORMED: dict[str, Callable[[], bytes]] = {
    "empty": lambda: b"",
    "truncated header": lambda: good().blob()[:20],
    "bad magic": lambda: good().blob(magic=0x9FEB),
    "version 2": lambda: good().blob(version=2),
    "header length too small": lambda: good().blob(hdr_len=8),
    "header length past the end": lambda: good().blob(hdr_len=4096),
    "type section past the end": lambda: good().blob(type_len=len(good().types) + 12),
    "blob cut inside the type section": lambda: good().blob()[: HDR_LEN + 20],
    "type record cut by the section length": lambda: good().blob(type_len=len(good().types) - 4),
    "members past the type section": lambda: good().blob(type_len=len(good().types) - 12),
    "string section past the end": lambda: good().blob(str_len=len(good().strings) + 1),
    "unknown kind": lambda: _with(lambda b: b.add(31, "x")),
    "func_proto params past the type section": lambda: _with(lambda b: b.add(FUNC_PROTO, "", 1, vlen=3)),
    "enum values past the type section": lambda: _with(lambda b: b.add(ENUM, "e", 4, vlen=2)),
    "type name offset out of range": lambda: _with(lambda b: b.types.__setitem__(slice(0, 4), b"\xff\0\0\0")),
    "member name offset out of range": lambda: _with(lambda b: b.struct("t", 4, [("a", 1, 0)]), 12),
}


def _with(change: Callable[[BtfBuilder], object], patch_at: int | None = None) -> bytes:
    b = good()
    start = len(b.types)
    change(b)
    if patch_at is not None:  # point a name offset at the end of the string section
        b.types[start + patch_at : start + patch_at + 4] = struct.pack("<I", len(b.strings))
    return b.blob()


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_blob_raises_percpu_error(name: str) -> None:
    raw = MALFORMED[name]()
    with pytest.raises(PercpuError):
        parse_btf(raw)


def test_malformed_messages_say_what_is_wrong() -> None:
    with pytest.raises(PercpuError, match="not BTF"):
        parse_btf(good().blob(magic=0x1234))
    with pytest.raises(PercpuError, match="too short"):
        parse_btf(b"\x9f\xeb\x01\x00")
    with pytest.raises(PercpuError, match="type section"):
        parse_btf(good().blob(type_len=len(good().types) - 4))
    with pytest.raises(PercpuError, match="string offset"):
        parse_btf(MALFORMED["type name offset out of range"]())


def test_malformed_struct_layout_raises_percpu_error() -> None:
    b = BtfBuilder()
    u64 = b.int_("u64", 8)
    past = b.struct("past", 8, [("a", u64, 32)])  # an 8-byte member at offset 4 of an 8-byte struct
    twice = b.struct("twice", 16, [("a", u64, 0), ("a", u64, 64)])
    btf = b.parse()
    with pytest.raises(PercpuError, match="struct past"):
        btf.dtype(past)
    with pytest.raises(PercpuError, match="struct twice"):
        btf.dtype(twice)


def test_split_string_offset_past_both_sections() -> None:
    base = good()
    split = BtfBuilder(base)
    split.typedef("t", 1)
    split.types[0:4] = struct.pack("<I", len(base.strings) + len(split.strings))
    with pytest.raises(PercpuError, match="string offset"):
        parse_btf(split.blob(), parse_btf(base.blob()))


def test_type_id_out_of_range() -> None:
    b = BtfBuilder()
    u32 = b.int_("u32", 4)
    s = b.struct("s", 8, [("a", u32, 0), ("b", 99, 32)])
    td = b.typedef("dangling", 42)
    arr = b.array(77, 2)
    btf = b.parse()
    for call in (btf.dtype, btf.size, btf.describe, btf.enum_values):
        with pytest.raises(PercpuError, match="does not exist"):
            call(td)
    with pytest.raises(PercpuError, match="does not exist"):
        btf.dtype(s)
    with pytest.raises(PercpuError, match="does not exist"):
        btf.dtype(arr)
    with pytest.raises(PercpuError, match="does not exist"):
        btf.size(arr)
    with pytest.raises(PercpuError, match="does not exist"):
        btf.type_name(99)
    with pytest.raises(PercpuError, match="does not exist"):
        btf.type(-1)


def _cycles() -> tuple[Btf, dict[str, int]]:
    b = BtfBuilder()
    u32 = b.int_("u32", 4)
    ids = {
        "typedef to itself": b.add(TYPEDEF, "loop", b.next_id),
        "const to itself": b.add(CONST, "", b.next_id),
        "array of itself": b.add(ARRAY, "", 0, data=struct.pack("<III", b.next_id, u32, 2)),
        "struct holding itself": b.struct("rec", 8, [("a", u32, 0), ("self", b.next_id, 32)]),
    }
    # typedef a -> const b -> typedef a
    a = b.next_id
    ids["typedef/const loop"] = b.typedef("a", a + 1)
    b.const(a)
    return b.parse(), ids


@pytest.mark.parametrize("name", ["typedef to itself", "const to itself", "array of itself",
                                  "struct holding itself", "typedef/const loop"])  # fmt: skip
@pytest.mark.parametrize("method", ["dtype", "size", "type_name", "describe", "enum_values"])
def test_reference_cycle_raises_percpu_error(name: str, method: str) -> None:
    btf, ids = _cycles()
    call = getattr(btf, method)
    if method == "type_name" and name in ("typedef to itself", "struct holding itself", "typedef/const loop"):
        assert call(ids[name])  # named types print by name without following the reference
        return
    if method in ("size", "enum_values", "describe") and name == "struct holding itself":
        call(ids[name])  # a struct's size is its own field; only laying it out recurses
        return
    if method == "enum_values" and name == "array of itself":
        assert call(ids[name]) == {}
        return
    with pytest.raises(PercpuError, match=r"reference cycle\?"):
        call(ids[name])


@pytest.mark.parametrize("name", ["typedef to itself", "const to itself", "array of itself",
                                  "struct holding itself", "typedef/const loop"])  # fmt: skip
def test_reference_cycle_in_a_value_raises_percpu_error(name: str) -> None:
    btf, ids = _cycles()
    # The struct holds itself past its own 8 bytes: refused for that before the cycle is reached.
    with pytest.raises(PercpuError, match=r"reference cycle\?|lies past the 8 bytes"):
        btf.value(ids[name], bytes(64))


# --- shared types, huge layouts: linear time, typed errors -----------------------------------------------


def _dag(levels: int, fan: int = 8) -> tuple[BtfBuilder, int]:
    """struct s_k { struct s_{k-1} f0..f7; } down to a u64: kernel-valid BTF in which each struct uses
    the one below it ``fan`` times, so a walk that does not remember types visits fan**levels leaves."""
    b = BtfBuilder()
    t = b.int_("u64", 8)
    size = 8
    for level in range(levels):
        t = b.struct(f"s{level}", size * fan, [(f"f{i}", t, i * size * 8) for i in range(fan)])
        size *= fan
    return b, t


def test_dag_shaped_btf_lays_out_each_type_once(monkeypatch: pytest.MonkeyPatch) -> None:
    b, top = _dag(5)
    btf = b.parse()
    built: list[int] = []
    real = Btf._build

    def counting(self: Btf, type_id: int, depth: int, busy: set[int]) -> Any:
        built.append(type_id)
        return real(self, type_id, depth, busy)

    monkeypatch.setattr(Btf, "_build", counting)
    d = btf.dtype(top)
    assert d is not None and d.itemsize == 8 * 8**5
    assert sorted(built) == list(range(1, top + 1))  # one visit per type, not 8**5
    assert d["f7"]["f7"]["f7"]["f7"]["f0"] == np.dtype("<u8")
    built.clear()
    assert btf.dtype(top) is d and not built  # remembered
    assert btf.size(top) == 8 * 8**5


def test_a_value_of_too_many_fields_is_refused_with_a_typed_error() -> None:
    b, top = _dag(6)  # 8**6 u64 leaves, 299,593 fields flattened; 8**5 would fit
    btf = b.parse()
    with pytest.raises(btf_mod.BtfError, match=r"more than 65,536 fields") as info:
        btf.dtype(top)
    assert info.value.type_id == top and isinstance(info.value, PercpuError)
    with pytest.raises(btf_mod.BtfError):
        btf_mod.btf_codec(btf, top, 8 * 8**6)
    assert btf_mod.btf_codec(btf, top, 8) is None  # the map's size disagrees: nothing is built


@pytest.mark.parametrize(
    ("what", "build"),
    [
        ("array of 2**32-1 u64", lambda b, u64: b.array(u64, 0xFFFFFFFF)),
        ("array of huge arrays", lambda b, u64: b.array(b.array(u64, 0xFFFFFFFF), 0xFFFFFFFF)),
        ("struct of 4 GiB", lambda b, u64: b.struct("huge", 0xFFFFFFFF, [("a", u64, 0)])),
        ("struct holding a huge array", lambda b, u64: b.struct("s", 16, [("a", b.array(u64, 1 << 31), 0)])),
        ("char[2**32-1]", lambda b, u64: b.array(b.int_("char", 1, INT_SIGNED), 0xFFFFFFFF)),
    ],
)
def test_what_numpy_cannot_hold_is_a_btf_error(what: str, build: Callable[[BtfBuilder, int], int]) -> None:
    b = BtfBuilder()
    t = build(b, b.int_("u64", 8))
    btf = b.parse()
    with pytest.raises(btf_mod.BtfError, match=f"BTF type {t} "):
        btf.dtype(t)


def test_a_string_section_without_nul_is_refused_not_scanned_for_each_name() -> None:
    b = BtfBuilder()
    b.strings = bytearray(b"\0" + b"x" * 4096)  # no NUL after the first byte
    b.add(INT, "", 4, data=struct.pack("<I", 32))
    b.types[0:4] = struct.pack("<I", 1)
    with pytest.raises(btf_mod.BtfError, match="not NUL-terminated"):
        parse_btf(b.blob())
