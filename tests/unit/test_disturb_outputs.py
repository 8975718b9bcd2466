"""Who disturbs a CPU, as the outputs show it: the table, JSON and CSV (every count adds up, every caveat in
each), the exporter's families (born at 0, no series for a CPU with no counts, bounded names) and the
CPU x source picture."""

from __future__ import annotations

import csv
import dataclasses
import io
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from percpu.cli import _disturb
from percpu.cpulist import CpuList
from percpu.disturb import DisturbSnapshot, Handlers, Lost, Stints, Tasks, Untimed
from percpu.disturb import _contract as contract
from percpu.disturb._who import Disturbance, caveats, restrict, who_disturbs
from percpu.exporter import DisturbCollector, render

from ..conftest import svg_cells
from .test_disturb_who import delta, syscalls

CPUS = CpuList([0, 1, 2, 3])


def view() -> Disturbance:
    return who_disturbs(
        delta(), syscalls=syscalls(), unsupported={"tlb_shootdown": "no hook"}, expected="pid 100"
    )


# --- table, JSON, CSV ------------------------------------------------------------------------------------


def test_the_table_has_each_kind_per_cpu_the_busiest_sources_and_every_caveat() -> None:
    v = view()
    text = _disturb.table(v, top=3)
    assert text.startswith("who disturbs CPUs 0-3: 2.00 s; expected workload: pid 100\n")
    lines = text.splitlines()
    irq = next(ln for ln in lines if ln.startswith("irq "))
    assert irq.split() == ["irq", "runs", "5", "1", "0", "2"]
    expected = lines[lines.index(next(ln for ln in lines if ln.startswith("expected "))) + 1]
    assert "900 ns" in expected  # the expected workload's time on CPU 1
    assert next(ln for ln in lines if ln.startswith("all tasks")).split()[3:] == ["1", "13", "0", "3"]
    assert lines[lines.index(next(ln for ln in lines if ln.startswith("source"))) + 1].startswith(
        "virtio0-input (irq 24)"
    )
    assert "... " in text and "more sources (use --top 0 for all)" in text
    for c in caveats(v):
        assert f"warning: {c.text}" in text


def test_json_sources_and_other_add_up_to_each_kinds_totals() -> None:
    """With -n, the sources shown plus ``other`` equal each kind's count and time, per CPU; the task kinds
    plus lost equal the switch-ins."""
    v = view()
    for top in (None, 2, 5):
        obj = _disturb.to_json(v, top=top)
        for cpu, cell in obj["per_cpu"].items():
            for kind in ("irq", "vector", "softirq", "task", "kthread", "syscall", "expected", "idle"):
                shown = [s for s in obj["sources"] if s["kind"] == kind]
                count = sum(s["per_cpu"][cpu] for s in shown)
                ns = sum(s.get("ns_per_cpu", {}).get(cpu, 0) for s in shown)
                rest = obj.get("other", {}).get("per_cpu", {}).get(cpu, {}).get(kind, {"count": 0, "ns": 0})
                assert count + rest["count"] == cell[kind]["count"], (top, cpu, kind)
                assert ns + rest["ns"] == (cell[kind]["ns"] or 0), (top, cpu, kind)
            tasks = sum(cell[k]["count"] for k in ("task", "kthread", "expected", "idle"))
            assert tasks + cell["lost"]["task"] == cell["switch_ins"]
        assert obj["unsupported"] == {"tlb_shootdown": "no hook"} and obj["expected"] == "pid 100"


def test_a_grouped_view_keys_its_json_by_group() -> None:
    v = restrict(view(), CpuList([1, 3]), "1,3")
    obj = _disturb.to_json(v)
    assert list(obj["per_cpu"]) == ["1", "3"]


def csv_of(v: Disturbance, top: int | None = None) -> list[dict[str, str]]:
    header = ("record", "cpu", "pid", "comm", "calls", "ns", "code", "text")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)

    def row(record: str, **cells: Any) -> None:
        w.writerow((record, *("" if cells.get(c) is None else cells[c] for c in header[1:])))

    _disturb.csv_records(v, _disturb.to_json(v, top=top), row)
    return list(csv.DictReader(io.StringIO(buf.getvalue())))


