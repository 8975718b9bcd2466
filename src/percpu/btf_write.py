"""BTF written for the maps percpu creates: the types of their keys and values, as libbpf and cilium/ebpf
give the maps they create, so that every reader (``percpu``, ``bpftool``, ``bpftrace``) shows them typed.

A declared key or value type (see :mod:`percpu.values`) becomes C types in one blob:

==========================================  ============================================================
declared                                    BTF
==========================================  ============================================================
``np.uint32``, ``np.int64``, ...            ``__u32``, ``__s64``: typedefs of ``unsigned int``, ...
``np.bool_``                                ``_Bool``
``np.float16``, ``float32``, ``float64``    ``_Float16``, ``float``, ``double``
``"S16"`` (numpy bytes, C's ``char[16]``)   ``char[16]``
``bytes``, ``"V16"`` (raw bytes)            ``__u8[16]``
sub-arrays (``("<u4", (2, 3))``)            arrays of arrays: ``__u32[2][3]``
structured dtypes                           a struct, members at the dtype's offsets, padding kept,
                                            named ``<map name>_key`` / ``<map name>_value`` (nested
                                            ones anonymous)
``percpu.Int(1, 2, 4, 8 or 16 bytes)``      ``__u8`` .. ``__s64``, ``unsigned __int128``, ``__int128``
ctypes types                                the same; a ``Structure`` or ``Union`` named by its class
==========================================  ============================================================

A type BTF cannot describe exactly gets no BTF at all, never an approximation: big-endian integers (BTF
has no byte order), integers of 3, 5, 6, 7 or more than 16 bytes, complex numbers, ``long double``,
numpy text (``"U"``) and dates, ctypes bitfields and pointers, fields that overlap, an empty array, a
field name that is not a C identifier (the kernel refuses those: ``[A-Za-z_][A-Za-z0-9_]*``), and a float
member at an offset the kernel refuses (not a multiple of ``min(8, size)``). Such a map is created
without BTF, as before; :func:`unrepresentable` says why.

The layout of a blob is ``include/uapi/linux/btf.h``'s: a header, the type records, the strings. The
records, constants and the bits of each packed word come from :mod:`percpu._uapi`, generated from that
header. This module writes; :mod:`percpu.btf` reads.
"""

from __future__ import annotations

import ctypes
import re
import sys
from typing import Any, NamedTuple

import numpy as np

from ._uapi import (
    BTF_INFO_KFLAG_BITS,
    BTF_INFO_KIND_BITS,
    BTF_INFO_VLEN_BITS,
    BTF_INT_BITS_BITS,
    BTF_INT_BOOL,
    BTF_INT_ENCODING_BITS,
    BTF_INT_OFFSET_BITS,
    BTF_INT_SIGNED,
    BTF_KIND_ARRAY,
    BTF_KIND_FLOAT,
    BTF_KIND_INT,
    BTF_KIND_STRUCT,
    BTF_KIND_TYPEDEF,
    BTF_KIND_UNION,
    BTF_MAGIC,
    BTF_MAX_NAME_OFFSET,
    BTF_MAX_TYPE,
    BTF_MAX_VLEN,
    BTF_VERSION,
    BtfArray,
    BtfHeader,
    BtfMember,
    BtfType,
)
from .codecs import Codec, CtypesCodec, IntCodec, NumpyCodec

__all__ = ["BtfWriter", "MapBtf", "map_btf", "unrepresentable"]

# The kernel's btf_name_valid_identifier(): an ASCII C identifier (6.5 and later also take '.', older
# kernels do not, so names here never hold one).
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
# The kernel finds special fields of a map value (bpf_spin_lock, bpf_timer, bpf_list_head, ...) by the
# names of struct types; a struct percpu names is never taken for one.
_RESERVED_PREFIX = "bpf_"
# C's names for the integers, as clang writes them into BTF: (size, signed) -> (int name, typedef name)
_INTS = {
    (1, False): ("unsigned char", "__u8"),
    (1, True): ("signed char", "__s8"),
    (2, False): ("unsigned short", "__u16"),
    (2, True): ("short", "__s16"),
    (4, False): ("unsigned int", "__u32"),
    (4, True): ("int", "__s32"),
    (8, False): ("unsigned long long", "__u64"),
    (8, True): ("long long", "__s64"),
    (16, False): ("unsigned __int128", ""),
    (16, True): ("__int128", ""),
}
_FLOATS = {2: "_Float16", 4: "float", 8: "double"}
_NATIVE = "__ctype_le__" if sys.byteorder == "little" else "__ctype_be__"
# ctypes' type codes of its simple types: (kind, signed); sizes come from ctypes.sizeof
_CTYPE_CODES = {
    "b": ("int", True),
    "h": ("int", True),
    "i": ("int", True),
    "l": ("int", True),
    "q": ("int", True),
    "B": ("int", False),
    "H": ("int", False),
    "I": ("int", False),
    "L": ("int", False),
    "Q": ("int", False),
    "?": ("bool", False),
    "c": ("char", True),
    "f": ("float", True),
    "d": ("float", True),
}


