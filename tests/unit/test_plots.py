"""Pictures (matplotlib): valid PNG, SVG and PDF files with the expected labels, at 2 and at 256 CPUs, and
one-line errors when matplotlib or the file name is wrong. No pixel comparisons."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from percpu import plots
from percpu.cli import main
from percpu.cpus import CpuList
from percpu.errors import PercpuError
from percpu.syscount import NR_SLOTS, SyscallDelta, SyscallSnapshot
from percpu.topo import CpuTopology
from percpu.views import view

from ..conftest import svg_cells

pytest.importorskip("matplotlib", reason="the plots extra is not installed: pip install 'percpu[plots]'")

SVG = "{http://www.w3.org/2000/svg}"
GETPPID, READ = 110, 0
TOOLS = os.path.join(os.path.dirname(__file__), "..", "..", "tools")


def two_cpus(read: int = 5, getppid: int = 777) -> SyscallDelta:
    cpus = CpuList([0, 1])
    counts = np.zeros((2, NR_SLOTS), np.uint64)
    counts[0, READ] = read
    counts[1, GETPPID] = getppid
    end = SyscallSnapshot(3.0, cpus, counts, arch="x86_64", online=cpus)
    return end.delta(SyscallSnapshot(1.0, cpus, np.zeros_like(counts), arch="x86_64"))


def svg_texts(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


def test_heatmap_svg_has_title_labels_colour_bar_and_cell_counts(tmp_path: Path) -> None:
    out = tmp_path / "m.svg"
    plots.heatmap(two_cpus(), str(out))
    texts = svg_texts(out)
    assert "System calls per CPU: 782 calls in 2.00 s" in texts
    assert {"getppid", "read", "0", "1", "CPU", "calls (log scale)", "no calls"} <= set(texts)
    assert svg_cells(out) == {"cpu1-getppid": "777", "cpu0-read": "5"}
    assert {"1", "10", "100"} <= set(texts), "colour bar ticks, one number style"


def test_png_and_pdf_by_extension(tmp_path: Path) -> None:
    from PIL import Image

    png, pdf = tmp_path / "m.png", tmp_path / "m.PDF"
    plots.heatmap(two_cpus(), str(png))
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 200
    plots.heatmap(two_cpus(), str(pdf))
    body = pdf.read_bytes()
    assert body.startswith(b"%PDF-") and body.rstrip().endswith(b"%%EOF")


@pytest.mark.parametrize("name", ["m.jpg", "m", "m.svgz"])
def test_other_extensions_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(PercpuError, match=r"name the file \.png, \.svg or \.pdf"):
        plots.heatmap(two_cpus(), str(tmp_path / name))
    assert not (tmp_path / name).exists()


def test_unwritable_path_is_a_percpu_error(tmp_path: Path) -> None:
    with pytest.raises(PercpuError, match="cannot write"):
        plots.heatmap(two_cpus(), str(tmp_path / "no" / "such" / "m.png"))


def test_human_numbers_have_one_style() -> None:
    got = [plots.human(v) for v in (0, 1, 5, 10, 999, 999.6, 1000, 1500, 9960, 12_345, 999_600, 1e6, 2.5e7)]
    assert got == ["0", "1", "5", "10", "999", "1k", "1k", "1.5k", "10k", "12k", "1M", "1M", "25M"]
    assert plots.human(0.25) == "0.2" or plots.human(0.25) == "0.3"


def fake_delta(topology: CpuTopology) -> SyscallDelta:
    cpus = topology.possible
    counts = np.zeros((len(cpus), NR_SLOTS), np.uint64)
    counts[:, READ] = np.arange(1, len(cpus) + 1) * 10
    counts[cpus.ids.index(3), GETPPID] = 5000
    online = CpuList([0, 1, 2, 3, 6])
    counts[[cpus.ids.index(c) for c in cpus if c not in online], READ] = 0
    end = SyscallSnapshot(1.0, cpus, counts, arch="x86_64", online=online)
    return end.delta(SyscallSnapshot(0.0, cpus, np.zeros_like(counts), arch="x86_64"))


def test_heatmap_orders_cpus_by_node_and_core_and_marks_isolated_and_offline(
    tmp_path: Path, topology: CpuTopology
) -> None:
    out = tmp_path / "m.svg"
    plots.heatmap(fake_delta(topology), str(out), topology=topology)
    texts = svg_texts(out)
    assert {"node 0", "node 1", "no topology"} <= set(texts)
    assert "offline / never online" in texts and "isolated CPU (mark above its column)" in texts
    ticks = [t for t in texts if t.isdigit() and int(t) in topology.possible]
    # Node 0's CPUs core by core: core0.0 = {0, 2}, core0.1 = {1, 3}; then node 1; then the unknown.
    assert ticks[:8] == ["0", "2", "1", "3", "6", "7", "8", "9"]
    assert svg_cells(out)["cpu3-getppid"] == "5k"


def test_heatmap_of_a_grouped_view(tmp_path: Path, topology: CpuTopology) -> None:
    out = tmp_path / "n.svg"
    d = view(fake_delta(topology), topology, by="node", cpus=topology.select("0-3,6"), selected="0-3,6")
    plots.heatmap(d, str(out), topology=topology)
    texts = svg_texts(out)
    assert {"node0", "node1", "NUMA node (0-3,6)"} <= set(texts)
    cells = svg_cells(out)
    assert cells["node0-getppid"] == "5k" and cells["node0-read"] == "100" and cells["node1-read"] == "50"


def test_timeseries_lines_for_few_cpus_and_an_image_for_many(tmp_path: Path, topology: CpuTopology) -> None:
    few = [two_cpus(read=10 * (i + 1), getppid=100) for i in range(5)]
    out = tmp_path / "t.svg"
    plots.timeseries(few, str(out))
    texts = svg_texts(out)
    assert {"cpu0", "cpu1", "calls/s per CPU"} <= set(texts)
    assert "seconds since the start (5 intervals of 2 s)" in texts
    many = [fake_delta(topology) for _ in range(4)]
    out2 = tmp_path / "t2.png"
    plots.timeseries(many, str(out2), topology=topology, lines_up_to=3)
    assert out2.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out3 = tmp_path / "t3.svg"
    plots.timeseries(many, str(out3), topology=topology, lines_up_to=3)
    assert {"node 0", "node 1", "calls/s (log scale)", "CPU"} <= set(svg_texts(out3))
    with pytest.raises(PercpuError, match="no interval"):
        plots.timeseries([], str(tmp_path / "x.png"))


def _synthetic_machine(tmp_path: Path) -> CpuTopology:
    """tools/synthetic_pictures.py's 256-CPU machine: 2 nodes, SMT-2 (Intel numbering), 248-255 offline."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "synthetic_pictures", os.path.join(TOOLS, "synthetic_pictures.py")
    )
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    topo: CpuTopology = tool.fake_machine(str(tmp_path))
    return topo


