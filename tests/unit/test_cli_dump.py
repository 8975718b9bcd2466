"""``percpu dump`` against the fake kernel: key parsing, argument checks, one CPU's values, a path that is
not a pin."""

from __future__ import annotations

import json
import struct
import sys

import numpy as np
import pytest

import percpu
from percpu import _elf
from percpu import btf as btf_mod
from percpu.btf import Btf, parse_btf
from percpu.btf._parse import _record_len
from percpu.cli import build_parser, main
from percpu.objects import bundled

from .btf_kinds import SIZE, kinds_json, kinds_raw
from .fake_kernel import FakeKernel, installed
from .test_btf import BtfBuilder

N = len(percpu.cpu_lists().possible)  # dump sizes buffers from the real sysfs list


def dump_json(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, object]]:
    assert main(["dump", *argv, "--json"]) == 0, capsys.readouterr().err
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize("text", ["9", "0x9", "0X09", "09"])
def test_integer_keys_without_btf(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with installed(FakeKernel(N)):
        m = percpu.PerCpuHash.create(np.uint32, np.dtype((np.void, 3)), 4)
        m.update(9, [b"\x01\x02\x03"] * N)
        m.update(1, [b"\x04\x05\x06"] * N)
        with m:
            (row,) = dump_json(capsys, str(m.info.id), "--key", text)
    assert row["key"] == (9).to_bytes(4, sys.byteorder).hex()  # shown as a dump shows it
    assert [v["value"] for v in row["values"]] == ["010203"] * N  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-1", "a 4-byte key is 0..4294967295"),
        ("4294967296", "a 4-byte key is 0..4294967295"),
        ("zz", "give it as an integer, decimal or 0x hex"),
        ("0x2", f"has no key 0x2 (bytes {(2).to_bytes(4, sys.byteorder).hex()})"),
    ],
)
def test_bad_integer_keys_without_btf(capsys: pytest.CaptureFixture[str], text: str, message: str) -> None:
    with installed(FakeKernel(N)), percpu.PerCpuHash.create(np.uint32, np.uint64, 4) as m:
        m.update(9, [1] * N)
        assert main(["dump", str(m.info.id), "--key", text]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_other_key_sizes_without_btf_take_hex_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    with installed(FakeKernel(N)), percpu.Hash.create(np.dtype((np.void, 3)), np.uint64, 4) as m:
        m.update(b"\x0a\x0b\x0c", 5)
        (row,) = dump_json(capsys, str(m.info.id), "--key", "0a0b0c")
        assert row == {"key": "0a0b0c", "value": (5).to_bytes(8, sys.byteorder).hex()}
        assert main(["dump", str(m.info.id), "--key", "5"]) == 1
        assert "give the 3-byte key as hex bytes" in capsys.readouterr().err
        assert main(["dump", str(m.info.id), "--key", "0a0b"]) == 1
        assert "2 bytes; the map's keys are 3 bytes" in capsys.readouterr().err


def test_key_help_says_what_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dump", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "1, 2, 4 or 8-byte key without a type: a decimal or 0x hex integer" in text
    assert "Any other key without a type: its bytes in hex" in text
    assert "A char[N] key: its text" in text
    assert "--value-type TYPE" in text and "pid:u32,comm:char[16],n:u64" in text


@pytest.mark.parametrize("limit", ["-1", "-5", "x"])
def test_limit_must_be_a_count(capsys: pytest.CaptureFixture[str], limit: str) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["dump", "1", "--limit", limit])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --limit:" in err and ("must be 0 or more" in err or "not a whole number" in err)


@pytest.mark.parametrize(("limit", "rows"), [("0", 4), ("2", 2), ("9", 4)])
def test_limit(capsys: pytest.CaptureFixture[str], limit: str, rows: int) -> None:
    with installed(FakeKernel(N)), percpu.PerCpuArray.create(np.uint64, 4) as m:
        assert len(dump_json(capsys, str(m.info.id), "--limit", limit)) == rows


