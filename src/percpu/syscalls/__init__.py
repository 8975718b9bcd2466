"""System call names and numbers per architecture.

The tables in ``_tables.py`` are generated from the kernel's own syscall tables by
``tools/gen_syscalls.py``. A number a table does not know is shown as ``syscall_N``, never as a guess.
``compat=True`` on x86_64 selects the 32-bit (i386) numbering that compat calls use.
"""

from __future__ import annotations

import difflib
import functools
import platform
from collections.abc import Mapping
from types import MappingProxyType

from ..errors import UnknownSyscall
from ._tables import TABLES

__all__ = ["machine_arch", "max_nr", "syscall_name", "syscall_number", "syscall_table"]

_MACHINE_TO_ARCH = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "riscv64": "riscv64",
}
_COMPAT = {"x86_64": "i386"}


@functools.lru_cache(maxsize=1)
def machine_arch() -> str:
    """This machine's table name (``x86_64``, ``arm64``, ``riscv64``), or ``uname -m`` when unknown."""
    m = platform.machine()
    return _MACHINE_TO_ARCH.get(m, m)


def _table_name(arch: str | None, compat: bool) -> str:
    a = arch or machine_arch()
    if compat:
        return _COMPAT.get(a, f"{a}-compat")
    return a


def syscall_table(arch: str | None = None, compat: bool = False) -> Mapping[int, str]:
    """The {number: name} table (read-only; empty for an architecture percpu has no table for)."""
    return MappingProxyType(TABLES.get(_table_name(arch, compat), {}))


def syscall_name(nr: int, arch: str | None = None, compat: bool = False) -> str:
    """Name of syscall ``nr`` (``"read"``), or ``syscall_N`` when the table does not know it."""
    return TABLES.get(_table_name(arch, compat), {}).get(nr) or f"syscall_{nr}"


@functools.lru_cache(maxsize=8)
def _reverse(table: str) -> dict[str, int]:
    return {name: nr for nr, name in TABLES.get(table, {}).items()}


def syscall_number(name: str, arch: str | None = None, compat: bool = False) -> int:
    """Number of the syscall called ``name``; ``syscall_N`` gives N. Raises :class:`UnknownSyscall`."""
    if name.startswith("syscall_") and name[8:].isdigit():
        return int(name[8:])
    table = _table_name(arch, compat)
    rev = _reverse(table)
    n = name.removeprefix("sys_")
    if n in rev:
        return rev[n]
    close = difflib.get_close_matches(n, rev, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownSyscall(f"no system call named {name!r} on {table}{hint}")


def max_nr(arch: str | None = None, compat: bool = False) -> int:
    """The highest syscall number the table knows (-1 for an unknown architecture)."""
    t = TABLES.get(_table_name(arch, compat), {})
    return max(t) if t else -1
