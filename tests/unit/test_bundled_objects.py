"""Which shipped BPF objects the loader picks: the set built for the running machine's architecture."""

from __future__ import annotations

import os

import pytest

from percpu import PercpuError, objects
from percpu.objects import bundled

BPF_DIR = os.path.join(os.path.dirname(objects.__file__), "_bpf")
NAMES = sorted(f for f in os.listdir(BPF_DIR) if f.endswith(".bpf.o"))


def test_both_architectures_ship_the_same_objects() -> None:
    assert "syscount.bpf.o" in NAMES and "syscount_nobtf.bpf.o" in NAMES
    assert sorted(f for f in os.listdir(os.path.join(BPF_DIR, "arm64")) if f.endswith(".bpf.o")) == NAMES


@pytest.mark.parametrize(
    ("machine", "sub"), [("x86_64", ""), ("amd64", ""), ("aarch64", "arm64"), ("arm64", "arm64")]
)
def test_objects_by_machine(machine: str, sub: str) -> None:
    for name in NAMES:
        assert bundled(name, machine) == os.path.join(BPF_DIR, sub, name)


def test_the_running_machine_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(objects.platform, "machine", lambda: "aarch64")
    assert bundled("syscount.bpf.o") == os.path.join(BPF_DIR, "arm64", "syscount.bpf.o")
    monkeypatch.setattr(objects.platform, "machine", lambda: "x86_64")
    assert bundled("syscount.bpf.o") == os.path.join(BPF_DIR, "syscount.bpf.o")


@pytest.mark.parametrize("machine", ["riscv64", "s390x", "i686", "armv7l"])
def test_an_architecture_without_objects_is_a_clear_error(machine: str) -> None:
    with pytest.raises(PercpuError, match=f"not for this '{machine}' machine.*obj_path") as e:
        bundled("syscount.bpf.o", machine)
    assert "aarch64, x86_64" in str(e.value)


def test_a_missing_object_names_the_fix() -> None:
    with pytest.raises(PercpuError, match=r"lacks arm64/nothing\.bpf\.o.*scripts/build-bpf"):
        bundled("nothing.bpf.o", "aarch64")
