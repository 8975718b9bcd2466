"""btf_write.py: the BTF percpu gives the maps it creates, read back by percpu's own BTF reader (btf.py),
and what create() does with it (tests/kernel/test_btf_write_kernel.py loads it into the real kernel)."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import percpu
from percpu import _uapi
from percpu.btf import Btf, parse_btf
from percpu.btf_write import BtfWriter, map_btf, unrepresentable
from percpu.cpus import CpuLists
from percpu.maps import CGROUP_STORAGE_KEY
from percpu.values import Int, codec_for

from .fake_kernel import FakeKernel

Fake = tuple[FakeKernel, CpuLists]


def written(spec: Any, name: str = "") -> tuple[Btf, int]:
    """``spec``'s BTF, parsed back by btf.py, and its type id."""
    w = BtfWriter()
    type_id = w.codec(codec_for(spec), name)
    return parse_btf(w.blob()), type_id


def read_back(spec: Any) -> np.dtype[Any] | None:
    btf, type_id = written(spec)
    return btf.dtype(type_id)


STAT = np.dtype(
    [("calls", "<u8"), ("bytes", "<u4"), ("comm", "S16"), ("ok", "?"), ("lat", "<f8"), ("h", "<u2", (3,))],
    align=True,
)


@pytest.mark.parametrize(
    "spec",
    [
        np.uint8,
        np.int16,
        np.uint32,
        np.int64,
        np.float16,
        np.float32,
        np.float64,
        np.bool_,
        "S16",
        np.dtype(("<u4", (2, 3))),
        STAT,
        np.dtype([("inner", STAT, (2,)), ("tail", "<u4")]),
        "struct {u32 pid; char comm[16]; u64 n}",
        "packed struct {u8 a; u32 b; u16 c[3]}",
        CGROUP_STORAGE_KEY,
        Int(1),
        Int(2, signed=True),
        Int(8),
    ],
    ids=str,
)
def test_what_is_written_reads_back_as_the_same_type(spec: Any) -> None:
    assert read_back(spec) == codec_for(spec).dtype


def test_names_are_the_kernels_and_cs() -> None:
    btf, t = written(STAT, "demo_value")
    assert btf.type_name(t) == "struct demo_value"
    assert [btf.type_name(m) for _n, m, _o in btf.resolve(t).extra] == [
        "__u64",
        "__u32",
        "char[16]",
        "_Bool",
        "double",
        "__u16[3]",
    ]
    assert btf.type_name(btf.resolve(written(np.uint64)[1]).id) == "unsigned long long"
    assert written(Int(16))[0].type_name(written(Int(16))[1]) == "unsigned __int128"
    assert written(Int(16, signed=True))[0].type_name(written(Int(16, signed=True))[1]) == "__int128"


def test_raw_bytes_are_numbers_and_char_arrays_text() -> None:
    # bytes: __u8[n], which every reader shows as numbers; numpy "S": char[n], a C string.
    assert read_back("V16") == np.dtype(("u1", (16,)))
    btf, t = written(codec_for(bytes, 5))
    assert btf.type_name(t) == "__u8[5]"
    assert read_back("S4") == np.dtype("S4")


def test_padding_and_offsets_are_kept() -> None:
    dt = np.dtype({"names": ["a", "b"], "formats": ["<u2", "<u8"], "offsets": [2, 16], "itemsize": 32})
    btf, t = written(dt)
    assert btf.size(t) == 32
    assert [(n, off) for n, _m, off in btf.resolve(t).extra] == [("a", 16), ("b", 128)]  # bit offsets
    assert btf.dtype(t) == dt


def test_fields_given_out_of_offset_order_are_written_in_it() -> None:
    dt = np.dtype({"names": ["late", "early"], "formats": ["<u4", "<u4"], "offsets": [4, 0]})
    btf, t = written(dt)
    assert [n for n, _m, _o in btf.resolve(t).extra] == ["early", "late"]
    back = btf.dtype(t)
    assert back is not None and back.fields == dt.fields


class Pair(ctypes.Structure):
    _fields_ = (("pid", ctypes.c_uint32), ("tag", ctypes.c_char * 4), ("n", ctypes.c_uint64))


class Either(ctypes.Union):
    _fields_ = (("i", ctypes.c_int32), ("f", ctypes.c_float))


def test_ctypes_structures_are_named_by_their_class() -> None:
    btf, t = written(Pair)
    assert btf.type_name(t) == "struct Pair"
    assert btf.describe(t).splitlines()[1:4] == [
        "    __u32 pid;  /* offset 0 */",
        "    char[4] tag;  /* offset 4 */",
        "    __u64 n;  /* offset 8 */",
    ]
    btf, t = written(Either)
    assert btf.resolve(t).kind == "union" and btf.type_name(t) == "union Either"
    assert [(n, off) for n, _m, off in btf.resolve(t).extra] == [("i", 0), ("f", 0)]
    btf, t = written(ctypes.c_uint16 * 3)
    assert btf.type_name(t) == "__u16[3]"


