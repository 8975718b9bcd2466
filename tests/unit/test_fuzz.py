"""Hypothesis fuzzing of everything that decodes untrusted bytes: the BTF parser and layout, and the value
codecs. Every input must give a result or a :class:`PercpuError`, never another exception, within the
deadline Hypothesis enforces per example (a walk exponential in the input would blow through it).

The example count is kept small so the unit suite stays fast; ``PERCPU_FUZZ_EXAMPLES=5000`` runs more.
"""

from __future__ import annotations

import os
import struct
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from percpu import btf as btf_mod
from percpu.btf import Btf, parse_btf
from percpu.cpus import CpuList
from percpu.errors import PercpuError
from percpu.values import Int, IntCodec, PerCpuValue, codec_for, reduce_cpus

from .test_btf import HDR_LEN, BtfBuilder, _dag

EXAMPLES = int(os.environ.get("PERCPU_FUZZ_EXAMPLES", "80"))
# Generous for a shared, noisy 2-CPU machine; every input here is a few KiB, so linear work takes
# milliseconds and anything exponential takes far longer.
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=2),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def exercise(btf: Btf) -> int:
    """Ask every question of every type (at most 64 of them); count the answers that were results."""
    answered = 0
    for type_id in range(max(btf.count + 2, 2))[:64]:
        for call in (
            btf.type_name,
            btf.describe,
            btf.enum_values,
            btf.size,
            btf.dtype,
            btf.resolve,
            btf.is_char,
        ):
            try:
                call(type_id)
                answered += 1
            except PercpuError:
                pass
        for size in (0, 1, 4, 8, 16):
            try:
                codec = btf_mod.btf_codec(btf, type_id, size)
            except PercpuError:
                continue
            if codec is not None:
                assert codec.size == size
                check_codec_decodes_anything(codec, bytes(range(size)))
        try:
            # The exact decoding, of bytes that are not all zeros (bitfields, signs and enum names differ).
            raw = (bytes(range(1, 256)) * 17)[: btf.size(type_id)] if btf.size(type_id) <= 4096 else None
            if raw is not None:
                btf.value(type_id, raw)
                answered += 1
        except PercpuError:
            pass
    return answered


def check_codec_decodes_anything(codec: Any, raw: bytes) -> None:
    arr = np.zeros(1, dtype=codec.dtype)
    arr.view(np.uint8).reshape(-1)[:] = np.frombuffer(raw, dtype=np.uint8)
    value = codec.decode(arr[0])
    try:
        again = codec.encode(value)
    except PercpuError:
        return
    assert len(again) == codec.size


# --- arbitrary bytes --------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=2048))
def test_parse_arbitrary_bytes(raw: bytes) -> None:
    try:
        btf = parse_btf(raw)
    except PercpuError:
        return
    exercise(btf)


@FUZZ
@given(st.binary(min_size=1, max_size=1024), st.data())
def test_arbitrary_bytes_behind_a_valid_header(body: bytes, data: st.DataObject) -> None:
    """A well-formed header over random sections: reaches the record and string parsers, not the magic
    check only."""
    type_len = data.draw(st.integers(0, len(body)))
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, HDR_LEN, 0, type_len, type_len, len(body) - type_len)
    try:
        btf = parse_btf(header + body)
    except PercpuError:
        return
    exercise(btf)


@FUZZ
@given(st.data())
def test_flipped_bytes_of_a_valid_blob(data: st.DataObject) -> None:
    b = BtfBuilder()
    u32 = b.int_("u32", 4)
    char = b.int_("char", 1, 1)
    comm = b.array(char, 16)
    s = b.struct(
        "val", 32, [("pid", u32, 0), ("n", u32, 32), ("comm", comm, 64), ("tail", b.array(u32, 2), 192)]
    )
    b.typedef("val_t", s)
    raw = bytearray(b.blob())
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        btf = parse_btf(bytes(raw))
    except PercpuError:
        return
    exercise(btf)


# --- structurally valid, semantically hostile BTF ---------------------------------------------------------

