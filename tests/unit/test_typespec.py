"""Key and value types written as text: the layout C gives them (ctypes is the oracle), the codecs they
make, the errors they give, and the dump command that takes them."""

from __future__ import annotations

import ctypes
import json
import os
import re
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import percpu
from percpu.cli import main
from percpu.errors import PercpuError, SizeMismatch, TypeSpecError
from percpu.typespec import parse_type
from percpu.values import IntCodec, codec_for

from .fake_kernel import FakeKernel, installed

N = len(percpu.cpu_lists().possible)


@pytest.mark.parametrize(
    ("text", "size", "signed", "big"),
    [
        ("u8", 1, False, False),
        ("u16", 2, False, False),
        ("u24", 3, False, False),
        ("u32", 4, False, False),
        ("u64", 8, False, False),
        ("u128", 16, False, False),
        ("i8", 1, True, False),
        ("s32", 4, True, False),
        ("__s64", 8, True, False),
        ("i40", 5, True, False),
        ("__u16", 2, False, False),
        ("uint32_t", 4, False, False),
        ("int64_t", 8, True, False),
        ("int", 4, True, False),
        ("unsigned long long", 8, False, False),
        ("unsigned", 4, False, False),
        ("long", 8, True, False),
        ("u32be", 4, False, True),
        ("i16be", 2, True, True),
        ("__be32", 4, False, True),
        ("be64", 8, False, True),
        ("u24be", 3, False, True),
    ],
)
def test_integers_of_any_width_signedness_and_order(text: str, size: int, signed: bool, big: bool) -> None:
    c = parse_type(text)
    assert isinstance(c, IntCodec) and c.size == size and c.numeric
    assert (c.spec.signed, c.spec.byteorder) == (signed, "big" if big else "little")
    n = -(2 ** (size * 8 - 1)) if signed else 2 ** (size * 8) - 1
    raw = c.encode(n)
    assert raw == n.to_bytes(size, "big" if big else "little", signed=signed)
    arr = np.zeros(1, dtype=c.dtype)
    arr.view(np.uint8)[:] = np.frombuffer(raw, dtype=np.uint8)
    assert c.decode(arr[0]) == n
    with pytest.raises(PercpuError, match="does not fit"):
        c.encode(n + (-1 if signed else 1))


class Sample(ctypes.Structure):
    _fields_ = (
        ("pid", ctypes.c_uint32),
        ("comm", ctypes.c_char * 16),
        ("n", ctypes.c_uint64),
        ("flag", ctypes.c_uint8),
        ("port", ctypes.c_uint16),
        ("hist", ctypes.c_uint32 * 3),
    )


class Packed(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("a", ctypes.c_uint8), ("b", ctypes.c_uint32), ("c", ctypes.c_uint16))


class Inner(ctypes.Structure):
    _fields_ = (("x", ctypes.c_uint16), ("y", ctypes.c_uint8))


class Outer(ctypes.Structure):
    _fields_ = (("tag", ctypes.c_uint8), ("inner", Inner * 2), ("total", ctypes.c_double))


@pytest.mark.parametrize(
    ("text", "ctype"),
    [
        ("struct {u32 pid; char comm[16]; u64 n; u8 flag; u16 port; u32 hist[3]}", Sample),
        ("pid:u32,comm:char[16],n:u64,flag:u8,port:u16,hist:u32[3]", Sample),
        (
            "struct sample { __u32 pid; char comm[16]; __u64 n; __u8 flag; __u16 port; __u32 hist[3]; }",
            Sample,
        ),
        ("packed struct {u8 a; u32 b; u16 c}", Packed),
        ("struct {u8 tag; struct {u16 x; u8 y} inner[2]; double total}", Outer),
    ],
)
def test_structs_are_laid_out_as_c_lays_them_out(text: str, ctype: Any) -> None:
    c = parse_type(text)
    assert c.size == ctypes.sizeof(ctype)
    assert c.dtype.names is not None
    for name, *_ in ctype._fields_:
        assert c.dtype.fields is not None and c.dtype.fields[name][1] == getattr(ctype, name).offset, name


def test_a_declared_struct_round_trips_through_c() -> None:
    c = parse_type("pid:u32,comm:char[16],n:u64,flag:u8,port:u16,hist:u32[3]")
    s = Sample(pid=42, comm=b"bash", n=2**40, flag=1, port=443)
    s.hist[:] = (1, 2, 3)
    rec = c.decode(np.frombuffer(bytes(s), dtype=c.dtype)[0])
    assert (int(rec["pid"]), bytes(rec["comm"]), int(rec["n"]), int(rec["port"])) == (42, b"bash", 2**40, 443)
    assert list(rec["hist"]) == [1, 2, 3]
    assert c.encode(
        {"pid": 42, "comm": b"bash", "n": 2**40, "flag": 1, "port": 443, "hist": [1, 2, 3]}
    ) == bytes(s)
    with pytest.raises(PercpuError, match="not an integer"):
        c.encode({"pid": 1.5})


