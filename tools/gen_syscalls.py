#!/usr/bin/env python3
"""Generate src/percpu/syscalls/_tables.py from the kernel's own syscall tables.

Three kinds of input, all the kernel's:

* the copies of the kernel's tables committed in ``tools/syscall-tables`` (``--tables DIR``, the default):
  ``syscall_64.tbl``, ``syscall_32.tbl`` and ``syscall.tbl``, each checked against the git blob id its
  ``README.md`` lists, which also names the kernel version (its ``Kernel:`` line);
* a kernel source tree (``--kernel DIR``): ``arch/x86/entry/syscalls/syscall_64.tbl`` (abis common, 64),
  ``syscall_32.tbl`` (abi i386), and for arm64 and riscv64 ``scripts/syscall.tbl`` (Linux 6.11+) filtered
  by the abi lists of ``arch/{arm64,riscv}/kernel/Makefile.syscalls``;
* the uapi headers the kernel generates from those tables (``--include DIR``, e.g. ``/usr/include`` from
  Debian's linux-libc-dev): ``asm/unistd_64.h``, ``asm/unistd_32.h``, and ``asm-generic/unistd.h``
  expanded with the C preprocessor under each architecture's ``__ARCH_WANT_*`` settings.

    python3 tools/gen_syscalls.py --tables tools/syscall-tables  # the committed tables (what _tables.py is)
    python3 tools/gen_syscalls.py --kernel ~/linux               # from a kernel tree
    python3 tools/gen_syscalls.py --include /usr/include         # from uapi headers (needs cpp)

The output is committed, and its first line names the command that made it; percpu never needs any of
these inputs at run time. tests/unit/test_syscalls.py regenerates it and compares byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterable

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = os.path.join(ROOT, "src", "percpu", "syscalls", "_tables.py")
TABLES_DIR = os.path.join(ROOT, "tools", "syscall-tables")

# abi column values each architecture takes from its table: "common" and "64" (scripts/Makefile.asm-headers)
# plus the abis of arch/{arm64,riscv}/kernel/Makefile.syscalls (Linux 6.11+; "newstat" is listed there
# after 6.18, which has no rows of that abi).
TBL_ABIS = {
    "x86_64": ("common", "64"),
    "i386": ("i386",),
    "arm64": ("common", "64", "renameat", "newstat", "rlimit", "memfd_secret"),
    "riscv64": ("common", "64", "riscv", "newstat", "rlimit", "memfd_secret"),
}
# The kernel's paths of the tables --tables and --kernel read, by the name of the committed copy.
TBL_PATHS = {
    "syscall_64.tbl": "arch/x86/entry/syscalls/syscall_64.tbl",
    "syscall_32.tbl": "arch/x86/entry/syscalls/syscall_32.tbl",
    "syscall.tbl": "scripts/syscall.tbl",
}

# What arch/{arm64,riscv}/include/uapi/asm/unistd.h define before including asm-generic/unistd.h
GENERIC_WANTS = {
    "arm64": (
        "__ARCH_WANT_RENAMEAT",
        "__ARCH_WANT_NEW_STAT",
        "__ARCH_WANT_SET_GET_RLIMIT",
        "__ARCH_WANT_SYS_CLONE3",
        "__ARCH_WANT_MEMFD_SECRET",
    ),
    "riscv64": (
        "__ARCH_WANT_NEW_STAT",
        "__ARCH_WANT_SET_GET_RLIMIT",
        "__ARCH_WANT_SYS_CLONE3",
        "__ARCH_WANT_MEMFD_SECRET",
    ),
}
# riscv's own calls, from arch/riscv/include/uapi/asm/unistd.h (__NR_arch_specific_syscall + 14, + 15)
GENERIC_EXTRA = {"riscv64": {258: "riscv_hwprobe", 259: "riscv_flush_icache"}}


def parse_tbl(text: str, abis: Iterable[str]) -> dict[int, str]:
    """Parse a syscall .tbl: ``<number> <abi> <name> [<entry point> [<compat entry point>]]``."""
    want = set(abis)
    out: dict[int, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) < 3:
            raise ValueError(f"malformed syscall table line: {raw!r}")
        nr, abi, name = int(fields[0]), fields[1], fields[2]
        if abi in want:
            if nr in out and out[nr] != name:
                raise ValueError(f"syscall {nr} is both {out[nr]} and {name}")
            out[nr] = name
    return out


_DEFINE = re.compile(r"^#define\s+(__NR3264_\w+|__NR_\w+)\s+(.+?)\s*$")


def parse_defines(text: str) -> dict[int, str]:
    """Resolve ``#define __NR_name <expr>`` lines (as ``cpp -dM`` prints them) into {number: name}."""
    macros: dict[str, str] = {}
    for line in text.splitlines():
        m = _DEFINE.match(line.strip())
        if m:
            macros[m.group(1)] = m.group(2)

    def value(name: str, depth: int = 0) -> int | None:
        if depth > 10 or name not in macros:
            return None
        expr = macros[name]
        expr = re.sub(r"__NR\w+", lambda t: str(value(t.group(0), depth + 1)), expr)
        if "None" in expr or not re.fullmatch(r"[\d\s()+]+", expr):
            return None
        return int(eval(expr, {"__builtins__": {}}))  # digits, spaces, parentheses and + only

    out: dict[int, str] = {}
    for name in macros:
        if not name.startswith("__NR_") or name in ("__NR_syscalls", "__NR_arch_specific_syscall"):
            continue
        nr = value(name)
        if nr is not None:
            out.setdefault(nr, name[len("__NR_") :])
    return out