@pytest.mark.parametrize("flag", [["--cpu", "0"], ["--sum"]])
def test_per_cpu_options_on_a_map_that_is_not_per_cpu(
    capsys: pytest.CaptureFixture[str], flag: list[str]
) -> None:
    with installed(FakeKernel(N)), percpu.Array.create(np.uint64, 2) as m:
        assert main(["dump", str(m.info.id), *flag]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"(ARRAY) is not a per-CPU map: it has one value per key; {flag[0]} applies only to per-CPU" in err


@pytest.mark.parametrize("path", ["/etc/passwd", "/proc/self/status"])
def test_dump_of_a_file_elsewhere_makes_no_bpf_call(capsys: pytest.CaptureFixture[str], path: str) -> None:
    kernel = FakeKernel(N)
    with installed(kernel):
        assert main(["dump", path]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"percpu: {path} is not in a BPF file system (bpffs)")
    assert kernel.calls == []


def test_dump_one_cpu_copies_only_that_cpus_values(capsys: pytest.CaptureFixture[str]) -> None:
    """dump --cpu reads one CPU's values with BPF_F_CPU where the kernel has it (Linux 7.0)."""
    kernel = FakeKernel(3, cpu_ids=(0, 4, 9), cpu_flag=True)
    with installed(kernel):
        m = percpu.PerCpuHash.create(np.uint32, np.uint32, 8, name="one_cpu")
        m.update_batch([1, 2], [[10, 14, 19], [20, 24, 29]])
        assert percpu.maps.cpu_flag_supported()  # probed now, so its own read is not counted below
        kernel.bytes_out = 0
        args = ["dump", str(m.info.id), "--cpu", "4", "-j", "--key-type", "u32", "--value-type", "u32"]
        assert main(args) == 0
        m.close()
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted((r["key"], r["cpu"], r["value"]) for r in rows) == [(1, 4, 14), (2, 4, 24)]
    assert kernel.bytes_out == 2 * 4  # one u32 per key, not three CPUs' padded values


def test_json_has_a_short_form() -> None:
    assert build_parser().parse_args(["dump", "1", "-j"]).json is True


# --- BTF: every kind decoded exactly, from the shipped object's own BTF -----------------------------------


@pytest.fixture
def kinds_btf(monkeypatch: pytest.MonkeyPatch) -> Btf:
    """test_maps.bpf.o's BTF (clang's, from bpf/test_maps.bpf.c), served for any map's btf_id."""
    btf = parse_btf(_elf.section(bundled("test_maps.bpf.o"), ".BTF"))
    monkeypatch.setattr(btf_mod, "load_btf", lambda _btf_id: btf)
    return btf


def with_btf(kernel: FakeKernel, m: percpu.Map, key: int, value: int) -> None:
    """Give a fake map the BTF ids a map made from the object carries (the fake kernel keeps none)."""
    fake = kernel.maps[m.info.id]
    fake.info = fake.info._replace(btf_id=1, btf_key_type_id=key, btf_value_type_id=value)


def test_dump_decodes_every_btf_kind_exactly(capsys: pytest.CaptureFixture[str], kinds_btf: Btf) -> None:
    """struct kinds_val written raw, a different value on each CPU: enums by name (BLUE is -3, not
    4294967293), bitfields signed and unsigned, every member of a union, floats, char arrays with every
    byte, qualifier chains. Before, the whole value was raw hex (it has bitfields)."""
    kernel = FakeKernel(N)
    u32, kinds = kinds_btf.find("__u32", "typedef"), kinds_btf.find("kinds_val", "struct")
    with installed(kernel), percpu.PerCpuArray.create(np.dtype((np.void, SIZE)), 2) as m:
        m.update(0, [kinds_raw(i % 2) for i in range(N)])
        with_btf(kernel, m, u32, kinds)
        rows = dump_json(capsys, str(m.info.id))
        assert [r["key"] for r in rows] == [0, 1]
        for i, v in enumerate(rows[0]["values"]):  # type: ignore[arg-type]
            assert v["value"] == kinds_json(i % 2), f"cpu {v['cpu']}"
        assert rows[1]["values"][0]["value"]["color"] == 0  # type: ignore[index]  # no enumerator is 0
        assert main(["dump", str(m.info.id), "--key", "0"]) == 0
    table = capsys.readouterr().out
    assert table.startswith(f"map {m.info.id} ")
    assert ", value struct kinds_val, CPUs " in table and "shown as bytes" not in table
    assert '"color":"BLUE","other":5,"bits":{"s4":-3,"u3":5,"c4":"BLUE","s40":-123456789012,' in table
    assert '"name":{"text":"ab","hex":"6162006364ff"}' in table
    if N > 1:
        assert '"f":"nan:0x7fc00001","d":"-inf","name":"percpu","names":["\\u001b[1m",""]' in table
        assert "\x1b" not in table  # a control character in a char array reaches the terminal escaped


def test_dump_of_a_map_keyed_by_an_enum(capsys: pytest.CaptureFixture[str], kinds_btf: Btf) -> None:
    """A hash that is not per-CPU, keyed by enum color: keys by enumerator name, --key by name or
    number, and the value read as its bytes (a typed lookup returns a _Bool's byte 2 as True)."""
    kernel = FakeKernel(N)
    color, kinds = kinds_btf.find("color", "enum"), kinds_btf.find("kinds_val", "struct")
    with installed(kernel), percpu.Hash.create(np.int32, np.dtype((np.void, SIZE)), 4) as m:
        m.update(-3, kinds_raw(0))
        m.update(99, kinds_raw(1))
        with_btf(kernel, m, color, kinds)
        rows = {r["key"]: r["value"] for r in dump_json(capsys, str(m.info.id))}
        assert rows == {"BLUE": kinds_json(0), 99: kinds_json(1)}
        for key in ("BLUE", "-3"):
            assert dump_json(capsys, str(m.info.id), "--key", key) == [
                {"key": "BLUE", "value": kinds_json(0)}
            ]
        assert dump_json(capsys, str(m.info.id), "--key", "99") == [{"key": 99, "value": kinds_json(1)}]
        assert main(["dump", str(m.info.id), "--key", "GREEN"]) == 1
        assert "has no key GREEN" in capsys.readouterr().err
        assert main(["dump", str(m.info.id), "--key", "PURPLE"]) == 1
        assert "'PURPLE' is not an enumerator of enum color (RED, GREEN, BLUE)" in capsys.readouterr().err
        assert main(["dump", str(m.info.id)]) == 0
    assert "key BLUE: {" in capsys.readouterr().out


def test_library_keeps_the_raw_storage_of_bitfields_and_unions_and_decodes_them_exactly(
    kinds_btf: Btf,
) -> None:
    """The library's numpy record holds what numpy can (enum color as a signed int: -3, as dump shows
    BLUE) and the raw storage of what it cannot (the bitfield struct, the unions); the codec decodes the
    whole value exactly, as dump shows it."""
    kernel = FakeKernel(N)
    u32, kinds = kinds_btf.find("__u32", "typedef"), kinds_btf.find("kinds_val", "struct")
    with installed(kernel), percpu.PerCpuArray.create(np.dtype((np.void, SIZE)), 2) as m:
        with_btf(kernel, m, u32, kinds)
        with percpu.open_map(m.info.id) as typed:
            codec = typed.value_codec
            assert isinstance(codec, btf_mod.BtfCodec) and codec.name == "struct kinds_val"
            dt = codec.dtype
            assert dt["color"] == np.dtype("<i4") and dt["name"] == np.dtype("S6")
            assert (dt["bits"], dt["word"], dt["_anon14"]) == (
                np.dtype("V16"),
                np.dtype("V4"),
                np.dtype("V2"),
            )
            assert not codec.numeric  # raw storage is not summed
            typed.update(1, [kinds_raw(0)] * N)
            rec = typed[1][typed.cpus[0]]
            assert rec["color"] == -3 and bytes(rec["bits"]) == kinds_raw(0)[8:24]
            tree = codec.value(rec.tobytes())
            assert tree["bits"]["c4"] == -3 and tree["bits"]["c4"].name == "BLUE"
            assert tree["name"] == b"ab\0cd\xff" and tree["_anon14"] == {"half": 0xFFFE, "shalf": -2}
            typed.update(1, [{"color": -3, "cv": 5}] * N)
            assert codec.value(typed[1][typed.cpus[0]].tobytes())["cv"] == 5


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"ab\0cd\xff", {"text": "ab", "hex": "6162006364ff"}),
        (b"ab\0\0\0\0", "ab"),
        (b"\xffab\0\0\0", {"text": "\ufffdab", "hex": "ff6162000000"}),
        (b"\x1b[1m\0\0", "\x1b[1m"),
    ],
)
def test_declared_char_arrays_keep_their_bytes(
    capsys: pytest.CaptureFixture[str], raw: bytes, shown: object
) -> None:
    """--value-type char[6] (no BTF): the text C reads, and the bytes where the text is not all of them
    (before: "ab", the bytes after the NUL lost)."""
    with installed(FakeKernel(N)), percpu.Hash.create(np.uint32, np.dtype((np.void, 6)), 2) as m:
        m.update(1, raw)
        (row,) = dump_json(capsys, str(m.info.id), "--key-type", "u32", "--value-type", "char[6]")
    assert row == {"key": 1, "value": shown}


