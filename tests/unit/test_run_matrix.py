"""tests/vm/run_matrix.py: a VM booted for possible > online fails when the kernel gave no hotplug CPUs,
so the possible > online tests cannot pass by skipping."""

from __future__ import annotations

import os
from typing import Any

from . import vm_scripts


def _runner() -> Any:
    return vm_scripts.load("run_matrix")


def test_a_maxcpus_vm_without_hotplug_cpus_is_a_failure() -> None:
    rm = _runner()
    vm = rm.VmSpec("x", "7", "2,maxcpus=32,sockets=32,cores=1,threads=1")
    assert rm.gap_missing(vm, "0-1", "0-1")
    assert not rm.gap_missing(vm, "0-31", "0-1")
    assert not rm.gap_missing(vm, "?", "?")  # no boot: reported by its own status


def test_a_vm_without_maxcpus_expects_no_gap() -> None:
    rm = _runner()
    assert not rm.gap_missing(rm.VmSpec("topo", "6.1", "4,sockets=2,cores=2,threads=1"), "0-3", "0-3")


def test_every_maxcpus_vm_on_a_6_9_plus_kernel_is_told_it_is_a_guest() -> None:
    rm = _runner()
    for vm in rm.VMS:
        if vm.kernel in ("6.12", "7", "host"):
            assert vm.qemu_opts == rm.HOTPLUG_AS_GUEST and not vm.microvm, vm.name


def test_each_run_writes_its_own_log(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("PERCPU_VM_CACHE", str(tmp_path))
    rm = _runner()
    log = rm.log_path(rm.VMS[0])
    assert log == os.path.join(str(tmp_path), "logs", f"{rm.VMS[0].name}.{os.getpid()}.log")
