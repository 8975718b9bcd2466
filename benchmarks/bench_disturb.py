"""Added cost per event of the disturbance counter's programs, against empty programs at the same hooks.

Run as root:  .venv/bin/python benchmarks/bench_disturb.py            (about 2 minutes; --rounds, --seconds)

The kernel-stats method of bench_syscalls.py, side by side: in each round, for each configuration of the
counter (counts only; times; tasks; tasks and times; and the last with an expected workload, or with pids
numbered in a pid namespace), the counter's programs and an empty program at each of the same hooks
(bpf/floor_disturb.bpf.c) are attached together, and a load (disturb_load.c: task switches on one CPU and
across two, loopback UDP, O_DIRECT reads) fires the hooks for SECONDS with the kernel's BPF run-time
statistics on. Each program's ns per run is read from the kernel (run_time_ns / run_cnt): the counter's
program and the empty one ran on the very same events. The configuration order rotates each round, and which
object attaches first alternates (programs at one hook run in attach order).

What a hook costs before any program body runs (the tracepoint's call into BPF, __bpf_trace_run, the same
code for every raw tracepoint) is not in run_time_ns; it is measured as bench_syscalls.py does, by the
getppid loop's delta with an empty tp_btf program at sys_enter (the same entry path), once per round; the
median over the rounds is the run's price. Then for a program P at hook H, per round:

    added = own(P) - own(empty at H)            x floor = (hook price + added) / hook price

The issue's goals: counts alone within 1.1x of the floor; with times, the time programs' cost over the
counts alone within 1.25x of the two clock reads they make (bpf_ktime_get_ns, priced by a program at
softirq_entry that only reads the clock, against the empty one there).

``--twin`` also attaches a second copy of every empty program, before the first in half the rounds, and
figures it against the first as a counter's program is: what the method reads at each hook where nothing
was added, so the resolution of a figure there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)

from bench_syscalls import build_loop, floor, run_loop, run_time_stats, spread, stats_already_on  # noqa: E402

from percpu import _elf, _libbpf  # noqa: E402
from percpu.btf import parse_btf  # noqa: E402
from percpu.cpus import cpu_lists  # noqa: E402
from percpu.disturb import DisturbCounter, Expected  # noqa: E402
from percpu.disturb._hooks import VECTOR_TRACEPOINTS  # noqa: E402
from percpu.errors import PercpuError  # noqa: E402
from percpu.objects import BpfObject, bundled  # noqa: E402
from percpu.syscount import cgroup2_root  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "counts": {"times": False, "tasks": False},
    "times": {"times": True, "tasks": False},
    "tasks": {"times": False, "tasks": True},
    "tasks+times": {"times": True, "tasks": True},
    # An expected workload named all three ways (every check runs at each switch-in: the worst case).
    "tasks+times+expect": {"times": True, "tasks": True, "expect": "all"},
    # Pids numbered in a pid namespace: the initial one's inode given as percpu's, so the program walks
    # each pid's namespaces as it does in a container.
    "tasks+times+pidns": {"times": True, "tasks": True, "pidns_ino": "init"},
}

# The x86 vectors with tracepoints of their own, as the counter names their programs.
VECTORS = VECTOR_TRACEPOINTS


class Baseline:
    """Another build of disturb.bpf.o (``--baseline OBJ``: an earlier commit's), attached like the counter's
    for a side-by-side figure of what a change costs, in one of three configurations (``kind``):

    * ``counts``: its programs of counts alone at the hard IRQ, softirq, x86 vector and sched_switch hooks
      (a build's ``*_count_btf`` programs where it has them, else its entry programs with times off, as
      builds before them counted);
    * ``times``: its entry and exit programs at the same handlers' hooks, times on;
    * ``tasks+times``: its sched_switch program, tasks and times on.

    Its config is written by the layout the object's own BTF gives ``struct disturb_config`` (``cfg``, at the
    start of .rodata, in every build), whichever fields that build has."""

    HANDLERS = ("irq", "softirq", *VECTORS)

    def __init__(self, path: str, kind: str) -> None:
        self.path = path
        self.kind = kind
        self.obj: BpfObject | None = None
        self.attached: list[str] = []

    def wanted(self, names: Any) -> list[str]:
        if self.kind == "tasks+times":
            return ["switch_btf"]
        if self.kind == "times":
            return [f"{h}_{end}_btf" for h in self.HANDLERS for end in ("entry", "exit")]
        out = [f"{h}_count_btf" if f"{h}_count_btf" in names else f"{h}_entry_btf" for h in self.HANDLERS]
        return [*out, "switch_count_btf" if "switch_count_btf" in names else "switch_btf"]

    def start(self) -> None:
        self.obj = BpfObject(self.path)
        wanted = self.wanted(self.obj.programs)
        for name, p in self.obj.programs.items():
            p.autoload = name in wanted
        self.obj.set_rodata(baseline_config(self.path, self.kind))
        self.obj.set_max_entries("tasks", 8192)
        self.obj.load()
        for name in wanted:
            try:
                self.obj.attach(name)
            except PercpuError:  # a hook this kernel lacks (a vector's tracepoint)
                continue
            self.attached.append(name)

    def programs(self) -> list[Any]:
        return [] if self.obj is None else [self.obj.programs[n] for n in self.attached]

    def close(self) -> None:
        if self.obj is not None:
            self.obj.close()


def baseline_config(path: str, kind: str) -> bytes:
    """``struct disturb_config`` of the object at ``path`` for a :class:`Baseline` ``kind``, laid out by its
    BTF: every field zero but times (on unless ``counts``), and tasks (on with ``tasks+times``) in a build
    that has that field (its switch_btf read it; later builds' switch_btf keeps tasks)."""
    btf = parse_btf(_elf.section(path, ".BTF"))
    layout = np.dtype(btf.dtype(btf.find("disturb_config", "struct")))
    fields = set(layout.names or ())
    if "times" not in fields:
        sys.exit(f"bench_disturb: {path}'s struct disturb_config has no times field")
    cfg = np.zeros((), layout)
    on = {"counts": set(), "times": {"times"}, "tasks+times": {"times", "tasks"}}[kind]
    for name in fields & on:
        cfg[name] = 1
    return cfg.tobytes()


BASELINE = ", baseline object"  # the suffix of the baseline's configurations (--baseline)
BASELINE_KINDS = ("counts", "times", "tasks+times")
baseline_path: str | None = None


def counter_args(name: str) -> dict[str, Any]:
    kw = dict(CONFIGS[name])
    if kw.get("expect") == "all":
        kw["expect"] = Expected(pid=1, comm="percpu-bench", cgroup=cgroup2_root() and "/")
    if kw.get("pidns_ino") == "init":
        kw["pidns_ino"] = os.stat("/proc/self/ns/pid").st_ino
    return kw


# The empty program at each disturb.bpf.c program's hook (tp_btf flavour).
# Entry programs come as *_count_btf (counts alone) and *_entry_btf (times: the start taken too).
FLOOR_OF = {
    "irq_count_btf": "floor_irq_handler_entry",
    "irq_entry_btf": "floor_irq_handler_entry",
    "irq_exit_btf": "floor_irq_handler_exit",
    "softirq_count_btf": "floor_softirq_entry",
    "softirq_entry_btf": "floor_softirq_entry",
    "softirq_exit_btf": "floor_softirq_exit",
    "switch_count_btf": "floor_sched_switch",
    "switch_btf": "floor_sched_switch",
    "tlb_csd": "floor_csd_function_entry",
    **{
        f"{v}_{kind}_btf": f"floor_{v}_{'exit' if kind == 'exit' else 'entry'}"
        for v in VECTORS
        for kind in ("count", "entry", "exit")
    },
}
CLOCK = ("ktime_softirq_entry", "floor_softirq_entry")
PAIRS = {  # one handler class's programs: the entry with counts alone; the entry and the exit with times
    "hard IRQs": ("irq_count_btf", "irq_entry_btf", "irq_exit_btf"),
    "softirqs": ("softirq_count_btf", "softirq_entry_btf", "softirq_exit_btf"),
    "local timer": ("local_timer_count_btf", "local_timer_entry_btf", "local_timer_exit_btf"),
    "reschedule IPI": ("reschedule_count_btf", "reschedule_entry_btf", "reschedule_exit_btf"),
}
MIN_RUNS = 1000  # fewer runs per round than this: too few events at that hook for a figure


def build_load(tmp: str) -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("bench_disturb: needs a C compiler (apt-get install gcc)")
    exe = os.path.join(tmp, "disturb_load")
    subprocess.run([cc, "-O2", "-o", exe, os.path.join(HERE, "disturb_load.c")], check=True)
    return exe


TWIN = "twin:"  # the prefix of the twin's programs (--twin) among a round's programs


@contextmanager
def floors(first: bool, counter: Any, twin: bool, twin_first: bool) -> Iterator[dict[str, int]]:
    """Every empty program (and the clock-read one) attached, before or after the counter's; with ``twin``
    (--twin), a second copy of each beside it, before or after it (``twin_first``)."""
    with ExitStack() as stack:
        objs = [stack.enter_context(BpfObject(bundled("floor_disturb.bpf.o"))) for _ in range(1 + twin)]
        for o in objs:
            o.load()
        if not first:
            counter.start()
        for o in objs[::-1] if twin_first else objs:
            for name in o.programs:
                try:
                    o.attach(name)
                except PercpuError:  # a hook this kernel lacks has no floor, and no program of the counter
                    continue
        if first:
            counter.start()
        fds = {name: p.fd for name, p in objs[0].programs.items()}
        if twin:
            fds.update({TWIN + name: p.fd for name, p in objs[1].programs.items()})
        yield fds


def measure_round(
    load: str, seconds: float, cpus: tuple[int, int], path: str, order: list[str], r: int, twin: bool
) -> dict[str, dict[str, tuple[int, int]]]:
    """config -> program -> (runs, ns) over one load run (with ``twin``, the empty programs' twins too)."""
    lib = _libbpf.libbpf()
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for name in order:
        c: Any = (
            Baseline(baseline_path or "", name.removesuffix(BASELINE))
            if name.endswith(BASELINE)
            else DisturbCounter(**counter_args(name), start=False)
        )
        try:
            with floors(r % 2 == 0, c, twin, r % 4 >= 2) as floor_fds:
                fds = {**floor_fds, **{p.name: p.fd for p in c.programs()}}
                with run_time_stats():
                    before = {k: lib.prog_info(fd) for k, fd in fds.items()}
                    subprocess.run([load, str(seconds), str(cpus[0]), str(cpus[1]), path], check=True)
                    after = {k: lib.prog_info(fd) for k, fd in fds.items()}
        finally:
            c.close()
        out[name] = {
            k: (after[k].run_cnt - before[k].run_cnt, after[k].run_time_ns - before[k].run_time_ns)
            for k in fds
        }
    return out


def hook_price(exe: str, cpu: int) -> float:
    """ns an empty tp_btf program adds per event (getppid loop at sys_enter, stats off)."""
    bare = run_loop(exe, 100_000, 20, [cpu])
    with floor(("enter_btf",)):
        with_floor = run_loop(exe, 100_000, 20, [cpu])
    return with_floor - bare


def per_run(runs: int, ns: int) -> float:
    return ns / runs if runs >= MIN_RUNS else float("nan")


def summarize(rounds: list[dict[str, dict[str, tuple[int, int]]]], prices: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {"hook_price_ns": spread(prices), "configs": {}}
    # One price for the run: a single round's loop delta swings under a neighbour's load (the added ns,
    # paired on the same events, do not).
    price = statistics.median(prices)
    for cfg in CONFIGS:
        progs = sorted({p for rnd in rounds for p in rnd[cfg] if p in FLOOR_OF})
        rows: dict[str, Any] = {}
        for p in progs:
            f = FLOOR_OF[p]
            own = [per_run(*rnd[cfg][p]) for rnd in rounds]
            fown = [per_run(*rnd[cfg][f]) for rnd in rounds if f in rnd[cfg]]
            added = [a - b for a, b in zip(own, fown, strict=False)]
            ratio = [(price + a) / price for a in added] if price > 0 else []
            rows[p] = {
                "runs_per_round": statistics.median(rnd[cfg][p][0] for rnd in rounds),
                "own_ns": spread(own),
                "floor_own_ns": spread(fown),
                "added_ns": spread(added),
                "x_floor": spread(ratio),
            }
        out["configs"][cfg] = rows
    clock = [per_run(*rnd["times"][CLOCK[0]]) - per_run(*rnd["times"][CLOCK[1]]) for rnd in rounds]
    out["clock_read_ns"] = spread(clock)
    out["times_over_two_clock_reads"] = times_over_clock(rounds, clock, "times", "counts")
    if "times" + BASELINE in rounds[0]:
        out["baseline_times_over_two_clock_reads"] = times_over_clock(
            rounds, clock, "times" + BASELINE, "counts" + BASELINE
        )
    if any(k.startswith(TWIN) for rnd in rounds for run in rnd.values() for k in run):
        out["twin"] = twins(rounds, price)
    return out


def times_over_clock(
    rounds: list[dict[str, dict[str, tuple[int, int]]]], clock: list[float], times: str, counts: str
) -> dict[str, Any]:
    """Per handler class: (entry + exit with times) - (entry with counts alone), over two clock reads. The
    counts' entry is the ``*_count_btf`` program, or in a build without one its ``*_entry_btf``.

    ``sums``: the rounds' added ns summed, over their clock reads summed; the figure the goal is read by.
    The first clock read at an event costs about twice what a later one at the same event does (30-45 ns
    more, measured with seven programs at softirq_entry in every attach order), and whichever of the
    counter's entry program and the clock-priced program runs first at softirq_entry pays it. Attach order
    alternates by round, so one round prices the clock low and the counter's entry high, and the next the
    other way round: a ratio per round swings with the order, and the sums over an even number of rounds
    weigh both orders alike. The per-round ratios are kept beside them."""
    pairs: dict[str, Any] = {}
    for label, (count, entry, exit_) in PAIRS.items():
        extra = []
        added_ns = clock_ns = 0.0
        for rnd, ck in zip(rounds, clock, strict=True):
            t, c = rnd[times], rnd[counts]
            counted_by = count if count in c else entry
            if entry not in t or exit_ not in t or counted_by not in c:
                continue
            timed = (per_run(*t[entry]) - per_run(*t[FLOOR_OF[entry]])) + (
                per_run(*t[exit_]) - per_run(*t[FLOOR_OF[exit_]])
            )
            counted = per_run(*c[counted_by]) - per_run(*c[FLOOR_OF[counted_by]])
            extra.append((timed - counted) / (2 * ck))
            if not np.isnan(timed - counted + ck):
                added_ns += timed - counted
                clock_ns += 2 * ck
        pairs[label] = {**spread(extra), "sums": added_ns / clock_ns if clock_ns else float("nan")}
    return pairs


def twins(rounds: list[dict[str, dict[str, tuple[int, int]]]], price: float) -> dict[str, Any]:
    """Each empty program against its identical twin at the same hook (--twin), figured as a counter
    program is: what the method reads as added cost where nothing was added. Every configuration's run of
    a round is a sample."""
    rows: dict[str, Any] = {}
    for f in sorted({f for rnd in rounds for run in rnd.values() for f in run if TWIN + f in run}):
        if f.startswith("ktime_"):
            continue
        samples = [(run[f], run[TWIN + f]) for rnd in rounds for run in rnd.values() if TWIN + f in run]
        added = [per_run(*b) - per_run(*a) for a, b in samples]
        rows[f] = {
            "runs_per_round": statistics.median(a[0] for a, _ in samples),
            "own_ns": spread([per_run(*a) for a, _ in samples]),
            "twin_own_ns": spread([per_run(*b) for _, b in samples]),
            "added_ns": spread(added),
            "x_floor": spread([(price + a) / price for a in added] if price > 0 else []),
        }
    return rows


def fmt(s: dict[str, float], digits: int = 1) -> str:
    if not s or s["n"] == 0:
        return "-"
    return f"{s['median']:.{digits}f} [{s['q1']:.{digits}f}-{s['q3']:.{digits}f}]"


def print_rows(rows: dict[str, Any], against: str, against_key: str) -> list[str]:
    """One table of programs against the program at the same hook each is figured against; returns the
    programs left out for too few runs."""
    print(
        "  {:<30} {:>10} {:>18} {:>18} {:>18} {:>18}".format(
            "program", "runs/round", "own ns", against, "added ns", "x floor"
        )
    )
    few = []
    for p, row in rows.items():
        if row["added_ns"]["n"] == 0:
            few.append(f"{p} ({row['runs_per_round']:.0f})")
            continue
        cells = (fmt(row["own_ns"]), fmt(row[against_key]), fmt(row["added_ns"]), fmt(row["x_floor"], 2))
        print("  {:<30} {:>10.0f} {:>18} {:>18} {:>18} {:>18}".format(p, row["runs_per_round"], *cells))
    return few


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--rounds", type=int, default=6, help="an even number weighs both attach orders alike (default 6)"
    )
    ap.add_argument("--seconds", type=float, default=2.0, help="load per configuration and round")
    ap.add_argument("--json-out", metavar="FILE")
    ap.add_argument(
        "--baseline",
        metavar="OBJ",
        help="also measure this build of disturb.bpf.o's programs of counts alone, its handlers' programs "
        "with times, and its sched_switch program with tasks and times, e.g. an earlier commit's: "
        "git show COMMIT:src/percpu/_bpf/disturb.bpf.o > old.o",
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="one round of 0.3 s per configuration: that it runs, not how fast",
    )
    ap.add_argument(
        "--twin",
        action="store_true",
        help="also attach a second copy of each empty program and figure it against the first: what the "
        "method reads at each hook where nothing was added (its resolution there)",
    )
    args = ap.parse_args()
    global baseline_path  # noqa: PLW0603 - one run, one baseline
    if args.baseline:
        baseline_path = args.baseline
        for kind in BASELINE_KINDS:
            CONFIGS[kind + BASELINE] = {}
    if args.smoke:
        args.rounds, args.seconds = 1, 0.3
        print(
            f"{ap.prog}: --smoke: a small run, to check that it works; its figures mean nothing",
            file=sys.stderr,
        )
    if os.geteuid() != 0:
        sys.exit("bench_disturb: run as root (it attaches BPF programs)")
    online = list(cpu_lists().online)
    if len(online) < 2:
        sys.exit("bench_disturb: needs two online CPUs (its load switches tasks across them)")
    cpus = (online[0], online[1])
    started = time.time()
    load_before = os.getloadavg()
    rounds: list[dict[str, dict[str, tuple[int, int]]]] = []
    prices: list[float] = []
    contaminated = 0
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        load, loop = build_load(tmp), build_loop(tmp)
        path = os.path.join(tmp, "data")
        with open(path, "wb") as f:
            f.write(os.urandom(16 << 20))
        names = list(CONFIGS)
        for r in range(args.rounds):
            contaminated += stats_already_on()
            prices.append(hook_price(loop, cpus[0]))
            k = r % len(names)
            rounds.append(measure_round(load, args.seconds, cpus, path, names[k:] + names[:k], r, args.twin))
            print(
                f"  round {r + 1}/{args.rounds} done, load {os.getloadavg()[0]:.1f}",
                file=sys.stderr,
                flush=True,
            )
    result = summarize(rounds, prices)
    result.update(
        kernel=os.uname().release,
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        minutes=round((time.time() - started) / 60, 1),
        load_before=load_before,
        load_after=os.getloadavg(),
        rounds=args.rounds,
        seconds=args.seconds,
        stats_on_by_others=contaminated,
    )
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)
    print(
        f"disturbance counter, kernel {result['kernel']}; {result['date']}; {args.rounds} rounds x "
        f"{args.seconds} s per configuration; {result['minutes']} min"
    )
    print(
        "load average before: {:.1f} {:.1f} {:.1f}, after: {:.1f} {:.1f} {:.1f}".format(
            *load_before, *os.getloadavg()
        )
    )
    if contaminated:
        print(f"warning: BPF run-time stats were on (another process) before {contaminated} rounds")
    print(f"hook price (empty tp_btf program, getppid loop delta): {fmt(result['hook_price_ns'])} ns")
    print(f"one bpf_ktime_get_ns() at softirq_entry: {fmt(result['clock_read_ns'])} ns")
    for cfg, rows in result["configs"].items():
        print(f"\n{cfg}: median [interquartile range] over rounds")
        few = print_rows(rows, "empty ns", "floor_own_ns")
        if few:
            print(f"  fewer than {MIN_RUNS} runs per round, no figure: {', '.join(few)}")
    print("\ntimes: (entry + exit with times) - (entry with counts), over two clock reads (goal <= 1.25):")
    print("  (the rounds' sums, then median [interquartile range] of the rounds' own ratios)")
    for label, s in result["times_over_two_clock_reads"].items():
        print(f"  {label:<16} {s['sums']:.2f}   per round {fmt(s, 2)}")
    if "baseline_times_over_two_clock_reads" in result:
        print("the same of the baseline object:")
        for label, s in result["baseline_times_over_two_clock_reads"].items():
            print(f"  {label:<16} {s['sums']:.2f}   per round {fmt(s, 2)}")
    if "twin" in result:
        print("\nan empty program against its identical twin at the same hook, figured the same way")
        print("(what the method reads where nothing was added): median [interquartile range] over every run")
        few = print_rows(result["twin"], "twin ns", "twin_own_ns")
        if few:
            print(f"  fewer than {MIN_RUNS} runs per round, no figure: {', '.join(few)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
