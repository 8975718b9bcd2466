"""Maps percpu creates carry BTF for their key and value types: the kernel takes it, and a map pinned by
one process comes back typed in another, in ``percpu dump`` and in ``bpftool map dump``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import percpu
from percpu import _machine
from percpu.btf_write import BtfWriter, map_btf, unrepresentable
from percpu.values import Int, codec_for

from ..unit.test_btf_write import STAT, Pair, _as_read, _struct
from .conftest import HANG, percpu_cmd

pytestmark = pytest.mark.kernel

POSSIBLE = percpu.cpu_lists().possible
NCPU = len(POSSIBLE)
KERNEL = tuple(int(n) for n in os.uname().release.split("-")[0].split(".")[:2])
# BTF_KIND_FLOAT arrived in Linux 5.13: before it the kernel refuses a blob with a float, and the map is
# made without BTF (what these tests then check instead).
FLOATS = KERNEL >= (5, 13)


def _has_float(dt: np.dtype[Any]) -> bool:
    if dt.subdtype is not None:
        return _has_float(dt.base)
    if dt.names is not None:
        return any(_has_float(dt.fields[n][0]) for n in dt.names)  # type: ignore[index]
    return dt.base.kind == "f"


# What bookworm's bpftool (7.1) prints whole: it stops at a float ("(unsupported-kind"), so the values
# compared with it hold none.
PLAIN = np.dtype(
    [("calls", "<u8"), ("bytes", "<u4"), ("comm", "S16"), ("ok", "?"), ("h", "<u2", (3,))], align=True
)


@pytest.fixture
def pin_path() -> Iterator[str]:
    bpffs = "/sys/fs/bpf"
    if not os.path.ismount(bpffs):
        subprocess.run(["mount", "-t", "bpf", "bpf", bpffs], check=True)
    path = os.path.join(bpffs, f"percpu_btf_{os.getpid()}")
    yield path
    if os.path.exists(path):
        os.unlink(path)


def _fill(m: percpu.PerCpuHash) -> None:
    m.update(
        3, [{"calls": 5 + i, "bytes": 7, "comm": b"bash", "ok": True, "h": [1, 2, 3]} for i in range(NCPU)]
    )


@pytest.mark.skipif(not FLOATS, reason="a value with a float has BTF from Linux 5.13 (BTF_KIND_FLOAT)")
def test_a_structured_map_reopens_typed_in_a_fresh_process(pin_path: str) -> None:
    """Before, the pinned map came back as ``bytes[4]`` and ``bytes[48]``, and ``get(3)`` refused the
    integer key."""
    with percpu.PerCpuHash.create(np.uint32, STAT, 8, name="pcpu_btf") as m:
        assert m.info.btf_id and m.info.btf_key_type_id and m.info.btf_value_type_id
        m.update_all(3, {"calls": 5, "bytes": 7, "comm": b"bash", "ok": True, "lat": 1.5, "h": [1, 2, 3]})
        m.pin(pin_path)
    code = textwrap.dedent(
        f"""
        import json, percpu
        with percpu.open_map({pin_path!r}) as m:
            v = m.get(3)
            print(json.dumps({{
                "key": m.key_codec.name,
                "value": m.value_codec.name,
                "fields": list(m.value_codec.dtype.names),
                "calls": int(v.to_numpy()["calls"].sum()),
                "comm": [bytes(r["comm"]).decode() for r in v.to_numpy()],
                "lat": float(v[{POSSIBLE[0]}]["lat"]),
            }}))
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {
        "key": "__u32",
        "value": "struct pcpu_btf_value",
        "fields": ["calls", "bytes", "comm", "ok", "lat", "h"],
        "calls": 5 * NCPU,
        "comm": ["bash"] * NCPU,
        "lat": 1.5,
    }


def test_percpu_dump_and_bpftool_show_the_fields(pin_path: str) -> None:
    with percpu.PerCpuHash.create(np.uint32, PLAIN, 8, name="pcpu_btf_dump") as m:
        _fill(m)
        m.pin(pin_path)
    r = percpu_cmd("dump", pin_path)
    assert r.returncode == 0, r.stderr
    assert "key __u32, value struct pcpu_btf_dump_value" in r.stdout
    assert f'cpu{POSSIBLE[0]}={{"calls":5,"bytes":7,"comm":"bash","ok":true,"h":[1,2,3]}}' in r.stdout
    out = subprocess.run(
        ["bpftool", "-j", "map", "dump", "pinned", pin_path], capture_output=True, text=True, timeout=HANG
    )
    assert out.returncode == 0, out.stderr
    (entry,) = json.loads(out.stdout)
    formatted = entry["formatted"]
    assert formatted["key"] == 3
    assert [v["value"] for v in formatted["values"]] == [
        {"calls": 5 + i, "bytes": 7, "comm": "bash", "ok": True, "h": [1, 2, 3]} for i in range(NCPU)
    ]