def cpp_defines(include: str, header: str, defines: Iterable[str]) -> str:
    # asm/bitsperlong.h comes from the host's multiarch directory; generic 64-bit arches share its answer.
    cmd = ["cpp", "-dM", "-nostdinc", "-I", include, "-I", os.path.join(include, "x86_64-linux-gnu")]
    cmd += [f"-D{d}" for d in defines]
    src = f"#include <{header}>\n"
    return subprocess.run([*cmd, "-"], input=src, capture_output=True, text=True, check=True).stdout


def from_headers(include: str) -> tuple[dict[str, dict[int, str]], str]:
    multiarch = os.path.join(include, "x86_64-linux-gnu", "asm")
    asm = multiarch if os.path.isdir(multiarch) else os.path.join(include, "asm")
    tables: dict[str, dict[int, str]] = {}
    with open(os.path.join(asm, "unistd_64.h"), encoding="ascii") as f:
        tables["x86_64"] = parse_defines(f.read())
    with open(os.path.join(asm, "unistd_32.h"), encoding="ascii") as f:
        tables["i386"] = parse_defines(f.read())
    for arch, wants in GENERIC_WANTS.items():
        t = parse_defines(cpp_defines(include, "asm-generic/unistd.h", wants))
        t.update(GENERIC_EXTRA.get(arch, {}))
        tables[arch] = t
    version = "uapi headers in " + include
    try:
        v = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "linux-libc-dev"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        version = f"Linux uapi headers (Debian linux-libc-dev {v})"
    except (OSError, subprocess.CalledProcessError):
        pass
    return tables, version


def from_tbl_texts(texts: dict[str, str]) -> dict[str, dict[int, str]]:
    """Per-architecture tables from the three .tbl texts, keyed by the names in ``TBL_PATHS``."""
    tables = {
        "x86_64": parse_tbl(texts["syscall_64.tbl"], TBL_ABIS["x86_64"]),
        "i386": parse_tbl(texts["syscall_32.tbl"], TBL_ABIS["i386"]),
    }
    for arch in ("arm64", "riscv64"):
        tables[arch] = parse_tbl(texts["syscall.tbl"], TBL_ABIS[arch])
    return tables


