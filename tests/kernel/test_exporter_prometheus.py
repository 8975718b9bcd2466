"""The exporter against a real Prometheus server on loopback, and under abuse.

Everything listens on 127.0.0.1 only, every loop is bounded in count and time, and both servers are
stopped however the test ends.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from percpu.cpus import cpu_lists

from ..conftest import unique_comm
from .conftest import HANG, query, running_exporter, running_prometheus

pytestmark = pytest.mark.kernel

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOAD = os.path.join(HERE, "..", "helpers", "syscall_workload.py")
RATE_COMM = unique_comm("pcpu-rate")  # counted by name: no other suite may use it
DASHBOARD = os.path.join(HERE, "..", "..", "deploy", "grafana-dashboard.json")
BPF_STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"
# Dashboard panels that sum over the selected instances on purpose (the fleet's top syscalls, errors, p99);
# every other panel must keep instances apart.
FLEET_WIDE = {"Top 10 system calls", "Failed calls by errno (needs -e)", "p99 latency (needs -L)"}


def scrape(target: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_prometheus_rate_matches_the_workload() -> None:
    # Counted for the workload's command name only: the machine is shared, and other processes' getppid()
    # calls on the same CPUs are not this workload's.
    with running_exporter("-c", RATE_COMM) as (target, _):
        _rate_matches_the_workload(target)


def _rate_matches_the_workload(target: str) -> None:
    cpu = list(cpu_lists().online)[-1]
    other = cpu_lists().online[0]
    config = (
        f"global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: percpu\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    with running_prometheus(config) as api:
        time.sleep(3)  # a few scrapes before the workload
        out = subprocess.run(
            [sys.executable, WORKLOAD, "0", str(cpu), "--seconds", "10", "--comm", RATE_COMM],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        work = json.loads(out.stdout)

        def value(q: str) -> float:
            res = query(api, q)
            return float(res[0]["value"][1]) if res else 0.0

        # Wait for a scrape past the end (seconds on a loaded host), then compare: the counter only grows.
        total = f'percpu_syscalls_total{{syscall="getppid",cpu="{cpu}"}}'
        deadline = time.monotonic() + 60
        while value(total) < work["calls"] and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)  # and one more scrape, which must not add a call
        stored = value(total)
        peak = value(
            f'max_over_time(rate(percpu_syscalls_total{{syscall="getppid",cpu="{cpu}"}}[3s])[15s:1s])'
        )
        off_cpu = value(f'percpu_syscalls_total{{syscall="getppid",cpu="{other}"}}')
    # What Prometheus stored is the workload's exact count (the exporter counts its comm only; the machine
    # is shared, so rates over a few seconds say little about a 10 s average), on its CPU only.
    print(
        f"\nPrometheus stored {stored:,.0f} getppid() calls on cpu{cpu} (peak rate {peak:,.0f}/s); the "
        f"workload made {work['calls']:,} ({work['rate']:,.0f}/s); cpu{other}: {off_cpu:,.0f}"
    )
    assert stored == work["calls"], (stored, work)
    assert peak > 0
    assert off_cpu == 0


BORN_COMM = unique_comm("pcpu-born")  # counted by name: its series exist only once it runs


def extrapolated_increase(samples: list[tuple[float, float]], start: float, end: float) -> float:
    """What Prometheus 2.42 returns for increase() over [start, end] with these samples and no counter
    reset (promql/functions.go, extrapolatedRate): the difference of the last and first samples,
    extrapolated towards the ends of the range by at most 1.1 average steps (else half a step), and towards
    the start no further than where the counter would have been 0."""
    (t0, v0), (t1, v1) = samples[0], samples[-1]
    delta, sampled = v1 - v0, t1 - t0
    to_start, to_end = t0 - start, end - t1
    step = sampled / (len(samples) - 1)
    if delta > 0 and v0 >= 0:
        to_start = min(to_start, sampled * v0 / delta)
    extrapolate = sampled
    extrapolate += to_start if to_start < step * 1.1 else step / 2
    extrapolate += to_end if to_end < step * 1.1 else step / 2
    return delta * extrapolate / sampled


def test_increase_over_a_series_birth_counts_every_call_made_after_the_exporter_started() -> None:
    """A syscall the exporter has not seen is called 40,000 times, then 10,000 more: increase() over a
    window that holds the series' birth is the 50,000 calls (with Prometheus's extrapolation), because the
    series is born at 0. Born at its value, as before, the first sample held the 40,000 and increase()
    saw only what came after it (the issue's 112,789 of 500,000)."""
    cpu = list(cpu_lists().online)[-1]
    calls = (40_000, 10_000)
    with running_exporter("-c", BORN_COMM) as (target, _):
        config = (
            f"global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: percpu\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        with running_prometheus(config) as api:
            series = f'percpu_syscalls_total{{syscall="getppid",cpu="{cpu}"}}'

            def stored() -> float:
                res = query(api, series)
                return float(res[0]["value"][1]) if res else -1.0

            deadline = time.monotonic() + 120
            while not query(api, 'up{job="percpu"} == 1') and time.monotonic() < deadline:
                time.sleep(0.5)  # the exporter is being scraped: its first scrape's series are born
            assert stored() == -1.0, "the workload's name was counted before it ran"
            done = 0
            for n in calls:
                subprocess.run(
                    [sys.executable, WORKLOAD, str(n), str(cpu), "--comm", BORN_COMM],
                    check=True,
                    capture_output=True,
                    timeout=120,
                )
                done += n
                while stored() < done and time.monotonic() < deadline:
                    time.sleep(0.5)  # a scrape past this run is in (seconds on a loaded host)
            time.sleep(2)  # and more scrapes, which must not add a call
            at = round(time.time(), 3)
            window = int(at - start_of(api, series)) + 5  # the range holds the birth and every sample
            raw = query(api, f"{series}[{window}s]", at=at)
            inc = query(api, f"increase({series}[{window}s])", at=at)
    samples = [(float(t), float(v)) for t, v in raw[0]["values"]]
    print(f"\nsamples {samples[:3]} .. {samples[-1]}; increase() over {window} s: {inc[0]['value'][1]}")
    assert samples[0][1] == 0, "the series was born at its value: increase() misses the calls before it"
    assert samples[-1][1] - samples[0][1] == sum(calls)
    got = float(inc[0]["value"][1])
    # Timestamps travel as milliseconds in JSON floats: equal to a millionth.
    assert got == pytest.approx(extrapolated_increase(samples, at - window, at), rel=1e-6)
    assert got >= sum(calls)


def start_of(api: str, series: str) -> float:
    """When Prometheus stored the series' first sample."""
    return float(query(api, f"{series}[5m]")[0]["values"][0][0])


def test_a_hostile_process_name_reaches_the_scrape_escaped() -> None:
    """A process names itself with terminal escapes and a byte that is not UTF-8: the scrape carries the
    name as `percpu stat` shows it, and no control byte or stray byte reaches whoever reads it."""
    name = b"\x1b]0;x\x07\xff"
    with running_exporter("-P", "-c", os.fsdecode(name)) as (target, _):
        cpu = str(list(cpu_lists().online)[-1])
        subprocess.run(
            [sys.executable, WORKLOAD, "321", cpu, b"--comm", name],
            check=True,
            capture_output=True,
            timeout=60,
        )
        scrape(target)  # its series are born (served at 0 the first time: docs/exporter.md)
        with urllib.request.urlopen(f"http://{target}/metrics", timeout=10) as r:
            body = r.read()
    text = body.decode("utf-8")  # the \xff of the name did not get through as a byte
    assert not any((b < 0x20 and b != 0x0A) or b == 0x7F for b in body), "a control byte in the scrape"
    # printable() gives \x1b]0;x\x07\xff; the text format doubles its backslashes.
    line = 'percpu_process_syscalls_total{comm="\\\\x1b]0;x\\\\x07\\\\xff",syscall="getppid"} 321'
    assert line in text.splitlines(), [ln for ln in text.splitlines() if ln.startswith("percpu_process")]
    parsed = {
        s.labels["comm"]
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "percpu_process_syscalls_total"
    }
    assert parsed == {"\\x1b]0;x\\x07\\xff"}


def test_exporter_survives_abuse_and_stays_flat(exporter: tuple[str, subprocess.Popen[bytes]]) -> None:
    target, proc = exporter
    host, port = target.split(":")

    def fds() -> int:
        return len(os.listdir(f"/proc/{proc.pid}/fd"))

    def rss() -> int:
        with open(f"/proc/{proc.pid}/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * 4096

    for _ in range(50):  # warm up caches and the allocator
        scrape(target)
    fd0, rss0 = fds(), rss()
    last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def check(cur: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> None:
        for k, v in cur.items():
            if k[0].endswith("_total") and k in last:
                assert v >= last[k], f"{k} went down: {last[k]} -> {v}"

    deadline = time.monotonic() + HANG  # a hang guard: 120 s here failed when a loaded machine was slow
    for i in range(1500):
        cur = scrape(target)
        check(cur)
        last = cur
        if i % 100 == 0:
            assert time.monotonic() < deadline
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for cur in pool.map(lambda _: scrape(target), range(800)):
            assert any(k[0] == "percpu_build_info" for k in cur)
    bad = [
        b"\x00\xff\xfe garbage\r\n\r\n",
        b"GET /metrics\r\n",  # HTTP/0.9
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n",
        b"POST /metrics HTTP/1.1\r\nContent-Length: 99999999\r\n\r\nabc",
        b"GET /" + b"x" * 70_000 + b" HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost:",  # partial, then the client goes away
    ]
    for payload in bad * 5:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            try:
                s.sendall(payload)
                s.settimeout(2)
                s.recv(100)
            except OSError:
                pass  # the server may drop us: that is the point; it must keep serving others
        assert any(k[0] == "percpu_build_info" for k in scrape(target)), "the exporter stopped answering"
    time.sleep(1)
    assert fds() <= fd0 + 2, f"open fds grew: {fd0} -> {fds()}"
    assert rss() < rss0 * 1.3 + 8 * 2**20, f"RSS grew: {rss0} -> {rss()}"
    assert proc.poll() is None


def _sysctl_bpf_stats() -> int:
    with open(BPF_STATS_SYSCTL, encoding="ascii") as f:
        return int(f.read())


def test_enable_bpf_stats_exports_program_run_counts() -> None:
    """--enable-bpf-stats holds a BPF_ENABLE_STATS fd: runs are counted although the sysctl stays 0."""
    if _sysctl_bpf_stats() != 0:
        pytest.skip(f"{BPF_STATS_SYSCTL} is already 1: the stats fd cannot be told apart from the sysctl")
    with running_exporter("--enable-bpf-stats") as (target, _):
        first = scrape(target)
        for _ in range(20_000):
            os.getppid()
        second = scrape(target)
        assert _sysctl_bpf_stats() == 0  # what the collector cannot go by
    runs = {dict(k[1])["program"]: v for k, v in second.items() if k[0] == "percpu_bpf_prog_run_count_total"}
    times = {
        dict(k[1])["program"]: v
        for k, v in second.items()
        if k[0] == "percpu_bpf_prog_run_time_seconds_total"
    }
    print(f"\nrun counts: {runs}; run time (s): {times}")
    assert runs, "no percpu_bpf_prog_run_count_total series with --enable-bpf-stats"
    assert max(runs.values()) >= 20_000, runs  # the sys_enter program ran at least once per getppid()
    assert max(times.values()) > 0, times
    before = {dict(k[1])["program"]: v for k, v in first.items() if k[0] == "percpu_bpf_prog_run_count_total"}
    assert all(runs[p] >= before[p] for p in before), (before, runs)


def test_dashboard_queries_work_against_a_real_prometheus() -> None:
    """Every panel of deploy/grafana-dashboard.json, run by Prometheus over two scraped instances.

    Each query must return series (so its metric names are ones the exporter serves, with -e -L and
    --enable-bpf-stats), each series must carry the labels the panel's legend names, and every panel but
    the fleet-wide ones must keep the two instances apart rather than mix them.
    """
    with open(DASHBOARD, encoding="utf-8") as f:
        panels = json.load(f)["panels"]
    with running_exporter("-e", "-L", "--enable-bpf-stats") as (target, _):
        # The same exporter scraped twice under two instance names stands in for two nodes.
        config = (
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: percpu\n    static_configs:\n"
            f"      - targets: ['{target}']\n        labels: {{instance: node-a}}\n"
            f"      - targets: ['{target}']\n        labels: {{instance: node-b}}\n"
        )
        with running_prometheus(config) as api:
            deadline = time.monotonic() + 12
            while time.monotonic() < deadline:  # failed calls for the errors panel, in the rate window
                for _ in range(100):
                    with contextlib.suppress(FileNotFoundError):
                        os.stat("/nonexistent/percpu-test")
                time.sleep(0.05)
            for panel in panels:
                # A repeated panel is drawn once per selected instance; the others see them all.
                selections = ["node-a", "node-b"] if panel.get("repeat") == "instance" else ["node-a|node-b"]
                for t in panel["targets"]:
                    for selected in selections:
                        _check_panel(api, panel, t, selected)


def _check_panel(api: str, panel: dict[str, Any], target: dict[str, Any], selected: str) -> None:
    """One panel's query returns series with its legend's labels, one per instance unless the panel is
    fleet-wide. Asked again until it holds (or HANG passes): on a loaded machine one of the two scrape
    jobs may not yet have the samples a rate needs, which says nothing about the query."""
    expr = target["expr"].replace("$instance", selected).replace("$__rate_interval", "10s")
    deadline = time.monotonic() + HANG
    while True:
        res = query(api, expr)
        try:
            assert res, f"panel {panel['title']!r}: no data for {expr}"
            for name in re.findall(r"\{\{(\w+)\}\}", target["legendFormat"]):
                assert all(name in r["metric"] for r in res), (panel["title"], name, res[:3])
            if panel["title"] not in FLEET_WIDE and "|" in selected:
                got = [r["metric"].get("instance") for r in res]
                assert set(got) == {"node-a", "node-b"}, f"panel {panel['title']!r} mixes instances: {got}"
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