def test_csv_records_carry_every_count_of_the_json() -> None:
    v = view()
    rows = csv_of(v, top=4)
    assert {r["record"] for r in rows} == set(_disturb.CSV_RECORDS)
    obj = _disturb.to_json(v, top=4)
    for cpu, cell in obj["per_cpu"].items():
        totals = {r["code"]: r for r in rows if r["record"] == "disturb_total" and r["cpu"] == cpu}
        for kind in ("irq", "task", "expected", "syscall"):
            assert int(totals[kind]["calls"]) == cell[kind]["count"]
        # the source and source_other rows of a kind add up to its total row, count and time
        for kind in ("irq", "vector", "softirq", "task", "kthread", "syscall"):
            parts = [r for r in rows if r["record"] in ("source", "source_other") and r["cpu"] == cpu]
            parts = [r for r in parts if r["code"] == kind]
            assert sum(int(r["calls"]) for r in parts) == cell[kind]["count"], (cpu, kind)
            assert sum(int(r["ns"] or 0) for r in parts) == (cell[kind]["ns"] or 0), (cpu, kind)
    lost = {(r["cpu"], r["code"]): int(r["calls"]) for r in rows if r["record"] == "disturb_lost"}
    assert lost[("3", "irq")] == 3 and lost[("1", "task")] == 1


# --- the exporter's families -----------------------------------------------------------------------------


class FakeCounter:
    """Snapshots handed out one per scrape, as the disturbance counter's."""

    def __init__(self, snaps: list[DisturbSnapshot], unsupported: dict[str, str] | None = None) -> None:
        self.snaps = snaps
        self.unsupported = unsupported or {}

    @property
    def cpus(self) -> CpuList:
        return CPUS

    def snapshot(self) -> DisturbSnapshot:
        return self.snaps.pop(0)


def u(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.uint64)


def snap(t: float, irq24: int, names: dict[int, tuple[str, list[int]]], idle: int = 0) -> DisturbSnapshot:
    """IRQ 24 on CPU 1; tasks by pid: (comm, switch-ins per CPU) each 10 ns per switch-in."""
    keys = np.zeros(len(names), contract.TASK_KEY)
    keys["pid"] = list(names)
    keys["tgid"] = list(names)
    keys["comm"] = [c.encode() for c, _ in names.values()]
    sw = np.array([s for _, s in names.values()], np.uint64).reshape(len(names), 4)
    n = len(names)
    tasks = Tasks(
        keys,
        np.zeros(n, bool),
        np.zeros(n, bool),
        sw,
        sw * 10,
        np.zeros_like(sw),
        np.zeros(n, bool),
        np.zeros(n, bool),
    )
    z = u(0, 0, 0, 0)
    return DisturbSnapshot(
        time=t,
        cpus=CPUS,
        switches=sw.sum(axis=0) + u(idle, 0, 0, 0),
        gaps=z,
        irqs=Handlers(
            np.array([24]),
            ("virtio0-input",),
            np.array([[0, irq24, 0, 0]], np.uint64),
            np.array([[0, irq24 * 100, 0, 0]], np.uint64),
        ),
        tasks=tasks,
        lost=Lost(z, z, z),
        untimed=Untimed(z, z, z, z),
    )