def test_a_heatmap_of_256_cpus_labels_every_column_and_counts_every_cell(tmp_path: Path) -> None:
    """Past 40 columns no cell had its count and every 6th column its label: 64 possible CPUs were stripes.
    Now columns go on panels of at most 64, cut where a node (or a core) begins, each labelled, each
    cell with its count."""
    topo = _synthetic_machine(tmp_path)
    cpus = topo.possible
    counts = np.zeros((len(cpus), NR_SLOTS), np.uint64)
    online = [c.cpu for c in topo.cpus if c.online]
    counts[online, READ] = np.array(online) * 10 + 1
    counts[61, GETPPID] = 250_000
    end = SyscallSnapshot(1.0, cpus, counts, arch="x86_64", online=CpuList(online))
    d = end.delta(SyscallSnapshot(0.0, cpus, np.zeros_like(counts), arch="x86_64"))
    out = tmp_path / "h.svg"
    plots.heatmap(d, str(out), topology=topo, top=2)
    cells = svg_cells(out)
    want = {f"cpu{c}-read": plots.human(c * 10 + 1) for c in online} | {"cpu61-getppid": "250k"}
    assert cells == want
    texts = svg_texts(out)
    assert {str(c) for c in cpus} <= set(texts), "every column has its label"
    assert (
        "CPU, ordered by node, package and core: SMT siblings side by side; 256 columns in 4 panels" in texts
    )
    assert texts.count("node 0") == 2 and texts.count("node 1") == 2 and texts.count("no topology") == 1


def test_panels_are_cut_where_a_node_or_a_core_begins(tmp_path: Path) -> None:
    topo = _synthetic_machine(tmp_path)
    cpus = topo.possible
    zero = np.zeros((len(cpus), NR_SLOTS), np.uint64)
    d = SyscallSnapshot(1.0, cpus, zero, online=CpuList(range(248))).delta(SyscallSnapshot(0.0, cpus, zero))
    cols = plots._Columns(d, topo)
    assert plots._pages(cols, 256) == [(0, 64), (64, 128), (128, 192), (192, 256)]
    # node 1 begins at column 128 (node 0 is CPUs 0-63 and 128-191): a panel of 150 ends there
    assert plots._pages(cols, 256, most=150) == [(0, 128), (128, 256)]
    # 5 columns a panel at most: never between SMT siblings (columns 2k, 2k+1 are one core)
    assert plots._pages(cols, 12, most=5) == [(0, 4), (4, 8), (8, 12)]
    assert plots._pages(cols, 64) == [(0, 64)]