@pytest.mark.parametrize(
    ("text", "dtype", "name"),
    [
        ("char[16]", np.dtype("S16"), "char[16]"),
        ("u8[16]", np.dtype(("u1", (16,))), "u8[16]"),
        ("bytes[6]", np.dtype("V6"), "bytes[6]"),
        ("u32[2][3]", np.dtype(("<u4", (2, 3))), "u32[2][3]"),
        ("u64be[2]", np.dtype((">u8", (2,))), "u64be[2]"),
        ("f64", np.dtype("<f8"), "f64"),
        ("float", np.dtype("<f4"), "f32"),
        ("bool", np.dtype("?"), "bool"),
        ("u8[016]", np.dtype(("u1", (16,))), "u8[16]"),  # leading zeros: decimal, not octal
        ("u8[0x10]", np.dtype(("u1", (16,))), "u8[16]"),
    ],
)
def test_arrays_strings_floats(text: str, dtype: np.dtype[Any], name: str) -> None:
    c = parse_type(text)
    assert (c.dtype, c.name, c.size) == (dtype, name, dtype.itemsize)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "column 1: empty"),
        ("u7", "column 1: u7: integer widths are whole bytes"),
        ("u2048", "8 to 1024 bits"),
        ("x64", "column 1: unknown type 'x64'"),
        ("u64[", "column 5: expected a number"),
        ("u64[0]", "array length 0"),
        ("u64]", "column 4: unexpected ']'"),
        ("i32,u32", "a list of fields needs names: a:i32,b:u32"),
        ("struct {u32 a; u32 a}", "field 'a' appears twice"),
        ("struct {}", "at least one field"),
        ("struct {u32 a u32 b}", "expected ';' or ','"),
        ("struct {u32}", "expected a name"),
        ("struct {u24 x}", "u24 inside a struct or array"),
        ("u64 @", "unexpected character '@'"),
        ("packed u32", "expected struct after packed"),
        ("{x:" * 40 + "u8" + "}" * 40, "nested more than 16 deep"),
        ("{" * 1000 + "u8 a" + "} a" * 999, "nested more than 16 deep"),  # was a RecursionError
        ("struct{" * 300 + "u8 a" + "} a;" * 299, "nested more than 16 deep"),
        ("a:u8," * 5000, "characters; at most"),
    ],
)
def test_bad_specs_say_where_and_what(text: str, message: str) -> None:
    with pytest.raises(TypeSpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_type(text)


@pytest.mark.parametrize("text", ["01", ",", "A,,", "a", "("])
def test_what_numpy_chokes_on_is_a_type_spec_error(text: str) -> None:
    with pytest.raises(TypeSpecError):
        codec_for(text)


def test_numpy_spellings_still_work_and_u8_is_one_byte() -> None:
    assert codec_for("<u8").size == 8 and codec_for("float64").size == 8
    assert codec_for("u8").size == 1  # the kernel's __u8, not numpy's "u8"
    with pytest.raises(TypeSpecError, match="unknown type 'O'"):
        codec_for("O")  # numpy's object dtype has no bytes: not taken from numpy either


@settings(max_examples=int(os.environ.get("PERCPU_FUZZ_EXAMPLES", "80")), deadline=timedelta(seconds=2),
          database=None, suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(
    st.text(max_size=60)
    | st.lists(
        st.sampled_from(["u32", "i8", "char", "[", "]", "16", "{", "}", ";", ",", ":", "struct", "packed",
                         "a", "b", "u24", "0x10", "0", "f64", "unsigned", "long", " "]),
        max_size=25,
    ).map("".join)
    | st.text(alphabet="<>|=uifcSUVabBhHlLqQdgemMO0123456789,()[]:' ", max_size=12)  # numpy's spellings
)  # fmt: skip
def test_any_text_gives_a_codec_or_a_type_spec_error(text: str) -> None:
    """Through codec_for, so numpy's fallback parser is fuzzed too (it raised SyntaxError on "01")."""
    try:
        c = codec_for(text)
    except TypeSpecError:
        return
    assert c.size == c.dtype.itemsize


# --- declared types in the library and in percpu dump ----------------------------------------------------


def test_open_map_takes_declared_types_and_refuses_a_wrong_size() -> None:
    with installed(FakeKernel(N)):
        m = percpu.PerCpuHash.create(np.dtype((np.void, 8)), np.dtype((np.void, 8)), 8)
        with m:
            m.update(b"\x07" + bytes(7), [(i + 1).to_bytes(8, "little") for i in range(N)])
            with percpu.open_map(m.info.id, key="u64", value="u64") as typed:
                assert typed.lookup(7).sum() == N * (N + 1) // 2
            with pytest.raises(SizeMismatch, match="value type u32 is 4 bytes, the map's value size is 8"):
                percpu.open_map(m.info.id, value="u32")


def _bpftrace_like(kernel: FakeKernel) -> percpu.PerCpuHash:
    """What bpftrace's @calls[cpu] = count() leaves: a PERCPU_HASH of 8-byte keys and values, no BTF."""
    m = percpu.PerCpuHash.create(np.dtype((np.void, 8)), np.dtype((np.void, 8)), 64, name="AT_calls")
    for cpu, count in ((0, 7002), (1, 123516)):
        m.update(
            cpu.to_bytes(8, "little"), [(count if i == cpu else 0).to_bytes(8, "little") for i in range(N)]
        )
    return m


def test_dump_sum_and_cpu_with_declared_types(capsys: pytest.CaptureFixture[str]) -> None:
    with installed(FakeKernel(N)) as kernel, _bpftrace_like(kernel) as m:
        assert main(["dump", str(m.info.id), "--sum"]) == 1
        assert (
            "--sum needs numeric values; bytes[8] is not; declare what the 8-byte values are, "
            "e.g. --value-type u64" in capsys.readouterr().err
        )
        assert main(["dump", str(m.info.id), "--key-type", "u64", "--value-type", "u64", "--sum", "-j"]) == 0
        rows = {r["key"]: r["sum"] for r in map(json.loads, capsys.readouterr().out.splitlines())}
        assert rows == {0: 7002, 1: 123516}
        assert main(["dump", str(m.info.id), "--key-type", "u64", "--value-type", "u64", "--cpu", "0"]) == 0
        out = capsys.readouterr().out
        assert "key u64, value u64" in out and "key 0: cpu0=7002" in out and "key 1: cpu0=0" in out
        assert main(["dump", str(m.info.id), "--key-type", "u64", "--value-type", "u64", "--key", "1"]) == 0
        cells = "  ".join(
            f"cpu{c}={123516 if i == 1 else 0}" for i, c in enumerate(percpu.cpu_lists().possible)
        )
        assert f"key 1: {cells}  sum=123516" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--value-type", "u32"], "--value-type 'u32' is 4 bytes, but map .* has 8-byte values"),
        (["--key-type", "char[16]"], "--key-type 'char\\[16\\]' is 16 bytes, but map .* has 8-byte keys"),
        (["--value-type", "u64["], "type 'u64\\[', column 5: expected a number"),
    ],
)
def test_dump_refuses_declared_types_that_do_not_fit(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with installed(FakeKernel(N)) as kernel, _bpftrace_like(kernel) as m:
        assert main(["dump", str(m.info.id), *argv]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert re.search(message, err), err


def test_dump_odd_width_and_string_keys(capsys: pytest.CaptureFixture[str]) -> None:
    with installed(FakeKernel(N)):
        m = percpu.PerCpuHash.create(np.dtype((np.void, 16)), np.dtype((np.void, 3)), 8)
        with m:
            m.update(b"bash".ljust(16, b"\0"), [(1000 * (i + 1)).to_bytes(3, "little") for i in range(N)])
            argv = ["dump", str(m.info.id), "--key-type", "char[16]", "--value-type", "u24", "-j"]
            assert main([*argv, "--key", "bash"]) == 0
            (row,) = map(json.loads, capsys.readouterr().out.splitlines())
            assert row["key"] == "bash"
            assert [v["value"] for v in row["values"]] == [1000 * (i + 1) for i in range(N)]
            assert row["sum"] == sum(1000 * (i + 1) for i in range(N))


def test_a_float_too_large_for_its_field_is_refused_not_stored_as_inf() -> None:
    """Found by the fuzzer: 65520.0 into an f16 field became inf, silently."""
    c = parse_type("struct {bool ok; f16 x}")
    with pytest.raises(PercpuError, match="overflow"):
        c.encode({"ok": True, "x": 65520.0})
    assert c.encode({"ok": True, "x": 1.5})[2:] == np.float16(1.5).tobytes()


def test_maps_created_with_text_types() -> None:
    with installed(FakeKernel(N)):
        with percpu.PerCpuHash.create("pid:u32,comm:char[16]", "u64", 8) as m:
            assert (m.info.key_size, m.info.value_size) == (20, 8)
            m.update({"pid": 7, "comm": b"bash"}, list(range(N)))
            assert m.lookup({"pid": 7, "comm": b"bash"}).sum() == sum(range(N))
            snap = m.snapshot()
            assert bytes(snap.keys[0]["comm"]) == b"bash" and int(snap.keys[0]["pid"]) == 7
        with percpu.PerCpuArray.create("u24", 2) as a:
            a.update(1, [2**24 - 1] * N)
            assert a.lookup(1).sum() == (2**24 - 1) * N
            with pytest.raises(PercpuError, match="does not fit"):
                a.update(0, [2**24] * N)


@pytest.mark.parametrize(
    ("spec", "value", "message"),
    [
        (np.int8, [0j], "complex128 values given for int8"),  # found by the fuzzer at 2000 examples
        (np.int8, ["7"], "<U1 values given for int8"),  # numpy would parse the string
        (np.float64, 1 + 2j, "imaginary part would be lost"),
        ("struct {f64 x; u32 a}", {"x": 1j}, "imaginary part would be lost"),
        ("struct {f64 x; u32 a}", {"a": "5"}, "'5' is not an integer"),
    ],
)
def test_values_numpy_would_coerce_are_refused(spec: Any, value: Any, message: str) -> None:
    with pytest.raises(PercpuError, match=re.escape(message)):
        codec_for(spec).encode(value)