def test_a_value_too_large_to_decode_one_by_one_is_shown_by_its_layout_and_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    b = BtfBuilder()
    u32 = b.int_("unsigned int", 4)
    big = b.array(b.typedef("__u8", b.int_("unsigned char", 1)), 70_000)  # 70,001 values: past 65,536
    btf = b.parse()
    monkeypatch.setattr(btf_mod, "load_btf", lambda _btf_id: btf)
    kernel = FakeKernel(N)
    with installed(kernel), percpu.Array.create(np.dtype((np.void, 70_000)), 1) as m:
        m.update(0, bytes(range(256)) * 273 + bytes(70_000 - 256 * 273))
        with_btf(kernel, m, u32, big)
        assert main(["dump", str(m.info.id), "--json"]) == 0
        out, err = capsys.readouterr()
        assert json.loads(out)["value"][:3] == [0, 1, 2]  # numpy's layout: still every number
        assert "(values shown by their numpy layout, without BTF's names and bits: BTF type 4" in err
        assert "decodes into more than 65,536 values" in err
        assert main(["dump", str(m.info.id)]) == 0
        out, err = capsys.readouterr()
        assert "\n  (values shown by their numpy layout" in out and err == ""


@pytest.mark.parametrize(
    ("vtype", "raw", "shown"),
    [
        ("f32", struct.pack("<I", 0x7FC00001), "nan:0x7fc00001"),
        ("f32", struct.pack("<I", 0x7FC00000), "nan"),
        ("f64", struct.pack("<d", float("-inf")), "-inf"),
        ("f32", struct.pack("<f", 0.1), 0.10000000149011612),
        ("u32be", b"\x00\x00\x01\x02", 258),
        ("i16", b"\xfe\xff", -2),
        ("bool", b"\x02", 2),
        ("bool", b"\x01", True),
    ],
)
def test_declared_numbers_are_json_and_exact(
    capsys: pytest.CaptureFixture[str], vtype: str, raw: bytes, shown: object
) -> None:
    """A NaN or infinity was written as NaN/Infinity, which is not JSON; a _Bool's byte 2 as true."""
    with installed(FakeKernel(N)), percpu.Hash.create(np.uint32, np.dtype((np.void, len(raw))), 2) as m:
        m.update(1, raw)
        assert main(["dump", str(m.info.id), "--key-type", "u32", "--value-type", vtype, "-j"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out, parse_constant=lambda c: pytest.fail(f"not JSON: {c}")) == {
        "key": 1,
        "value": shown,
    }


def libbpf_sanitized(raw: bytes) -> bytes:
    """The object's BTF as libbpf loads it into a kernel before 5.13 (bpf_object__sanitize_btf): each
    float an anonymous empty struct of its size, each type tag a const (the records keep their length)."""
    out = bytearray(raw)
    hdr_len, type_off, type_len = struct.unpack_from("<III", raw, 4)
    start = hdr_len + type_off
    types = raw[start : start + type_len]
    pos = 0
    while pos < len(types):
        (info,) = struct.unpack_from("<I", types, pos + 4)
        kind = (info >> 24) & 0x1F
        if kind in (16, 18):  # FLOAT -> STRUCT, vlen 0, same size; TYPE_TAG -> CONST, same target
            struct.pack_into("<II", out, start + pos, 0, (4 if kind == 16 else 10) << 24)
        pos += _record_len(types, pos)
    return bytes(out)


def test_dump_of_kinds_as_a_kernel_before_5_13_holds_them(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the kernel has no BTF float, the floats are empty structs of their size: shown as the hex of
    their bytes, not as {} (what the kernel test expects on such a kernel)."""
    btf = parse_btf(libbpf_sanitized(_elf.section(bundled("test_maps.bpf.o"), ".BTF")))
    monkeypatch.setattr(btf_mod, "load_btf", lambda _btf_id: btf)
    kernel = FakeKernel(N)
    u32, kinds = btf.find("__u32", "typedef"), btf.find("kinds_val", "struct")
    assert not any(t.kind in ("float", "type_tag") for t in btf._types)
    with installed(kernel), percpu.PerCpuArray.create(np.dtype((np.void, SIZE)), 2) as m:
        m.update(0, [kinds_raw(i % 2) for i in range(N)])
        with_btf(kernel, m, u32, kinds)
        rows = dump_json(capsys, str(m.info.id), "--key", "0")
    for i, v in enumerate(rows[0]["values"]):  # type: ignore[arg-type]
        assert v["value"] == kinds_json(i % 2, floats=False)