def test_256_cpus_render(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, os.path.join(TOOLS, "synthetic_pictures.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    for name in (
        "synthetic-256-heatmap.png",
        "synthetic-256-heatmap-by-node.png",
        "synthetic-256-timeseries.png",
    ):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_matplotlib_at_import_time() -> None:
    code = "import sys, percpu, percpu.plots, percpu.cli.stat; print('matplotlib' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


def test_missing_matplotlib_is_one_line_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(
        PercpuError, match=r"needs matplotlib, which is not installed: pip install 'percpu\[plots\]'"
    ):
        plots.heatmap(two_cpus(), str(tmp_path / "m.png"))
    assert main(["stat", "--heatmap", str(tmp_path / "m.png"), "-d", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "percpu[plots]" in err and "Traceback" not in err
    assert not (tmp_path / "m.png").exists(), "refused before anything was written"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--timeseries", "t.png", "-d", "1"], "--timeseries needs --interval"),
        (["--heatmap", "m.gif", "-d", "1"], r"--heatmap m.gif: name the file .png, .svg or .pdf"),
        (["-i", "1", "--timeseries", "/nonexistent/t.png"], "--timeseries /nonexistent/t.png: No such file"),
    ],
)
def test_picture_options_fail_before_counting(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stat", *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# A child that draws with matplotlib's first-run messages forced out: matplotlib's timer that logs "Matplotlib
# is building the font cache" after 5 s fires at once (synchronously, so the test cannot race it), and
# MPLCONFIGDIR names a directory that cannot be made, so matplotlib makes a temporary one and says so.
_FIRST_RUN = """
import sys, threading
import numpy as np
class _Now:
    def __init__(self, interval, function, *a, **k): self.function = function
    def start(self): self.function()
    def cancel(self): pass
threading.Timer = _Now
from percpu.cli import build_parser, stat
from percpu.cpus import CpuList
from percpu.syscount import NR_SLOTS, SyscallSnapshot
cpus = CpuList([0, 1])
counts = np.zeros((2, NR_SLOTS), np.uint64)
counts[1, 110] = 777
d = SyscallSnapshot(2.0, cpus, counts, arch="x86_64").delta(SyscallSnapshot(1.0, cpus, 0 * counts))
o = stat._Output(build_parser().parse_args(sys.argv[1:]))
o.write_heatmap(d)
o.commit()
o.close()
print("drawn", file=sys.stderr)
"""


@pytest.mark.parametrize("quiet", [False, True])
def test_matplotlibs_first_run_messages_are_percpus_words(tmp_path: Path, quiet: bool) -> None:
    """A fresh environment printed "Matplotlib is building the font cache; this may take a moment." and
    "Matplotlib created a temporary cache directory ..." among percpu's own messages. Now stderr has
    percpu's lines only: why the picture is slow, in its words (nothing with -q)."""
    svg, out = tmp_path / "m.svg", tmp_path / "o.json"
    argv = ["stat", *(["-q"] if quiet else []), "-f", "json", "-o", str(out), "--heatmap", str(svg)]
    env = {**os.environ, "MPLCONFIGDIR": "/proc/no-such-dir/matplotlib"}
    r = subprocess.run(
        [sys.executable, "-c", _FIRST_RUN, *argv], capture_output=True, text=True, env=env, timeout=600
    )
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines[-1] == "drawn" and svg.exists()
    assert "Matplotlib" not in r.stderr and "font cache" not in r.stderr, r.stderr
    if quiet:
        assert lines[:-1] == [], r.stderr
    else:
        assert lines[:-1] == [
            "percpu: matplotlib has no writable cache directory here, so each run makes its list of this "
            "machine's fonts again before drawing, which can take a while (set MPLCONFIGDIR to a writable "
            "directory to keep it)",
            f"percpu: heat map written to {svg}",
        ]


def test_the_first_picture_for_a_user_says_the_font_list_is_made_once(tmp_path: Path) -> None:
    code = (
        "from percpu import plots\n"
        "plots.prepare(say=lambda s: print('said:', s))\nprint('again')\nplots.prepare(say=print)\n"
    )
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path)}
    for said in (
        [
            f"said: matplotlib is making its list of this machine's fonts (once, kept in {tmp_path}) before "
            "the first picture: this can take a while"
        ],
        [],  # the list was kept: nothing to say the second time
    ):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert r.stdout.splitlines() == [*said, "again"]