class _NoBtf(Exception):
    """A type BTF cannot describe exactly; the message says what and why."""


def _pack(bits: int, value: int, what: str) -> int:
    """``value`` placed in the bits ``bits`` of a packed word (the mask one of btf.h's macros reads)."""
    shift = (bits & -bits).bit_length() - 1
    if value < 0 or (value << shift) & ~bits:
        raise _NoBtf(f"{what} {value} does not fit BTF's {bin(bits).count('1')}-bit field")
    return value << shift


def _identifier(name: str, what: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        raise _NoBtf(
            f"{what} {name!r} is not a C identifier ([A-Za-z_][A-Za-z0-9_]*), which the kernel requires "
            "of BTF names"
        )
    return name


def _type_name(name: str) -> str:
    """A struct's name from a name of percpu's choosing (a map's, a ctypes class's): anonymous where it
    would not be a C identifier, or could be taken for one of the kernel's special structs."""
    if not _IDENTIFIER.fullmatch(name) or name.startswith(_RESERVED_PREFIX):
        return ""
    return name


class MapBtf(NamedTuple):
    """A BTF blob holding a map's key and value types, and their type ids in it."""

    blob: bytes
    key_type_id: int
    value_type_id: int


class BtfWriter:
    """Builds one BTF blob. Each ``add`` returns the id of the type it describes (types already written
    are reused) or raises :class:`_NoBtf`; :meth:`blob` gives the bytes to load."""

    def __init__(self) -> None:
        self._types = bytearray()
        self._strings = bytearray(b"\0")  # offset 0 is the empty name, as btf.h requires
        self._offsets: dict[str, int] = {"": 0}
        self._count = 0
        self._known: dict[Any, int] = {}

    # --- records ------------------------------------------------------------------------------------

    def _name(self, name: str) -> int:
        off = self._offsets.get(name)
        if off is None:
            off = len(self._strings)
            if off > BTF_MAX_NAME_OFFSET:
                raise _NoBtf(
                    f"more names than BTF's string section can address ({BTF_MAX_NAME_OFFSET} bytes)"
                )
            self._strings += name.encode("ascii") + b"\0"
            self._offsets[name] = off
        return off

    def _record(self, kind: int, name: str, size_or_type: int, vlen: int = 0, tail: bytes = b"") -> int:
        if self._count >= BTF_MAX_TYPE:
            raise _NoBtf(f"more than BTF's {BTF_MAX_TYPE} types")
        info = (
            _pack(BTF_INFO_KIND_BITS, kind, "kind")
            | _pack(BTF_INFO_VLEN_BITS, vlen, "member count")
            | _pack(BTF_INFO_KFLAG_BITS, 0, "kind flag")
        )
        t = BtfType(name_off=self._name(name), info=info)
        t.size = size_or_type  # ``type`` for a typedef: the same word (an anonymous union in btf.h)
        self._types += bytes(t) + tail
        self._count += 1
        return self._count

    def _once(self, key: Any, make: Any) -> int:
        known = self._known.get(key)
        if known is None:
            known = self._known[key] = make()
        return known

    def int_(self, size: int, signed: bool) -> int:
        """``__u32`` and its kin: a typedef of C's own integer, as ``<linux/types.h>`` has it (a typedef,
        not the C type, so that an array of ``__u8`` stays numbers where ``unsigned char[16]`` reads as
        text)."""
        if (size, signed) not in _INTS:
            raise _NoBtf(f"a {size}-byte integer has no BTF type (BTF integers are 1, 2, 4, 8 or 16 bytes)")
        cname, typedef = _INTS[(size, signed)]
        base = self._once(
            ("int", size, signed), lambda: self._int(cname, size, BTF_INT_SIGNED if signed else 0)
        )
        if not typedef:
            return base
        return self._once(("typedef", typedef), lambda: self._record(BTF_KIND_TYPEDEF, typedef, base))

    def _int(self, name: str, size: int, encoding: int) -> int:
        data = (
            _pack(BTF_INT_ENCODING_BITS, encoding, "encoding")
            | _pack(BTF_INT_OFFSET_BITS, 0, "bit offset")
            | _pack(BTF_INT_BITS_BITS, size * 8, "bit count")
        )
        return self._record(BTF_KIND_INT, name, size, tail=data.to_bytes(4, sys.byteorder))

    def bool_(self) -> int:
        return self._once("_Bool", lambda: self._int("_Bool", 1, BTF_INT_BOOL))

    def char(self) -> int:
        # clang's BPF target: char is signed, and that is how it writes it
        return self._once("char", lambda: self._int("char", 1, BTF_INT_SIGNED))

    def float_(self, size: int) -> int:
        if size not in _FLOATS:
            raise _NoBtf(f"a {size}-byte float has no exact BTF type here (2, 4 or 8 bytes)")
        return self._once(("float", size), lambda: self._record(BTF_KIND_FLOAT, _FLOATS[size], size))

    def array(self, elem: int, count: int) -> int:
        if count <= 0:
            raise _NoBtf("an array of no elements")
        index = self._once("index", lambda: self._int("__ARRAY_SIZE_TYPE__", 4, 0))

        def make() -> int:
            tail = bytes(BtfArray(type=elem, index_type=index, nelems=count))
            return self._record(BTF_KIND_ARRAY, "", 0, tail=tail)

        return self._once(("array", elem, count), make)

    def struct(
        self, name: str, size: int, members: list[tuple[str, int, int, bool]], union: bool = False
    ) -> int:
        """A struct (or union) of ``size`` bytes; members are (name, type id, byte offset, is a float)."""
        if len(members) > BTF_MAX_VLEN:
            raise _NoBtf(f"{len(members)} members: BTF holds at most {BTF_MAX_VLEN}")
        tail = bytearray()
        for mname, type_id, off, is_float in members:
            # btf_float_check_member(): the kernel takes a float only at a multiple of min(8, its size)
            fsize = self._float_size(type_id) if is_float else 0
            if fsize and off % min(8, fsize):
                raise _NoBtf(
                    f"float member {mname!r} at offset {off}: the kernel refuses a float not aligned to "
                    f"{min(8, fsize)} bytes"
                )
            tail += bytes(BtfMember(name_off=self._name(mname), type=type_id, offset=off * 8))
        kind = BTF_KIND_UNION if union else BTF_KIND_STRUCT
        return self._record(kind, name, size, vlen=len(members), tail=bytes(tail))

    def _float_size(self, type_id: int) -> int:
        for size in _FLOATS:
            if self._known.get(("float", size)) == type_id:
                return size
        return 0

    # --- declared types -----------------------------------------------------------------------------

    def codec(self, codec: Codec, name: str = "") -> int:
        """The type of a key or value codec; a struct at its top is called ``name`` (if it is a C
        identifier)."""
        if isinstance(codec, IntCodec):
            spec = codec.spec
            if spec.size > 1 and spec.byteorder != sys.byteorder:
                raise _NoBtf(
                    f"{codec.name} is {spec.byteorder}-endian; BTF integers are in the machine's order"
                )
            return self.int_(spec.size, spec.signed)
        if isinstance(codec, CtypesCodec):
            return self.ctype(codec.ctype)
        if isinstance(codec, NumpyCodec):  # BytesCodec and the text specs included
            return self.dtype(codec.dtype, name)
        raise _NoBtf(f"{type(codec).__name__} {codec.name} has no BTF writer")

    def dtype(self, dt: np.dtype[Any], name: str = "") -> int:
        """A numpy dtype's type; a structured one becomes a struct called ``name`` ('' is anonymous)."""
        if dt.subdtype is not None:
            base, shape = dt.subdtype
            t = self.dtype(base)
            for n in reversed(shape):
                t = self.array(t, n)
            return t
        if dt.names is not None:
            return self._once(("dtype", dt, name), lambda: self._record_dtype(dt, name))
        kind, size = dt.kind, dt.itemsize
        if size > 1 and not dt.isnative:
            raise _NoBtf(f"{dt} is not in the machine's byte order; BTF has none of its own")
        if kind == "b":
            return self.bool_()
        if kind in "iu":
            return self.int_(size, kind == "i")
        if kind == "f":
            return self.float_(size)
        if kind == "S":
            return self.array(self.char(), size)
        if kind == "V":
            return self.array(self.int_(1, False), size)
        raise _NoBtf(
            f"numpy {dt} has no C type that BTF describes (text, dates and complex numbers have none)"
        )

    def _record_dtype(self, dt: np.dtype[Any], name: str) -> int:
        assert dt.names is not None and dt.fields is not None
        placed = sorted(
            ((int(dt.fields[n][1]), i, n, dt.fields[n][0]) for i, n in enumerate(dt.names)),
            key=lambda f: (f[0], f[1]),
        )
        members: list[tuple[str, int, int, bool]] = []
        end, last = 0, ""
        for off, _i, fname, fdt in placed:
            _identifier(fname, "field")
            if fdt.itemsize == 0:
                raise _NoBtf(f"field {fname!r} has no bytes")
            if off < end:
                raise _NoBtf(f"fields {last!r} and {fname!r} overlap (a C struct's members do not)")
            members.append((fname, self.dtype(fdt), off, fdt.kind == "f" and fdt.subdtype is None))
            end, last = off + fdt.itemsize, fname
        if not members:
            raise _NoBtf("a struct of no fields")
        return self.struct(name, dt.itemsize, members)

    def ctype(self, t: Any) -> int:
        """A ctypes type's type: a Structure or Union named by its class, arrays, integers, floats."""
        if isinstance(t, type) and issubclass(t, ctypes.Array):
            elem: Any = t._type_
            count = int(getattr(t, "_length_", 0))
            if elem is ctypes.c_char:
                return self.array(self.char(), count)
            return self.array(self.ctype(elem), count)
        if isinstance(t, type) and issubclass(t, ctypes.Structure | ctypes.Union):
            return self._once(("ctype", t), lambda: self._record_ctype(t))
        if isinstance(t, type) and issubclass(t, ctypes._SimpleCData):
            if getattr(t, _NATIVE, t) is not t:
                raise _NoBtf(f"{t.__name__} is not in the machine's byte order; BTF has none of its own")
            code = getattr(t, "_type_", "")
            if code not in _CTYPE_CODES:
                raise _NoBtf(f"{t.__name__} has no C type that BTF describes exactly (pointers, long double)")
            kind, signed = _CTYPE_CODES[code]
            size = ctypes.sizeof(t)
            if kind == "bool":
                return self.bool_()
            if kind == "char":
                return self.char()
            if kind == "float":
                return self.float_(size)
            return self.int_(size, signed)
        raise _NoBtf(f"{t!r} is not a ctypes type BTF describes")

    def _record_ctype(self, t: Any) -> int:
        fields = getattr(t, "_fields_", None)
        if not fields:
            raise _NoBtf(f"{t.__name__} has no fields")
        union = issubclass(t, ctypes.Union)
        members: list[tuple[str, int, int, bool]] = []
        end, last = 0, ""
        for field in fields:
            fname, ftype = field[0], field[1]
            if len(field) > 2:
                raise _NoBtf(f"{t.__name__}.{fname} is a bitfield, which percpu does not write as BTF")
            _identifier(fname, "field")
            off = int(getattr(t, fname).offset)
            if not union and off < end:
                raise _NoBtf(f"fields {last!r} and {fname!r} overlap")
            is_float = issubclass(ftype, ctypes._SimpleCData) and ftype._type_ in "fd"
            members.append((fname, self.ctype(ftype), off, is_float))
            end, last = off + ctypes.sizeof(ftype), fname
        return self.struct(_type_name(t.__name__), ctypes.sizeof(t), members, union=union)

    # --- the blob -----------------------------------------------------------------------------------

    def blob(self) -> bytes:
        header = BtfHeader(
            magic=BTF_MAGIC,
            version=BTF_VERSION,
            flags=0,
            hdr_len=ctypes.sizeof(BtfHeader),
            type_off=0,
            type_len=len(self._types),
            str_off=len(self._types),
            str_len=len(self._strings),
        )
        return bytes(header) + bytes(self._types) + bytes(self._strings)


def map_btf(key: Codec, value: Codec, map_name: str = "") -> MapBtf | None:
    """BTF for a map's key and value, or None when either has no exact BTF description (the map is then
    created without BTF, as a map whose types BTF cannot describe). Top-level structs are named
    ``<map name>_key`` and ``<map name>_value``."""
    prefix = re.sub(r"[^A-Za-z0-9_]", "_", map_name)
    w = BtfWriter()
    try:
        k = w.codec(key, _type_name(f"{prefix}_key") if prefix else "")
        v = w.codec(value, _type_name(f"{prefix}_value") if prefix else "")
    except _NoBtf:
        return None
    return MapBtf(w.blob(), k, v)


def unrepresentable(codec: Codec) -> str | None:
    """Why ``codec``'s type gets no BTF, or None when it gets an exact one."""
    try:
        BtfWriter().codec(codec)
    except _NoBtf as exc:
        return str(exc)
    return None
