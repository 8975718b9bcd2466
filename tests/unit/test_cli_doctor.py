"""``percpu doctor`` against the fake kernel: privileges from capabilities, probes that fail without
ending the report."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

import percpu
from percpu import _machine, features
from percpu.cli import build_parser, doctor, main

from .fake_kernel import FakeKernel, FakeMachine, installed

N = len(percpu.cpu_lists().possible)  # doctor sizes buffers from the real sysfs list


ALL_CAPS = (1 << 21) | (1 << 38) | (1 << 39)


def machine(cap_eff: int | None, **kw: Any) -> tuple[FakeKernel, FakeMachine]:
    """A fake machine whose CapEff is ``cap_eff`` (None: not readable); ``kw`` goes to FakeKernel."""
    kernel = FakeKernel(N, **kw)
    return kernel, FakeMachine(kernel, caps=cap_eff)


@pytest.mark.parametrize(
    ("cap_eff", "status", "detail"),
    [
        (0, "fail", "effective capabilities: none"),
        (1 << 39, "fail", "effective capabilities: CAP_BPF;"),
        ((1 << 38) | (1 << 39), "ok", "CAP_PERFMON, CAP_BPF"),
        (1 << 21, "ok", "CAP_SYS_ADMIN"),
        (None, "unknown", "CapEff not readable"),
    ],
)
def test_privileges_come_from_effective_capabilities_not_euid(
    cap_eff: int | None, status: str, detail: str
) -> None:
    with installed(*machine(cap_eff)):
        got = doctor._privileges(_machine.current().effective_caps())
    assert got[0] == status and got[1] == "privileges" and detail in got[2]


def test_doctor_without_privileges_reports_every_check(capsys: pytest.CaptureFixture[str]) -> None:
    """Root in a container with no capabilities: every bpf() call says EPERM. Each probe is one line."""
    with installed(*machine(0, deny=True)):
        rc = main(["doctor"])
    out, err = capsys.readouterr()
    assert rc == 1
    for what in (
        "possible CPUs",
        "privileges",
        "kernel BTF",
        "tracefs",
        "batch ops on PERCPU_ARRAY",
        "batch ops on LRU_PERCPU_HASH",
        "BPF_F_CPU (one CPU's slot)",
        "tp_btf program at sys_enter",
        "bpf_stats (BPF_ENABLE_STATS)",
        "per-CPU maps on this system",
    ):
        assert f"] {what}: " in out, what
    assert "[unknown] batch ops on PERCPU_HASH: could not probe: Operation not permitted" in out
    assert "[unknown] BPF_F_CPU (one CPU's slot): could not probe: Operation not permitted" in out
    assert "[unknown] per-CPU maps on this system: could not list them: Operation not permitted" in out
    assert "[   fail] privileges: euid" in out
    assert "essential check(s) failed: privileges" in err and "Traceback" not in err


def test_doctor_probes_run_when_privileged() -> None:
    kernel = FakeKernel(N)
    with installed(kernel):
        keep = percpu.PerCpuHash.create(np.uint32, np.dtype((np.void, 12)), 4, name="listed")
        checks, maps = doctor._doctor_checks()
        keep.close()
    by = {what: (status, detail) for status, what, detail in checks}
    assert by["privileges"][0] == "ok"
    assert by["batch ops on PERCPU_HASH"] == ("ok", "ok")
    assert by["BPF_F_CPU (one CPU's slot)"][0] == "info"
    listed = [m for m in maps if m["name"] == "listed"]
    assert listed and listed[0]["reader_buffer_bytes"] == 16 * N and listed[0]["possible_cpus"] == N


def test_doctor_asks_the_features_module_what_maps_learned() -> None:
    """One answer per feature: doctor's batch check reports what a map already learned (no probe map), and
    a kernel without batch operations is a warning quoting their declaration, per map type (arrays got
    them in Linux 5.13, hashes in 5.6: before, every type's line named both)."""
    kernel = FakeKernel(N, batch=False)
    with installed(kernel):
        with percpu.PerCpuHash.create(np.uint32, np.uint64, 4) as m:
            m.snapshot()  # learns: no batch ops on per-CPU hashes
        kernel.calls.clear()
        by = {what: (status, detail) for status, what, detail in doctor._doctor_checks()[0]}
        probed = kernel.calls.count("map_lookup_batch")
    assert probed == 2  # PERCPU_ARRAY and LRU_PERCPU_HASH, not PERCPU_HASH
    for t, since in (("PERCPU_ARRAY", "5.13"), ("PERCPU_HASH", "5.6"), ("LRU_PERCPU_HASH", "5.6")):
        status, detail = by[f"batch ops on {t}"]
        kind = "array" if "ARRAY" in t else "hash"
        assert status == "warn"
        assert (
            detail == f"not supported by this kernel (batch operations on {kind} maps: Linux {since} adds it)"
        )


def test_json_has_a_short_form() -> None:
    assert build_parser().parse_args(["doctor", "-j"]).json is True


def _tracefs_check(kernel: FakeKernel, machine: FakeMachine) -> tuple[str, str]:
    with installed(kernel, machine):
        return {w: (s, d) for s, w, d in doctor._doctor_checks()[0]}["tracefs"]


def test_tracefs_from_the_mount_table() -> None:
    kernel = FakeKernel(N)
    root = ("/dev/sda1", "/", "ext4")
    debugfs = (root, ("nodev", "/sys/kernel/debug/tracing", "tracefs"))
    unreadable = FakeMachine(kernel)
    os.unlink(unreadable.mounts_path)
    assert _tracefs_check(kernel, FakeMachine(kernel)) == ("ok", "/sys/kernel/tracing")
    assert _tracefs_check(kernel, FakeMachine(kernel, mounts=debugfs)) == ("ok", "/sys/kernel/debug/tracing")
    assert _tracefs_check(kernel, FakeMachine(kernel, mounts=(root,))) == (
        "info",
        "not mounted (percpu mounts it at /sys/kernel/tracing when the classic tracepoint is needed)",
    )
    assert _tracefs_check(kernel, unreadable) == ("unknown", f"cannot read {unreadable.mounts_path}")


def test_tracefs_mounted_only_where_libbpf_does_not_look_is_not_taken_for_mounted() -> None:
    """A chroot's /sys seen from the host: libbpf opens /sys/kernel/tracing/events/... and fails."""
    kernel = FakeKernel(N)
    mounts = (("/dev/sda1", "/", "ext4"), ("nodev", "/srv/my\\040root/sys/kernel/tracing", "tracefs"))
    assert _tracefs_check(kernel, FakeMachine(kernel, mounts=mounts)) == (
        "info",
        "mounted only at /srv/my root/sys/kernel/tracing, where libbpf does not look (percpu mounts it at "
        "/sys/kernel/tracing when the classic tracepoint is needed)",
    )


BPF_AND_PERFMON = (1 << 38) | (1 << 39)


@pytest.mark.parametrize(
    ("euid", "caps", "seccomp", "said"),
    [
        (1000, 0, 0, " (you are not root)"),
        (0, 0, 0, " (you are root, but without CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN): a container or "),
        (0, ALL_CAPS, 0, ""),
        # root with the capabilities, in a container whose seccomp profile refuses bpf()
        (0, BPF_AND_PERFMON, 2, " (this process holds CAP_PERFMON and CAP_BPF, but runs under a seccomp "),
    ],
)
def test_permission_denied_says_why_it_applies_here(
    capsys: pytest.CaptureFixture[str], euid: int, caps: int, seccomp: int, said: str
) -> None:
    """The library's message says what to do; the command adds who is asking, in the same words as doctor."""
    kernel = FakeKernel(N, deny=True)
    with installed(kernel, FakeMachine(kernel, caps=caps, euid=euid, seccomp=seccomp)):
        assert main(["maps"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("percpu: ") and "run as root, or grant CAP_BPF and CAP_PERFMON" in err
    if said:
        assert said in err, err
    else:
        assert "(you are" not in err, err


@pytest.mark.parametrize(
    ("compat", "status", "words"),
    [
        ("TS_COMPAT", "ok", "a 64-bit task's int $0x80 calls are named from the i386 table"),
        ("code segment", "warn", "a 64-bit task's int $0x80 calls are named from the x86_64 table"),
        ("AArch32", "warn", "an AArch32 task's calls are not told apart on arm64"),
    ],
)
def test_doctor_says_which_32_bit_calls_the_modes_cannot_tell_apart(
    compat: str, status: str, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mode report says how 32-bit calls are told apart, and a check says what that misses."""
    from percpu.cli import _modes

    modes = [
        _modes.ModeSupport("default", "", True, "raw_tp", "attaches at raw_tp", compat),
        _modes.ModeSupport("errors", "-e", True, "raw_tp", "attaches at raw_tp", compat),
        _modes.ModeSupport("latency", "-L", False, None, "refused", None),
    ]
    monkeypatch.setattr(_modes, "mode_support", lambda: modes)
    json_modes: list[dict[str, Any]] = []
    checks = doctor._syscount_checks(json_modes)
    (line,) = [c for c in checks if c[1] == "syscall counter: 32-bit calls"]
    assert line[0] == status
    assert words in line[2] and line[2].endswith("(default, errors)")
    assert [m["compat"] for m in json_modes] == [compat, compat, None]


def test_doctor_says_what_memory_maps_can_have_and_what_each_map_takes() -> None:
    kernel = FakeKernel(N)
    job = (4 << 30, "memory.max of cgroup /job")
    with installed(kernel, FakeMachine(kernel, mem_available=20 << 30, cgroup_memory=job)):
        keep = percpu.PerCpuArray.create(np.uint64, 1000, name="sized")
        checks, maps = doctor._doctor_checks()
        keep.close()
    by = {what: (status, detail) for status, what, detail in checks}
    status, detail = by["memory for maps"]
    assert status == "info" and detail.startswith("4.0 GiB (memory.max of cgroup /job): a per-CPU map takes")
    assert f"x {N} possible CPUs" in detail
    sized = next(m for m in maps if m["name"] == "sized")
    assert sized["memory_bytes"] == 312 + 1000 * 8 + 1000 * 8 * N


def test_doctor_lists_the_maps_there_before_it_ran_not_its_probe_maps(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The fake kernel keeps a closed map listed, as the kernel does until it frees it (after the programs
    using it, an RCU grace period later). The doctor listed its own probe maps among the user's (36 of
    them on a 2-CPU host); it now lists the maps whose id is at most the highest id when it started."""
    kernel = FakeKernel(N)
    with installed(kernel):
        theirs = percpu.PerCpuHash.create(np.uint32, np.uint64, 4, name="theirs")
        maps = doctor._doctor_checks()[1]
        probes = [m for m in kernel.maps.values() if m.info.name == features.PROBE_MAP_NAME]
        main(["doctor"])  # status 1 here: the fake has no libbpf to load programs with
        theirs.close()
    assert probes, "the doctor probed on maps of its own, still listed after they were closed"
    assert [m["name"] for m in maps] == ["theirs"] and maps[0]["made_by_percpu"] is None
    out = capsys.readouterr().out
    assert "per-CPU maps on this system when the doctor started" in out
    # the second run sees the first run's probe maps, closed and still listed: percpu's, told apart
    assert f"id {theirs.info.id:>5} theirs" in out
    assert f"and {len(probes)} maps percpu made (feature probe: {len(probes)})" in out
    assert "percpu_probe" not in out


def test_the_syscall_counters_maps_are_told_apart_by_their_btf() -> None:
    """syscount.bpf.o's BTF (every map of the object carries it) has struct percpu_config, which no
    other program has; a map of the user's with BTF of its own is not percpu's."""
    from percpu._elf import section
    from percpu.cli._own import made_by_percpu
    from percpu.objects import bundled

    kernel = FakeKernel(N)
    with installed(kernel):
        b = _machine.current().kernel
        counter_btf = b.btf_load(section(bundled("syscount.bpf.o"), ".BTF"))
        counts = b.map_create(
            percpu.MapType.PERCPU_ARRAY, "counts", 4, 8, 2048, btf_fd=counter_btf, btf_value_type_id=1
        )
        mine = percpu.PerCpuArray.create(np.uint64, 4, name="counts")  # BTF of its own (btf_write)
        probe = b.map_create(percpu.MapType.PERCPU_ARRAY, features.PROBE_MAP_NAME, 4, 8, 1)
        infos = [b.map_info(fd) for fd in (counts, probe)] + [mine.info]
        made = made_by_percpu(infos)
        mine.close()
    assert mine.info.btf_id, "the user's map carries BTF too"
    assert made == {infos[0].id: "syscall counter", infos[1].id: "feature probe"}


def test_doctor_has_a_line_per_disturbance_dimension(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each dimension of the disturbance counter is a line of its own: one this kernel has no hook for is a
    warning with its reason, and the others still say how they count."""
    from percpu.disturb import _support

    dims = [
        _support.DimensionSupport("hard interrupts", "-I", True, "irq_handler_entry/exit (at tp_btf)"),
        _support.DimensionSupport("x86 interrupt vectors", "-V", False, "the interrupt vectors are x86's"),
        _support.DimensionSupport(
            "task switches", "-T", False, "bpf(BPF_PROG_LOAD): Operation not permitted"
        ),
    ]
    monkeypatch.setattr(_support, "dimension_support", lambda: dims)
    got: list[dict[str, Any]] = []
    checks = doctor._disturb_checks(got)
    assert [c[:2] for c in checks] == [
        ("ok", "disturbances: hard interrupts (-I)"),
        ("warn", "disturbances: x86 interrupt vectors (-V)"),
        ("unknown", "disturbances: task switches (-T)"),
    ]
    assert got[1] == {
        "dimension": "x86 interrupt vectors",
        "option": "-V",
        "supported": False,
        "detail": "the interrupt vectors are x86's",
    }


def test_doctor_on_a_kernel_without_btf_says_so_for_each_disturbance_dimension(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The fake kernel has no BTF: every dimension is a warning naming it, and the report goes on."""
    kernel = FakeKernel(N)
    with installed(kernel, FakeMachine(kernel, caps=ALL_CAPS)):
        main(["doctor"])
    out, err = capsys.readouterr()
    lines = [ln for ln in out.splitlines() if "] disturbances: " in ln]
    assert len(lines) == 4, lines  # -I -V -S -T, each refused: no BTF
    assert all(ln.startswith("[   warn]") and "CONFIG_DEBUG_INFO_BTF" in ln for ln in lines), lines
    assert "Traceback" not in err
