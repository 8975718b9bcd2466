"""objects.py before load: opening a .bpf.o through libbpf (no kernel call, no privilege), its programs,
maps and .rodata, and what is refused. Loading and attaching are in tests/kernel/test_objects_kernel.py."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import pytest

from percpu import _contract
from percpu.errors import BpfError, LibbpfError, PercpuError
from percpu.objects import BpfObject, bundled

from .fake_kernel import FakeKernel, installed


@pytest.fixture
def syscount() -> Iterator[BpfObject]:
    obj = BpfObject(bundled("syscount.bpf.o"))
    try:
        yield obj
    finally:
        obj.close()


def test_an_opened_object_lists_its_programs_and_maps(syscount: BpfObject) -> None:
    assert not syscount.loaded
    assert syscount.programs and all(not p.name.startswith(".") for p in syscount.programs.values())
    assert any(n.endswith(".rodata") for n in syscount.map_names)
    assert len(syscount.rodata()) >= ctypes.sizeof(_contract.PercpuConfig)


def test_rodata_takes_the_config_and_refuses_what_does_not_fit(syscount: BpfObject) -> None:
    cfg = _contract.PercpuConfig()
    raw = bytes(range(256))[: ctypes.sizeof(cfg)]
    ctypes.memmove(ctypes.addressof(cfg), raw, len(raw))
    syscount.set_rodata(cfg)
    assert syscount.rodata().tobytes()[: len(raw)] == raw
    size = len(syscount.rodata())
    with pytest.raises(
        PercpuError, match=rf"\.rodata of syscount\.bpf\.o is {size} bytes; 2 bytes at offset"
    ):
        syscount.set_rodata(b"xx", offset=size - 1)


def test_unknown_map_names_the_maps_there_are(syscount: BpfObject) -> None:
    with pytest.raises(PercpuError, match=r"syscount\.bpf\.o has no map 'nope' \(maps: .*\.rodata"):
        syscount.set_max_entries("nope", 4)


def test_a_closed_object_refuses_use(syscount: BpfObject) -> None:
    prog = next(iter(syscount.programs.values()))
    syscount.close()
    with pytest.raises(PercpuError, match="is closed"):
        syscount.rodata()
    with pytest.raises(PercpuError, match="is closed"):
        prog.autoload = False


def test_files_that_are_not_bpf_objects(tmp_path: Path) -> None:
    with pytest.raises(PercpuError, match="no BPF object at"):
        BpfObject(tmp_path / "missing.o")
    text = tmp_path / "text.o"
    text.write_text("not an ELF file\n")
    with pytest.raises(BpfError, match="cannot open BPF object"):
        BpfObject(text)
    with pytest.raises(LibbpfError, match=r"lacks nothing\.bpf\.o; reinstall percpu"):
        bundled("nothing.bpf.o")


def test_objects_need_the_real_libbpf_not_a_fake_machine() -> None:
    with installed(FakeKernel(2)), pytest.raises(LibbpfError, match="needs the real libbpf"):
        BpfObject(bundled("syscount.bpf.o"))


def test_an_object_its_programs_and_rodata_refuse_copies_and_pickles(syscount: BpfObject) -> None:
    """copy.copy() of a BpfObject made a second owner of the same libbpf object (closing it closed the
    original's programs, and the original's finalizer closed the copy's); deepcopy and pickle failed on a
    lock. libbpf cannot duplicate an object: each says so, and what to do instead."""
    import copy
    import pickle

    from percpu.errors import NotCopyable

    prog = next(iter(syscount.programs.values()))
    for thing, named in ((syscount, "syscount.bpf.o"), (prog, prog.name), (syscount.rodata(), ".rodata")):
        for how in (copy.copy, copy.deepcopy, pickle.dumps):
            with pytest.raises(NotCopyable, match=rf"{named}.* cannot be copied or pickled") as e:
                how(thing)
            assert isinstance(e.value, TypeError)
    assert syscount._state.obj is not None  # the refusals left the object open


def test_map_sizes_beyond_32_bits_are_refused_not_truncated(syscount: BpfObject) -> None:
    """set_max_entries(name, 2**32 + 1) set 1 (ctypes kept the low 32 bits)."""
    from percpu.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="max_entries 4294967297 does not fit the kernel's u32"):
        syscount.set_max_entries("counts", 2**32 + 1)
    with pytest.raises(InvalidArgument, match="max_entries -1 "):
        syscount.set_max_entries("counts", -1)
