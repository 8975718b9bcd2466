"""tests/kernel and tests/vm run for real, as root, against the running kernel (tests/vm inside the VM
matrix). Without root they are skipped, and the skip says why; as root a feature this kernel has must
work: nothing there skips on a kernel error.

Every suite runs in percpu's guard-page proof mode (``PERCPU_GUARD_PAGES=1``, set here for the whole
session and inherited by the CLI subprocesses and VM guests that run this conftest): every buffer percpu
hands to the kernel or libbpf ends at a page boundary followed by an inaccessible page, so an overrun is
EFAULT or a fault, never silent corruption. The session ends by reporting how many distinct call sites
allocated that way (in this process and in every percpu subprocess it started).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import settings

from percpu import layout

HERE = os.path.dirname(os.path.abspath(__file__))
NOT_ROOT = pytest.mark.skip(reason="needs root (BPF maps and programs): run as root")
MARKS = {os.path.join(HERE, "kernel"): pytest.mark.kernel, os.path.join(HERE, "vm"): pytest.mark.vm}

os.environ.setdefault(layout.GUARD_ENV, "1")
# No deadline for a property test that does not set its own: hypothesis's default (200 ms an example) is a
# timing assertion, and on a shared, loaded 2-CPU machine a correct example of test_layout.py took longer.
# Speed lives in benchmarks/; the fuzz tests that set a deadline keep theirs (it catches exponential work).
settings.register_profile("percpu", deadline=None)
settings.load_profile("percpu")
# One matplotlib cache for the session, inherited by every `percpu stat --heatmap` the tests start: where
# $HOME is read-only (a VM guest sees the host's files read-only) each process would otherwise build the
# font cache again, which takes minutes under TCG.
if "MPLCONFIGDIR" not in os.environ:
    os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="percpu-tests-matplotlib-")
if layout.guard_mode() and layout.GUARD_REPORT_ENV not in os.environ:
    fd, _REPORT = tempfile.mkstemp(prefix="percpu-guard-sites-")
    os.close(fd)
    os.environ[layout.GUARD_REPORT_ENV] = _REPORT


@pytest.fixture(autouse=True, scope="session")
def _ctrl_c_reaches_percpu() -> None:
    """A test run started in the background of a shell script ignores SIGINT, and so did every percpu it
    started (an ignored signal stays ignored across exec): the Ctrl-C tests' SIGINT did nothing and `stat
    -d 120` ran its 120 s, and the command's entry rightly sent a lost Ctrl-C nowhere (tests/unit/
    test_entry.py). A handler here is reset to the default in each child at exec, as in a terminal."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for folder, mark in MARKS.items():
            if str(item.fspath).startswith(folder + os.sep):
                item.add_marker(mark)
                if os.geteuid() != 0:
                    item.add_marker(NOT_ROOT)
        # a Markdown example marked <!--pytest.mark.kernel--> (README.md, docs/): root, like tests/kernel
        if item.path.suffix == ".md" and item.get_closest_marker("kernel") and os.geteuid() != 0:
            item.add_marker(NOT_ROOT)


def covered_sites() -> set[str]:
    """Distinct call sites that allocated guarded buffers, here and in subprocesses that have exited."""
    sites = {s for s in layout.guard_sites() if "/tests/" not in s and not s.startswith("tests/")}
    report = os.environ.get(layout.GUARD_REPORT_ENV)
    if report and os.path.exists(report):
        with open(report, encoding="utf-8") as f:
            sites |= {line.strip() for line in f if line.strip() and not line.startswith("tests/")}
    return sites


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not layout.guard_mode():
        terminalreporter.write_line("guard pages: off (PERCPU_GUARD_PAGES=0)")
        return
    sites = covered_sites()
    terminalreporter.write_line(
        f"guard pages: every percpu buffer ended at an inaccessible page; {len(sites)} distinct call sites"
    )
    out = os.environ.get("PERCPU_GUARD_SITES_OUT")
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write("".join(f"{s}\n" for s in sorted(sites)))


def unique_comm(stem: str) -> str:
    """A process name (at most 15 bytes) that no other test session on this machine uses at the same time:
    tests that count by command name must not count another suite's workload."""
    name = f"{stem}{os.getpid() % 100000}"
    assert len(name) <= 15, name
    return name


def svg_cells(path: str | os.PathLike[str]) -> dict[str, str]:
    """{"cpu1-getppid": "777"}: the count printed in each cell of a heat map drawn as SVG."""
    import xml.etree.ElementTree as ET

    ns = "{http://www.w3.org/2000/svg}"
    return {
        g.get("id", "")[5:]: "".join(t for x in g.iter(f"{ns}text") for t in x.itertext())
        for g in ET.parse(path).getroot().iter(f"{ns}g")
        if g.get("id", "").startswith("cell-")
    }


@dataclass(frozen=True)
class Unprivileged:
    """How to start percpu as another user (``nobody``, no capabilities): this interpreter's base Python,
    with percpu's sources and numpy at world-readable paths, since the project's .venv and checkout may be
    where only root can read (a clone under /root, whose mode is 700).

    They are bind-mounted there in a mount namespace of the child's own, which ends with it. Copying them
    instead (numpy is tens of megabytes) took minutes in a TCG guest, whose files come from the host; a
    copy is made only where the files themselves are not world-readable (a umask of 077)."""

    python: str
    env: dict[str, str]
    binds: tuple[tuple[str, str], ...] = ()  # (source, target) bind mounts in the child's mount namespace

    def command(self, *args: str) -> list[str]:
        """The argv that runs ``python -s ARGS`` as nobody."""
        drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
        argv = [*drop, self.python, "-s", *args]
        if not self.binds:
            return argv
        # sh's positional parameters carry the paths, so no path is ever parsed as shell text
        flat = [p for pair in self.binds for p in pair]
        mounts = " && ".join(f'mount --bind "${{{i}}}" "${{{i + 1}}}"' for i in range(1, len(flat), 2))
        script = f'{mounts} && shift {len(flat)} && exec "$@"'
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *flat, *argv]


def _world_readable(path: str) -> bool:
    return bool(os.stat(path).st_mode & 0o004)


@pytest.fixture(scope="session")
def unprivileged() -> Iterator[Unprivileged]:
    import numpy

    if not shutil.which("setpriv"):
        pytest.fail("setpriv (util-linux) is not installed: scripts/setup.sh --dev installs it")
    src = os.path.realpath(os.path.join(HERE, "..", "src", "percpu"))
    np_dir = os.path.dirname(os.path.realpath(numpy.__file__))
    # numpy.libs: the libraries a manylinux wheel bundles
    trees = [src] + [d for d in (np_dir, np_dir + ".libs") if os.path.isdir(d)]
    top = tempfile.mkdtemp(prefix="percpu-unprivileged-")
    try:
        os.chmod(top, 0o755)
        binds: list[tuple[str, str]] = []
        readable = _world_readable(os.path.join(src, "__init__.py")) and _world_readable(numpy.__file__)
        for tree in trees:
            target = os.path.join(top, os.path.basename(tree))
            if readable and shutil.which("unshare"):
                os.mkdir(target, 0o755)
                binds.append((tree, target))
                continue
            shutil.copytree(tree, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
            for root, _dirs, files in os.walk(target):
                os.chmod(root, 0o755)
                for f in files:
                    path = os.path.join(root, f)
                    if not os.path.islink(path):
                        os.chmod(path, os.stat(path).st_mode | 0o444)
        python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
        env = {**os.environ, "PYTHONPATH": top, "HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"}
        yield Unprivileged(python, env, tuple(binds))
    finally:
        shutil.rmtree(top, ignore_errors=True)