NAMES = ["", "char", "signed char", "unsigned char", "u32", "s", "a", "a", "_Bool", "__u8"]
COUNTS = st.sampled_from([0, 1, 2, 3, 16, 255, 1 << 16, 1 << 31, 0xFFFFFFFF]) | st.integers(0, 0xFFFFFFFF)
SIZES = st.sampled_from([0, 1, 2, 3, 4, 8, 16, 32, 64, 4096, 0xFFFFFFFF]) | st.integers(0, 0xFFFFFFFF)


@st.composite
def hostile_btf(draw: st.DrawFn) -> bytes:
    """Records of every kind (unknown ones too) whose references point anywhere: forward, backward, at
    themselves (cycles), past the last id; shared members (DAGs), huge arrays, zero sizes, bitfields,
    offsets past the end or inside a byte, and names that are valid, duplicated or out of range."""
    b = BtfBuilder()
    for name in NAMES:
        b.name(name)
    n = draw(st.integers(1, 24))

    def ref() -> int:
        return draw(st.integers(0, n + 2))

    def name() -> str:
        return draw(st.sampled_from(NAMES))

    # An unknown kind ends parsing at once: put one in a tenth of the blobs only, so most reach layout.
    unknown_at = draw(st.integers(0, n - 1)) if draw(st.integers(0, 9)) == 0 else -1
    for i in range(n):
        kind = draw(
            st.sampled_from([1, 1, 2, 3, 3, 4, 4, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19])
        )
        if i == unknown_at:
            kind = draw(st.sampled_from([0, 20, 21, 31]))
        kflag = draw(st.booleans())
        if kind == 1:
            bits = draw(st.sampled_from([8, 16, 32, 64, 128, 0, 3, 255]))
            enc = draw(st.sampled_from([0, 1, 2, 3, 4, 7, 255]))
            off = draw(st.sampled_from([0, 0, 0, 1, 7, 200]))
            b.add(1, name(), draw(SIZES), kflag=kflag, data=struct.pack("<I", enc << 24 | off << 16 | bits))
        elif kind == 3:
            b.add(3, name(), 0, data=struct.pack("<III", ref(), ref(), draw(COUNTS)))
        elif kind in (4, 5):
            members = []
            for _m in range(draw(st.integers(0, 8))):
                off = draw(st.sampled_from([0, 8, 32, 64, 3, 0xFFFFFF]) | st.integers(0, 1 << 20))
                if kflag:
                    off |= draw(st.integers(0, 255)) << 24
                members.append(struct.pack("<III", b.name(name()), ref(), off & 0xFFFFFFFF))
            b.add(kind, name(), draw(SIZES), vlen=len(members), kflag=kflag, data=b"".join(members))
        elif kind in (6, 19):
            vlen = draw(st.integers(0, 4))
            per = "<IIi" if kind == 19 else "<Ii"
            vals = b"".join(
                struct.pack(
                    per,
                    b.name(name()),
                    *([draw(st.integers(0, 2**32 - 1))] if kind == 19 else []),
                    draw(st.integers(-(2**31), 2**31 - 1)),
                )
                for _v in range(vlen)
            )
            b.add(kind, name(), draw(SIZES), vlen=vlen, kflag=kflag, data=vals)
        elif kind == 13:
            vlen = draw(st.integers(0, 3))
            b.add(13, "", ref(), vlen=vlen, data=b"".join(struct.pack("<II", 0, ref()) for _ in range(vlen)))
        elif kind == 15:
            vlen = draw(st.integers(0, 3))
            b.add(
                15,
                name(),
                draw(SIZES),
                vlen=vlen,
                data=b"".join(struct.pack("<III", ref(), 0, 4) for _ in range(vlen)),
            )
        elif kind in (14, 17):
            b.add(kind, name(), ref(), data=struct.pack("<I", draw(st.integers(0, 2**32 - 1))))
        else:  # pointers, qualifiers, fwd, func, float and unknown kinds: no trailing data
            b.add(
                kind,
                name(),
                ref() if kind != 16 else draw(SIZES),
                vlen=draw(st.sampled_from([0, 0, 1, 0xFFFF])),
                kflag=kflag,
            )
    return b.blob()


