"""src/percpu/_uapi.py against the C headers it is generated from (tools/gen_uapi.py)."""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
from types import ModuleType

import pytest

from percpu import _uapi
from percpu.maps import PERCPU_TYPES, MapType

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOOL = os.path.join(ROOT, "tools", "gen_uapi.py")
HEADERS = ("/usr/include/linux/bpf.h", "/usr/include/bpf/libbpf.h")


def _gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_uapi", TOOL)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


needs_headers = pytest.mark.skipif(
    shutil.which("clang") is None or not all(os.path.exists(h) for h in HEADERS),
    reason="needs clang, linux-libc-dev and libbpf-dev to compile the headers (scripts/setup.sh --dev)",
)


@needs_headers
def test_the_committed_module_is_what_the_headers_make() -> None:
    with open(os.path.join(ROOT, "src", "percpu", "_uapi.py"), encoding="utf-8") as f:
        assert f.read() == _gen().generate(), "run tools/gen_uapi.py"


def test_structs_are_the_sizes_libbpf_and_the_kernel_know() -> None:
    # Sizes of Linux 6.1's uapi and libbpf 1.1: the kernel accepts a struct that ends early, and
    # libbpf reads ``sz`` to know which fields a caller filled in.
    assert ctypes.sizeof(_uapi.BpfMapInfo) == 88
    assert ctypes.sizeof(_uapi.BpfProgInfo) == 232
    assert _uapi.BpfProgInfo.recursion_misses.offset == 208
    assert ctypes.sizeof(_uapi.MapCreateOpts) == 48
    assert ctypes.sizeof(_uapi.MapBatchOpts) == 24
    assert ctypes.sizeof(_uapi.ObjectOpenOpts) == 80
    assert _uapi.ObjectOpenOpts.kconfig.offset == 40  # after the unnamed 32-bit field libbpf keeps
    assert ctypes.sizeof(_uapi.BpfInsn) == 8


def test_map_types_name_the_per_cpu_ones_once() -> None:
    assert MapType is _uapi.MapType
    assert {t.name for t in PERCPU_TYPES} == {
        "PERCPU_HASH",
        "PERCPU_ARRAY",
        "LRU_PERCPU_HASH",
        "PERCPU_CGROUP_STORAGE",
    }
    assert MapType.name_of(5) == "percpu_hash"
    assert MapType.name_of(999) == "type_999"
    assert MapType.ARENA == 33  # newer than the headers: marked with its version in the generator


def test_btf_records_and_the_bits_of_their_packed_words() -> None:
    # struct btf_type holds an anonymous union (size or type): one Union the struct reaches through.
    assert ctypes.sizeof(_uapi.BtfType) == 12
    assert _uapi.BtfType.size.offset == _uapi.BtfType.type.offset == 8
    t = _uapi.BtfType(size=24)
    assert t.type == 24
    assert ctypes.sizeof(_uapi.BtfHeader) == 24
    assert ctypes.sizeof(_uapi.BtfMember) == ctypes.sizeof(_uapi.BtfArray) == 12
    assert ctypes.sizeof(_uapi.BtfLoadOpts) == 24  # libbpf 1.1's; later ones add fields after log_size
    # The compiler's reading of linux/btf.h's macros, never typed in by hand.
    assert _uapi.BTF_INFO_KIND_BITS == 0x1F << 24
    assert _uapi.BTF_INFO_VLEN_BITS == 0xFFFF
    assert _uapi.BTF_INFO_KFLAG_BITS == 1 << 31
    assert _uapi.BTF_INT_ENCODING_BITS | _uapi.BTF_INT_OFFSET_BITS | _uapi.BTF_INT_BITS_BITS == 0x0FFF00FF
    assert _uapi.BTF_MEMBER_BITFIELD_SIZE_BITS | _uapi.BTF_MEMBER_BIT_OFFSET_BITS == 0xFFFFFFFF
