"""Sections of an ELF object, read with nothing but the ELF64 header layout of elf(5).

For the tools and tests that read a compiled BPF object's ``.BTF`` or ``.rodata`` without libbpf
(tools/gen_contract.py, the unit tests of the BTF parser); the library loads objects through libbpf.
"""

from __future__ import annotations

import struct

from .errors import PercpuError

__all__ = ["section"]

_SHDR = struct.Struct("<IIQQQQ")  # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size


def section(path: str, name: str) -> bytes:
    """The bytes of section ``name`` of ``path``, a little-endian ELF64 object (what clang -target bpf
    writes on x86_64 and arm64). Raises :class:`PercpuError` for another file or a missing section."""
    with open(path, "rb") as f:
        elf = f.read()
    if elf[:4] != b"\x7fELF" or len(elf) < 0x40 or elf[4] != 2 or elf[5] != 1:
        raise PercpuError(f"{path}: not a little-endian ELF64 object")
    try:
        (shoff,) = struct.unpack_from("<Q", elf, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

        def header(i: int) -> tuple[int, int, int]:
            sh_name, _type, _flags, _addr, off, size = _SHDR.unpack_from(elf, shoff + i * shentsize)
            if off + size > len(elf):
                raise ValueError(f"section {i} ends past the file")
            return sh_name, off, size

        _n, stroff, _s = header(shstrndx)
        wanted = name.encode()
        for i in range(shnum):
            sh_name, off, size = header(i)
            if elf[stroff + sh_name : elf.index(b"\0", stroff + sh_name)] == wanted:
                return elf[off : off + size]
    except (struct.error, ValueError) as exc:
        raise PercpuError(f"{path}: a truncated or malformed ELF object ({exc})") from exc
    raise PercpuError(f"{path}: no {name} section")
