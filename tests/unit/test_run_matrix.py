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
        if vm.kernel in ("6.12", "7", "host") and "maxcpus=" in vm.smp:
            assert vm.qemu_opts == rm.HOTPLUG_AS_GUEST and not vm.microvm, vm.name


def test_each_run_writes_its_own_log(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("PERCPU_VM_CACHE", str(tmp_path))
    rm = _runner()
    log = rm.log_path(rm.VMS[0])
    assert log == os.path.join(str(tmp_path), "logs", f"{rm.VMS[0].name}.{os.getpid()}.log")


def test_counts_come_from_the_summary_line() -> None:
    rm = _runner()
    out = "....F.s [ 50%]\n....\n= 1 failed, 9 passed, 1 skipped in 12.00s =\n"
    assert rm.pytest_counts(out) == {"passed": 9, "failed": 1, "skipped": 1, "error": 0}


def test_a_run_cut_off_before_its_summary_counts_its_progress() -> None:
    """A guest stopped at the VM time limit printed no summary: its progress characters say how far it
    got, instead of a row of zeros."""
    rm = _runner()
    out = (
        '{\n "checks": []\n}\nPERCPU_DOCTOR_END\n'
        + "." * 72
        + " [ 71%]\n"
        + "......F...E.s..................\n(timed out after 2400 s)\n"
    )
    assert rm.pytest_counts(out) == {"passed": 100, "failed": 1, "skipped": 1, "error": 1}


def _result(rm: Any, vm: str, passed: int) -> Any:
    r = rm.Result(vm, kernel="k", possible="0-15", online="0-1", status="ok", tests=("t.py",))
    r.counts = {"passed": passed, "failed": 0, "skipped": 0, "error": 0}
    return r


def test_results_replace_the_rows_of_the_vms_that_ran_and_keep_the_others(tmp_path: Any) -> None:
    import json

    rm = _runner()
    path = str(tmp_path / "results.json")
    first, second, last = rm.VMS[0].name, rm.VMS[1].name, rm.VMS[3].name
    rm.write_results(path, [_result(rm, last, 3), _result(rm, first, 1)])
    rm.write_results(path, [_result(rm, first, 7), _result(rm, second, 5)])
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)
    assert [(r["vm"], r["passed"]) for r in rows] == [(first, 7), (second, 5), (last, 3)]
    assert rows[0]["tests"] == ["t.py"] and rows[0]["smp"] == rm.VMS[0].smp


def test_results_file_that_is_not_json_is_a_clear_error(tmp_path: Any) -> None:
    import pytest

    rm = _runner()
    path = tmp_path / "results.json"
    path.write_text("not json")
    with pytest.raises(SystemExit, match="is not a results file"):
        rm.write_results(str(path), [_result(rm, rm.VMS[0].name, 1)])
    assert path.read_text() == "not json"


def test_every_test_ci_leaves_out_of_a_vm_exists() -> None:
    """pytest ignores a --deselect that names no test: a renamed test would otherwise slip back into, or
    silently out of, CI's set. Each id CI leaves out must be one its targets collect."""
    import subprocess
    import sys

    rm = _runner()
    for vm in rm.VMS:
        if not vm.ci_deselect:
            continue
        targets = vm.ci_tests or rm.CI_TESTS
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *targets],
            cwd=rm.REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        collected = {line for line in out.splitlines() if "::" in line}
        assert set(vm.ci_deselect) <= collected, set(vm.ci_deselect) - collected
        assert len(collected) > len(vm.ci_deselect)


def test_the_guest_runs_a_script_so_no_test_list_reaches_the_kernel_command_line() -> None:
    """virtme-ng hands --exec to the guest on the kernel command line, which x86 cuts at 2048 bytes; a
    command past that left the 5.10 guest idle with no output. The test list goes into a script."""
    import shlex

    rm = _runner()
    vm = next(v for v in rm.VMS if v.ci_deselect)
    spec = rm.VmSpec(**{**vm.__dict__, "tests": vm.ci_tests or rm.CI_TESTS, "deselect": vm.ci_deselect})
    script = rm.guest_script(spec, "/venv/bin/python")
    argv = shlex.split(script.splitlines()[-1])
    assert [a for a in argv if a.startswith("tests/")] == list(spec.tests)
    left_out = [a.removeprefix("--deselect=") for a in argv if a.startswith("--deselect=")]
    assert left_out == list(vm.ci_deselect)
    cmd = rm.vng_command(spec, "/boot/vmlinuz", "sh /cache/logs/x.1.sh")
    assert cmd[-2:] == ["--exec", "sh /cache/logs/x.1.sh"]