@FUZZ
@given(hostile_btf())
def test_hostile_btf(raw: bytes) -> None:
    try:
        btf = parse_btf(raw)
    except PercpuError:
        return
    exercise(btf)


@FUZZ
@given(st.integers(1, 8), st.integers(1, 8))
def test_dag_of_any_shape_is_laid_out_or_refused_in_linear_time(levels: int, fan: int) -> None:
    b, t = _dag(levels, fan)
    size = 8 * fan**levels
    btf = b.parse()
    fields = sum(fan**k for k in range(levels + 1))  # the leaf, then each struct level
    if fields > btf_mod.MAX_FIELDS:
        with pytest.raises(btf_mod.BtfError, match="fields"):
            btf.dtype(t)
        return
    d = btf.dtype(t)
    assert d is not None and d.itemsize == size


# --- value codecs -----------------------------------------------------------------------------------------

ANY_VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=40)
    | st.complex_numbers(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
DTYPES = (
    hnp.scalar_dtypes()
    | hnp.nested_dtypes(max_itemsize=64)
    | hnp.array_dtypes(subtype_strategy=hnp.integer_dtypes(endianness="<"), min_size=1, max_size=4)
)


@FUZZ
@given(DTYPES, st.data())
def test_numpy_codec_encodes_or_refuses(dtype: np.dtype[Any], data: st.DataObject) -> None:
    try:
        codec = codec_for(dtype)
    except (PercpuError, TypeError):  # a dtype holding Python objects has no bytes: TypeError by contract
        assert dtype.hasobject
        return
    value = data.draw(ANY_VALUE | hnp.from_dtype(dtype) if not dtype.hasobject else ANY_VALUE)
    try:
        raw = codec.encode(value)
    except PercpuError:
        pass
    else:
        assert len(raw) == codec.size
    check_codec_decodes_anything(codec, data.draw(st.binary(min_size=codec.size, max_size=codec.size)))


@FUZZ
@given(st.integers(1, 33), st.booleans(), st.sampled_from(["little", "big"]), ANY_VALUE | st.integers())
@example(2, False, "big", 1)  # decoded as 256: a numpy scalar's tobytes() is native order, not big-endian
def test_int_codec_round_trips_or_refuses(size: int, signed: bool, order: str, value: Any) -> None:
    codec = IntCodec(Int(size, signed, order))
    try:
        raw = codec.encode(value)
    except PercpuError:
        return
    assert len(raw) == size
    arr = np.zeros(1, dtype=codec.dtype)
    arr.view(np.uint8)[:] = np.frombuffer(raw, dtype=np.uint8)
    assert codec.decode(arr[0]) == int.from_bytes(raw, order, signed=signed)  # type: ignore[arg-type]


@FUZZ
@given(st.integers(-5, 40), st.booleans(), st.text(max_size=6))
def test_int_spec_refuses_with_a_typed_error(size: int, signed: bool, order: str) -> None:
    try:
        spec = Int(size, signed, order)
    except PercpuError:
        assert size < 1 or order not in ("little", "big")
        return
    assert spec.size == size


@FUZZ
@given(
    hnp.nested_dtypes(subtype_strategy=hnp.integer_dtypes() | hnp.floating_dtypes(), max_itemsize=48),
    st.data(),
)
def test_per_cpu_values_sum_whatever_the_record(dtype: np.dtype[Any], data: st.DataObject) -> None:
    cpus = CpuList([0, 2, 3])
    codec = codec_for(dtype)
    rows = [data.draw(st.binary(min_size=codec.size, max_size=codec.size)) for _ in cpus]
    v = PerCpuValue.from_values(rows, cpus, codec)
    with np.errstate(all="ignore"):  # random bytes make NaNs and infinities: summing them is fine
        total = v.sum()
        assert total is not None
        reduce_cpus(v.to_numpy(), "max")