def test_a_ctypes_struct_named_like_a_kernel_special_struct_is_anonymous() -> None:
    # The kernel finds bpf_spin_lock, bpf_timer... in a map value by struct name: never take one.
    class bpf_timer(ctypes.Structure):  # noqa: N801 - the name is the point
        _fields_ = (("a", ctypes.c_uint64), ("b", ctypes.c_uint64))

    btf, t = written(bpf_timer)
    assert btf.resolve(t).name == ""


class _Bits(ctypes.Structure):
    _fields_ = (("a", ctypes.c_uint32, 3), ("b", ctypes.c_uint32, 29))


class _Big(ctypes.BigEndianStructure):
    _fields_ = (("a", ctypes.c_uint32),)


class _Pointer(ctypes.Structure):
    _fields_ = (("p", ctypes.c_void_p),)


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        (">u4", "byte order"),
        (Int(4, byteorder="big"), "big-endian"),
        (Int(3), "3-byte integer"),
        (Int(32), "32-byte integer"),
        ("u24", "3-byte integer"),
        ("U4", "no C type"),
        ("M8[s]", "no C type"),
        ("c8", "no C type"),
        (np.longdouble, "float has no exact BTF type"),
        (np.dtype([("my field", "<u4")]), "not a C identifier"),
        (np.dtype([("été", "<u4")]), "not a C identifier"),
        (np.dtype({"names": ["a", "b"], "formats": ["<u8", "<u4"], "offsets": [0, 4]}), "overlap"),
        ("packed struct {u8 a; f32 b}", "float member 'b' at offset 1"),
        (np.dtype(("<u4", (0,))), "no bytes|no elements"),
        (_Bits, "bitfield"),
        (_Big, "byte order"),
        (_Pointer, "pointers"),
    ],
    ids=str,
)
def test_what_btf_cannot_describe_exactly_gets_no_btf(spec: Any, why: str) -> None:
    try:
        codec = codec_for(spec)
    except (TypeError, percpu.PercpuError):
        pytest.skip(f"{spec!r} is not a type percpu takes at all")
    reason = unrepresentable(codec)
    assert reason is not None
    assert any(w in reason for w in why.split("|")), reason
    assert map_btf(codec_for(np.uint32), codec, "m") is None
    assert map_btf(codec, codec_for(np.uint32), "m") is None


def test_a_float_the_kernel_takes_is_written() -> None:
    # btf_float_check_member() wants min(8, size) alignment; a float inside an array is not checked.
    assert unrepresentable(codec_for("packed struct {u8 a; f32 b[2]}")) is None
    assert unrepresentable(codec_for("packed struct {u32 a; f32 b}")) is None


def test_the_blob_is_btfs_layout() -> None:
    mb = map_btf(codec_for(np.uint32), codec_for(STAT), "demo")
    assert mb is not None
    magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
        "<HBBIIIII", mb.blob
    )
    assert (magic, version, flags, hdr_len) == (_uapi.BTF_MAGIC, _uapi.BTF_VERSION, 0, 24)
    assert type_off == 0 and str_off == type_len and hdr_len + str_off + str_len == len(mb.blob)
    assert mb.blob[hdr_len + str_off] == 0  # the empty name first, as the kernel requires
    btf = parse_btf(mb.blob)
    assert btf.type_name(mb.key_type_id) == "__u32"
    assert btf.type_name(mb.value_type_id) == "struct demo_value"
    # One type written once: the key's __u32 is the value's.
    assert btf.resolve(mb.value_type_id).extra[1][1] == mb.key_type_id


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("demo", "struct demo_key", "struct demo_value"),
        ("my.map", "struct my_map_key", "struct my_map_value"),
        ("1st", "struct (anonymous)", "struct (anonymous)"),
        ("", "struct (anonymous)", "struct (anonymous)"),
    ],
)
def test_top_level_structs_are_named_after_the_map(name: str, key: str, value: str) -> None:
    mb = map_btf(codec_for(STAT), codec_for(STAT), name)
    assert mb is not None
    btf = parse_btf(mb.blob)
    assert (btf.type_name(mb.key_type_id), btf.type_name(mb.value_type_id)) == (key, value)


# --- create() on the fake kernel: the BTF goes with the map, and never stops it ----------------------


def test_create_passes_the_btf_of_its_key_and_value(fake: Fake) -> None:
    kernel, _ = fake
    kernel.calls.clear()
    with percpu.PerCpuHash.create(np.uint32, STAT, 8, name="stats") as m:
        assert kernel.calls[:2] == ["btf_load", "map_create"]
        assert m.info.btf_id and m.info.btf_key_type_id and m.info.btf_value_type_id
        btf = parse_btf(kernel.btfs[m.info.btf_id])
        assert btf.type_name(m.info.btf_value_type_id) == "struct stats_value"
        assert btf.dtype(m.info.btf_value_type_id) == STAT
    assert not kernel.btf_fds  # the BTF fd was closed: the map holds its own reference