def test_a_guest_that_stops_before_pytest_ends_says_so() -> None:
    """pytest's exit status comes back from the guest; a run without it stopped mid-test (not a timeout)."""
    rm = _runner()
    spec = next(v for v in rm.VMS if v.ci)
    assert rm.guest_script(spec, "/venv/bin/python").rstrip().endswith("echo PERCPU_PYTEST_RC=$rc; exit $rc")
    started = "PERCPU_DOCTOR_BEGIN\n{}\nPERCPU_DOCTOR_END\n....."
    assert "stopped before pytest ended" in rm.stop_note(started, 1)
    assert "vng exited with 1" in rm.stop_note(started, 1)
    assert rm.stop_note(started + "\n5 passed in 1.00s\nPERCPU_PYTEST_RC=0\n", 0) == ""
    assert rm.stop_note(started, 124) == ""  # a timeout says so itself
    assert rm.stop_note("no guest output", 1) == ""  # a guest that never started has its own note
    in_doctor = rm.stop_note(
        "PERCPU_POSSIBLE=0-31 PERCPU_ONLINE=0-1 PERCPU_KERNEL=7.3\nPERCPU_DOCTOR_BEGIN\n", 0
    )
    assert "stopped in the middle of `percpu doctor`" in in_doctor and "vng exited with 0" in in_doctor


def test_cpus_are_taken_offline_in_every_guest_with_hotplug_cpus_ci_included() -> None:
    """The hotplug tests run in every maxcpus guest (5.10 to 7.x all let a guest take CPU 1 offline), and
    in both of CI's: the oldest kernel and the newest."""
    rm = _runner()
    hotplug = "tests/vm/test_hotplug_vm.py"
    for vm in rm.VMS:
        if "maxcpus=" in vm.smp:
            assert hotplug in vm.tests, vm.name
        if vm.ci:
            assert hotplug in (vm.ci_tests or rm.CI_TESTS), vm.name


def test_exec_runs_a_command_in_the_guest_instead_of_pytest() -> None:
    """--exec: a benchmark in the guest (the 7.x guest's 2 of 32 CPUs online), its status the VM's."""
    rm = _runner()
    vm = rm.VmSpec("x", "7", "2,maxcpus=32", command=".venv/bin/python benchmarks/bench_x.py --json")
    script = rm.guest_script(vm, "/repo/.venv/bin/python")
    assert "/tmp/percpu-doctor.json .venv/bin/python benchmarks/bench_x.py --json; rc=$?" in script
    assert "-m pytest" not in script and "percpu doctor --json" in script


def test_only_a_guest_that_never_started_its_command_is_booted_again() -> None:
    """A boot that printed nothing and ended quickly ran nothing of percpu's: CI boots it once more. A guest
    that printed its CPU lists, failed tests, or ran out of time is a result, never retried."""
    rm = _runner()
    silent = rm.Result("7-max32", status="FAILED", seconds=9.0, output="(the command printed nothing)")
    assert rm.never_booted(silent)
    started = "PERCPU_POSSIBLE=0-31 PERCPU_ONLINE=0-1 PERCPU_KERNEL=7.3\n"
    assert not rm.never_booted(rm.Result("7-max32", status="FAILED", seconds=9.0, output=started))
    assert not rm.never_booted(rm.Result("7-max32", status="timed out", seconds=2400.0, output=""))
    assert not rm.never_booted(rm.Result("7-max32", status="FAILED", seconds=600.0, output=""))
    assert not rm.never_booted(rm.Result("7-max32", status="ok", seconds=9.0, output=""))


def test_numpy_stays_on_baseline_simd_for_everything_the_guest_runs() -> None:
    """numpy's AVX2 kernels gave wrong sort orders under TCG: the setting that keeps numpy off them is
    exported before the doctor runs, so the doctor, pytest and an --exec command all run with it."""
    rm = _runner()
    for vm in (next(v for v in rm.VMS if v.ci), rm.VmSpec("x", "7", "2,maxcpus=32", command="true")):
        lines = rm.guest_script(vm, "/venv/bin/python").splitlines()
        export = lines.index("export NPY_DISABLE_CPU_FEATURES=X86_V3")
        doctor = next(i for i, line in enumerate(lines) if "percpu doctor --json" in line)
        assert export < doctor < len(lines) - 1, lines
