"""Added cost per system call of percpu's BPF programs, against the floor of empty programs at the same hooks.

Run as root:  .venv/bin/python benchmarks/bench_syscalls.py --repeat 3      (about 12 minutes)
              .venv/bin/python benchmarks/bench_syscalls.py --smoke         (seconds: that it runs, no figure
                                                                             means anything)

Two measurements of every configuration, interleaved round by round (the order rotates each round) so the
machine's noise hits all configurations alike:

- the loop delta: a C loop (getppid_loop.c, compiled here with cc) makes CALLS getppid() calls pinned to a
  CPU, with 1 CPU busy and with every online CPU busy at once, timed in the thread's own CPU time (other
  tasks' turns on the CPU do not count) in chunks (the median chunk); the added cost is the time per call
  minus the time with nothing attached, in the same round. Kernel run-time statistics are off meanwhile.
- the programs' own cost: the same loop again with the kernel's BPF run-time statistics on
  (bpf_enable_stats(BPF_STATS_RUN_TIME), fd held only for that loop), reading run_time_ns / run_cnt of
  each program before and after: nanoseconds per run of the program body, which other tasks' time on the
  CPU does not inflate. For bpftrace and bcc the programs are found by id through the tool's open fds.

Ratios to the floor are computed per round, then summarized as median [interquartile range]:
"x floor (loop)" is added / added by the floor; "x floor (stats)" puts the floor's loop delta (the hook's
own price) under the kernel-measured body cost: (floor added + own - floor own) / floor added. The floor
is empty programs at the same hooks (bpf/floor.bpf.c): tp_btf sys_enter for the default mode, tp_btf
sys_enter+sys_exit for the modes that need the exit hook, classic tracepoints for bpftrace and bcc (the
hooks they use). --repeat N runs the whole benchmark N times in a row and checks that the runs agree: their
interquartile ranges have a value in common.

bcc compiles at run time against kernel headers. When /lib/modules/$(uname -r)/build is missing (a kernel
that is not a distribution package), the benchmark downloads Debian's linux-headers of the distribution's
current kernel into a cache directory (apt-get download, extracted with dpkg-deb, nothing installed) and
runs bcc in a private mount namespace where /lib/modules/$(uname -r)/{build,source} point at them; the
host's /lib/modules is never changed. If bcc still cannot run, the output says why.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from percpu import _machine  # noqa: E402
from percpu.cpus import cpu_lists  # noqa: E402
from percpu.objects import BpfObject, bundled  # noqa: E402
from percpu.syscount import SyscallCounter, ensure_tracefs  # noqa: E402

# (label, program fd)
Prog = tuple[str, int]
Config = Callable[[], AbstractContextManager[list[Prog]]]

# Programs the counter runs elsewhere than at the syscall hooks: percpu -L's sched_switch program, and
# percpu -P's flush, which user space runs on each CPU before a read (the loop reads nothing, so it shows
# no runs here). Their time is charged to the system calls made in the same window, all tasks', i.e.
# divided by the runs of the sys_enter program, and their own ns per run and runs per 1,000 calls are
# shown beside.
NOT_PER_CALL = {"switch_btf", "flush_procs"}
TARGETS = {"percpu default": 1.10, "percpu -P -e (process+errno)": 1.25, "percpu -L (latency)": 1.50}
BPFTRACE_PROGRAM = "tracepoint:raw_syscalls:sys_enter { @[args->id] = count(); }"
# bpf/bench_parts.bpf.c: one part of the counter per program, priced against part_empty
PARTS = {
    "part_ktime": "bpf_ktime_get_ns()",
    "part_cpu": "bpf_get_smp_processor_id()",
    "part_task": "bpf_get_current_task_btf()",
    "part_pid_tgid": "bpf_get_current_pid_tgid()",
    "part_array_inc": "PERCPU_ARRAY lookup + increment",
    "part_task_storage": "task storage get (create), current task",
    "part_tid_hash": "LRU_HASH by thread id, lookup (+ insert)",
    "part_proc_hash": "task fields + LRU_PERCPU_HASH (tgid, nr, comm)",
}


# --- the loop ---------------------------------------------------------------------------------------------


def build_loop(tmp: str) -> str:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        sys.exit("bench_syscalls: needs a C compiler (apt-get install gcc) for the getppid loop")
    exe = os.path.join(tmp, "getppid_loop")
    subprocess.run([cc, "-O2", "-o", exe, os.path.join(HERE, "getppid_loop.c")], check=True)
    return exe


def run_loop(exe: str, calls: int, chunks: int, cpus: list[int]) -> float:
    """Median-chunk ns per call, averaged over the CPUs, all loops running at once."""
    procs = [
        subprocess.Popen([exe, str(calls), str(c), str(chunks)], stdout=subprocess.PIPE, text=True)
        for c in cpus
    ]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError("getppid loop failed")
    return statistics.mean(float(o) for o in outs)


@contextmanager
def run_time_stats() -> Iterator[None]:
    fd = _machine.current().libbpf().enable_stats()
    try:
        yield
    finally:
        os.close(fd)


def stats_already_on() -> bool:
    """Someone else holds run-time stats on (they would tax every program during a stats-off loop)."""
    try:
        with open("/proc/sys/kernel/bpf_stats_enabled") as f:
            return f.read().strip() != "0"
    except OSError:
        return False


# --- configurations ---------------------------------------------------------------------------------------


@contextmanager
def floor(programs: tuple[str, ...]) -> Iterator[list[Prog]]:
    with BpfObject(bundled("floor.bpf.o")) as obj:
        for name, prog in obj.programs.items():
            prog.autoload = name in programs
        obj.load()
        for name in programs:
            obj.attach(name)
        yield [(name, obj.programs[name].fd) for name in programs]


@contextmanager
def counter(latency_percpu: bool = True, process_cache: bool = True, **kw: Any) -> Iterator[list[Prog]]:
    c = SyscallCounter(start=False, **kw)
    c.latency_percpu = latency_percpu
    c.process_cache = process_cache
    with c:
        if c.attach_mode != "tp_btf":
            raise RuntimeError(f"percpu attached at {c.attach_mode}, not tp_btf: the floor would not match")
        yield [(p.name, p.fd) for p in c.programs()]


def tool_prog_ids(pid: int) -> list[int]:
    """Ids of the BPF programs a process holds open (its fdinfo names them)."""
    ids: set[int] = set()
    fdinfo = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(fdinfo):
        try:
            with open(os.path.join(fdinfo, fd)) as f:
                for line in f:
                    if line.startswith("prog_id:"):
                        ids.add(int(line.split()[1]))
        except (OSError, ValueError):
            continue
    return sorted(ids)


@contextmanager
def external(cmd: list[str], ready: str, settle: float = 0.5) -> Iterator[list[Prog]]:
    """Run a tracing tool until the block ends; wait until it prints ``ready``; its programs by id."""
    ensure_tracefs()  # bpftrace and bcc attach classic tracepoints and, unlike percpu, do not mount tracefs
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    fds: list[int] = []
    try:
        assert p.stdout is not None
        deadline = time.monotonic() + 90
        seen = ""
        while ready not in seen:
            line = p.stdout.readline()
            if not line:
                raise RuntimeError(f"{os.path.basename(cmd[-1])} exited: {seen[-600:]}")
            seen += line
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[0]} did not start: {seen[-600:]}")
        time.sleep(settle)
        lib = _machine.current().libbpf()
        progs: list[Prog] = []
        for i, prog_id in enumerate(tool_prog_ids(p.pid)):
            fd = lib.prog_get_fd_by_id(prog_id)
            fds.append(fd)
            # ids change from start to start; the name and load order do not
            progs.append((f"{i + 1}:{lib.prog_info(fd).name}", fd))
        if not progs:
            raise RuntimeError(f"{cmd[0]} started but holds no BPF program")
        yield progs
    finally:
        for fd in fds:
            os.close(fd)
        p.send_signal(signal.SIGINT)  # what both tools take as "stop" (Ctrl-C)
        try:
            p.communicate(timeout=15)  # drain: a tool blocked writing its final report never exits
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()


def _cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "percpu-bench")


def bcc_headers() -> tuple[str, str] | None:
    """(build, source) kernel header directories for bcc; None when the running kernel has its own.

    Debian ships headers per kernel package; this kernel is not one, so take the distribution's current
    kernel (linux-headers-<arch> names it) into a cache directory. syscount uses only the raw_syscalls
    tracepoints, whose record layout has not changed since 4.x, so older headers compile it correctly.
    """
    if os.path.exists(f"/lib/modules/{os.uname().release}/build"):
        return None
    for tool in ("apt-cache", "apt-get", "dpkg", "dpkg-deb", "unshare"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"no headers for this kernel and no {tool} to fetch Debian's")
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()

    def depends(pkg: str, pattern: str) -> str:
        r = subprocess.run(["apt-cache", "depends", pkg], capture_output=True, text=True)
        if r.returncode and os.geteuid() == 0:
            # No package lists (a machine whose lists were cleaned after its packages were installed, as
            # images are): fetch them once, as the download below needs them too.
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, check=True)
            r = subprocess.run(["apt-cache", "depends", pkg], capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"apt-cache depends {pkg}: {r.stderr.strip()[-300:]} (apt-get update?)")
        out = r.stdout
        for line in out.splitlines():
            name = line.split(":", 1)[-1].strip()
            if "Depends:" in line and name.startswith("linux-headers-") and pattern in name:
                return name
        raise RuntimeError(f"apt-cache depends {pkg}: no {pattern} headers package (apt-get update?)")

    flavour = depends(f"linux-headers-{arch}", arch)
    common = depends(flavour, "-common")
    root = os.path.join(_cache_dir(), "headers", flavour)
    build = os.path.join(root, "usr", "src", flavour)
    source = os.path.join(root, "usr", "src", common)
    if not (os.path.isdir(build) and os.path.isdir(source)):
        debs = os.path.join(_cache_dir(), "debs")
        os.makedirs(debs, exist_ok=True)
        r = subprocess.run(["apt-get", "download", flavour, common], cwd=debs, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"apt-get download {flavour} {common}: {r.stderr.strip()[-300:]}")
        tmp = root + ".tmp"
        os.makedirs(os.path.dirname(root), exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        for deb in os.listdir(debs):
            if deb.startswith((flavour + "_", common + "_")):
                subprocess.run(["dpkg-deb", "-x", os.path.join(debs, deb), tmp], check=True)
        shutil.rmtree(root, ignore_errors=True)
        os.rename(tmp, root)
    return build, source


# Inside a private mount namespace: a tmpfs over /lib/modules holding only build and source links for the
# running kernel, then the tool. The host's mounts and /lib/modules are untouched; a system with no
# /lib/modules at all (a container or chroot with no kernel package) gets the empty directory every
# installed kernel would have made, as the tmpfs needs a mount point.
_WITH_HEADERS = (
    'm="/lib/modules/$(uname -r)" && mkdir -p /lib/modules && mount -t tmpfs percpu-bench /lib/modules '
    '&& mkdir -p "$m" '
    '&& ln -s "$1" "$m/build" && ln -s "$2" "$m/source" && shift 2 && exec "$@"'
)


def bcc_command(tool: str, args: list[str], headers: tuple[str, str] | None) -> list[str]:
    if headers is None:
        return [tool, *args]
    return [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        _WITH_HEADERS,
        "sh",
        *headers,
        tool,
        *args,
    ]


@dataclass
class Cfg:
    make: Config
    floor: str | None  # configuration it is compared with
    note: str = ""


def configs(
    with_external: bool, skipped: dict[str, str], notes: list[str], compare: str | None = None
) -> dict[str, Cfg]:
    c: dict[str, Cfg] = {
        "none": Cfg(nullprogs, None),
        "floor tp_btf enter": Cfg(lambda: floor(("enter_btf",)), None),
        "floor tp_btf enter+exit": Cfg(lambda: floor(("enter_btf", "exit_btf")), None),
        "reference minimal counter": Cfg(lambda: floor(("count_btf",)), "floor tp_btf enter"),
        "percpu default": Cfg(counter, "floor tp_btf enter"),
        "percpu -P -e (process+errno)": Cfg(
            lambda: counter(per_process=True, errors=True), "floor tp_btf enter+exit"
        ),
        "percpu -P -e, hash each call": Cfg(
            lambda: counter(per_process=True, errors=True, process_cache=False), "floor tp_btf enter+exit"
        ),
        "percpu -L (latency)": Cfg(lambda: counter(latency=True), "floor tp_btf enter+exit"),
        "percpu -L, no per-CPU slot": Cfg(
            lambda: counter(latency=True, latency_percpu=False), "floor tp_btf enter+exit"
        ),
    }
    if compare:
        # Another build of syscount.bpf.o (an earlier commit's), measured in the same rounds as this one.
        notes.append(f"compared: {compare}")
        c["compared -P -e (process+errno)"] = Cfg(
            lambda: counter(per_process=True, errors=True, obj_path=compare), "floor tp_btf enter+exit"
        )
        c["compared -P -e, hash each call"] = Cfg(
            lambda: counter(per_process=True, errors=True, process_cache=False, obj_path=compare),
            "floor tp_btf enter+exit",
        )
    if not with_external:
        return c
    c["floor tracepoint enter"] = Cfg(lambda: floor(("enter_tp",)), "floor tp_btf enter")
    c["floor tracepoint exit"] = Cfg(lambda: floor(("exit_tp",)), "floor tp_btf enter")
    c["floor tracepoint enter+exit"] = Cfg(lambda: floor(("enter_tp", "exit_tp")), "floor tp_btf enter+exit")
    if shutil.which("bpftrace"):
        c["bpftrace @[id]=count()"] = Cfg(
            lambda: external(["bpftrace", "-e", BPFTRACE_PROGRAM], "Attaching"), "floor tracepoint enter"
        )
    else:
        skipped["bpftrace"] = "not installed (apt-get install bpftrace)"
    tool = shutil.which("syscount-bpfcc") or shutil.which("/usr/share/bcc/tools/syscount")
    if tool is None:
        skipped["bcc syscount"] = "not installed (apt-get install bpfcc-tools python3-bpfcc)"
        return c
    try:
        headers = bcc_headers()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        skipped["bcc syscount"] = f"no kernel headers for bcc: {exc}"
        return c
    if headers:
        notes.append(
            f"bcc compiled against {os.path.basename(headers[0])} headers (running {os.uname().release})"
        )
    c["bcc syscount"] = Cfg(
        lambda: external(bcc_command(tool, [], headers), "Tracing"), "floor tracepoint exit"
    )
    c["bcc syscount -L"] = Cfg(
        lambda: external(bcc_command(tool, ["-L"], headers), "Tracing"), "floor tracepoint enter+exit"
    )
    return c


@contextmanager
def nullprogs() -> Iterator[list[Prog]]:
    yield []


# --- one run ----------------------------------------------------------------------------------------------


@dataclass
class Samples:
    loop: list[float] = field(default_factory=list)  # ns per call, stats off
    own: list[dict[str, float]] = field(default_factory=list)  # ns per run of each program, stats on
    short_runs: int = 0  # stats loops where a program ran fewer times than the loop called (not attached?)
    # per NOT_PER_CALL program: (ns per run, runs per 1,000 system calls), stats on
    side: list[dict[str, tuple[float, float]]] = field(default_factory=list)


def measure(
    cfgs: dict[str, Cfg], busy_sets: dict[str, list[int]], exe: str, calls: int, chunks: int, rounds: int
) -> tuple[dict[tuple[str, str], Samples], int]:
    samples = {(n, b): Samples() for n in cfgs for b in busy_sets}
    contaminated = 0
    names = list(cfgs)
    lib = _machine.current().libbpf()
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            with cfgs[name].make() as progs:
                for busy, cpus in busy_sets.items():
                    s = samples[(name, busy)]
                    contaminated += stats_already_on()
                    s.loop.append(run_loop(exe, calls, chunks, cpus))
                    if not progs:
                        continue
                    with run_time_stats():
                        before = [lib.prog_info(fd) for _, fd in progs]
                        run_loop(exe, calls, chunks, cpus)
                        after = [lib.prog_info(fd) for _, fd in progs]
                    own: dict[str, float] = {}
                    side: dict[str, tuple[float, float]] = {}
                    delta = {
                        label: (b.run_cnt - a.run_cnt, b.run_time_ns - a.run_time_ns)
                        for (label, _), a, b in zip(progs, before, after, strict=True)
                    }
                    per_call = [runs for label, (runs, _) in delta.items() if label not in NOT_PER_CALL]
                    syscalls = max(per_call, default=0)
                    for label, (runs, ns) in delta.items():
                        if label in NOT_PER_CALL:
                            own[label] = ns / syscalls if syscalls else float("nan")
                            side[label] = (
                                ns / runs if runs else float("nan"),
                                1000 * runs / syscalls if syscalls else float("nan"),
                            )
                            continue
                        s.short_runs += runs < calls * len(cpus)
                        own[label] = ns / runs if runs else float("nan")
                    s.own.append(own)
                    s.side.append(side)
        print(f"  round {r + 1}/{rounds} done, load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    return samples, contaminated


def measure_parts(exe: str, calls: int, chunks: int, cpu: int, rounds: int) -> dict[str, list[float]]:
    """ns per run of each part program (bench_parts.bpf.o), interleaved over rounds, run-time stats on."""
    lib = _machine.current().libbpf()
    names = ["part_empty", *PARTS]
    out: dict[str, list[float]] = {n: [] for n in names}
    with BpfObject(bundled("bench_parts.bpf.o")) as obj:
        obj.load()
        for r in range(rounds):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                fd = obj.programs[name].fd
                with obj.attach(name), run_time_stats():
                    a = lib.prog_info(fd)
                    run_loop(exe, calls, chunks, [cpu])
                    b = lib.prog_info(fd)
                runs = b.run_cnt - a.run_cnt
                out[name].append((b.run_time_ns - a.run_time_ns) / runs if runs >= calls else float("nan"))
    return out


def spread(xs: list[float]) -> dict[str, float]:
    """Median and interquartile range."""
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return {"median": float("nan"), "q1": float("nan"), "q3": float("nan"), "n": 0}
    if len(xs) == 1:
        return {"median": xs[0], "q1": xs[0], "q3": xs[0], "n": 1}
    q1, med, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return {"median": med, "q1": q1, "q3": q3, "n": len(xs)}


def summarize(
    cfgs: dict[str, Cfg], busy_sets: dict[str, list[int]], samples: dict[tuple[str, str], Samples]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for busy in busy_sets:
        base = samples[("none", busy)].loop
        added = {n: [x - b for x, b in zip(samples[(n, busy)].loop, base, strict=True)] for n in cfgs}
        own_sum = {n: [sum(o.values()) for o in samples[(n, busy)].own] for n in cfgs}
        for name, cfg in cfgs.items():
            s = samples[(name, busy)]
            row: dict[str, Any] = {
                "busy": busy,
                "config": name,
                "floor": cfg.floor,
                "ns_per_call": spread(s.loop),
                "added_ns": spread(added[name]),
                "short_runs": s.short_runs,
            }
            if s.own:
                row["own_ns"] = {label: spread([o[label] for o in s.own]) for label in s.own[0]}
                row["own_ns_sum"] = spread(own_sum[name])
            if s.side and s.side[0]:
                row["not_per_call"] = {
                    label: {
                        "ns_per_run": spread([x[label][0] for x in s.side]),
                        "runs_per_1000_calls": spread([x[label][1] for x in s.side]),
                    }
                    for label in s.side[0]
                }
            if cfg.floor:
                fa, fo = added[cfg.floor], own_sum[cfg.floor]
                row["x_floor_loop"] = spread([a / f for a, f in zip(added[name], fa, strict=True) if f > 0])
                row["x_floor_stats"] = spread(
                    [(f + o - fon) / f for o, f, fon in zip(own_sum[name], fa, fo, strict=True) if f > 0]
                )
                # a hook cannot cost nothing: a round where the floor's loop delta is not positive was
                # drowned in noise, and a ratio over it would mean nothing
                row["rounds_without_ratio"] = sum(f <= 0 for f in fa)
            if name in TARGETS:
                row["target"] = TARGETS[name]
            rows.append(row)
    return rows


def fmt(s: dict[str, float] | None, digits: int = 1) -> str:
    if not s or s["n"] == 0:
        return ""
    return f"{s['median']:.{digits}f} [{s['q1']:.{digits}f}-{s['q3']:.{digits}f}]"


def print_run(rows: list[dict[str, Any]], busy_sets: dict[str, list[int]]) -> None:
    for busy in busy_sets:
        print(f"\n{busy}: median [interquartile range] over rounds")
        print(
            f"  {'configuration':<30} {'ns/call':>18} {'added ns (loop)':>20} {'own ns (stats)':>18}"
            f" {'x floor (loop)':>18} {'x floor (stats)':>18}"
        )
        for row in rows:
            if row["busy"] != busy:
                continue
            print(
                f"  {row['config']:<30} {fmt(row['ns_per_call']):>18} {fmt(row['added_ns']):>20}"
                f" {fmt(row.get('own_ns_sum')):>18} {fmt(row.get('x_floor_loop'), 2):>18}"
                f" {fmt(row.get('x_floor_stats'), 2):>18}"
            )
            own = row.get("own_ns") or {}
            if len(own) > 1:
                parts = ", ".join(f"{label} {fmt(v)}" for label, v in own.items())
                print(f"  {'':<30}   own ns per program: {parts}")
            for label, v in (row.get("not_per_call") or {}).items():
                print(
                    f"  {'':<30}   {label}: {fmt(v['ns_per_run'])} ns per run,"
                    f" {fmt(v['runs_per_1000_calls'])} runs per 1,000 system calls (charged per call above)"
                )
            if row.get("rounds_without_ratio"):
                print(
                    f"  {'':<30}   {row['rounds_without_ratio']} rounds left out of the ratios: the floor's"
                    " loop delta was not positive"
                )
            if row["short_runs"]:
                print(
                    f"  {'':<30}   warning: {row['short_runs']} stats loops ran a program fewer times"
                    " than the loop called"
                    " (not attached where the loop calls?)"
                )


def agreement(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per configuration and metric: each run's median [IQR], and whether the IQRs have a value in common."""
    out: list[dict[str, Any]] = []
    for i, row in enumerate(runs[0]):
        for metric in ("x_floor_stats", "x_floor_loop", "own_ns_sum"):
            if metric not in row:
                continue
            ss = [run[i][metric] for run in runs]
            if any(s["n"] == 0 for s in ss):
                continue
            agree = max(s["q1"] for s in ss) <= min(s["q3"] for s in ss)
            out.append(
                {"busy": row["busy"], "config": row["config"], "metric": metric, "runs": ss, "agree": agree}
            )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=100_000, help="getppid calls per loop (default 100,000)")
    ap.add_argument("--chunks", type=int, default=20, help="timed chunks per loop, median taken (default 20)")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds per run (default 10)")
    ap.add_argument(
        "--repeat", type=int, default=1, help="run the whole benchmark N times in a row (default 1)"
    )
    ap.add_argument("--no-external", action="store_true", help="leave out bpftrace and bcc")
    ap.add_argument("--no-parts", action="store_true", help="leave out the price of each part (bench_parts)")
    ap.add_argument(
        "--compare-object",
        metavar="FILE",
        help="also measure -P -e with this syscount.bpf.o (e.g. an earlier commit's), in the same rounds",
    )
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--json-out", metavar="FILE", help="also write the results as JSON to FILE")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="2,000 calls in 2 chunks, 1 round, no bpftrace or bcc: that it runs, not what it costs",
    )
    args = ap.parse_args()
    if args.smoke:
        args.calls, args.chunks, args.rounds, args.repeat, args.no_external = 2_000, 2, 1, 1, True
        print(
            f"{ap.prog}: --smoke: a small run, to check that it works; its figures mean nothing",
            file=sys.stderr,
        )
    if os.geteuid() != 0:
        sys.exit("bench_syscalls: run as root (it attaches BPF programs)")
    if min(args.calls, args.chunks, args.rounds, args.repeat) < 1 or args.chunks > args.calls:
        sys.exit("bench_syscalls: --calls, --chunks, --rounds and --repeat must be positive, chunks <= calls")
    online = list(cpu_lists().online)
    busy_sets = {"1 busy CPU": online[:1], f"{len(online)} busy CPUs": online}
    skipped: dict[str, str] = {}
    notes: list[str] = []
    cfgs = configs(not args.no_external, skipped, notes, args.compare_object)
    for name in [n for n in cfgs if n.startswith(("bpftrace", "bcc"))]:
        try:
            with cfgs[name].make():
                pass
        except (RuntimeError, OSError) as exc:
            skipped[name] = " ".join(str(exc).split())[-400:]
            del cfgs[name]
    started = time.time()
    load_before = os.getloadavg()
    runs: list[list[dict[str, Any]]] = []
    contaminated = 0
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_loop(tmp)
        for rep in range(args.repeat):
            print(f"run {rep + 1}/{args.repeat}", file=sys.stderr, flush=True)
            samples, dirty = measure(cfgs, busy_sets, exe, args.calls, args.chunks, args.rounds)
            contaminated += dirty
            runs.append(summarize(cfgs, busy_sets, samples))
        parts = {} if args.no_parts else measure_parts(exe, args.calls, args.chunks, online[0], args.rounds)
    empty = parts.get("part_empty", [])
    part_rows = {
        name: {
            "what": PARTS[name],
            "own_ns": spread(xs),
            "added_ns": spread([x - e for x, e in zip(xs, empty, strict=True)]),
        }
        for name, xs in parts.items()
        if name != "part_empty"
    }
    agree = agreement(runs) if len(runs) > 1 else []
    header = {
        "kernel": os.uname().release,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "minutes": round((time.time() - started) / 60, 1),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "command": " ".join(["bench_syscalls.py", *sys.argv[1:]]),
        "calls": args.calls,
        "chunks": args.chunks,
        "rounds": args.rounds,
        "repeat": args.repeat,
        "stats_on_by_others": contaminated,
        "notes": notes,
    }
    out = {**header, "runs": runs, "agreement": agree, "parts": part_rows, "did_not_run": skipped}
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(out, f, indent=2)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"getppid loop, {args.calls:,} calls in {args.chunks} chunks x {args.rounds} rounds"
        f" x {args.repeat} runs;"
        f" kernel {header['kernel']}; {header['date']}; {header['minutes']} min"
    )
    print(
        "load average (1, 5, 15 min) before: {:.1f} {:.1f} {:.1f}, after: {:.1f} {:.1f} {:.1f}".format(
            *load_before, *header["load_after"]
        )
    )
    for note in notes:
        print(note)
    if contaminated:
        print(
            f"warning: run-time stats were on (held by another process) during {contaminated}"
            " loop-delta loops"
        )
    for i, rows in enumerate(runs):
        print(f"\n=== run {i + 1} of {len(runs)} ===")
        print_run(rows, busy_sets)
    if len(runs) > 1:
        print(
            "\nagreement of the runs (median [IQR] of each run; agree = one value lies in every run's IQR):"
        )
        for a in agree:
            meds = "  ".join(fmt(s, 2 if a["metric"] != "own_ns_sum" else 1) for s in a["runs"])
            print(
                f"  {a['busy']:<12} {a['config']:<30} {a['metric']:<14} {meds}"
                f"  {'agree' if a['agree'] else 'DIFFER'}"
            )
    print("\ntargets (x floor at the same hooks, kernel-stats method; median of the runs' medians):")
    for busy in busy_sets:
        for name, target in TARGETS.items():
            meds = [
                r["x_floor_stats"]["median"]
                for rows in runs
                for r in rows
                if r["busy"] == busy and r["config"] == name
            ]
            meds = [m for m in meds if not math.isnan(m)]
            if not meds:
                print(f"  {busy:<12} {name:<30}   no estimate: the floor's loop delta was never positive")
            else:
                med = statistics.median(meds)
                print(
                    f"  {busy:<12} {name:<30} {med:5.2f} (target {target:.2f})"
                    f" {'met' if med <= target else 'NOT met'}"
                )
    if part_rows:
        print(
            f"\nprice of each part at tp_btf/sys_enter, 1 busy CPU, {args.rounds} rounds: own ns per run"
            f" minus the empty program's ({fmt(spread(empty))} ns), median [IQR]"
        )
        for row in part_rows.values():
            print(f"  {row['what']:<48} {fmt(row['added_ns']):>20}")
    for name, why in skipped.items():
        print(f"\n{name} did not run here: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