def from_kernel(tree: str) -> tuple[dict[str, dict[int, str]], str]:
    def read(path: str) -> str:
        with open(os.path.join(tree, path), encoding="utf-8") as f:
            return f.read()

    tables = from_tbl_texts({name: read(path) for name, path in TBL_PATHS.items()})
    mk = read("Makefile")
    ver = ".".join(re.search(rf"^{k} = (\d+)", mk, re.M).group(1) for k in ("VERSION", "PATCHLEVEL"))  # type: ignore[union-attr]
    return tables, f"Linux {ver} syscall tables"


def git_blob_id(data: bytes) -> str:
    """What ``git hash-object`` prints for a file with these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


_README_KERNEL = re.compile(r"^Kernel: (Linux \S+.*?)\s*$", re.M)
_README_ROW = re.compile(r"^\|\s*(\S+\.tbl)\s*\|\s*(\S+)\s*\|\s*([0-9a-f]{40})\s*\|\s*$", re.M)


def from_tables(directory: str) -> tuple[dict[str, dict[int, str]], str]:
    """The committed copies: ``DIR/{syscall_64,syscall_32,syscall}.tbl``, as ``DIR/README.md`` describes."""
    with open(os.path.join(directory, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    kernel = _README_KERNEL.search(readme)
    if kernel is None:
        raise ValueError(f"{directory}/README.md has no 'Kernel: Linux X.Y' line")
    rows = {m.group(1): (m.group(2), m.group(3)) for m in _README_ROW.finditer(readme)}
    texts: dict[str, str] = {}
    for name, path in TBL_PATHS.items():
        if rows.get(name, ("", ""))[0] != path:
            raise ValueError(f"{directory}/README.md lists no row '| {name} | {path} | <git blob id> |'")
        with open(os.path.join(directory, name), "rb") as fb:
            data = fb.read()
        if git_blob_id(data) != rows[name][1]:
            raise ValueError(
                f"{directory}/{name} has git blob id {git_blob_id(data)}, not the {rows[name][1]} "
                "README.md lists: it is not the kernel's file the README names"
            )
        texts[name] = data.decode("utf-8")
    return from_tbl_texts(texts), f"the syscall tables of {kernel.group(1)}"


def render(tables: dict[str, dict[int, str]], source: str, command: str) -> str:
    lines = [
        f"# Generated by {command}; do not edit.",
        f"# Source: {source}.",
        '"""Syscall number -> name, per architecture (``i386`` is x86_64\'s 32-bit compat table)."""',
        "",
        "TABLES: dict[str, dict[int, str]] = {",
    ]
    for arch in sorted(tables):
        lines.append(f'    "{arch}": {{')
        for nr in sorted(tables[arch]):
            lines.append(f'        {nr}: "{tables[arch][nr]}",')
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _shown(path: str) -> str:
    """``path`` as the generated header shows it: relative to the repository when inside it."""
    full = os.path.abspath(path)
    if os.path.commonpath([full, ROOT]) == ROOT:
        return os.path.relpath(full, ROOT).replace(os.sep, "/")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--tables", metavar="DIR", help="committed .tbl copies (default tools/syscall-tables)")
    src.add_argument("--kernel", metavar="DIR", help="a Linux source tree (6.11 or newer for arm64, riscv64)")
    src.add_argument("--include", metavar="DIR", help="uapi headers, e.g. /usr/include (needs cpp)")
    ap.add_argument("-o", "--output", default=OUT)
    args = ap.parse_args(argv)
    if args.kernel:
        tables, source = from_kernel(args.kernel)
        command = f"python3 tools/gen_syscalls.py --kernel {_shown(args.kernel)}"
    elif args.include:
        tables, source = from_headers(args.include)
        command = f"python3 tools/gen_syscalls.py --include {_shown(args.include)}"
    else:
        directory = args.tables or TABLES_DIR
        tables, source = from_tables(directory)
        command = f"python3 tools/gen_syscalls.py --tables {_shown(directory)}"
    for arch, t in tables.items():
        if len(t) < 250:
            sys.exit(f"gen_syscalls: only {len(t)} syscalls for {arch}: wrong input?")
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(render(tables, source, command))
    print(", ".join(f"{a}: {len(t)} (max {max(t)})" for a, t in sorted(tables.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
