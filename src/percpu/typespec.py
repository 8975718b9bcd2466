"""Key and value types written as text, for maps that carry no BTF (bpftrace's, bcc's, libbpf-tools').

The syntax is C's, with the kernel's short names::

    u64            an unsigned 64-bit integer (u8 u16 u32 u64, any whole number of bytes: u24, u128)
    i32 / s32      a signed one (__s32, int32_t, int, long, ... also work)
    u32be          big-endian (network order); __be16, __be32 and __be64 too
    f64            a float (f32, float, double)
    char[16]       a C string; u8[16] is 16 numbers, bytes[16] 16 raw bytes shown as hex
    u64[4]         an array (u32[2][3] has shape (2, 3))
    struct {u32 pid; char comm[16]; u64 n}        a struct laid out as C lays it out (natural
    pid:u32,comm:char[16],n:u64                   alignment, padding); "packed struct {...}" has none

``u8`` is one byte, as the kernel's ``__u8`` (numpy's own ``"u8"`` is eight: spell numpy types as
``"<u8"`` or ``np.uint64``). :func:`parse_type` gives the codec; ``percpu.open_map(id, value="u64")``
accepts the same text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .codecs import Codec, Int, IntCodec, NumpyCodec
from .errors import TypeSpecError

__all__ = ["parse_type"]

# A spec is typed by a person; these bounds keep a hostile one (from a config file, say) cheap.
_MAX_TEXT = 4096
_MAX_DEPTH = 16
_MAX_FIELDS = 4096
_MAX_SIZE = 1 << 24  # bytes: far above any map value the kernel allows
_MAX_INT_BITS = 1024

_TOKEN = re.compile(
    r"\s*(?:(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<num>0[xX][0-9a-fA-F]+|\d+)|(?P<punct>[{}\[\];,:]))"
)

# C spellings: (size in bytes, signed); long is the LP64 long of both architectures percpu supports.
_C_INTS = {
    "char": (1, True),
    "signed char": (1, True),
    "unsigned char": (1, False),
    "short": (2, True),
    "short int": (2, True),
    "unsigned short": (2, False),
    "unsigned short int": (2, False),
    "int": (4, True),
    "signed": (4, True),
    "signed int": (4, True),
    "unsigned": (4, False),
    "unsigned int": (4, False),
    "long": (8, True),
    "long int": (8, True),
    "unsigned long": (8, False),
    "unsigned long int": (8, False),
    "long long": (8, True),
    "unsigned long long": (8, False),
    "size_t": (8, False),
    "ssize_t": (8, True),
    "pid_t": (4, True),
    "uid_t": (4, False),
    "gid_t": (4, False),
}
_C_WORDS = frozenset(w for name in _C_INTS for w in name.split())
_FLOATS = {"f16": 2, "f32": 4, "f64": 8, "float": 4, "double": 8}
_KERNEL_INT = re.compile(r"(?:__)?(?P<sign>[usi])(?P<bits>\d+)(?P<order>be|le)?")
_KERNEL_ENDIAN = re.compile(r"(?:__)?(?P<order>be|le)(?P<bits>\d+)")
_STDINT = re.compile(r"(?P<sign>u?)int(?P<bits>\d+)(?:_t)?")


@dataclass(frozen=True)
class _Scalar:
    kind: str  # "int", "float", "char", "bool", "byte"
    size: int
    signed: bool = False
    big: bool = False

    @property
    def align(self) -> int:
        return self.size if self.size in (1, 2, 4, 8) else 1

    def spelling(self) -> str:
        if self.kind == "int":
            return f"{'i' if self.signed else 'u'}{self.size * 8}{'be' if self.big else ''}"
        if self.kind == "float":
            return f"f{self.size * 8}"
        return {"char": "char", "bool": "bool", "byte": "bytes"}[self.kind]


@dataclass(frozen=True)
class _Array:
    elem: _Node
    count: int


@dataclass(frozen=True)
class _Struct:
    fields: tuple[tuple[str, _Node], ...]
    packed: bool


_Node = _Scalar | _Array | _Struct


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []  # (kind, text, column)
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                if not text[pos:].strip():
                    break
                col = pos + len(text[pos:]) - len(text[pos:].lstrip())
                raise self.error(col, f"unexpected character {text[col]!r}")
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        self.i = 0
        self.fields = 0

    def error(self, col: int, what: str) -> TypeSpecError:
        return TypeSpecError(f"type {self.text!r}, column {col + 1}: {what}")

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "", len(self.text))

    def take(self, text: str | None = None, kind: str | None = None) -> tuple[str, str, int]:
        tok = self.peek()
        if (text is not None and tok[1] != text) or (kind is not None and tok[0] != kind):
            want = (
                repr(text)
                if text is not None
                else {"word": "a name", "num": "a number"}.get(kind or "", kind)
            )
            raise self.error(tok[2], f"expected {want}, found {tok[1]!r}" if tok[1] else f"expected {want}")
        self.i += 1
        return tok

    # spec := field-list | type
    def spec(self) -> _Node:
        if not self.tokens:
            raise self.error(0, "empty; give a type such as u64, char[16] or struct {u32 pid; u64 n}")
        if any(t[1] == ":" for t in self.tokens):
            node: _Node = _Struct(self.members(top=True), packed=False)
        else:
            node = self.type(0)
        tok = self.peek()
        if tok[0] != "end":
            hint = "; a list of fields needs names: a:i32,b:u32" if tok[1] == "," else ""
            raise self.error(tok[2], f"unexpected {tok[1]!r} after a complete type{hint}")
        return node

    def type(self, depth: int) -> _Node:
        return self.dims(self.base(depth))

    def base(self, depth: int) -> _Node:
        tok = self.peek()
        if depth > _MAX_DEPTH:  # every nesting passes here, in either field syntax
            raise self.error(tok[2], f"nested more than {_MAX_DEPTH} deep")
        packed = False
        if tok[1] == "packed":
            self.i += 1
            packed = True
            tok = self.peek()
            if tok[1] not in ("struct", "{"):
                raise self.error(tok[2], "expected struct after packed")
        if tok[1] == "struct":
            self.i += 1
            if self.peek()[0] == "word":
                self.i += 1  # a tag: struct stat_val {...}; only the layout matters
            tok = self.peek()
        if tok[1] == "{":
            self.i += 1
            fields = self.members(top=False, depth=depth)
            self.take("}")
            return _Struct(fields, packed)
        if tok[0] != "word":
            raise self.error(tok[2], f"expected a type, found {tok[1]!r}" if tok[1] else "expected a type")
        return self.scalar()

    def scalar(self) -> _Scalar:
        _kind, word, col = self.take(kind="word")
        if word in _C_WORDS:  # multi-word C names: unsigned long long
            words = [word]
            while self.peek()[0] == "word" and " ".join([*words, self.peek()[1]]) in _C_INTS:
                words.append(self.take()[1])
            name = " ".join(words)
            if name in _C_INTS:
                size, signed = _C_INTS[name]
                return _Scalar("char" if name == "char" else "int", size, signed)
        if word in ("bool", "_Bool"):
            return _Scalar("bool", 1)
        if word in ("bytes", "byte"):
            return _Scalar("byte", 1)
        if word in _FLOATS:
            return _Scalar("float", _FLOATS[word], True)
        for pattern in (_KERNEL_INT, _KERNEL_ENDIAN, _STDINT):
            m = pattern.fullmatch(word)
            if m is None:
                continue
            bits = int(m["bits"])
            if bits % 8 or not 8 <= bits <= _MAX_INT_BITS:
                raise self.error(col, f"{word}: integer widths are whole bytes, 8 to {_MAX_INT_BITS} bits")
            groups = m.groupdict()
            signed = groups.get("sign") in ("s", "i") if pattern is not _STDINT else not groups["sign"]
            return _Scalar("int", bits // 8, signed, groups.get("order") == "be")
        raise self.error(
            col,
            f"unknown type {word!r}; integers are u8..u64, i8..i64 (any whole number of bytes: u24), "
            "u32be for big-endian, f32/f64, char, bool, bytes, or a struct {...}",
        )

    def dims(self, node: _Node) -> _Node:
        counts = []
        while self.peek()[1] == "[":
            self.i += 1
            _k, num, col = self.take(kind="num")
            n = int(num, 16) if num[:2].lower() == "0x" else int(num)  # 016 is sixteen, not octal
            if not 1 <= n <= _MAX_SIZE:
                raise self.error(col, f"array length {n}: give 1 to {_MAX_SIZE}")
            counts.append(n)
            self.take("]")
        for n in reversed(counts):  # u32[2][3]: two arrays of three
            node = _Array(node, n)
        return node

    def members(self, *, top: bool, depth: int = 0) -> tuple[tuple[str, _Node], ...]:
        fields: list[tuple[str, _Node]] = []
        seen: set[str] = set()
        end = "end" if top else "}"
        while True:
            tok = self.peek()
            if (tok[0] if top else tok[1]) == end:
                break
            if tok[0] == "word" and self.i + 1 < len(self.tokens) and self.tokens[self.i + 1][1] == ":":
                name, col = tok[1], tok[2]  # name: type
                self.i += 2
                node = self.type(depth + 1)
            else:  # type name[dims]
                node = self.base(depth + 1)
                _k, name, col = self.take(kind="word")
                node = self.dims(node)
            if name in seen:
                raise self.error(col, f"field {name!r} appears twice")
            seen.add(name)
            fields.append((name, node))
            self.fields += 1
            if self.fields > _MAX_FIELDS:
                raise self.error(col, f"more than {_MAX_FIELDS} fields")
            sep = self.peek()
            if sep[1] in (";", ","):
                self.i += 1
            elif (sep[0] if top else sep[1]) != end:
                raise self.error(sep[2], f"expected ';' or ',' between fields, found {sep[1]!r}")
        if not fields:
            raise self.error(self.peek()[2], "a struct needs at least one field")
        return tuple(fields)


def _layout(node: _Node) -> tuple[np.dtype[Any], int, str, str]:
    """(numpy dtype, alignment, spelling, array suffix) of a node: u32[2] is ("u32", "[2]")."""
    if isinstance(node, _Scalar):
        if node.kind == "int":
            if node.size not in (1, 2, 4, 8):
                raise TypeSpecError(
                    f"{node.spelling()} inside a struct or array: numpy holds 1, 2, 4 and 8-byte integers "
                    f"there; declare it as u8[{node.size}] (its bytes) or use it as the whole key or value"
                )
            order = ">" if node.big else "<"
            dt = np.dtype(f"{order}{'i' if node.signed else 'u'}{node.size}")
        elif node.kind == "float":
            dt = np.dtype(f"<f{node.size}")
        elif node.kind == "char":
            dt = np.dtype("S1")
        elif node.kind == "bool":
            dt = np.dtype("?")
        else:
            dt = np.dtype((np.void, 1))
        return dt, node.align, node.spelling(), ""
    if isinstance(node, _Array):
        elem, align, name, dims = _layout(node.elem)
        if elem.itemsize * node.count > _MAX_SIZE:
            raise TypeSpecError(f"{name}[{node.count}] is larger than {_MAX_SIZE} bytes")
        if isinstance(node.elem, _Scalar) and node.elem.kind in ("char", "byte"):
            dt = np.dtype(f"{'S' if node.elem.kind == 'char' else 'V'}{node.count}")
        else:
            dt = np.dtype((elem.base, (node.count, *elem.shape)))
        return dt, align, name, f"[{node.count}]{dims}"
    names, formats, offsets, spelled = [], [], [], []
    off = 0
    align = 1
    for fname, fnode in node.fields:
        dt, a, spelling, dims = _layout(fnode)
        a = 1 if node.packed else a
        off = (off + a - 1) // a * a
        names.append(fname)
        formats.append(dt)
        offsets.append(off)
        spelled.append(f"{spelling} {fname}{dims}")
        off += dt.itemsize
        align = max(align, a)
        if off > _MAX_SIZE:
            raise TypeSpecError(f"struct is larger than {_MAX_SIZE} bytes")
    size = (off + align - 1) // align * align
    dt = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": size})
    return dt, align, f"{'packed ' if node.packed else ''}struct {{{'; '.join(spelled)}}}", ""


def parse_type(text: str) -> Codec:
    """The codec for a type written as text (see the module's documentation for the syntax).

    Raises :class:`~percpu.TypeSpecError` saying where and what was expected.
    """
    if not isinstance(text, str):
        raise TypeSpecError(f"a type spec is text, not {type(text).__name__}")
    if len(text) > _MAX_TEXT:
        raise TypeSpecError(f"type spec of {len(text)} characters; at most {_MAX_TEXT}")
    node = _Parser(text).spec()
    if isinstance(node, _Scalar) and node.kind == "int":
        codec: Codec = IntCodec(Int(node.size, node.signed, "big" if node.big else "little"))
        codec.name = node.spelling()
        return codec
    try:
        dt, _align, name, dims = _layout(node)
    except TypeSpecError as exc:
        raise TypeSpecError(f"type {text!r}: {exc}") from None
    codec = NumpyCodec(dt)
    codec.name = name + dims
    return codec