def test_ctypes_and_int_types_reach_bpftool_named(pin_path: str) -> None:
    with percpu.PerCpuArray.create(Pair, 2, name="pcpu_btf_ct") as m:
        m.update_all(1, Pair(pid=42, tag=b"ab", n=2**40))
        m.pin(pin_path)
    out = subprocess.run(
        ["bpftool", "-j", "map", "dump", "pinned", pin_path], capture_output=True, text=True, timeout=HANG
    )
    assert out.returncode == 0, out.stderr
    one = next(e["formatted"] for e in json.loads(out.stdout) if e["formatted"]["key"] == 1)
    assert one["values"][0]["value"] == {"pid": 42, "tag": "ab", "n": 2**40}
    info = subprocess.run(
        ["bpftool", "-j", "btf", "dump", "id", str(percpu.open_map(pin_path).info.btf_id)],
        capture_output=True,
        text=True,
        timeout=HANG,
    )
    assert info.returncode == 0, info.stderr
    names = {t.get("name") for t in json.loads(info.stdout)["types"]}
    assert {"Pair", "__u32", "__u64", "char"} <= names


def test_cgroup_storage_gets_the_kernels_key_type() -> None:
    """PERCPU_CGROUP_STORAGE has key rules of its own (struct bpf_cgroup_storage_key, or a u64): percpu's
    key meets them; a key that does not is refused by the kernel, and the map is made without BTF."""
    with percpu.PerCpuCgroupStorage.create(value=np.uint64) as m:
        assert m.info.btf_id and m.info.btf_key_type_id
    with percpu.PerCpuCgroupStorage.create(value=np.uint64, key=np.uint64) as m:
        assert m.info.btf_id and m.info.btf_key_type_id
    other = np.dtype([("a", "<u4"), ("b", "<u4"), ("c", "<u8")])
    assert map_btf(codec_for(other), codec_for(np.uint64)) is not None  # BTF has it; the kernel does not
    with percpu.PerCpuCgroupStorage.create(value=np.uint64, key=other) as m:
        assert m.info.btf_id == 0
        assert m.key_codec.dtype == other


def test_a_refused_blob_says_why() -> None:
    w = BtfWriter()
    u32 = w.int_(4, False)
    w.struct("", 4, [("not an identifier", u32, 0, False)])
    with pytest.raises(OSError, match="Invalid name") as e:
        _machine.current().libbpf().btf_load(w.blob())
    assert e.value.errno == 22


@pytest.mark.parametrize(
    "spec",
    [np.uint8, np.int64, np.float32, np.bool_, "S16", "V3", np.dtype(("<u4", (2, 3))), STAT, Pair, Int(16)],
    ids=str,
)
def test_the_kernel_takes_what_percpu_writes(spec: Any) -> None:
    codec = codec_for(spec)
    assert unrepresentable(codec) is None
    with percpu.PerCpuHash.create(np.uint32, codec, 4) as m:
        if _has_float(codec.dtype) and not FLOATS:
            assert m.info.btf_id == 0  # refused by a kernel before 5.13; made without BTF
        else:
            assert m.info.btf_id, f"the kernel refused the BTF of {codec.name}"


@settings(
    max_examples=int(os.environ.get("PERCPU_FUZZ_EXAMPLES", "40")),
    deadline=None,  # each example loads maps into the kernel: a neighbour's load can stretch it, not fail it
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(_struct())
def test_the_kernel_takes_random_structs(dt: np.dtype[Any]) -> None:
    codec = codec_for(dt)
    if unrepresentable(codec) is not None or dt.itemsize > 32768:
        return
    for cls in (percpu.PerCpuHash, percpu.Hash):
        with cls.create(np.uint32, codec, 2) as m:
            if _has_float(dt) and not FLOATS:
                assert m.info.btf_id == 0  # refused by a kernel before 5.13; made without BTF
                continue
            assert m.info.btf_id, f"the kernel refused the BTF of {dt}"
            with percpu.Map.from_id(m.info.id) as again:  # typed by the kernel's copy of the BTF
                assert again.value_codec.dtype == _as_read(dt)
