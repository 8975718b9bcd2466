"""What the kernel tests share: percpu run as a user runs it, bpftool's dump to compare with, and the
exporter and Prometheus servers they scrape. Every server listens on 127.0.0.1 only and is stopped
however the test ends."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from ..conftest import unique_comm

PERCPU = [sys.executable, "-m", "percpu"]
# Limits on waits for a subprocess or a screen: guards against a hang, never measures. In a qemu TCG guest
# that shares two CPUs with another, one percpu run can take minutes to start (tests/vm/run_matrix.py).
HANG = 600.0


def percpu_cmd(*args: str, timeout: float = HANG, **kw: object) -> subprocess.CompletedProcess[str]:
    """`percpu ARGS`, its output captured. The timeout guards against a hang; it measures nothing: one run
    can take minutes in a qemu TCG guest that shares its CPUs."""
    return subprocess.run([*PERCPU, *args], capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload, no-any-return]


def bpftool_dump(map_id: int) -> list[dict[str, Any]]:
    """`bpftool -j map dump id MAP_ID`, parsed: what percpu's reading is held to."""
    out = subprocess.run(
        ["bpftool", "-j", "map", "dump", "id", str(map_id)],
        capture_output=True,
        text=True,
        check=True,
        timeout=HANG,
    )
    data: list[dict[str, Any]] = json.loads(out.stdout)
    return data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(
    url: str, ctx: ssl.SSLContext | None = None, auth: tuple[str, str] | None = None, timeout: float = 10
) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout} s")
        time.sleep(0.2)


@contextlib.contextmanager
def running_exporter(
    *options: str,
    scheme: str = "http",
    ctx: ssl.SSLContext | None = None,
    auth: tuple[str, str] | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`percpu exporter OPTIONS` on a free 127.0.0.1 port, once it answers /-/ready (over ``scheme``, with
    ``ctx`` and ``auth`` where its web config asks for them); SIGTERM (then SIGKILL) however the test ends.

    Its stderr goes to a file, not a pipe: a pipe nobody reads while it serves would stop it once full, and
    reading a pipe to report a start that failed would wait for an exporter still starting to end. The
    wait for /-/ready is a hang guard, not a timing assertion: ``exporter -D`` took over 30 s to start in the
    5.10 guest under TCG (loading and attaching the two counters' programs)."""
    port = free_port()
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(
            [*PERCPU, "exporter", "--listen", f"127.0.0.1:{port}", *options],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        target = f"127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 600
            while True:
                try:
                    if fetch(f"{scheme}://{target}/-/ready", ctx, auth)[0] == 200:
                        break
                except OSError:
                    pass
                if p.poll() is not None or time.monotonic() > deadline:
                    p.kill()
                    p.wait()
                    err.seek(0)
                    pytest.fail(f"the exporter did not start (status {p.returncode}): {err.read().decode()}")
                time.sleep(0.2)
            yield target, p
        finally:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture(scope="session")
def fork_calls(tmp_path_factory: pytest.TempPathFactory) -> str:
    """tests/helpers/fork_calls.c built now (N short processes of M getpriority calls each), under a name
    unique to this session: its children keep that name, so a test can count them by it alone."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler (cc): scripts/setup.sh --dev installs gcc")
    exe = str(tmp_path_factory.mktemp("fork") / unique_comm("pcpuf"))
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "helpers", "fork_calls.c")
    subprocess.run([cc, "-O2", "-o", exe, src], check=True, timeout=HANG)
    return exe


@pytest.fixture
def exporter() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`percpu exporter` with its default options, as ``running_exporter()`` starts it."""
    with running_exporter() as running:
        yield running


@contextlib.contextmanager
def running_prometheus(config: str) -> Iterator[str]:
    """A Prometheus server on a free 127.0.0.1 port with this scrape config; yields its API base URL."""
    if not shutil.which("prometheus"):
        pytest.fail("prometheus is not installed: scripts/setup.sh --dev installs it")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "prometheus.yml")
        with open(cfg, "w", encoding="utf-8") as f:
            f.write(config)
        prom = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={cfg}",
                f"--storage.tsdb.path={tmp}/data",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/-/ready", timeout=60)
            yield f"http://127.0.0.1:{port}/api/v1"
        finally:
            prom.terminate()
            try:
                prom.wait(20)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()


def query(api: str, q: str, at: float | None = None) -> list[dict[str, Any]]:
    """A Prometheus instant query's result (``at``: its evaluation time)."""
    args = {"query": q} if at is None else {"query": q, "time": f"{at:.3f}"}
    with urllib.request.urlopen(f"{api}/query?" + urllib.parse.urlencode(args), timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", (q, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def assert_counted(got: int, made: int, skipped: int) -> None:
    """``got == made``, unless the kernel skipped runs of the counter's programs (``lost.skipped``: on
    kernels whose syscall tracepoints run BPF preemptibly, a run preempted on a CPU makes the calls of other
    tasks there skip until it resumes, docs/bpf-programs.md). Then the count may be short by no more than
    the runs skipped, and never over."""
    if skipped:
        assert made - skipped <= got <= made, f"{got:,} counted of {made:,} made, {skipped:,} runs skipped"
    else:
        assert got == made, f"{got:,} counted of {made:,} made, no run skipped"