def samples(fams: list[Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(f.name, s.labels): s.value for f in fams for s in f.samples}


def test_exporter_series_are_born_at_zero_only_where_counted_and_names_are_bounded() -> None:
    s1 = snap(1.0, 5, {10: ("app", [0, 3, 0, 0]), 11: ("cron", [1, 0, 0, 0])})
    s2 = snap(
        2.0,
        9,
        {
            10: ("app", [0, 5, 0, 0]),
            11: ("cron", [1, 0, 0, 0]),
            12: ("new1", [0, 0, 0, 2]),
            13: ("new2", [0, 0, 0, 1]),
        },
    )
    s3 = snap(3.0, 9, {10: ("app", [0, 6, 0, 0]), 12: ("new1", [0, 0, 0, 4]), 13: ("new2", [0, 0, 0, 1])})
    c = DisturbCollector(FakeCounter([s1, s2, s3], {"vectors": "not x86"}), max_comms=2)
    first, second, third = (samples(c.families()) for _ in range(3))
    irq = ("percpu_irq_runs", (("cpu", "1"), ("irq", "24"), ("name", "virtio0-input")))
    assert first[irq] == 0 and second[irq] == 9 and third[irq] == 9  # born at 0, then its value
    assert not [k for k in third if k[0] == "percpu_irq_runs" and ("cpu", "0") in k[1]]  # no count: no series
    app = ("percpu_task_switch_ins", (("cpu", "1"), ("kind", "task"), ("comm", "app")))
    assert first[app] == 0 and second[app] == 5 and third[app] == 6
    # two names (max_comms 2): app, the busiest at first, and new1, among the busiest later; the rest
    # (cron, new2, and new1 before it had its name) are in "other", never lost or counted twice
    comms = {dict(k[1])["comm"] for k in third if k[0] == "percpu_task_switch_ins"}
    assert comms == {"app", "new1", "other"} and c.tracked_comms == 2
    other = ("percpu_task_switch_ins", (("cpu", "3"), ("kind", "task"), ("comm", "other")))
    new1 = ("percpu_task_switch_ins", (("cpu", "3"), ("kind", "task"), ("comm", "new1")))
    assert second[other] == 0 and third[other] == 3  # new1's first 2 and new2's 1, born at 0
    assert third[new1] == 0  # named at the third scrape, with the 2 switch-ins since: born at 0
    # every counter only grows, scrape after scrape (cron exited: its series stays)
    for k, v in second.items():
        assert third.get(k, v) >= v, k
    info = ("percpu_disturb_unsupported_info", (("dimension", "vectors"), ("reason", "not x86")))
    assert third[info] == 1


def test_exporter_task_seconds_credit_the_stint_in_progress_at_each_scrape() -> None:
    """A task running through scrapes (app on CPU 1, never switched out) gets its time scrape by scrape, as
    the view's deltas give it, not all at once when it leaves the CPU."""

    def running(t: float, so_far: int) -> DisturbSnapshot:
        s = snap(t, 5, {10: ("app", [0, 3, 0, 0])})
        assert s.tasks is not None
        keys = np.zeros(4, contract.TASK_KEY)
        keys[1] = s.tasks.keys[0]
        return dataclasses.replace(s, stints=Stints(keys, u(0, so_far, 0, 0), u(0, 7, 0, 0), u(0, 1, 0, 0)))

    c = DisturbCollector(FakeCounter([running(1.0, 500), running(2.0, 800), running(3.0, 2_000)]))
    first, second, third = (samples(c.families()) for _ in range(3))
    app = ("percpu_task_seconds", (("cpu", "1"), ("kind", "task"), ("comm", "app")))
    # born at zero, then its total as the other counters (irq runs above): 30 ns of ended stints and the
    # stint so far, 500 then 800 then 2,000 ns (without the credit: 30 ns at every scrape)
    assert first[app] == 0
    assert second[app] == pytest.approx(830e-9) and third[app] == pytest.approx(2_030e-9)


def test_exporter_sums_cpus_without_a_cpu_label_and_renders() -> None:
    s = snap(1.0, 5, {10: ("app", [1, 3, 0, 0])})
    c = DisturbCollector(FakeCounter([s, s]), cpu_label="none")
    c.families()
    fams = c.families()
    assert samples(fams)[("percpu_task_switch_ins", (("kind", "task"), ("comm", "app")))] == 4  # 1 + 3
    text = render(fams, openmetrics=False).decode()
    assert 'percpu_irq_runs_total{irq="24",name="virtio0-input"} 5\n' in text
    assert "# TYPE percpu_irq_seconds_total counter" in text
    with pytest.raises(ValueError, match="cpu_label 'socket'"):
        DisturbCollector(FakeCounter([]), cpu_label="socket")


# --- the picture -----------------------------------------------------------------------------------------


def test_the_picture_has_a_time_panel_a_count_panel_and_the_caveats(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plots extra is not installed: pip install 'percpu[plots]'")
    from percpu import plots_disturb

    v = view()
    out = tmp_path / "d.svg"
    notes = [c.text for c in caveats(v)]
    plots_disturb.heatmap(v, str(out), notes=notes)
    texts = ["".join(t.itertext()) for t in ET.parse(out).getroot().iter("{http://www.w3.org/2000/svg}text")]
    assert any(t.startswith("Who disturbs CPU 0-3: 2.00 s; expected: pid 100") for t in texts)
    assert "counted only (no time measured)" in texts
    assert {"irq: virtio0-input (irq 24)", "expected: app (pid 100)", "syscall: cron (pid 200)"} <= set(texts)
    cells = svg_cells(out)
    assert cells["cpu0-irq-virtio0-input (irq 24)"] == "500 ns"
    assert cells["cpu1-expected-app (pid 100)"] == "900 ns"
    assert cells["cpu1-syscall-cron (pid 200)"] == "6"
    joined = " ".join(texts)
    assert "warning: TLB shootdowns not counted here" in joined


def test_a_kind_timed_but_idle_on_the_cpus_shown_has_a_time_of_zero_not_none() -> None:
    """CPU 2 had no interrupt: its irq time is 0 (measured, nothing there), not null (not measured)."""
    cell = _disturb.to_json(restrict(view(), CpuList([2]), "2"))["per_cpu"]["2"]
    assert (
        cell["irq"] == {"count": 0, "ns": 0} and cell["syscall"]["ns"] is None and cell["idle"]["ns"] is None
    )
