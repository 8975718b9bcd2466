"""Every benchmark README documents runs: each at its ``--smoke`` size, as a subprocess, as a user would.

Only that it runs and prints its figures is checked, never what they are: speed lives in the benchmarks.
A smoke run's figures are a few samples, and a loaded machine makes them anything (a difference of two
timings below zero, a floor with no estimate): each line is matched by its label and the shape of its
figures, whatever their values.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.kernel

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
BENCHMARKS = os.path.join(ROOT, "benchmarks")
HANG = 600.0  # a guard against a hang, not a time limit: a smoke run takes seconds
NUM = r"(?:-?\d+(?:\.\d+)?|-?inf|nan)"  # any figure, of any sign, or none that a loaded machine gives

# benchmark (and options): a line of figures each must print (one per table it prints)
FIGURES = {
    "bench_maps.py": [
        rf"snapshot \(batch\)\s+{NUM} M keys/s",
        rf"bare batch loop\s+{NUM} M keys/s",
        rf"per-key lookups\s+{NUM} M keys/s",
        rf"bpftool map dump -j\s+{NUM} M keys/s",
    ],
    "bench_syscalls.py": [
        rf"percpu default\s+{NUM} \[{NUM}-{NUM}\]",
        rf"percpu -L \(latency\)\s+{NUM} \[{NUM}-{NUM}\]",
        rf"1 busy CPU\s+percpu default\s+(?:{NUM} \(target|no estimate)",
        rf"PERCPU_ARRAY lookup \+ increment\s+{NUM} \[",
    ],
    "bench_exporter.py": [
        rf"exporter \(expose\), 8 CPUs x all syscalls\s+median\s+{NUM} ms\s+p95\s+{NUM} ms",
        rf"prometheus_client, 8 CPUs x all syscalls\s+median\s+{NUM} ms",
        rf"real counter, \d+ possible CPUs\s+median\s+{NUM} ms",
        rf"prometheus_client / exporter, 8 CPUs x all syscalls\s+{NUM}x",
    ],
    "bench_disturb.py": [
        rf"hook price \(empty tp_btf program, getppid loop delta\): (?:{NUM} \[{NUM}-{NUM}\]|-) ns",
        r"^times: \(entry \+ exit with times\)",
        rf"^  hard IRQs\s+{NUM}   per round ",
    ],
    # The shipped object as its own baseline (its *_count_btf programs; an earlier build's counts alone
    # are its *_entry_btf programs with times off).
    "bench_disturb.py --baseline src/percpu/_bpf/disturb.bpf.o": [
        r"^counts, baseline object: median",
        rf"softirq_count_btf\s+\d+\s+{NUM} \[{NUM}-{NUM}\]",
        r"^times, baseline object: median",
        rf"switch_btf\s+\d+\s+{NUM} \[{NUM}-{NUM}\]",
        r"^the same of the baseline object:",
    ],
    "bench_disturb.py --twin": [
        r"^an empty program against its identical twin at the same hook",
        rf"floor_sched_switch\s+\d+\s+{NUM} \[{NUM}-{NUM}\]\s+{NUM} \[{NUM}-{NUM}\]",
    ],
    "bench_cpu_reads.py": [
        rf"exporter scrape, one-CPU reads\s+median\s+{NUM} ms\s+p95\s+{NUM} ms\s+\d+ bytes copied",
        rf"top refresh, whole reads\s+median\s+{NUM} ms",
        rf"top refresh: whole / one-CPU\s+{NUM}x bytes, {NUM}x time",
        rf"batch lookups alone: whole / one-CPU\s+{NUM}x bytes, {NUM}x time",
    ],
    "bench_cpu_snapshot.py": [
        r"one-CPU path: ",
        rf"^\s+1000\s+\d+\s+{NUM}\s+{NUM}\s+\d+\s+\d+$",
    ],
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_benchmark_runs_at_its_smoke_size_and_prints_its_figures(name: str) -> None:
    script, *options = name.split()  # a benchmark, and the options of this run of it
    r = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, script), *options, "--smoke"],
        capture_output=True,
        text=True,
        timeout=HANG,
        cwd=ROOT,  # options name files from the repository's root
    )
    assert r.returncode == 0, r.stderr
    assert "--smoke" in r.stderr, "a smoke run says that its figures mean nothing"
    for figure in FIGURES[name]:
        assert re.search(figure, r.stdout, re.MULTILINE), f"{name} printed no {figure!r}:\n{r.stdout}"


def test_every_benchmark_is_run() -> None:
    """A benchmark added to benchmarks/ is run here too."""
    ran = {name.split(maxsplit=1)[0] for name in FIGURES}
    assert {f for f in os.listdir(BENCHMARKS) if f.startswith("bench_") and f.endswith(".py")} == ran
