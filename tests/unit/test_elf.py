"""_elf.py: one reader of ELF sections, for the contract generator and the BTF tests."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from percpu import _elf
from percpu.errors import PercpuError
from percpu.objects import bundled


def _elf64(sections: dict[str, bytes]) -> bytes:
    """A minimal little-endian ELF64 file: a null section, the given ones, then .shstrtab."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n in (*sections, ".shstrtab"))
    body = b"".join(sections.values()) + names
    shoff = 0x40 + len(body)
    header = bytearray(0x40)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x28, shoff)
    struct.pack_into("<HHH", header, 0x3A, 64, len(sections) + 2, len(sections) + 1)
    shdrs = bytes(64)  # section 0: SHN_UNDEF
    off, name_off = 0x40, 1
    for n, data in (*sections.items(), (".shstrtab", names)):
        shdrs += struct.pack("<IIQQQQ", name_off, 1, 0, 0, off, len(data)) + bytes(24)
        off += len(data)
        name_off += len(n) + 1
    return bytes(header) + body + shdrs


def test_sections_by_name(tmp_path: Path) -> None:
    p = tmp_path / "x.o"
    p.write_bytes(_elf64({".BTF": b"\x9f\xeb\x01\x00", ".rodata": b"abc", ".rodata.str": b"zz"}))
    assert _elf.section(str(p), ".BTF") == b"\x9f\xeb\x01\x00"
    assert _elf.section(str(p), ".rodata") == b"abc"  # not its prefix's neighbour .rodata.str
    with pytest.raises(PercpuError, match=r"x\.o: no \.maps section"):
        _elf.section(str(p), ".maps")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"#!/bin/sh\n" + bytes(100), "not a little-endian ELF64 object"),
        (b"\x7fELF\x01\x01" + bytes(100), "not a little-endian ELF64 object"),  # ELF32
        (b"\x7fELF\x02\x02" + bytes(100), "not a little-endian ELF64 object"),  # big-endian
    ],
)
def test_other_files_are_refused(tmp_path: Path, data: bytes, message: str) -> None:
    p = tmp_path / "x.o"
    p.write_bytes(data)
    with pytest.raises(PercpuError, match=message):
        _elf.section(str(p), ".BTF")


def test_a_truncated_object_is_refused_not_misread(tmp_path: Path) -> None:
    whole = _elf64({".BTF": b"\x9f\xeb\x01\x00" * 64})
    p = tmp_path / "x.o"
    p.write_bytes(whole[: len(whole) - 100])  # the section headers cut off
    with pytest.raises(PercpuError, match="truncated or malformed"):
        _elf.section(str(p), ".BTF")


@pytest.mark.parametrize("obj", ["syscount.bpf.o", "test_maps.bpf.o"])
def test_the_shipped_objects_have_btf(obj: str) -> None:
    btf = _elf.section(bundled(obj), ".BTF")
    magic, version = struct.unpack_from("<HB", btf)
    assert (magic, version) == (0xEB9F, 1)
