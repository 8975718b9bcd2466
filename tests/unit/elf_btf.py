"""The .BTF section of an ELF object, read with nothing but the ELF64 header layout (elf(5))."""

from __future__ import annotations

import struct


def btf_section(path: str) -> bytes:
    """The bytes of ``path``'s ``.BTF`` section (a little-endian ELF64 object, as clang -target bpf
    writes on x86_64 and arm64)."""
    with open(path, "rb") as f:
        elf = f.read()
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ValueError(f"{path}: not a little-endian ELF64 object")
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, off, size = struct.unpack_from("<IIQQQQ", elf, shoff + i * shentsize)
        return name, off, size

    _n, stroff, _s = section(shstrndx)
    for i in range(shnum):
        name, off, size = section(i)
        end = elf.index(b"\0", stroff + name)
        if elf[stroff + name : end] == b".BTF":
            return elf[off : off + size]
    raise ValueError(f"{path}: no .BTF section")
