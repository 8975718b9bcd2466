"""tools/vm_support_table.py: the support table is made of what the guest reported, and a row run on a
subset of the test files names them."""

from __future__ import annotations

from typing import Any

from .vm_scripts import tool


def _tool() -> Any:
    return tool("vm_support_table")


def _result(**kw: Any) -> dict[str, Any]:
    doctor = {
        "checks": [
            {"check": "tp_btf program at sys_enter", "status": "ok"},
            {"check": "raw_tp program at sys_enter", "status": "fail"},
            {"check": "batch ops on PERCPU_ARRAY", "status": "ok"},
            {"check": "batch ops on PERCPU_HASH", "status": "ok"},
            {"check": "BPF_F_CPU (one CPU's slot)", "status": "ok"},
        ],
        "syscall_counter_modes": [
            {"mode": "latency", "supported": True, "detail": "start times by thread id"}
        ],
    }
    r = {
        "vm": "7-max32",
        "package": "linux-binary-7.3.4+deb13-amd64",
        "kernel": "7.3.4+deb13-amd64",
        "smp": "2,maxcpus=32",
        "possible": "0-31",
        "online": "0-1",
        "passed": 14,
        "failed": 0,
        "error": 0,
        "skipped": 0,
        "doctor": doctor,
    }
    r.update(kw)
    return r


def test_row_is_what_the_guest_reported() -> None:
    rows = _tool().table([_result()]).splitlines()
    assert len(rows) == 3
    cells = [c.strip() for c in rows[2].strip("|").split("|")]
    assert cells[0] == "7.3.4+deb13-amd64 (`linux-binary-7.3.4+deb13-amd64`)"
    assert cells[1] == "tp_btf"
    assert cells[2] == "yes / yes"
    assert cells[3] == "yes"
    assert cells[4:7] == ["?", "?", "yes (start times by thread id)"]
    assert cells[7] == "0-31 vs 0-1"
    assert cells[8] == "14 / 0 / 0 (7-max32)"


def test_row_names_the_test_files_that_ran() -> None:
    r = _result(tests=["tests/vm/test_vm.py", "tests/kernel/test_cpu_flag_kernel.py::test_x"])
    last = _tool().table([r]).splitlines()[2].strip("|").split("|")[-1].strip()
    assert last == "14 / 0 / 0 (7-max32: test_cpu_flag_kernel, test_vm)"


def test_row_says_how_many_tests_were_left_out() -> None:
    left_out = ["tests/vm/test_vm.py::a", "tests/vm/test_vm.py::b"]
    r = _result(tests=["tests/vm/test_vm.py"], deselected=left_out)
    last = _tool().table([r]).splitlines()[2].strip("|").split("|")[-1].strip()
    assert last == "14 / 0 / 0 (7-max32: test_vm; 2 tests of them left out)"


def test_no_gap_says_so() -> None:
    r = _result(possible="0-1", online="0-1", smp="2,maxcpus=24")
    assert "0-1 = 0-1 (no hotplug CPUs offered with -smp 2,maxcpus=24)" in _tool().table([r])
