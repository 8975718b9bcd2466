"""cli/_report.py: syscall deltas rendered as text tables, JSON and CSV, on synthetic data."""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest

from percpu.cli import _report
from percpu.syscount import (
    ERR_KEY,
    FOLDED_TGID,
    LAT_KEY,
    PROC_KEY,
    Lost,
    SyscallDelta,
)

from .synthetic import snap


def test_table_uses_real_cpu_ids() -> None:
    d = snap(1.0, {(1, 110): 42}).delta(snap(0.0, {}))
    text = _report.table(d)
    header = next(line for line in text.splitlines() if line.startswith("syscall"))
    assert header.split()[-3:] == ["cpu0", "cpu2", "cpu3"]
    row = next(line for line in text.splitlines() if line.startswith("getppid"))
    assert row.split()[1:] == ["42", "100.0", "0", "42", "0"]


def test_json_and_csv() -> None:
    d = snap(2.0, {(2, 0): 9, (1, 1): 3}).delta(snap(0.0, {}))
    obj = _report.to_json(d, end_time=123.0, attach="tp_btf")
    json.dumps(obj)
    assert obj["total"] == 12 and obj["per_cpu"] == {"0": 0, "2": 3, "3": 9}
    assert obj["syscalls"][0] == {"name": "read", "slot": 0, "total": 9, "per_cpu": {"0": 0, "2": 0, "3": 9}}
    rows = list(csv.reader(io.StringIO(_report.csv_rows(d, end_time=1.0, header=True))))
    assert rows[0] == list(_report.CSV_HEADER)
    got = [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    assert [(r["cpu"], r["syscall"], r["calls"]) for r in got if r["record"] == "syscall"] == [
        ("3", "read", "9"),
        ("2", "write", "3"),
    ]
    # Every CPU has its total row, zeros included: an interval without calls is still in the file.
    assert [(r["cpu"], r["calls"]) for r in got if r["record"] == "total"] == [
        ("0", "0"),
        ("2", "3"),
        ("3", "9"),
    ]


def test_error_and_latency_tables() -> None:
    ek = np.zeros(1, dtype=ERR_KEY)
    ek["slot"], ek["err"] = 3, 9
    lk = np.zeros(2, dtype=LAT_KEY)
    lk["slot"], lk["bucket"] = 110, [6, 7]
    d = snap(
        1.0,
        {(0, 3): 4, (0, 110): 30},
        errors=(ek, np.array([[4, 0, 0]], np.uint64)),
        latency=(lk, np.array([[10, 0, 0], [20, 0, 0]], np.uint64)),
    ).since_start()
    text = _report.table(d)
    assert "EBADF" in text
    lat = next(line for line in text.splitlines() if line.startswith("getppid") and "2^6" in line)
    assert "256ns" in lat  # p99 falls in bucket 7: [128, 256) ns
    assert _report.latency_quantiles(np.array([10, 20] + [0] * 62, np.uint64)) == [4.0, 4.0]


def test_order_slots_sort_keys() -> None:
    # read (0) is busiest in total, write (1) busiest on CPU 2 (row 1), getppid (110) in between.
    d = snap(1.0, {(0, 0): 50, (1, 1): 30, (2, 110): 40}).delta(snap(0.0, {}))
    assert _report.order_slots(d, "total") == [0, 110, 1]
    assert _report.order_slots(d, "name") == [110, 0, 1]
    assert _report.order_slots(d, "nr") == [0, 1, 110]
    assert _report.order_slots(d, "cpu", 1) == [1, 0, 110]
    with pytest.raises(ValueError, match="unknown sort key"):
        _report.order_slots(d, "calls")


def test_table_sort_and_top() -> None:
    d = snap(1.0, {(0, 0): 50, (1, 1): 30, (2, 110): 40}).delta(snap(0.0, {}))
    rows = [line.split()[0] for line in _report.table(d, sort="name", top=2).splitlines()[3:5]]
    assert rows == ["getppid", "read"]
    assert "... 1 more syscalls" in _report.table(d, sort="name", top=2)


HOSTILE = b"\x1b]0;owned\x07\xff\x9b2J"  # set the window title, a byte not UTF-8, a C1 CSI


def hostile_procs() -> SyscallDelta:
    k = np.zeros(3, dtype=PROC_KEY)
    k["tgid"] = [100, 200, 300]
    k["slot"] = [0, 0, 0]
    k["comm"] = [HOSTILE, "\u202eevil".encode(), b"back\\x1bslash"]
    counts = np.array([[5, 0, 0], [4, 0, 0], [3, 0, 0]], dtype=np.uint64)
    return snap(1.0, {(0, 0): 12}, procs=(k, counts)).since_start()


def test_process_names_reach_the_terminal_escaped() -> None:
    text = _report.table(hostile_procs())
    assert not any(ch in text for ch in "\x1b\x07\x9b\u202e"), repr(text)
    assert "\\x1b]0;owned\\x07\\xff\\xc2\\x9b2J" not in text  # C1 is one character, not two bytes
    assert "\\x1b]0;owned\\x07\\xff\\x9b2J" in text
    assert "\\u202eevil" in text
    assert "back\\\\x1bslash" in text  # a literal backslash cannot pass for an escape


def test_process_names_in_json_are_faithful_and_safe() -> None:
    obj = _report.to_json(hostile_procs(), end_time=0.0, attach=None)
    line = json.dumps(obj)
    assert not any(ch in line for ch in "\x1b\x07\x9b\u202e")
    by_pid = {p["pid"]: p for p in json.loads(line)["processes"]}
    assert bytes.fromhex(by_pid[100]["comm_hex"]) == HOSTILE  # not UTF-8: the exact bytes as hex
    assert by_pid[200]["comm"] == "\u202eevil" and "comm_hex" not in by_pid[200]
    assert by_pid[300]["comm"] == "back\\x1bslash"


def test_lost_calls_are_reported_in_text_and_json() -> None:
    d = snap(2.0, {(0, 0): 9}, lost=Lost(errors=300, latency=7)).delta(snap(1.0, {}, lost=Lost(errors=100)))
    assert d.lost == Lost(processes=0, errors=200, latency=7)
    text = _report.table(d)
    assert "200 calls not counted in the errno table: it was full (see --errors-entries)" in text
    assert "7 calls not counted in the latency table" in text
    assert "per-process table" not in text
    assert _report.to_json(d, end_time=0.0, attach=None)["lost"] == {
        "processes": 0,
        "errors": 200,
        "latency": 7,
        "skipped": 0,
    }
    assert "not counted" not in _report.table(snap(1.0, {(0, 0): 1}).since_start())


def every_dimension() -> SyscallDelta:
    """An interval with each dimension a report can carry: per-process (a name that is not UTF-8 among
    them), errno, latency, calls a full table lost, numbers outside the table."""
    pk = np.zeros(3, dtype=PROC_KEY)
    pk["tgid"], pk["slot"], pk["comm"] = [100, 100, 200], [0, 110, 1], [b"reader", b"reader", b"w\xffx"]
    procs = (pk, np.array([[5, 0, 4], [0, 30, 0], [0, 3, 0]], np.uint64))
    ek = np.zeros(2, dtype=ERR_KEY)
    ek["slot"], ek["err"] = [0, 1], [9, 2]
    errors = (ek, np.array([[2, 0, 1], [0, 1, 0]], np.uint64))
    lk = np.zeros(2, dtype=LAT_KEY)
    lk["slot"], lk["bucket"] = [110, 110], [6, 9]
    latency = (lk, np.array([[10, 0, 0], [0, 20, 0]], np.uint64))
    counts = {(0, 0): 5, (2, 0): 4, (1, 110): 30, (1, 1): 3}
    return snap(
        1.0, counts, procs=procs, errors=errors, latency=latency, dropped=2, lost=Lost(processes=6, errors=1)
    ).since_start()


def csv_records(text: str) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for r in csv.DictReader(io.StringIO(text)):
        out.setdefault(r["record"], []).append(r)
    return out


@pytest.mark.parametrize("top", [None, 1])
def test_csv_carries_every_count_json_carries(top: int | None) -> None:
    """-P -e -L in CSV wrote only (cpu, syscall) rows: the per-process, errno and latency counts, the
    lost calls and the warnings that JSON carries were dropped without a word. And with -n, JSON listed
    the busiest N syscalls while CSV listed all: -n now means the same in both, the rest summed."""
    d = every_dimension()
    caveat = _report.Caveat("own-process-only", "only the command's own process was counted")
    obj = json.loads(
        json.dumps(_report.to_json(d, end_time=5.0, attach="tp_btf", top=top, run_caveats=[caveat]))
    )
    text = _report.csv_rows(d, end_time=5.0, header=True, attach="tp_btf", top=top, run_caveats=[caveat])
    rec = csv_records(text)
    assert set(obj) <= set(_report.CSV_RECORDS), "a JSON key that CSV does not carry"
    assert rec["attach"][0]["code"] == "tp_btf"
    assert {r["cpu"]: int(r["calls"]) for r in rec["total"]} == obj["per_cpu"]
    assert sum(int(r["calls"]) for r in rec["total"]) == obj["total"] == 42
    json_calls = {(s["name"], c): n for s in obj["syscalls"] for c, n in s["per_cpu"].items() if n}
    assert {(r["syscall"], r["cpu"]): int(r["calls"]) for r in rec["syscall"]} == json_calls
    listed = sum(s["total"] for s in obj["syscalls"])
    if top is None:
        assert "other" not in obj and "other" not in rec and listed == 42
    else:
        assert [s["name"] for s in obj["syscalls"]] == ["getppid"]  # the busiest, 30 calls
        assert obj["other"] == {"syscalls": 2, "total": 12, "per_cpu": {"0": 5, "2": 3, "3": 4}}
        assert {r["cpu"]: int(r["calls"]) for r in rec["other"]} == {"0": 5, "2": 3, "3": 4}
        assert listed + obj["other"]["total"] == obj["total"]
    procs = {(p["pid"], p["syscall"], c): n for p in obj["processes"] for c, n in p["per_cpu"].items() if n}
    assert {(int(r["pid"]), r["syscall"], r["cpu"]): int(r["calls"]) for r in rec["process"]} == procs
    assert {r["comm"] for r in rec["process"]} == {"reader", "w\\xffx"}  # escaped as the table shows it
    errs = {(e["syscall"], e["errno"], e["error"]): e["total"] for e in obj["errors"]}
    assert {(r["syscall"], int(r["errno"]), r["error"]): int(r["calls"]) for r in rec["error"]} == errs
    lat = {(x["syscall"], b): n for x in obj["latency"] for b, n in x["log2_ns_buckets"].items()}
    assert {(r["syscall"], r["log2_ns"]): int(r["calls"]) for r in rec["latency"]} == lat
    assert {r["code"]: int(r["calls"]) for r in rec["lost"]} == obj["lost"]
    assert [int(r["calls"]) for r in rec["dropped"]] == [obj["dropped"]] == [2]
    codes = ["lost.processes", "lost.errors", "dropped", "own-process-only"]
    assert [w["code"] for w in obj["warnings"]] == codes
    assert [(r["code"], r["text"]) for r in rec["warning"]] == [
        (w["code"], w["text"]) for w in obj["warnings"]
    ]


def test_json_warnings_carry_every_caveat_with_a_code() -> None:
    """A machine reader must not have to parse the table's footer or stderr: each caveat is a field."""
    d = every_dimension()
    left = _report.Caveat("left-running", "the command left 3 process(es) running", 3)
    obj = _report.to_json(d, end_time=0.0, attach=None, run_caveats=[left])
    by_code = {w["code"]: w for w in obj["warnings"]}
    assert by_code["lost.processes"]["count"] == 6
    assert "6 calls not counted in the per-process table" in by_code["lost.processes"]["text"]
    assert by_code["left-running"] == {"code": "left-running", "text": left.text, "count": 3}
    clean = _report.to_json(snap(1.0, {(0, 0): 1}).since_start(), end_time=0.0, attach=None)
    assert clean["warnings"] == []  # always there: an empty list says there is no caveat
    assert _report.caveat_lines([left]) == "warning: the command left 3 process(es) running\n"


def busy() -> SyscallDelta:
    """6,153 calls: openat 1,300 (1,299 on CPU 2), read 4,853."""
    return snap(1.0, {(0, 257): 1, (1, 257): 1299, (2, 0): 4853}).delta(snap(0.0, {}))


def test_a_one_shot_table_shows_exact_counts() -> None:
    """`openat 1.3k`, `all 6.2k` under a header of `6,153 system calls`: a one-shot count was rounded."""
    text = _report.table(busy(), exact=True)
    assert text.startswith("6,153 system calls in 1.00 s")
    rows = {ln.split()[0]: ln.split()[1:] for ln in text.splitlines()[3:6]}
    assert rows["read"] == ["4,853", "78.9", "0", "0", "4,853"]
    assert rows["openat"] == ["1,300", "21.1", "1", "1,299", "0"]
    assert rows["all"] == ["6,153", "100.0", "1", "1,299", "4,853"]
    # Interval tables and rates keep humanized numbers: they are read as they go by, or are rates.
    assert "1.3k" in _report.table(busy()) and "1.3k" in _report.table(busy(), rates=True, exact=True)


def test_exact_columns_widen_to_hold_every_count() -> None:
    d = snap(1.0, {(0, 0): 12_345_678_901, (1, 0): 5}).delta(snap(0.0, {}))
    lines = _report.table(d, exact=True).splitlines()
    head, row = lines[2], lines[3]
    assert row.split() == ["read", "12,345,678,906", "100.0", "12,345,678,901", "5", "0"]
    # Every cell ends under its header's end: the columns line up.
    for word in ("calls", "cpu0", "cpu2", "cpu3"):
        end = head.index(word) + len(word)
        assert row[end - 1] != " " and (end == len(row) or row[end] == " "), (head, row)


def many_keys(n: int) -> SyscallDelta:
    pk = np.zeros(n, dtype=PROC_KEY)
    pk["tgid"], pk["slot"], pk["comm"] = np.arange(100, 100 + n), 0, b"w"
    ek = np.zeros(n, dtype=ERR_KEY)
    ek["slot"], ek["err"] = np.arange(n), 9
    lk = np.zeros(n, dtype=LAT_KEY)
    lk["slot"], lk["bucket"] = np.arange(n), 7
    per = np.zeros((n, 3), np.uint64)
    per[:, 0] = np.arange(n, 0, -1) * 1000
    counts = {(0, s): 1000 * (n - s) for s in range(n)}
    return snap(1.0, counts, procs=(pk, per), errors=(ek, per), latency=(lk, per)).since_start()


def test_every_truncated_table_says_what_it_left_out_and_how_to_see_it() -> None:
    """The latency table stopped at 20 rows without a word; the others said "... N more" but not how."""
    text = _report.table(many_keys(25))
    assert text.count("... 5 more") == 3, text
    assert "... 5 more (pid, syscall) pairs (use --top 0 for all)" in text
    assert "... 5 more (syscall, errno) pairs (use --top 0 for all)" in text
    assert "... 5 more syscalls (use --top 0 for all)" in text  # the latency table
    exact = _report.table(many_keys(25), exact=True).split("\n", 1)[1]  # the header's rate is a rate
    assert not re.search(r"\d(\.\d)?k\b", exact) and exact.count("EBADF              25,000") == 1
    every = _report.table(many_keys(25), top=0)
    assert "more" not in every and every.count("EBADF") == 25
    three = _report.table(many_keys(25), top=3)
    assert three.count("... 22 more") == 4  # the syscall table too


def test_the_latency_histogram_glyphs_are_explained_in_the_table() -> None:
    text = _report.table(many_keys(2))
    legend = text[text.index("histogram: ") :]
    for glyph, share in zip(_report.HISTOGRAM_GLYPHS[1:], range(1, 10), strict=True):
        assert f" {glyph} <={share}/9" in legend, legend
    assert "' ' 0" in legend
    lo, hi, bars = _report.histogram(np.array([0, 9, 1, 0, 5, 0] + [0] * 58, np.uint64))
    assert (lo, hi, bars) == (1, 5, "@. +")  # 9 calls the peak; 1 is up to 1/9 of it, 5 up to 5/9


def test_rows_of_exited_processes_summed_by_name_show_no_pid() -> None:
    k = np.zeros(3, dtype=PROC_KEY)
    k["tgid"], k["slot"], k["comm"] = [41, FOLDED_TGID, FOLDED_TGID], 0, [b"make", b"cc1", b""]
    counts = np.array([[2, 0, 0], [9, 0, 0], [1, 0, 0]], np.uint64)
    d = snap(1.0, {(0, 0): 14}, procs=(k, counts), lost=Lost(processes=2)).since_start()
    text = _report.table(d)
    assert "2 calls not counted in the per-process table: it was full (see --proc-entries)" in text
    rows = [line.split() for line in text.splitlines() if line.endswith("cpu0")]
    assert rows == [
        ["-", "cc1", "read", "9", "cpu0"],
        ["41", "make", "read", "2", "cpu0"],
        ["-", "read", "1", "cpu0"],
    ]
    procs = _report.to_json(d, end_time=0.0, attach=None)["processes"]
    assert [(p["pid"], p["comm"], p["total"]) for p in procs] == [
        (None, "cc1", 9),
        (41, "make", 2),
        (None, "", 1),
    ]
    assert sum(p["total"] for p in procs) + d.lost.processes == 14


def test_csv_rows_of_exited_processes_summed_by_name_have_an_empty_pid() -> None:
    k = np.zeros(2, dtype=PROC_KEY)
    k["tgid"], k["slot"], k["comm"] = [41, FOLDED_TGID], 0, [b"make", b"cc1"]
    d = snap(1.0, {(0, 0): 11}, procs=(k, np.array([[2, 0, 0], [9, 0, 0]], np.uint64))).since_start()
    rows = csv_records(_report.csv_rows(d, end_time=0.0, header=True, attach=None))["process"]
    assert {(r["pid"], r["comm"], int(r["calls"])) for r in rows} == {("41", "make", 2), ("", "cc1", 9)}
