#!/usr/bin/env python3
"""Generate src/percpu/_contract.py and src/percpu/disturb/_contract.py from the BTF of the compiled objects.

What bpf/syscount.bpf.c shares with user space (the ``.rodata`` config struct, the keys and values of the
maps percpu decodes, and the constants of ``enum percpu_consts`` and ``enum percpu_lost``) is read from the
``.BTF`` section of ``src/percpu/_bpf/syscount.bpf.o``, the object percpu ships, and written as Python;
likewise what bpf/disturb.bpf.c shares (``struct disturb_config``, its map records, ``enum disturb_consts``
and ``enum disturb_vector``) from ``disturb.bpf.o`` into the disturbance counter's package:

* ``struct percpu_config`` as a ``ctypes.Structure`` (user space writes it into ``.rodata`` before load),
  with explicit padding wherever the C has a hole, so every field sits at the offset BTF gives;
* the other structs as numpy dtypes with explicit offsets and itemsize (they are decoded in bulk);
* every enumerator of the two enums as an ``int``.

    .venv/bin/python tools/gen_contract.py           # rewrite src/percpu/_contract.py
    .venv/bin/python tools/gen_contract.py --check   # exit 1 if the committed file is not what it makes

Run it after ``scripts/build-bpf`` whenever those structs or enums change; tests/unit/test_contract.py
regenerates the modules in memory and fails on any difference, and checks that syscount_nobtf.bpf.o has
the same layouts. A type the generator cannot express exactly (a bitfield, a union, a pointer, a member
ctypes would place elsewhere) stops it with an error instead of being approximated.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
from typing import Any, NamedTuple

import numpy as np

from percpu import _elf
from percpu.btf import Btf, BtfType, parse_btf
from percpu.errors import PercpuError

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


class Contract(NamedTuple):
    """One object's shared types: the C struct of its .rodata config, its records and enums (each in the
    order written, with their Python names), and where the generated module goes."""

    obj: str  # relative to the repository
    source: str  # the C file, named in the module's docstring
    config: tuple[str, str]
    records: tuple[tuple[str, str], ...]
    enums: tuple[str, ...]


SYSCOUNT = Contract(
    obj=os.path.join("src", "percpu", "_bpf", "syscount.bpf.o"),
    source="bpf/syscount.bpf.c",
    config=("percpu_config", "PercpuConfig"),
    records=(
        ("proc_key", "PROC_KEY"),
        ("err_key", "ERR_KEY"),
        ("lat_key", "LAT_KEY"),
        ("lat_index", "LAT_INDEX"),
        ("lat_row", "LAT_ROW"),
    ),
    enums=("percpu_consts", "percpu_lost"),
)
DISTURB = Contract(
    obj=os.path.join("src", "percpu", "_bpf", "disturb.bpf.o"),
    source="bpf/disturb.bpf.c",
    config=("disturb_config", "DisturbConfig"),
    records=(
        ("runs", "RUNS"),
        ("cpu_counts", "CPU_COUNTS"),
        ("sched_cpu", "SCHED_CPU"),
        ("task_key", "TASK_KEY"),
        ("task_stat", "TASK_STAT"),
    ),
    enums=("disturb_consts", "disturb_vector"),
)

# The syscall counter's, under the names callers (and tests) use; OUT and DISTURB_OUT are read when main()
# runs, so a test can point them elsewhere.
OBJ = SYSCOUNT.obj
CONFIG = SYSCOUNT.config
RECORDS = SYSCOUNT.records
ENUMS = SYSCOUNT.enums
OUT = os.path.join(ROOT, "src", "percpu", "_contract.py")
DISTURB_OUT = os.path.join(ROOT, "src", "percpu", "disturb", "_contract.py")

_CTYPES_UINT = {1: "c_uint8", 2: "c_uint16", 4: "c_uint32", 8: "c_uint64"}
_CTYPES_INT = {1: "c_int8", 2: "c_int16", 4: "c_int32", 8: "c_int64"}


class ContractError(Exception):
    """The object's BTF lacks a shared type, or has one this generator cannot express exactly."""


