"""BTF as the toolchains emit it: the .BTF sections clang wrote into the shipped objects (built from
bpf/*.bpf.c by scripts/build-bpf). No kernel needed; the kernel's own BTF is in tests/kernel."""

from __future__ import annotations

import numpy as np
import pytest

from percpu import _elf
from percpu.btf import Btf, btf_codec, parse_btf
from percpu.objects import bundled

from .btf_kinds import SIZE, kinds_raw

INT_SIGNED, INT_CHAR = 1, 2


def obj_btf(name: str) -> Btf:
    return parse_btf(_elf.section(bundled(name), ".BTF"))


@pytest.mark.parametrize("obj", ["syscount.bpf.o", "test_maps.bpf.o"])
def test_clang_emits_char_without_the_char_bit(obj: str) -> None:
    """The fact the string rule rests on: clang names the type and never sets BTF_INT_CHAR."""
    btf = obj_btf(obj)
    ints = {t.name: t.extra[0] for t in btf._types if t.kind == "int" and t.size_or_type == 1}
    assert ints["char"] == (INT_SIGNED << 24) | 8
    assert ints["unsigned char"] == 8
    assert all(not (enc >> 24) & INT_CHAR for enc in ints.values())


def test_char_arrays_in_syscount_keys_are_strings() -> None:
    btf = obj_btf("syscount.bpf.o")
    key = btf.find("proc_key", "struct")
    codec = btf_codec(btf, key, 24)
    assert codec is not None and codec.name == "struct proc_key"
    assert codec.dtype.names == ("tgid", "slot", "comm")
    assert codec.dtype.fields is not None and codec.dtype.fields["comm"][0] == np.dtype("S16")
    raw = (4242).to_bytes(4, "little") + (7).to_bytes(4, "little") + b"bash" + bytes(12)
    arr = np.frombuffer(raw, dtype=codec.dtype)
    rec = codec.decode(arr[0])
    assert (int(rec["tgid"]), int(rec["slot"]), bytes(rec["comm"])) == (4242, 7, b"bash")
    assert codec.encode({"tgid": 4242, "slot": 7, "comm": b"bash"}) == raw


def test_config_struct_mixes_strings_and_byte_numbers() -> None:
    btf = obj_btf("syscount.bpf.o")
    d = btf.dtype(btf.find("percpu_config", "struct"))
    assert d is not None and d.fields is not None
    assert d.fields["filter_comm"][0] == np.dtype("S16")
    assert d.fields["per_process"][0] == np.dtype("u1")


def test_u8_array_in_test_maps_stays_numbers() -> None:
    btf = obj_btf("test_maps.bpf.o")
    d = btf.dtype(btf.find("stat_val", "struct"))
    assert d is not None and d.fields is not None
    assert d.fields["tag"] == (np.dtype(("u1", (3,))), 23)  # __u8 tag[3]
    assert d.itemsize == 32


def test_clang_14_writes_a_negative_enumerator_without_a_sign_flag() -> None:
    """The fact the enum rule rests on: this machine's clang writes BLUE = -3 as val=4294967293 and no
    kind_flag; percpu reads the enum as signed (an enumerator is negative) and names the value."""
    btf = obj_btf("test_maps.bpf.o")
    color = btf.find("color", "enum")
    t = btf.type(color)
    assert not t.kind_flag and dict(t.extra)["BLUE"] == 0xFFFFFFFD
    assert btf.enum_signed(color) and btf.dtype(color) == np.dtype("<i4")
    assert btf.enum_values(color) == {1: "RED", 7: "GREEN", -3: "BLUE"}
    kinds = btf.find("kinds_val", "struct")
    bits = btf.type(btf.find("bits", "struct"))
    assert bits.kind_flag  # clang writes bitfields in the kind_flag encoding
    d = btf.dtype(kinds)
    assert d is not None and d.itemsize == SIZE and d["bits"] == np.dtype("V16")
    v = btf.value(kinds, kinds_raw(0))
    assert v["bits"]["c4"].name == "BLUE" and v["color"] == -3 and v["name"].c_string == b"ab"