def test_a_type_without_btf_creates_the_map_without_it(fake: Fake) -> None:
    kernel, _ = fake
    kernel.calls.clear()
    with percpu.PerCpuHash.create(np.uint32, Int(3), 8) as m:
        assert "btf_load" not in kernel.calls
        assert m.info.btf_id == 0
        assert m.value_codec.name == "uint24"


@pytest.mark.parametrize("refused", ["btf_load", "map_create"])
def test_btf_the_kernel_refuses_is_left_out(fake: Fake, refused: str) -> None:
    """A kernel without a BTF kind, a map type with key rules of its own, no privilege to load BTF:
    the map is created without BTF, as libbpf retries."""
    kernel, _ = fake
    kernel.fail_next[refused] = errno.EINVAL
    kernel.calls.clear()
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 8) as m:
        assert m.info.btf_id == 0
        assert kernel.calls.count("map_create") == (2 if refused == "map_create" else 1)
        m.update_all(1, 5)
        assert m[1].sum() == 5 * len(m.cpus)
    assert not kernel.btf_fds


def test_an_error_that_is_not_the_btfs_is_still_raised(fake: Fake) -> None:
    kernel, _ = fake
    kernel.deny_ops.add("map_create")
    with pytest.raises(percpu.PermissionDenied):
        percpu.PerCpuHash.create(np.uint32, np.uint64, 8)
    assert not kernel.btf_fds


# --- random structured dtypes: written, read back the same ------------------------------------------

_INTS = ["<u1", "<i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8"]
_SCALARS = [*_INTS, "<f2", "<f4", "<f8", "?", "S3", "S8", "V2"]
_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,11}", fullmatch=True)


@st.composite
def _struct(draw: st.DrawFn, depth: int = 0) -> np.dtype[Any]:
    n = draw(st.integers(1, 5))
    names = draw(st.lists(_NAMES, min_size=n, max_size=n, unique=True))
    formats: list[Any] = []
    offsets: list[int] = []
    off = 0
    for _ in names:
        if depth < 2 and draw(st.integers(0, 5)) == 0:
            f: Any = draw(_struct(depth + 1))
        else:
            f = np.dtype(draw(st.sampled_from(_SCALARS)))
        if draw(st.booleans()):
            f = np.dtype((f, tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))))
        align = min(8, f.base.itemsize) if f.base.kind in "iuf" else 1
        off += draw(st.integers(0, 7))  # padding before it, sometimes leaving a member unaligned
        if draw(st.booleans()):
            off = -(-off // align) * align
        offsets.append(off)
        formats.append(f)
        off += f.itemsize
    itemsize = off + draw(st.integers(0, 8))
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": itemsize})


def _kernel_takes_its_floats(dt: np.dtype[Any]) -> bool:
    """btf_float_check_member(): a float member (not one in an array) at a multiple of min(8, size)."""
    assert dt.fields is not None
    for fdt, off, *_ in dt.fields.values():
        if fdt.names is not None and not _kernel_takes_its_floats(fdt):
            return False
        if fdt.subdtype is not None and fdt.base.names is not None and not _kernel_takes_its_floats(fdt.base):
            return False
        if fdt.kind == "f" and fdt.subdtype is None and off % min(8, fdt.itemsize):
            return False
    return True


def _as_read(dt: np.dtype[Any]) -> np.dtype[Any]:
    """What btf.py reads for ``dt``: raw bytes (``V``) come back as the ``__u8[n]`` they are written as."""
    if dt.names is not None:
        assert dt.fields is not None
        return np.dtype(
            {
                "names": list(dt.names),
                "formats": [_as_read(dt.fields[n][0]) for n in dt.names],
                "offsets": [dt.fields[n][1] for n in dt.names],
                "itemsize": dt.itemsize,
            }
        )
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        inner = _as_read(base)
        return np.dtype((inner.base, (*shape, *inner.shape)))
    if dt.kind == "V":
        return np.dtype(("u1", (dt.itemsize,)))
    return dt


@settings(
    max_examples=int(os.environ.get("PERCPU_FUZZ_EXAMPLES", "150")),
    deadline=timedelta(seconds=2),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(_struct())
def test_random_structured_dtypes_read_back_exactly(dt: np.dtype[Any]) -> None:
    codec = codec_for(dt)
    reason = unrepresentable(codec)
    if not _kernel_takes_its_floats(dt):
        assert reason is not None and "float member" in reason
        return
    assert reason is None
    mb = map_btf(codec_for(np.uint32), codec, "fuzz")
    assert mb is not None
    btf = parse_btf(mb.blob)
    assert btf.size(mb.value_type_id) == dt.itemsize
    assert btf.dtype(mb.value_type_id) == _as_read(dt)