def _struct(btf: Btf, name: str) -> BtfType:
    try:
        t = btf.resolve(btf.find(name, "struct"))
    except Exception as exc:
        raise ContractError(f"struct {name} is not in the object's BTF: {exc}") from None
    if t.kind_flag and any(off >> 24 for _n, _t, off in t.extra):
        raise ContractError(f"struct {name} has bitfields, which neither ctypes nor numpy lays out exactly")
    return t


def _members(btf: Btf, t: BtfType) -> list[tuple[str, int, int]]:
    """(name, type id, byte offset) of each member."""
    out = []
    for name, type_id, off in t.extra:
        bit = off & 0xFFFFFF if t.kind_flag else off
        if bit % 8 or not name:
            raise ContractError(f"struct {t.name}: member {name or '(anonymous)'} is not a named whole byte")
        out.append((name, type_id, bit // 8))
    return out


def _scalar(btf: Btf, type_id: int, where: str) -> tuple[int, bool]:
    """(size, signed) of an integer member type."""
    t = btf.resolve(type_id)
    if t.kind == "enum":
        return t.size_or_type, t.kind_flag
    if t.kind != "int":
        raise ContractError(f"{where}: a {t.kind} is not part of the contract's vocabulary (ints, arrays)")
    (enc,) = t.extra
    if (enc >> 16) & 0xFF or enc & 0xFF != 8 * t.size_or_type or t.size_or_type not in _CTYPES_UINT:
        raise ContractError(f"{where}: a {enc & 0xFF}-bit int in {t.size_or_type} bytes has no exact layout")
    return t.size_or_type, bool(enc >> 24 & 1)


def _shape(btf: Btf, type_id: int) -> tuple[tuple[int, ...], int]:
    """Array dimensions (outermost first) and the element type id."""
    dims: list[int] = []
    t = btf.resolve(type_id)
    while t.kind == "array":
        elem, _index, n = t.extra
        dims.append(n)
        type_id = elem
        t = btf.resolve(elem)
    return tuple(dims), type_id


def _ctype(btf: Btf, type_id: int, where: str) -> tuple[str, int]:
    """The ctypes expression for a member type, and the alignment ctypes gives it (its element's size)."""
    dims, elem = _shape(btf, type_id)
    if dims and btf.is_char(elem):
        base, dims, align = f"ctypes.c_char * {dims[-1]}", dims[:-1], 1
    else:
        align, signed = _scalar(btf, elem, where)
        base = "ctypes." + (_CTYPES_INT if signed else _CTYPES_UINT)[align]
    for n in reversed(dims):
        base = f"({base}) * {n}" if " * " in base else f"{base} * {n}"
    return base, align


def _dtype(btf: Btf, type_id: int, where: str) -> str:
    dims, elem = _shape(btf, type_id)
    if dims and btf.is_char(elem):
        fmt, dims = f"S{dims[-1]}", dims[:-1]
    else:
        size, signed = _scalar(btf, elem, where)
        fmt = f"<{'i' if signed else 'u'}{size}" if size > 1 else ("i1" if signed else "u1")
    if not dims:
        return f'"{fmt}"'
    return f'("{fmt}", {dims!r})'


def _render_config(btf: Btf, cname: str, pyname: str) -> tuple[list[str], dict[str, int], int]:
    t = _struct(btf, cname)
    lines = [
        f"class {pyname}(ctypes.Structure):",
        f'    """struct {cname}: {t.size_or_type} bytes, written into .rodata before load."""',
        "",
        "    _fields_ = [",
    ]
    offsets: dict[str, int] = {}
    cur = 0
    for name, type_id, off in _members(btf, t):
        if off < cur:
            raise ContractError(f"struct {cname}: member {name} at {off} overlaps the one before it")
        ctype, align = _ctype(btf, type_id, f"struct {cname}.{name}")
        if -(-cur // align) * align != off:
            lines.append(f'        ("_pad{cur}", ctypes.c_uint8 * {off - cur}),  # hole in the C struct')
        lines.append(f'        ("{name}", {ctype}),  # offset {off}')
        offsets[name] = off
        cur = off + btf.size(type_id)
    if cur != t.size_or_type:
        lines.append(f'        ("_pad{cur}", ctypes.c_uint8 * {t.size_or_type - cur}),  # tail padding')
    lines.append("    ]")
    return lines, offsets, t.size_or_type


# What ruff format keeps on one line; a longer list is written one item per line, as ruff formats it.
_LINE = 110


def _list_entry(key: str, items: list[str]) -> list[str]:
    one = f'        "{key}": [{", ".join(items)}],'
    if len(one) <= _LINE:
        return [one]
    return [f'        "{key}": [', *(f"            {item}," for item in items), "        ],"]


def _render_record(btf: Btf, cname: str, pyname: str) -> list[str]:
    t = _struct(btf, cname)
    members = _members(btf, t)
    names = [f'"{n}"' for n, _t, _o in members]
    formats = [_dtype(btf, tid, f"struct {cname}.{n}") for n, tid, _o in members]
    offsets = [str(o) for _n, _t, o in members]
    return [
        f"# struct {cname}: {t.size_or_type} bytes",
        f"{pyname} = np.dtype(",
        "    {",
        *_list_entry("names", names),
        *_list_entry("formats", formats),
        *_list_entry("offsets", offsets),
        f'        "itemsize": {t.size_or_type},',
        "    }",
        ")",
    ]


def render(obj_path: str, btf: Btf, contract: Contract = SYSCOUNT) -> str:
    """The text of the contract module for the object at ``obj_path`` (named relative to the repository)."""
    out = [
        f"# Generated by tools/gen_contract.py from {obj_path}; do not edit.",
        f'"""What {contract.source} shares with user space, as the compiled object\'s BTF records it."""',
        "",
        "from __future__ import annotations",
        "",
        "import ctypes",
        "",
        "import numpy as np",
        "",
    ]
    for enum in contract.enums:
        try:
            t = btf.resolve(btf.find(enum, "enum"))
        except Exception as exc:
            raise ContractError(f"enum {enum} is not in the object's BTF: {exc}") from None
        out.append(f"# enum {enum}")
        out += [f"{name} = {value}" for name, value in t.extra]
        out.append("")
    config, offsets, size = _render_config(btf, *contract.config)
    out += ["", *config]
    for cname, pyname in contract.records:
        out += ["", "", *_render_record(btf, cname, pyname)]
    text = "\n".join(out) + "\n"
    _verify(text, offsets, size, btf, contract)
    return text


def _verify(text: str, offsets: dict[str, int], size: int, btf: Btf, contract: Contract) -> None:
    """Check what the text defines against BTF: ctypes places members by its own alignment rules, so the
    generated class is built and measured rather than trusted."""
    ns: dict[str, Any] = {}
    exec(compile(text, "_contract.py", "exec"), ns)
    cls = ns[contract.config[1]]
    placed = {name: getattr(cls, name).offset for name, *_ in cls._fields_ if not name.startswith("_pad")}
    if placed != offsets or ctypes.sizeof(cls) != size:
        raise ContractError(
            f"ctypes lays out struct {contract.config[0]} as {placed} ({ctypes.sizeof(cls)} bytes); BTF says "
            f"{offsets} ({size} bytes)"
        )
    for cname, pyname in contract.records:
        dt: np.dtype[Any] = ns[pyname]
        t = _struct(btf, cname)
        if dt.itemsize != t.size_or_type:
            raise ContractError(f"{pyname} is {dt.itemsize} bytes; struct {cname} is {t.size_or_type}")


def generate(obj: str = OBJ, contract: Contract = SYSCOUNT) -> str:
    """The contract module's text from ``obj`` (a path relative to the repository root)."""
    return render(obj, parse_btf(_elf.section(os.path.join(ROOT, obj), ".BTF")), contract)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed files; write nothing")
    args = ap.parse_args(argv)
    status = 0
    for contract, out in ((SYSCOUNT, OUT), (DISTURB, DISTURB_OUT)):
        try:
            text = generate(contract.obj, contract)
        except (ContractError, PercpuError) as exc:
            print(f"gen_contract: {exc}", file=sys.stderr)
            return 1
        if args.check:
            with open(out, encoding="utf-8") as f:
                same = f.read() == text
            print(f"{os.path.relpath(out, ROOT)}: {'OK' if same else 'DIFFERS: run tools/gen_contract.py'}")
            status |= not same
            continue
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
