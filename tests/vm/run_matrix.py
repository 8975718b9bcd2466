"""Boot Debian's kernels (5.10 to 7.x, fetched by package name) in qemu (virtme-ng, TCG), most with possible
CPUs far above online CPUs, and run percpu's kernel tests inside each. Called by scripts/vm-matrix; prints
one row per VM and exits non-zero if any VM failed.

The guest sees the host's files, so the project's .venv runs inside unchanged. Each VM also runs
``percpu doctor --json``; ``--results FILE`` writes every VM's row and doctor report as JSON, from which
tools/vm_support_table.py generates the support table in docs/vm-matrix.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kernels  # a sibling script, not a package import

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The library, syscount, CLI and inspection kernel tests, the possible > online tests, and CPUs taken
# offline and back while percpu counts. The exporter's
# Prometheus test runs on the host only (it scrapes on a wall clock a TCG guest cannot keep).
DEFAULT_TESTS = (
    "tests/vm/test_vm.py",
    "tests/vm/test_hotplug_vm.py",
    "tests/kernel/test_maps_kernel.py",
    "tests/kernel/test_cpu_flag_kernel.py",
    "tests/kernel/test_syscount_kernel.py",
    "tests/kernel/test_cli_syscalls.py",
    "tests/kernel/test_inspect_kernel.py",
)

# CI's share, sized for its time budget (TCG runs these tests 10-20x slower than the host, and the CLI
# tests start dozens of interpreters): the library, the counter in every mode, possible > online, the
# doctor's per-kernel report, and the CLI counting a command (in a cgroup of its own) exactly. `stat -p`
# ending with its process (a pidfd, the same since 5.3) is the host's and the full matrix's.
CI_TESTS = (
    "tests/vm/test_vm.py",
    "tests/vm/test_hotplug_vm.py",
    "tests/kernel/test_maps_kernel.py",
    "tests/kernel/test_syscount_kernel.py",
    "tests/kernel/test_inspect_kernel.py::test_doctor_probes_features",
    "tests/kernel/test_cli_syscalls.py::test_stat_command_json_counts_the_command_exactly",
)


# What CI's guests leave out of their files: tests whose subject is percpu's own code, not the kernel's.
# Errors raised before any syscall, copies, forks and sums in user space, a kernel's refusal or an
# unreachable CPU simulated by the test (the no-privilege test's answer is the same EPERM on every kernel
# since 5.8), the same path again with more calls, and round trips of value sizes whose padding the other
# sizes already show (1, 4, 16, 100 besides 3, 8, 12, 4096, 32768: the rule is round_up(size, 8) on every
# kernel). The host runs every one of them, and so does the full matrix; in a TCG guest each cost seconds
# to a minute of interpreter starts and program loads (docs/vm-matrix.md, "CI's guests").
_MAPS = "tests/kernel/test_maps_kernel.py::"
_SYSCOUNT = "tests/kernel/test_syscount_kernel.py::"
CI_HOST_ONLY = (
    *(
        f"{_MAPS}test_{name}"
        for name in (
            "value_too_big_is_refused_before_the_kernel",
            "wrong_declared_size_is_an_error_before_any_syscall",
            "a_dropped_copy_leaves_the_original_on_its_own_map",
            "a_fork_while_another_thread_is_inside_a_map_call",
            "ids_and_flags_beyond_their_c_type_are_refused",
            "sums_over_cpus_are_exact_past_64_bits",
            "permission_denied_names_the_fix",
        )
    ),
    *(
        f"{_MAPS}test_round_trip_and_bpftool_agree[{kind}-{size}]"
        for kind in ("percpu_array", "percpu_hash", "lru_percpu_hash", "percpu_cgroup_storage")
        for size in (1, 4, 16, 100)
    ),
    *(
        f"{_SYSCOUNT}test_{name}"
        for name in (
            "a_copy_of_a_counter_is_refused_and_the_counter_counts_on",
            "cgroup_filter_refuses_what_is_not_a_cgroup",
            "per_process_cache_of_a_cpu_no_flush_reaches_is_read_directly",
            "per_process_falls_back_to_the_hash_when_no_program_can_run_on_a_cpu",
            "latency_falls_back_to_the_task_store_when_the_switch_program_cannot_attach",
            "exact_count_per_process_on_its_cpu[1000000]",
        )
    ),
)


@dataclass(frozen=True)
class VmSpec:
    """One guest: which kernel (a series of kernels.SERIES, or "host"), its CPUs, extra qemu options and
    kernel command line, and what runs inside."""

    name: str
    kernel: str
    smp: str = "2"
    qemu_opts: tuple[str, ...] = ()
    append: tuple[str, ...] = ()
    numa: tuple[str, ...] = ()  # vng --numa specs (needs the pc machine, not microvm)
    microvm: bool = True  # False: the q35 machine (SeaBIOS, SMBIOS, the VMware port), as --numa implies
    tests: tuple[str, ...] = DEFAULT_TESTS
    marks: str = "kernel or vm"
    memory: str = "2G"
    ci: bool = False  # run by scripts/test (CI); the rest run with --all
    ci_tests: tuple[str, ...] = ()  # what CI runs in this VM (default CI_TESTS)
    ci_deselect: tuple[str, ...] = ()  # test ids of ci_tests that CI leaves out in this VM
    deselect: tuple[str, ...] = ()  # what this run leaves out (set from ci_deselect for CI)
    note: str = ""
    command: str = ""  # run this shell command (from the repository's root) instead of pytest: --exec


# Linux 6.9+ on x86 counts a MADT local APIC entry with neither "enabled" nor "online capable" (all of
# QEMU's absent CPUs: its MADT is revision 1, before online capable existed) as a hotplug CPU only when it
# runs under a hypervisor it recognises (arch/x86/kernel/acpi/boot.c acpi_is_processor_usable:
# `return !hypervisor_is_type(X86_HYPER_NATIVE)`). Under TCG no hypervisor signature is in CPUID, so the
# kernel believes it is on bare metal and allows "2 present CPUs plus 0 hotplug CPUs" whatever maxcpus
# says. The kernel also recognises VMware without CPUID: with the hypervisor bit clear, an SMBIOS serial
# containing "VMware" and an answer on VMware's I/O port (QEMU's vmport device, on the q35 machine)
# (arch/x86/kernel/cpu/vmware.c vmware_platform). So these guests are told they run under VMware, as a
# cloud guest is told by its hypervisor, and get possible CPUs 0-31 with 0-1 online. One socket per CPU
# keeps each absent CPU out of a present package, which the 6.9+ code ignored on bare metal until late 2025.
HOTPLUG_AS_GUEST = ("-cpu max,hypervisor=off", "-smbios type=1,serial=VMware-percpu-vm-matrix")

VMS: tuple[VmSpec, ...] = (
    # CI's time goes where each VM proves most. The oldest kernel runs CI_TESTS but for the variants that
    # prove nothing more there: 5.10 lacks the 5.11 helpers for real, so their simulation repeats the
    # tests of every mode; a cgroup filter given by path or relative path is resolved to the id in user
    # space (the host runs all three); 1,000,000 calls count the same path as 100,000; the no-BTF object is
    # proven there by test_without_kernel_btf_the_raw_tp_object_counts_exactly. The newest (possible CPUs
    # 0-31, online 0-1) runs the possible > online tests, the library with BPF_F_CPU, and the counter.
    VmSpec(
        "5.10-max16",
        "5.10",
        "2,maxcpus=16",
        ci=True,
        ci_deselect=(
            *CI_HOST_ONLY,
            *(
                f"{_SYSCOUNT}test_without_the_5_11_helpers_every_mode_counts_exactly[{m}]"
                for m in ("default", "per_process", "errors", "latency", "failed_only", "filters")
            ),
            f"{_SYSCOUNT}test_cgroup_filter_counts_only_tasks_in_the_cgroup[path]",
            f"{_SYSCOUNT}test_cgroup_filter_counts_only_tasks_in_the_cgroup[relative]",
            f"{_SYSCOUNT}test_compat_calls_are_counted_under_their_own_names[no-btf]",
            # The per-process table's two ways through many processes: 5.10 runs the per-CPU cache's (its
            # flush program and the hash behind it), 7.x both; each is 1-2 minutes of forks under TCG.
            f"{_SYSCOUNT}test_exited_processes_leave_the_table_and_every_call_adds_up[hash]",
            f"{_SYSCOUNT}test_per_process_counts_exact_with_many_processes_alternating_on_one_cpu[hash]",
            # hotplug in the middle of a count is test_hotplug_vm.py's, here and in 7.x; the slots' test
            # runs in 7.x and the full matrix
            "tests/vm/test_vm.py::test_hotplug_keeps_slots_and_counts",
        ),
        note="the oldest: bullseye, Amazon Linux 2's series",
    ),
    VmSpec(
        "6.1-max64",
        "6.1",
        "2,maxcpus=64",
        note="possible 0-63, online 0-1",
    ),
    VmSpec(
        "6.12-max32",
        "6.12",
        "2,maxcpus=32,sockets=32,cores=1,threads=1",
        qemu_opts=HOTPLUG_AS_GUEST,
        microvm=False,
        note="possible 0-31, online 0-1 (told it runs under VMware: see HOTPLUG_AS_GUEST)",
    ),
    VmSpec(
        "7-max32",
        "7",
        "2,maxcpus=32,sockets=32,cores=1,threads=1",
        qemu_opts=HOTPLUG_AS_GUEST,
        microvm=False,
        ci=True,
        ci_tests=(
            "tests/vm/test_vm.py",
            "tests/vm/test_hotplug_vm.py",
            "tests/kernel/test_maps_kernel.py",
            "tests/kernel/test_cpu_flag_kernel.py",
            "tests/kernel/test_syscount_kernel.py",
            "tests/kernel/test_inspect_kernel.py::test_doctor_probes_features",
        ),
        # 7.x has the 5.11 helpers: their absence, simulated here, is 5.10's guest's to prove for real
        ci_deselect=(
            *CI_HOST_ONLY,
            *(
                f"{_SYSCOUNT}test_without_the_5_11_helpers_every_mode_counts_exactly[{m}]"
                for m in ("default", "per_process", "errors", "latency", "failed_only", "filters")
            ),
            f"{_SYSCOUNT}test_without_task_local_storage_the_storage_map_is_not_created",
        ),
        note="the newest: trixie-backports; possible 0-31, online 0-1",
    ),
    VmSpec(
        "host-max8",
        "host",
        "2,maxcpus=8,sockets=8,cores=1,threads=1",
        qemu_opts=HOTPLUG_AS_GUEST,
        microvm=False,
        note="this machine's kernel, when its image is on disk",
    ),
    # CpuLists: two sockets of two cores on two NUMA nodes, one CPU isolated (tests/vm/test_topology_vm.py).
    VmSpec(
        "topo-2x2-numa",
        "6.1",
        "4,sockets=2,cores=2,threads=1",
        numa=("1G,cpus=0-1", "1G,cpus=2-3"),
        append=("isolcpus=3",),
        tests=("tests/vm/test_topology_vm.py",),
        marks="vm",
    ),
    # Disturbances (tests/vm/test_disturb_vm.py): CPU 1 isolated, device interrupts kept on CPU 0, and the
    # tick stopped there where the kernel has nohz_full (not Debian's 5.10): on that idle CPU percpu's
    # counts must equal the kernel's. Two CPUs only (one is idle): one guest at a time on a shared machine.
    *(
        VmSpec(
            f"disturb-{series}",
            series,
            "2",
            append=("isolcpus=1", "irqaffinity=0", *(() if series == "5.10" else ("nohz_full=1",))),
            tests=(
                "tests/vm/test_disturb_vm.py",
                "tests/kernel/test_disturb_kernel.py",
                "tests/kernel/test_disturb_tasks_kernel.py",
                "tests/kernel/test_cli_disturb.py",
            ),
            note="CPU 1 isolated" + ("" if series == "5.10" else ", nohz_full"),
        )
        for series in ("5.10", "6.12", "7")
    ),
)


# Seconds per VM. CI's sets took 350-960 s alone on a 2-CPU machine; every test file took 1,831 s (7.x)
# alone and 3,416-4,314 s (6.12, 5.10) with another guest beside it (docs/vm-matrix.md).
CI_TIMEOUT = 2400.0
FULL_TIMEOUT = 7200.0


@dataclass
class Result:
    vm: str
    kernel: str = "?"
    package: str = ""
    possible: str = "?"
    online: str = "?"
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    status: str = "?"
    doctor: dict[str, object] | None = None
    output: str = ""
    tests: tuple[str, ...] = ()  # the pytest targets that ran, so a row run on a subset says so
    deselected: tuple[str, ...] = ()  # and the test ids left out of them


def host_kernel() -> tuple[str | None, str]:
    rel = os.uname().release
    for cand in (f"/boot/vmlinuz-{rel}", f"/lib/modules/{rel}/vmlinuz"):
        if os.path.exists(cand):
            return cand, ""
    return None, f"no image of the running kernel ({rel}) on disk (/boot, /lib/modules)"


def _cpu_count(cpulist: str) -> int:
    n = 0
    for part in cpulist.split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit():
            n += int(hi or lo) - int(lo) + 1
    return n


def vng_command(vm: VmSpec, image: str, inner: str) -> list[str]:
    cmd = ["vng", "--run", image, "--disable-kvm", "--memory", vm.memory]
    if vm.numa or not vm.microvm:
        cmd.append("--disable-microvm")
        for n in vm.numa:
            cmd += ["--numa", n]
    qemu = [f"-smp {vm.smp}", *vm.qemu_opts]
    cmd.append("--qemu-opts=" + " ".join(qemu))
    for a in vm.append:
        cmd += ["--append", a]
    return [*cmd, "--exec", inner]


def log_path(vm: VmSpec) -> str:
    """The guest's console log. The cache is shared by everyone on the machine, and a second run of the
    same VM truncating the first's log while its guest still writes leaves both unreadable: each run
    writes its own file."""
    return os.path.join(kernels.cache_dir(), "logs", f"{vm.name}.{os.getpid()}.log")


# In the guest's own /tmp (a tmpfs of its boot): the doctor's JSON, and its exit status in DOCTOR_REPORT.rc.
DOCTOR_REPORT = "/tmp/percpu-doctor.json"
DOCTOR_LIMIT = 900  # seconds; the doctor takes 15-43 s in a TCG guest, a few minutes on a loaded host


def guest_script(vm: VmSpec, py: str) -> str:
    """What the guest runs: its CPU lists and kernel, `percpu doctor --json`, then pytest."""
    tests = " ".join([*map(shlex.quote, vm.tests), *(f"--deselect={shlex.quote(t)}" for t in vm.deselect)])
    bin_dir = shlex.quote(os.path.dirname(py))
    pytest = f"{shlex.quote(py)} -m pytest {tests} -q -p no:cacheprovider -m {shlex.quote(vm.marks)}"
    if vm.command:
        pytest = vm.command  # a benchmark, say: its exit status is the guest's
    return (
        f"cd {shlex.quote(REPO)} || exit 1\n"
        # numpy's AVX2 sort kernels return wrong orders under QEMU's TCG emulation (seen with numpy 2.4:
        # np.argsort of uint32 was wrong, np.sort right): numpy stays on its baseline SIMD for everything
        # the guest runs, the doctor as much as pytest or a benchmark.
        "export NPY_DISABLE_CPU_FEATURES=X86_V3\n"
        "echo PERCPU_POSSIBLE=$(cat /sys/devices/system/cpu/possible) "
        "PERCPU_ONLINE=$(cat /sys/devices/system/cpu/online) PERCPU_KERNEL=$(uname -r)\n"
        # The doctor's report and exit status stay in the guest's /tmp for test_doctor_probes_features, which
        # checks them instead of running the same command again on the same kernel (15-43 s under TCG).
        # A watchdog: one CI guest's doctor never ended (no output for 20 minutes, qemu busy; the same
        # kernel's doctor ran in 43 s before and after it). Past DOCTOR_LIMIT the doctor gets SIGABRT, and
        # Python's fault handler prints where it was on the console: test_doctor_probes_features then
        # fails with it, and the rest of the guest's tests still run.
        f"echo PERCPU_DOCTOR_BEGIN; timeout -s ABRT {DOCTOR_LIMIT} env PYTHONFAULTHANDLER=1 "
        f"{bin_dir}/percpu doctor --json >{DOCTOR_REPORT}; "
        f"echo $? >{DOCTOR_REPORT}.rc; cat {DOCTOR_REPORT}; echo PERCPU_DOCTOR_END\n"
        # pytest's exit status, printed: a guest that stops mid-run never prints it (see stop_note)
        f"TMPDIR=/tmp PERCPU_DOCTOR_REPORT={DOCTOR_REPORT} "
        f"{pytest}{'' if vm.command else ' -rs --durations=25'}; "
        "rc=$?; echo PERCPU_PYTEST_RC=$rc; exit $rc\n"
    )


def stop_note(out: str, rc: int) -> str:
    """What to add to a guest's output when pytest never ended there: neither a timeout (which says so)
    nor pytest's own exit status printed. A full 7.x run once stopped like that mid-test, and a CI run's
    7.x guest 20 s into the doctor, with vng exiting and nothing else to go on; the note keeps such a run
    from reading as test failures."""
    if rc == 124 or "PERCPU_PYTEST_RC=" in out or "PERCPU_DOCTOR_BEGIN" not in out:
        return ""
    where = "before pytest ended" if "PERCPU_DOCTOR_END" in out else "in the middle of `percpu doctor`"
    return (
        f"\n(the guest stopped {where}: it printed no exit status, and vng exited with {rc}; "
        "the guest's kernel log is not kept: rerun this VM, and watch its log with tail -f)"
    )


def run_vm(vm: VmSpec, image: str, py: str, timeout: float) -> Result:
    # The guest's command reaches it on the kernel command line (virtme-ng's virtme.exec, base64), which
    # x86 cuts at 2048 bytes: a long test list there left the guest waiting forever with no output. So
    # the guest runs a script from this run's log directory, which it sees as the host does.
    log = log_path(vm)
    os.makedirs(os.path.dirname(log), exist_ok=True)
    script = log.removesuffix(".log") + ".sh"
    with open(script, "w", encoding="utf-8") as f:
        f.write(guest_script(vm, py))
    inner = f"sh {shlex.quote(script)}"
    env = {**os.environ, "PATH": f"{os.path.dirname(py)}:{os.environ.get('PATH', '')}"}
    # The guest's output goes to a log as it comes (tail -f it to watch a VM), then is parsed from there.
    t0 = time.monotonic()
    with open(log, "w+", encoding="utf-8", errors="replace") as f:
        p = subprocess.Popen(
            vng_command(vm, image, inner),
            stdout=f,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,  # its own process group: a timeout ends qemu too, not only vng
        )
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            rc = 124
        f.seek(0)
        out = f.read()
    if rc == 124:
        out += f"\n(timed out after {timeout:.0f} s)"
    out += stop_note(out, rc)
    seconds = time.monotonic() - t0
    if "PERCPU_POSSIBLE=" not in out:
        out += (
            f"\n(the guest's command printed nothing here; vng exited with {rc} after {seconds:.0f} s. "
            "virtme-ng's init sends the command's output through "
            "/dev/virtio-ports/, which udev makes; without udevd in this machine's root it falls back to the "
            "console, which is not read: apt-get install udev, or scripts/setup.sh --dev)"
        )
    r = Result(vm.name, seconds=seconds, output=out, tests=vm.tests, deselected=vm.deselect)
    m = re.search(r"PERCPU_POSSIBLE=(\S+) PERCPU_ONLINE=(\S+) PERCPU_KERNEL=(\S+)", out)
    if m:
        r.possible, r.online, r.kernel = m.groups()
    d = re.search(r"PERCPU_DOCTOR_BEGIN\n(.*?)PERCPU_DOCTOR_END", out, re.S)
    if d:
        try:
            r.doctor = json.loads(d.group(1))
        except ValueError:
            r.doctor = None
    r.counts = pytest_counts(out)
    ok = (
        rc == 0
        and r.counts["failed"] == 0
        and r.counts["error"] == 0
        and (r.counts["passed"] > 0 or bool(vm.command))
    )
    ok = ok and not gap_missing(vm, r.possible, r.online)
    r.status = "ok" if ok else ("timed out" if rc == 124 else "FAILED")
    return r


PROGRESS = re.compile(r"^([.FEsxX]+) *(\[ *\d+%\])?$")


# A guest whose command never started (no CPU lists printed) and that ended within this many seconds did
# not boot: booted once more. One CI run lost its 7.x guest that way (vng gone after 9 s, nothing in its
# log, booted fine by hand right after, with another guest running beside it); nothing of percpu's had
# run, so a second boot hides no failure of percpu's. A guest that ran anything is never booted again.
NO_BOOT_SECONDS = 120.0


def never_booted(r: Result) -> bool:
    return r.status == "FAILED" and "PERCPU_POSSIBLE=" not in r.output and r.seconds < NO_BOOT_SECONDS


def pytest_counts(out: str) -> dict[str, int]:
    """The guest's pytest counts: from its summary line, or, when it never printed one (the VM timed out
    or died), from its progress characters, so a cut-off run still shows how far it got."""
    counts = {k: 0 for k in ("passed", "failed", "skipped", "error")}
    summary = ""
    for line in out.splitlines():
        if re.search(r"\d+ (passed|failed|errors?|skipped)", line) and " in " in line:
            summary = line.strip("= ")
    if summary:
        for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary):
            counts["error" if what.startswith("error") else what] = int(n)
        return counts
    for line in out.splitlines():
        m = PROGRESS.match(line.strip())
        if m:
            chars = m.group(1)
            counts["passed"] += chars.count(".") + chars.count("x") + chars.count("X")
            counts["failed"] += chars.count("F")
            counts["error"] += chars.count("E")
            counts["skipped"] += chars.count("s")
    return counts


def gap_missing(vm: VmSpec, possible: str, online: str) -> bool:
    """A VM booted with maxcpus above its CPUs must show possible > online: when the kernel offers no
    hotplug CPUs, the possible > online tests skip, and that must fail the VM instead of passing quietly."""
    if "maxcpus=" not in vm.smp or possible == "?":
        return False
    return _cpu_count(possible) <= _cpu_count(online)


def gap_note(r: Result) -> str:
    """What the row says about possible vs online CPUs."""
    if r.possible == "?":
        return ""
    if _cpu_count(r.possible) > _cpu_count(r.online):
        return ""
    return "possible = online: this kernel gave no hotplug CPUs"


def print_table(rows: list[Result]) -> None:
    print(
        f"\n{'vm':<15} {'kernel':<22} {'possible':>8} {'online':>6} {'passed':>6} {'failed':>6} "
        f"{'skipped':>7} {'secs':>5}  status"
    )
    for r in rows:
        if r.kernel == "?" and r.status.startswith("not "):
            print(f"{r.vm:<15} {r.status}")
            continue
        note = gap_note(r)
        print(
            f"{r.vm:<15} {r.kernel:<22} {r.possible:>8} {r.online:>6} {r.counts.get('passed', 0):>6} "
            f"{r.counts.get('failed', 0) + r.counts.get('error', 0):>6} {r.counts.get('skipped', 0):>7} "
            f"{r.seconds:>5.0f}  {r.status}{'  (' + note + ')' if note else ''}"
        )


def result_row(r: Result) -> dict[str, object]:
    spec = next(v for v in VMS if v.name == r.vm)
    return {
        "vm": r.vm,
        "series": spec.kernel,
        "package": r.package,
        "kernel": r.kernel,
        "smp": spec.smp,
        "possible": r.possible,
        "online": r.online,
        **{k: r.counts.get(k, 0) for k in ("passed", "failed", "skipped", "error")},
        "seconds": round(r.seconds),
        "status": r.status,
        "tests": list(r.tests),
        "deselected": list(r.deselected),
        "doctor": r.doctor,
    }


def write_results(path: str, rows: list[Result]) -> None:
    """Writes each VM's row to PATH. The VMs of this run replace their rows of an earlier file; the other
    VMs' rows stay, so the matrix can be run one VM at a time into one file. Rows keep the VMS order."""
    kept: list[dict[str, object]] = []
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
        except ValueError as exc:
            sys.exit(f"vm-matrix: {path} is not a results file ({exc}): name another file")
        ran = {r.vm for r in rows}
        kept = [row for row in old if isinstance(row, dict) and row.get("vm") not in ran]
    order = {v.name: i for i, v in enumerate(VMS)}
    merged = sorted(
        [*kept, *(result_row(r) for r in rows)], key=lambda row: order.get(str(row["vm"]), len(order))
    )
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(merged, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", help="run only this VM (repeatable)")
    ap.add_argument(
        "--ci", action="store_true", help="only the VMs CI runs: " + ", ".join(v.name for v in VMS if v.ci)
    )
    ap.add_argument("--list", action="store_true", help="list the VMs and exit")
    ap.add_argument(
        "--timeout",
        type=float,
        help=f"seconds per VM (default {CI_TIMEOUT:.0f} with --ci, {FULL_TIMEOUT:.0f} for every test file)",
    )
    ap.add_argument("--tests", help="pytest targets inside every VM, instead of each VM's own")
    ap.add_argument(
        "--exec",
        metavar="COMMAND",
        help="a shell command to run inside every VM (from the repository's root) instead of pytest, e.g. a "
        "benchmark; its output is printed (as with --verbose) and its exit status is the VM's",
    )
    ap.add_argument(
        "--results",
        help="write each VM's row and `percpu doctor --json` report to this file (replacing those VMs' rows "
        "of an earlier run there, keeping the others')",
    )
    ap.add_argument("--verbose", action="store_true", help="print each VM's whole output")
    args = ap.parse_args()
    if args.timeout is None:
        args.timeout = CI_TIMEOUT if args.ci else FULL_TIMEOUT
    if args.list:
        for v in VMS:
            print(f"{v.name:<15} kernel {v.kernel:<5} -smp {v.smp:<30} {'CI ' if v.ci else ''}{v.note}")
        return 0
    py = os.path.join(REPO, os.environ.get("PERCPU_VENV", ".venv"), "bin", "python")
    if not os.path.exists(py):
        sys.exit(f"vm-matrix: no virtualenv at {py}: run scripts/setup.sh --dev")
    vng = shutil.which("vng", path=f"{os.path.dirname(py)}:{os.environ.get('PATH', '')}")
    if vng is None:
        sys.exit("vm-matrix: virtme-ng is not installed in the venv (pip install virtme-ng)")
    missing = [
        t for t in ("qemu-system-x86_64", "busybox", "apt-get", "dpkg-deb", "depmod") if not shutil.which(t)
    ]
    if missing:
        sys.exit(f"vm-matrix: missing {', '.join(missing)}: run scripts/setup.sh --dev")
    known = {v.name for v in VMS}
    for name in args.only or ():
        if name not in known:
            sys.exit(f"vm-matrix: no VM {name!r}; --list shows them")
    chosen = [v for v in VMS if (not args.only or v.name in args.only) and (not args.ci or v.ci)]
    rows: list[Result] = []
    failed = False
    for vm in chosen:
        missing_tests = [t for t in vm.tests if not os.path.exists(os.path.join(REPO, t.split("::")[0]))]
        if missing_tests and not args.tests:
            rows.append(Result(vm.name, status=f"not run: {', '.join(missing_tests)} is not in this tree"))
            continue
        package = ""
        if vm.kernel == "host":
            image, why = host_kernel()
        else:
            try:
                k = kernels.fetch(vm.kernel)
                image, why, package = k.image, "", k.package
            except kernels.KernelUnavailable as exc:
                image, why = None, str(exc)
        if image is None:
            rows.append(Result(vm.name, status=f"not bootable here: {why}"))
            if vm.kernel != "host":
                failed = True  # a Debian kernel that cannot be fetched is a failure, not a pass
            continue
        spec = vm
        if args.exec:
            spec = VmSpec(**{**vm.__dict__, "command": args.exec})
        elif args.tests:
            spec = VmSpec(**{**vm.__dict__, "tests": tuple(args.tests.split())})
        elif args.ci and vm.tests == DEFAULT_TESTS:
            spec = VmSpec(**{**vm.__dict__, "tests": vm.ci_tests or CI_TESTS, "deselect": vm.ci_deselect})
        print(
            f"vm-matrix: booting {vm.name} ({package or os.path.basename(image)}, -smp {vm.smp}); "
            f"log: {log_path(vm)} ...",
            flush=True,
        )
        r = run_vm(spec, image, py, args.timeout)
        if never_booted(r):
            first = r.output[-2000:]
            print(
                f"vm-matrix: {vm.name}: the guest printed nothing and ended after {r.seconds:.0f} s: "
                f"booting it once more; the first boot's output:\n{first}",
                flush=True,
            )
            r = run_vm(spec, image, py, args.timeout)
            r.output = f"(a first boot printed nothing and ended: booted once more)\n{r.output}"
        r.package = package
        rows.append(r)
        if r.status != "ok" or args.verbose or args.exec:
            print(r.output[-8000:])
        print(
            f"vm-matrix: {vm.name}: {r.status} in {r.seconds:.0f} s "
            f"({r.counts.get('passed', 0)} passed, {r.counts.get('failed', 0)} failed)",
            flush=True,
        )
        failed |= r.status != "ok"
    print_table(rows)
    if args.results:
        write_results(args.results, rows)
        print(f"vm-matrix: results written to {args.results}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
