#!/usr/bin/env python3
"""Generate src/percpu/syscalls/_tables.py from the kernel's own syscall tables.

Two kinds of input, both the kernel's:

* a kernel source tree (``--kernel DIR``): ``arch/x86/entry/syscalls/syscall_64.tbl`` (abis common, 64),
  ``syscall_32.tbl`` (abi i386), and for arm64 and riscv64 ``scripts/syscall.tbl`` (Linux 6.11+) filtered
  by the abi lists of ``arch/{arm64,riscv}/kernel/Makefile.syscalls``;
* the uapi headers the kernel generates from those tables (``--include DIR``, default ``/usr/include``,
  Debian's linux-libc-dev): ``asm/unistd_64.h``, ``asm/unistd_32.h``, and ``asm-generic/unistd.h``
  expanded with the C preprocessor under each architecture's ``__ARCH_WANT_*`` settings.

    python3 tools/gen_syscalls.py                   # from /usr/include (needs cpp)
    python3 tools/gen_syscalls.py --kernel ~/linux  # from a kernel tree

The output is committed; percpu never needs either input at run time.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Iterable

OUT = os.path.join(os.path.dirname(__file__), "..", "src", "percpu", "syscalls", "_tables.py")

# abi column values each architecture takes from its table (arch/*/kernel/Makefile.syscalls, Linux 6.11+)
TBL_ABIS = {
    "x86_64": ("common", "64"),
    "i386": ("i386",),
    "arm64": ("common", "64", "renameat", "rlimit", "memfd_secret"),
    "riscv64": ("common", "64", "riscv", "rlimit", "memfd_secret"),
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


def from_kernel(tree: str) -> tuple[dict[str, dict[int, str]], str]:
    def read(*parts: str) -> str:
        with open(os.path.join(tree, *parts), encoding="utf-8") as f:
            return f.read()

    tables = {
        "x86_64": parse_tbl(read("arch/x86/entry/syscalls/syscall_64.tbl"), TBL_ABIS["x86_64"]),
        "i386": parse_tbl(read("arch/x86/entry/syscalls/syscall_32.tbl"), TBL_ABIS["i386"]),
    }
    generic = read("scripts/syscall.tbl")
    for arch in ("arm64", "riscv64"):
        tables[arch] = parse_tbl(generic, TBL_ABIS[arch])
    mk = read("Makefile")
    ver = ".".join(re.search(rf"^{k} = (\d+)", mk, re.M).group(1) for k in ("VERSION", "PATCHLEVEL"))  # type: ignore[union-attr]
    return tables, f"Linux {ver} syscall tables"


def render(tables: dict[str, dict[int, str]], source: str) -> str:
    lines = [
        f"# Generated by tools/gen_syscalls.py from {source}; do not edit.",
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--kernel", help="a Linux source tree (6.11 or newer for arm64 and riscv64)")
    src.add_argument("--include", default="/usr/include", help="uapi headers (default /usr/include)")
    ap.add_argument("-o", "--output", default=OUT)
    args = ap.parse_args()
    tables, source = from_kernel(args.kernel) if args.kernel else from_headers(args.include)
    for arch, t in tables.items():
        if len(t) < 250:
            sys.exit(f"gen_syscalls: only {len(t)} syscalls for {arch}: wrong input?")
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(render(tables, source))
    print(", ".join(f"{a}: {len(t)} (max {max(t)})" for a, t in sorted(tables.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
