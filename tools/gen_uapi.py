#!/usr/bin/env python3
"""Generate src/percpu/_uapi.py: the kernel's and libbpf's constants and structs that percpu uses.

The values come from the C headers, never from a hand-typed number: a small C file that includes
``<linux/bpf.h>`` and ``<linux/btf.h>`` (the kernel's uapi, Debian's linux-libc-dev), ``<bpf/bpf.h>``
and ``<bpf/libbpf.h>`` (libbpf-dev) and names what percpu needs is compiled with
``clang -target bpf -g``; the object's BTF then holds every enum, constant and struct exactly as the
compiler laid them out, and is written as Python:

* whole enums (``enum bpf_map_type``, ``bpf_prog_type``, ``bpf_attach_type``, ``bpf_func_id``) as
  ``enum.IntEnum`` classes, their common prefix dropped (``MapType.PERCPU_HASH``);
* single constants (``BPF_ANY``, ``BPF_F_TEST_RUN_ON_CPU``, ``BTF_KIND_STRUCT``, ...) as ints under their C
  names;
* the bits each of BTF's field macros reads (``BTF_INFO_KIND(info)`` reads bits 24..28 of ``info``) as
  ``<MACRO>_BITS`` masks, found by the compiler applying the macro to every single bit;
* structs (``struct bpf_map_info``, ``bpf_map_create_opts``, ...) as ``ctypes.Structure`` classes with
  explicit padding and bitfields, measured against BTF before they are written.

A few constants are newer than the headers of the build machine (Debian bookworm: Linux 6.1 uapi,
libbpf 1.1); they are listed in ``NEWER`` with the kernel version and value that introduced them.

    .venv/bin/python tools/gen_uapi.py           # rewrite src/percpu/_uapi.py
    .venv/bin/python tools/gen_uapi.py --check   # exit 1 if the committed file is not what it makes

Needs clang, linux-libc-dev and libbpf-dev (``scripts/setup.sh --dev`` installs them).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from percpu import _elf
from percpu.btf import Btf, BtfType, parse_btf
from percpu.errors import PercpuError

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = os.path.join(ROOT, "src", "percpu", "_uapi.py")

# (C enum, Python class, prefix dropped from each enumerator)
ENUMS = (
    ("bpf_map_type", "MapType", "BPF_MAP_TYPE_"),
    ("bpf_prog_type", "ProgType", "BPF_PROG_TYPE_"),
    ("bpf_attach_type", "AttachType", "BPF_"),
    ("bpf_func_id", "FuncId", "BPF_FUNC_"),
)
# Constants from anonymous enums and #defines, by their C names.
CONSTANTS = (
    "BPF_ANY",
    "BPF_NOEXIST",
    "BPF_EXIST",
    "BPF_F_LOCK",
    "BPF_F_NO_PREALLOC",
    "BPF_F_MMAPABLE",
    "BPF_F_RDONLY",
    "BPF_F_WRONLY",
    "BPF_F_RDONLY_PROG",
    "BPF_F_WRONLY_PROG",
    "BPF_F_TEST_RUN_ON_CPU",
    "BPF_OBJ_NAME_LEN",
    "BPF_PSEUDO_MAP_FD",
    # BTF (linux/btf.h): what percpu needs to write the types of the maps it creates
    "BTF_MAGIC",
    "BTF_VERSION",
    "BTF_MAX_TYPE",
    "BTF_MAX_NAME_OFFSET",
    "BTF_MAX_VLEN",
    "BTF_KIND_INT",
    "BTF_KIND_ARRAY",
    "BTF_KIND_STRUCT",
    "BTF_KIND_UNION",
    "BTF_KIND_TYPEDEF",
    "BTF_KIND_FLOAT",
    "BTF_INT_SIGNED",
    "BTF_INT_CHAR",
    "BTF_INT_BOOL",
)
# linux/btf.h's function-like macros that take a field out of a packed word: each is applied to every
# single bit by the compiler, and the bits it reads are written as ``<MACRO>_BITS``.
FIELD_MACROS = (
    "BTF_INFO_KIND",
    "BTF_INFO_VLEN",
    "BTF_INFO_KFLAG",
    "BTF_INT_ENCODING",
    "BTF_INT_OFFSET",
    "BTF_INT_BITS",
    "BTF_MEMBER_BITFIELD_SIZE",
    "BTF_MEMBER_BIT_OFFSET",
)
# Newer than the build machine's headers: (name, value, the Linux version whose uapi added it).
NEWER = (
    ("BPF_F_CPU", 8, "7.0"),  # one CPU's value; the CPU id in flags bits 63..32
    ("BPF_F_ALL_CPUS", 16, "7.0"),  # one value written to every CPU
)
# Enumerators newer than the build machine's headers: C enum -> (name, value, Linux version).
NEWER_ENUMERATORS = {
    "bpf_map_type": (("BPF_MAP_TYPE_CGRP_STORAGE", 32, "6.2"), ("BPF_MAP_TYPE_ARENA", 33, "6.9")),
}
# Methods some enums carry (written into the generated file as they stand here).
ENUM_BASES = {
    "MapType": "_MapTypeBase",
}
PREAMBLE = '''
class UapiEnum(enum.IntEnum):
    """An enum of the kernel's uapi. A value these headers do not know is not an error: newer kernels
    add members, and percpu names them by number."""

    @classmethod
    def name_of(cls, value: int) -> str:
        """``percpu_hash`` for 5; ``type_99`` for a value these headers do not know."""
        try:
            return cls(value).name.lower()
        except ValueError:
            return f"type_{value}"


class _MapTypeBase(UapiEnum):
    @property
    def percpu(self) -> bool:
        """Whether the kernel keeps one value per possible CPU for each key (``bpf_map_value_size()``
        in kernel/bpf/syscall.c names these four)."""
        return self.name in ("PERCPU_HASH", "PERCPU_ARRAY", "LRU_PERCPU_HASH", "PERCPU_CGROUP_STORAGE")
'''

# (C struct, Python class, where it is defined)
STRUCTS = (
    ("bpf_map_info", "BpfMapInfo", "linux/bpf.h"),
    ("bpf_prog_info", "BpfProgInfo", "linux/bpf.h"),
    ("bpf_btf_info", "BpfBtfInfo", "linux/bpf.h"),
    ("bpf_insn", "BpfInsn", "linux/bpf.h"),
    ("bpf_map_create_opts", "MapCreateOpts", "bpf/bpf.h"),
    ("bpf_map_batch_opts", "MapBatchOpts", "bpf/bpf.h"),
    ("bpf_test_run_opts", "TestRunOpts", "bpf/bpf.h"),
    ("bpf_object_open_opts", "ObjectOpenOpts", "bpf/libbpf.h"),
    ("bpf_btf_load_opts", "BtfLoadOpts", "bpf/bpf.h"),
    ("btf_header", "BtfHeader", "linux/btf.h"),
    ("btf_type", "BtfType", "linux/btf.h"),
    ("btf_array", "BtfArray", "linux/btf.h"),
    ("btf_member", "BtfMember", "linux/btf.h"),
)

_UINT = {1: "ctypes.c_uint8", 2: "ctypes.c_uint16", 4: "ctypes.c_uint32", 8: "ctypes.c_uint64"}
_SINT = {1: "ctypes.c_int8", 2: "ctypes.c_int16", 4: "ctypes.c_int32", 8: "ctypes.c_int64"}
_BTF_INT_SIGNED, _BTF_INT_BOOL = 1, 4


class UapiError(Exception):
    """The headers lack a name, or hold a type this generator cannot write exactly."""


def c_source() -> str:
    """The C file whose BTF carries everything: one variable per enum and struct, and one named enum
    whose enumerators copy the single constants (a #define has no BTF of its own)."""
    headers = ("linux/bpf.h", "linux/btf.h", "bpf/bpf.h", "bpf/libbpf.h")
    lines = [*(f"#include <{h}>" for h in headers), ""]
    lines += [f"enum {c} percpu_enum_{c};" for c, _p, _x in ENUMS]
    lines += [f"struct {c} percpu_struct_{c};" for c, _p, _h in STRUCTS]
    lines.append("enum percpu_uapi_constants {")
    lines += [f"\tPERCPU_{name} = {name}," for name in CONSTANTS]
    lines.append("};")
    lines.append("enum percpu_uapi_constants percpu_constants;")
    # A mask of the bits a macro reads: bit b is set when the macro gives non-zero for (1u << b). In an
    # enum of its own, which is unsigned: the top bit does not fit an int.
    lines.append("#define PERCPU_BIT(M, b) ((unsigned)!!M(1u << (b)) << (b))")
    lines.append("enum percpu_uapi_bits {")
    for macro in FIELD_MACROS:
        bits = " | ".join(f"PERCPU_BIT({macro}, {b})" for b in range(32))
        lines.append(f"\tPERCPU_{macro}_BITS = {bits},")
    lines.append("};")
    lines.append("enum percpu_uapi_bits percpu_bits;")
    return "\n".join(lines) + "\n"


def _multiarch() -> str:
    """The multiarch include directory (``x86_64-linux-gnu``): libbpf.h includes libc headers, which a
    BPF-target compile does not look for there on its own."""
    try:
        out = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"{os.uname().machine}-linux-gnu"


def compile_btf() -> Btf:
    clang = shutil.which("clang")
    if clang is None:
        raise UapiError("clang is not installed: run scripts/setup.sh --dev")
    with tempfile.TemporaryDirectory(prefix="percpu-uapi-") as tmp:
        src, obj = os.path.join(tmp, "uapi.c"), os.path.join(tmp, "uapi.o")
        with open(src, "w", encoding="utf-8") as f:
            f.write(c_source())
        arch = _multiarch()
        # glibc's headers pick the word size from the CPU's macro, which a BPF-target compile does not
        # define; BPF is LP64 like both machines percpu runs on, so the layouts are theirs.
        cpu = "-D__x86_64__" if arch.startswith("x86_64") else f"-D__{arch.split('-')[0]}__"
        cmd = [clang, "-target", "bpf", "-g", "-O0", cpu, f"-I/usr/include/{arch}", "-c", src, "-o", obj]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise UapiError(f"clang failed (are linux-libc-dev and libbpf-dev installed?):\n{done.stderr}")
        return parse_btf(_elf.section(obj, ".BTF"))


def _enum(btf: Btf, cname: str) -> BtfType:
    try:
        return btf.type(btf.find(cname, "enum"))
    except PercpuError as exc:
        raise UapiError(f"enum {cname} is not in the headers' BTF: {exc}") from None


def _render_enum(btf: Btf, cname: str, pyname: str, prefix: str) -> list[str]:
    t = _enum(btf, cname)
    base = ENUM_BASES.get(pyname, "UapiEnum")
    lines = [f"class {pyname}({base}):", f'    """enum {cname}"""', ""]
    newer = {name: f"  # Linux {version}" for name, _v, version in NEWER_ENUMERATORS.get(cname, ())}
    known = {name for name, _v in t.extra}
    extra = [(n, v) for n, v, _ver in NEWER_ENUMERATORS.get(cname, ()) if n not in known]
    for name, value in [*t.extra, *extra]:
        if name.startswith("__"):
            continue  # the count the headers keep for themselves: it changes with every kernel
        if not name.startswith(prefix):
            raise UapiError(f"enum {cname}: {name} does not start with {prefix}")
        short = name[len(prefix) :]
        lines.append(f"    {'_' + short if short[0].isdigit() else short} = {value}{newer.get(name, '')}")
    return lines


def _member_type(btf: Btf, type_id: int, where: str) -> str:
    """The ctypes expression for a member's type."""
    t = btf.type(type_id)
    while t.kind in ("typedef", "const", "volatile", "restrict", "type_tag"):
        if t.kind == "typedef" and t.name == "size_t":
            return "ctypes.c_size_t"
        t = btf.type(t.size_or_type)
    if t.kind == "ptr":
        target = btf.type(t.size_or_type) if t.size_or_type else None
        while target is not None and target.kind in ("const", "volatile"):
            target = btf.type(target.size_or_type) if target.size_or_type else None
        if target is not None and target.kind == "int" and target.name == "char":
            return "ctypes.c_char_p"
        return "ctypes.c_void_p"
    if t.kind == "enum":
        return (_SINT if t.kind_flag else _UINT)[t.size_or_type]
    if t.kind == "int":
        (enc,) = t.extra
        size, signed, is_bool = t.size_or_type, (enc >> 24) & _BTF_INT_SIGNED, (enc >> 24) & _BTF_INT_BOOL
        if is_bool:
            return "ctypes.c_bool"
        if t.name == "char":
            return "ctypes.c_char"
        return (_SINT if signed else _UINT)[size]
    if t.kind == "array":
        elem, _index, n = t.extra
        inner = _member_type(btf, elem, where)
        return f"({inner}) * {n}" if " * " in inner else f"{inner} * {n}"
    raise UapiError(f"{where}: a {t.kind} member has no ctypes spelling here")


def _render_union(btf: Btf, u: BtfType, pyname: str, where: str) -> list[str]:
    """An anonymous union of scalars (``btf_type``'s ``size``/``type``) as a ``ctypes.Union``."""
    doc = f'    """the anonymous union of {where}"""'
    lines = [f"class {pyname}(ctypes.Union):", doc, "", "    _fields_ = ["]
    for name, type_id, off in u.extra:
        if off or not name:
            raise UapiError(f"{where}: a union member {name or '(anonymous)'} at bit {off}")
        lines.append(f'        ("{name}", {_member_type(btf, type_id, f"{where}.{name}")}),')
    lines.append("    ]")
    return lines


def _render_struct(btf: Btf, cname: str, pyname: str, header: str) -> tuple[list[str], dict[str, int], int]:
    try:
        t = btf.resolve(btf.find(cname, "struct"))
    except PercpuError as exc:
        raise UapiError(f"struct {cname} is not in the headers' BTF: {exc}") from None
    doc = f'    """struct {cname} ({header}): {t.size_or_type} bytes"""'
    prelude: list[str] = []
    anonymous: list[str] = []
    ns: dict[str, Any] = {"ctypes": ctypes}
    lines: list[str] = []
    offsets: dict[str, int] = {}
    aligns: list[int] = []
    cur = 0  # bits placed so far
    pads = 0
    for name, type_id, off in t.extra:
        bit, width = (off & 0xFFFFFF, off >> 24) if t.kind_flag else (off, 0)
        inner = btf.resolve(type_id)
        if not name and inner.kind == "union" and not width:
            # An anonymous union: a Union class of its own, its members reached through the struct
            # (``_anonymous_``), as C reaches them.
            expr = f"_{pyname}Union{len(anonymous)}"
            union = _render_union(btf, inner, expr, f"struct {cname}")
            exec("\n".join(union), ns)
            prelude += [*union, "", ""]
            for mname, _mtype, moff in inner.extra:
                offsets[mname] = bit + moff
        elif not name:
            raise UapiError(f"struct {cname}: an anonymous member (a nested struct) at bit {bit}")
        else:
            expr = _member_type(btf, type_id, f"struct {cname}.{name}")
        ctype = eval(expr, ns)
        aligns.append(ctypes.alignment(ctype))
        if not width:
            # Where ctypes would put the member on its own; a member the headers place further on (after
            # an unnamed bitfield, which BTF does not record) gets explicit padding before it.
            start = -(-cur // 8)
            natural = -(-start // ctypes.alignment(ctype)) * ctypes.alignment(ctype)
            if bit % 8 or bit // 8 < start:
                raise UapiError(f"struct {cname}: member {name} at bit {bit} overlaps or is not whole bytes")
            if natural != bit // 8:
                lines.append(f'        ("_pad{pads}", ctypes.c_uint8 * {bit // 8 - start}),  # unnamed')
                pads += 1
        if not name:
            field = f"_u{len(anonymous)}"
            anonymous.append(field)
            lines.append(f'        ("{field}", {expr}),  # offset {bit // 8}: an anonymous union')
            cur = bit + 8 * ctypes.sizeof(ctype)
        elif width:
            lines.append(f'        ("{name}", {expr}, {width}),  # bit {bit}')
            cur = bit + width
            offsets[name] = bit
        else:
            lines.append(f'        ("{name}", {expr}),  # offset {bit // 8}')
            cur = bit + 8 * ctypes.sizeof(ctype)
            offsets[name] = bit
    align = max(aligns, default=1)
    used = -(-cur // 8)
    end = -(-used // align) * align
    if end < t.size_or_type:
        lines.append(f'        ("_pad{pads}", ctypes.c_uint8 * {t.size_or_type - end}),  # tail')
    head = [f"class {pyname}(ctypes.Structure):", doc, ""]
    if anonymous:
        names = ", ".join(f'"{a}"' for a in anonymous)
        head.append(f"    _anonymous_ = ({names},)")
    out = [*prelude, *head, "    _fields_ = [", *lines, "    ]"]
    return out, offsets, t.size_or_type


def _verify(text: str, expected: dict[str, tuple[dict[str, int], int]]) -> None:
    """Build the classes and measure them: ctypes places members by its own rules, so what it does is
    checked against the compiler's layout instead of trusted."""
    ns: dict[str, Any] = {}
    exec(compile(text, "_uapi.py", "exec"), ns)
    for pyname, (offsets, size) in expected.items():
        cls = ns[pyname]
        placed: dict[str, int] = {}
        anonymous = getattr(cls, "_anonymous_", ())
        for field in cls._fields_:
            name = field[0]
            if name.startswith("_pad"):
                continue
            if name in anonymous:  # its members, where the struct places them
                for inner in field[1]._fields_:
                    placed[inner[0]] = 8 * getattr(cls, inner[0]).offset
                continue
            d = getattr(cls, name)
            # ctypes packs a bitfield's offset in bits into ``size`` (high 16 bits: width, low: bit offset)
            placed[name] = 8 * d.offset + (d.size & 0xFFFF if len(field) == 3 else 0)
        if placed != offsets or ctypes.sizeof(cls) != size:
            raise UapiError(
                f"ctypes lays out {pyname} as {placed} ({ctypes.sizeof(cls)} bytes); the compiler "
                f"as {offsets} ({size} bytes)"
            )


def render(btf: Btf) -> str:
    out = [
        "# Generated by tools/gen_uapi.py from <linux/bpf.h>, <linux/btf.h>, <bpf/bpf.h>, <bpf/libbpf.h>;",
        "# do not edit.",
        '"""The kernel\'s and libbpf\'s constants and structs percpu uses, as the C headers define them.',
        "",
        "Built from Debian bookworm's linux-libc-dev (Linux 6.1 uapi) and libbpf-dev (libbpf 1.1): the",
        "structs are the sizes percpu hands libbpf (which accepts the smaller size of an older layout), and",
        "constants newer than those headers are marked with the Linux version that added them.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import ctypes",
        "import enum",
        "",
    ]
    consts = dict(_enum(btf, "percpu_uapi_constants").extra)
    for name in CONSTANTS:
        out.append(f"{name} = {consts['PERCPU_' + name]}")
    bits = dict(_enum(btf, "percpu_uapi_bits").extra)
    for macro in FIELD_MACROS:
        mask = bits[f"PERCPU_{macro}_BITS"] & 0xFFFFFFFF
        if not mask:
            raise UapiError(f"{macro}() reads no bit of a 32-bit word")
        out.append(f"{macro}_BITS = 0x{mask:08X}  # the bits {macro}() reads")
    out += [f"{name} = {value}  # Linux {version}" for name, value, version in NEWER]
    out += ["", *PREAMBLE.splitlines()]
    for cname, pyname, prefix in ENUMS:
        out += ["", "", *_render_enum(btf, cname, pyname, prefix)]
    expected: dict[str, tuple[dict[str, int], int]] = {}
    for cname, pyname, header in STRUCTS:
        lines, offsets, size = _render_struct(btf, cname, pyname, header)
        expected[pyname] = (offsets, size)
        out += ["", "", *lines]
    text = "\n".join(out) + "\n"
    _verify(text, expected)
    return text


def generate() -> str:
    return render(compile_btf())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed file; write nothing")
    args = ap.parse_args(argv)
    try:
        text = generate()
    except (UapiError, PercpuError) as exc:
        print(f"gen_uapi: {exc}", file=sys.stderr)
        return 1
    if args.check:
        with open(OUT, encoding="utf-8") as f:
            same = f.read() == text
        print(f"{os.path.relpath(OUT, ROOT)}: {'OK' if same else 'DIFFERS: run tools/gen_uapi.py'}")
        return 0 if same else 1
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
