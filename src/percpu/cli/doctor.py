"""``percpu doctor``: what a correct per-CPU reader needs on this machine, and what the kernel can do."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import functools
import json
import os
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from .. import _machine, features
from .._privileges import privilege_hint
from ..cpulist import format_cpu_list
from ..cpus import CpuList, cpu_lists
from ..errors import LibbpfError, NotSupported, PercpuError
from ..layout import round8 as stride
from ..maps import PERCPU_TYPES, MapType, list_maps, memory_bytes, user_value_bytes
from ..maps._kinds import human_bytes
from ._own import made_by_percpu

__all__ = ["register"]

T = TypeVar("T")


Check = tuple[str, str, str]  # (status ok|warn|fail|info|unknown, what, detail)


def _privileges(caps: int | None) -> Check:
    euid = _machine.current().euid()
    if caps is None:
        return ("unknown", "privileges", f"euid {euid}; CapEff not readable from /proc/self/status")
    have = f"euid {euid}, effective capabilities: {', '.join(_machine.bpf_cap_names(caps)) or 'none'}"
    hint = privilege_hint(caps, euid)
    return ("fail", "privileges", f"{have}; {hint}") if hint else ("ok", "privileges", have)


class _Failed(NamedTuple):
    """A probe that raised: ``status`` is "unknown" when it could not run (privileges, no libbpf), else the
    status its caller gave for a kernel that says no."""

    status: str
    reason: str


def _attempt(fn: Callable[[], T], *, refused: str = "warn") -> T | _Failed:
    """Run one probe; its failure becomes a check result rather than the end of the report."""
    try:
        return fn()
    except LibbpfError as exc:
        return _Failed("unknown", str(exc))
    except NotSupported as exc:
        return _Failed(refused, f"not supported ({os.strerror(exc.errno) if exc.errno else exc})")
    except (PercpuError, OSError) as exc:
        e = getattr(exc, "errno", None)
        if e in (errno.EPERM, errno.EACCES):
            return _Failed("unknown", f"{os.strerror(e)} (see privileges)")
        return _Failed(refused, os.strerror(e) if e else str(exc))


def _probe_check(what: str, probe: Callable[[], None], ok: str) -> Check:
    r = _attempt(probe)
    if not isinstance(r, _Failed):
        return ("ok", what, ok)
    return (r.status, what, f"could not probe: {r.reason}" if r.status == "unknown" else r.reason)


def _batch_check(t: MapType) -> Check:
    what = f"batch ops on {t.name}"
    r = _attempt(functools.partial(features.batch_ops, t, strict=True))
    if isinstance(r, _Failed):
        return (r.status, what, f"could not probe: {r.reason}" if r.status == "unknown" else r.reason)
    if r:
        return ("ok", what, "ok")
    return ("warn", what, str(features.batch_feature(t).missing("not supported by this kernel")))


def _cpu_lists() -> tuple[CpuList, CpuList, CpuList]:
    topo = cpu_lists()
    return topo.possible, topo.online, topo.present


def _enable_stats() -> None:
    os.close(_machine.current().libbpf().enable_stats())


def _last_map_id() -> int:
    """The highest map id now. The kernel hands out map ids increasing (idr_alloc_cyclic, from 1 up to
    INT_MAX before they wrap), so a map with a higher id was created after this call."""
    b = _machine.current().kernel
    last = 0
    while (nxt := b.map_get_next_id(last)) is not None:
        last = nxt
    return last


def _percpu_maps(possible: int, until: int) -> list[dict[str, Any]]:
    """The per-CPU maps whose id is at most ``until``: those there before the doctor's own probes (which
    the kernel frees a while after they are closed), each with what percpu made it for, if it did."""
    infos = [info for info in list_maps() if info.type in PERCPU_TYPES and info.id <= until]
    made = made_by_percpu(infos)
    return [
        {
            "id": info.id,
            "name": info.name,
            "type": MapType.name_of(info.type),
            "value_size": info.value_size,
            "stride": stride(info.value_size),
            "possible_cpus": possible,
            "reader_buffer_bytes": user_value_bytes(info.type, info.value_size, possible),
            "memory_bytes": memory_bytes(
                info.type, info.key_size, info.value_size, info.max_entries, possible, info.flags
            ),
            "made_by_percpu": made.get(info.id),
        }
        for info in infos
    ]


def _syscount_checks(modes: list[dict[str, Any]] | None = None) -> list[Check]:
    """One check per mode of the syscall counter, each loaded and attached for real; ``modes`` (when
    given) receives the structured results for the JSON report."""
    from ._modes import COMPAT_CHECKS, mode_support

    res = _attempt(mode_support)
    if isinstance(res, _Failed):
        return [("unknown", "syscall counter modes", f"could not probe: {res.reason}")]
    out: list[Check] = []
    for m in res:
        label = f"syscall counter: {m.mode}" + (f" ({m.flag})" if m.flag else "")
        if m.supported:
            out.append(("ok", label, m.detail))
        else:
            denied = "Operation not permitted" in m.detail or "Permission denied" in m.detail
            out.append(("unknown" if denied else "fail" if m.mode == "default" else "warn", label, m.detail))
        if modes is not None:
            modes.append(dataclasses.asdict(m))
    # What the modes that attached cannot tell apart, once per way of telling (all modes share one object).
    for compat in dict.fromkeys(m.compat for m in res if m.compat):
        which = ", ".join(m.mode for m in res if m.compat == compat)
        gap = COMPAT_CHECKS.get(compat)
        if gap is None:
            out.append(
                (
                    "ok",
                    "syscall counter: 32-bit calls",
                    f"told apart as the kernel does, by the task's TS_COMPAT status (in_ia32_syscall()): a "
                    f"64-bit task's int $0x80 calls are named from the i386 table ({which})",
                )
            )
        else:
            out.append(("warn", "syscall counter: 32-bit calls", f"{gap} ({which})"))
    return out


def _disturb_checks(dims: list[dict[str, Any]] | None = None) -> list[Check]:
    """One check per dimension of the disturbance counter (-I -V -S -T), each loaded and attached for real;
    a dimension this kernel cannot count is a warning with its reason (the rest still counts)."""
    from ..disturb._support import dimension_support

    res = _attempt(dimension_support)
    if isinstance(res, _Failed):
        return [("unknown", "disturbances", f"could not probe: {res.reason}")]
    out: list[Check] = []
    for d in res:
        denied = "Operation not permitted" in d.detail or "Permission denied" in d.detail
        status = "ok" if d.supported else "unknown" if denied else "warn"
        out.append((status, f"disturbances: {d.dimension} ({d.option})", d.detail))
        if dims is not None:
            dims.append(d._asdict())
    return out


def _doctor_checks(
    modes: list[dict[str, Any]] | None = None,
    dims: list[dict[str, Any]] | None = None,
    until: int | _Failed | None = None,
) -> tuple[list[Check], list[dict[str, Any]]]:
    """Every check, each probe run on its own so one that fails (EPERM in a container, no libbpf) is
    reported with its reason and the others still run. What the machine says comes from
    :func:`percpu._machine.current`. The maps listed are those there before the probes ran: ids up to
    ``until`` (by default the highest id when this starts)."""
    machine = _machine.current()
    if until is None:
        until = _attempt(_last_map_id)
    checks, n_possible = _cpu_checks(machine)
    checks += _system_checks(machine)
    checks += _feature_checks()
    checks += _syscount_checks(modes)
    checks += _disturb_checks(dims)
    if isinstance(until, _Failed):
        maps: list[dict[str, Any]] | _Failed = until
    elif not n_possible:
        maps = _Failed("unknown", "no CPU list")
    else:
        maps = _attempt(lambda: _percpu_maps(n_possible, until))
    if isinstance(maps, _Failed):
        checks.append(("unknown", "per-CPU maps on this system", f"could not list them: {maps.reason}"))
        return checks, []
    return checks, maps


def _cpu_checks(machine: _machine.Machine) -> tuple[list[Check], int]:
    """The CPU lists, what a reader sized by online CPUs would overrun, and the memory left for maps; and
    the number of possible CPUs (0 when the lists cannot be read)."""
    lists = _attempt(_cpu_lists, refused="fail")
    if isinstance(lists, _Failed):
        return [("fail", "CPU lists", lists.reason)], 0
    possible, online, present = lists
    checks: list[Check] = [
        ("info", "possible CPUs", f"{possible} ({len(possible)})"),
        ("info", "online CPUs", f"{online} ({len(online)})"),
        ("info", "present CPUs", f"{present} ({len(present)})"),
    ]
    if len(possible) != len(online):
        extra = len(possible) - len(online)
        checks.append(
            (
                "warn",
                "possible != online",
                f"a reader that sizes per-CPU buffers by online CPUs (os.cpu_count()) overruns by "
                f"{extra} slots x round_up(value_size, 8) bytes",
            )
        )
    if possible.ids != tuple(range(len(possible))):
        checks.append(("warn", "gaps in possible CPUs", "slot i is not CPU id i: map slots to CPU ids"))
    room = machine.memory_available()
    checks.append(
        (
            "info",
            "memory for maps",
            (f"{human_bytes(room[0])} ({room[1]})" if room else "unknown (no MemAvailable, no limit)")
            + f": a per-CPU map takes max_entries x round_up(value_size, 8) x {len(possible)} possible "
            "CPUs, allocated when it is created; create() refuses what does not fit",
        )
    )
    return checks, len(possible)


def _system_checks(machine: _machine.Machine) -> list[Check]:
    """What this process and system give a BPF user: privileges, sysctls, libbpf, kernel BTF, tracefs."""
    checks = [_privileges(machine.effective_caps())]
    unpriv = machine.sysctl("kernel.unprivileged_bpf_disabled")
    checks.append(("info", "kernel.unprivileged_bpf_disabled", unpriv or "unknown"))
    try:
        lib = _machine.current().libbpf()
        checks.append(("ok", "libbpf", f"{lib.version_string} ({lib.path})"))
    except LibbpfError as exc:
        checks.append(("fail", "libbpf", str(exc)))
    btf = machine.kernel_btf
    checks.append(
        ("ok" if btf else "warn", "kernel BTF", btf or "missing: tp_btf is unavailable, raw_tp is used")
    )
    tracefs, elsewhere = machine.tracefs_dir(), machine.mount_point("tracefs")
    if not machine.mounts():  # a mount table that can be read is never empty: it has the root
        checks.append(("unknown", "tracefs", f"cannot read {machine.mounts_path}"))
    elif tracefs:
        checks.append(("ok", "tracefs", tracefs))
    else:
        where = f"mounted only at {elsewhere}, where libbpf does not look" if elsewhere else "not mounted"
        then = f"percpu mounts it at {_machine.TRACEFS_DIRS[0]} when the classic tracepoint is needed"
        checks.append(("info", "tracefs", f"{where} ({then})"))
    stats = machine.sysctl("kernel.bpf_stats_enabled")
    checks.append(
        (
            "info",
            "kernel.bpf_stats_enabled",
            f"{stats} (1: programs report run count and time; percpu exporter --enable-bpf-stats)",
        )
    )
    return checks


def _feature_checks() -> list[Check]:
    """What the kernel can do, each probed: batch operations, BPF_F_CPU, the hooks, BPF stats."""
    checks = [_batch_check(t) for t in (MapType.PERCPU_ARRAY, MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH)]
    flag = _attempt(functools.partial(features.cpu_flag, strict=True))
    what = "BPF_F_CPU (one CPU's slot)"
    if isinstance(flag, _Failed):
        checks.append(("unknown", what, f"could not probe: {flag.reason}"))
    elif flag:
        checks.append(("ok", what, "supported"))
    else:
        checks.append(
            (
                "info",
                what,
                f"not supported ({features.CPU_FLAG_FEATURE.needs} adds it): update_cpu() reads, modifies "
                "and writes all slots",
            )
        )
    for hook, prog in (("tp_btf", "enter_btf"), ("raw_tp", "enter_raw"), ("tracepoint", "enter_tp")):
        checks.append(
            _probe_check(f"{hook} program at sys_enter", functools.partial(_probe_load, prog), "loads")
        )
    checks.append(_probe_check("bpf_stats (BPF_ENABLE_STATS)", _enable_stats, "can be turned on"))
    return checks


def _probe_load(program: str) -> None:
    """Load (not attach) one empty program of the shipped floor object: the real test of a hook type."""
    from ..objects import BpfObject, bundled

    with BpfObject(bundled("floor.bpf.o")) as obj:
        for name, p in obj.programs.items():
            p.autoload = name == program
        obj.load()


def _print_maps(maps: list[dict[str, Any]]) -> None:
    """The maps that were there before the doctor ran: the user's in full, then percpu's own in a line."""
    if not maps:
        return
    print(
        "\nper-CPU maps on this system when the doctor started, and the buffer a correct reader needs "
        "for one lookup:"
    )
    theirs = [m for m in maps if not m["made_by_percpu"]]
    for m in theirs:
        print(
            f"  id {m['id']:>5} {m['name']:<16} {m['type']:<22} value {m['value_size']:>6} B -> "
            f"{m['reader_buffer_bytes']:,} B ({m['stride']} x {m['possible_cpus']} CPUs), "
            f"{human_bytes(m['memory_bytes'])} in the kernel"
        )
    if not theirs:
        print("  none but percpu's own")
    ours = [m for m in maps if m["made_by_percpu"]]
    if ours:
        kinds = Counter(str(m["made_by_percpu"]) for m in ours)
        what = ", ".join(f"{kind}: {n}" for kind, n in sorted(kinds.items()))
        print(
            f"and {len(ours)} maps percpu made ({what}) for runs still going, or ended and not yet freed by "
            f"the kernel: ids {format_cpu_list(m['id'] for m in ours)}"
        )


def _cmd_doctor(args: argparse.Namespace) -> int:
    modes: list[dict[str, Any]] = []
    until = _attempt(_last_map_id)
    dims: list[dict[str, Any]] = []
    checks, maps = _doctor_checks(modes=modes, dims=dims, until=until)
    if args.json:
        json.dump(
            {
                "kernel": os.uname().release,
                "machine": os.uname().machine,
                "checks": [{"status": s, "check": w, "detail": d} for s, w, d in checks],
                "syscall_counter_modes": modes,
                "disturbance_dimensions": dims,
                "percpu_maps": maps,
                # the maps listed: ids up to this one, the highest when the doctor started (None: unknown)
                "percpu_maps_up_to_id": None if isinstance(until, _Failed) else until,
            },
            sys.stdout,
            indent=2,
        )
        sys.stdout.write("\n")
    else:
        for status, what, detail in checks:
            print(f"[{status:>7}] {what}: {detail}")
        _print_maps(maps)
    failed = [what for status, what, _ in checks if status == "fail"]
    if failed:
        sys.stdout.flush()
        print(
            f"percpu: doctor: {len(failed)} essential check(s) failed: {', '.join(failed)}", file=sys.stderr
        )
        return 1
    return 0


def register(sub: Any) -> None:
    c = sub.add_parser(
        "doctor",
        help="what a correct per-CPU reader needs on this machine",
        description="Check CPU lists, privileges, libbpf, BTF, tracefs and probe kernel features "
        "(batch operations, BPF_F_CPU, program types, bpf_stats); list the buffer size each "
        "per-CPU map on the system needs.",
    )
    c.add_argument("-j", "--json", action="store_true", help="JSON output")
    c.set_defaults(func=_cmd_doctor)
