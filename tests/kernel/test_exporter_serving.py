"""The exporter's serving side for real: abuse while Prometheus scrapes, TLS and basic auth, mTLS, no
privileges after start, bounded -P bookkeeping while processes rename themselves.

Everything listens on 127.0.0.1; every loop is bounded in count and time (deadlines only guard hangs);
every process started here is stopped however the test ends.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from percpu.cpus import cpu_lists

from .conftest import fetch, free_port, query, running_exporter, running_prometheus

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOAD = os.path.join(HERE, "..", "helpers", "syscall_workload.py")
Key = tuple[str, tuple[tuple[str, str], ...]]


def parse(text: str) -> dict[Key, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def status_field(pid: int, name: str, task: int | None = None) -> str:
    path = f"/proc/{pid}/status" if task is None else f"/proc/{pid}/task/{task}/status"
    with open(path, encoding="ascii") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    raise KeyError(name)


def rss_kb(pid: int) -> int:
    return int(status_field(pid, "VmRSS").split()[0])


def metrics(target: str, **kw: Any) -> dict[Key, float]:
    code, body = fetch(f"http://{target}/metrics", **kw)
    assert code == 200
    return parse(body.decode())


# --- abuse while a real Prometheus scrapes ----------------------------------------------------------


def exchange(target: str, payload: bytes) -> bytes:
    """Send a whole request, then read the answer until the server closes."""
    host, port = target.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            return b""
        out = b""
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                out += chunk
        return out


FLOOD = {  # payload -> (status line it must get, refusal reason it is counted under)
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n": (431, "headers_too_large"),
    b"GET /metrics HTTP/1.1\r\n"
    + b"".join(b"X-%d: %s\r\n" % (i, b"b" * 200) for i in range(120))
    + b"\r\n": (
        431,
        "headers_too_large",
    ),
    b"GET /" + b"x" * 20_000 + b" HTTP/1.1\r\n\r\n": (414, "uri_too_long"),
    b"\x00\xff\xfe garbage\r\n\r\n": (400, "malformed"),
    b"GET /metrics\r\n\r\n": (400, "malformed"),  # HTTP/0.9
    b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n": (400, "malformed"),
    b"GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello": (400, "malformed"),
    b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc": (405, "method"),
    b"DELETE / HTTP/1.1\r\n\r\n": (405, "method"),
    b"FOO /metrics HTTP/1.1\r\n\r\n": (405, "method"),
}


class Tricklers:
    """N connections that send a request head one byte a second, reopened when the server cuts one."""

    def __init__(self, target: str, n: int) -> None:
        self.target, self.n = target, n
        self.cut = 0
        self.opened = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> socket.socket:
        host, port = self.target.split(":")
        s = socket.create_connection((host, int(port)), timeout=5)
        s.setblocking(False)
        self.opened += 1
        return s

    def _run(self) -> None:
        head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 1000
        socks = {self._open(): 0 for _ in range(self.n)}
        try:
            while not self.stop.is_set():
                readable, _, _ = select.select(list(socks), [], [], 1.0)
                for s in readable:  # the server closed it (EOF or reset): cut off
                    with contextlib.suppress(OSError):
                        s.recv(4096)
                    s.close()
                    del socks[s]
                    self.cut += 1
                    socks[self._open()] = 0
                for s in list(socks):
                    i = socks[s]
                    with contextlib.suppress(OSError):
                        s.send(head[i % len(head) : i % len(head) + 1])
                    socks[s] = i + 1
        finally:
            for s in socks:
                s.close()


def test_abuse_while_prometheus_scrapes(tmp_path: Path) -> None:
    seconds = 30
    with running_exporter("--web.request-timeout", "3s") as (target, proc):
        base = metrics(target)
        config = (
            # A 5 s timeout: the scrapes compete with the flood for the exporter's one thread, and a host
            # loaded by other work (a scrape took 2.0 s with three qemu guests running) must not fail it.
            f"global:\n  scrape_interval: 5s\n  scrape_timeout: 5s\nscrape_configs:\n  - job_name: percpu\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        with running_prometheus(config) as api:
            time.sleep(3)
            rss0 = rss_kb(proc.pid)
            trick = Tricklers(target, 200)
            trick.thread.start()
            answers: dict[bytes, list[bytes]] = {p: [] for p in FLOOD}
            rss_max, threads_max, rounds = rss0, 0, 0
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                for payload in FLOOD:
                    answers[payload].append(exchange(target, payload))
                rounds += 1
                rss_max = max(rss_max, rss_kb(proc.pid))
                threads_max = max(threads_max, int(status_field(proc.pid, "Threads")))
            trick.stop.set()
            trick.thread.join(30)
            end = time.time()
            time.sleep(2)
            window = f"{seconds}s"
            ups = query(api, f'count_over_time(up{{job="percpu"}}[{window}])', end)
            good = query(api, f'sum_over_time(up{{job="percpu"}}[{window}])', end)
            slowest = query(api, f'max_over_time(scrape_duration_seconds{{job="percpu"}}[{window}])', end)
            resets = query(api, f"resets(percpu_syscalls_total[{seconds + 5}s])", end)
            with urllib.request.urlopen(f"{api}/targets", timeout=10) as r:
                health = json.loads(r.read())["data"]["activeTargets"][0]
        final = metrics(target)
    total, ok = int(float(ups[0]["value"][1])), int(float(good[0]["value"][1]))
    refused = {
        dict(k[1])["reason"]: v for k, v in final.items() if k[0] == "percpu_exporter_requests_refused_total"
    }
    print(
        f"\nscrapes ok {ok}/{total}; slowest scrape {float(slowest[0]['value'][1]):.3f} s; RSS {rss0} -> max "
        f"{rss_max} kB; threads max {threads_max}; trickling connections opened {trick.opened}, cut by the "
        f"server {trick.cut}; flood rounds {rounds} x {len(FLOOD)}; refused {refused}"
    )
    assert total >= seconds // 5 - 2 and ok == total, (ok, total)
    assert health["health"] == "up" and health["lastError"] == "", health
    assert resets and all(float(r["value"][1]) == 0 for r in resets)  # no counter went down
    for payload, (code, _) in FLOOD.items():
        for got in answers[payload]:
            assert got.startswith(f"HTTP/1.1 {code} ".encode()), (payload[:40], got[:80])
    for reason in {r for _, r in FLOOD.values()}:
        expected = rounds * sum(1 for c, r in FLOOD.values() if r == reason)
        assert refused[reason] - base.get(
            ("percpu_exporter_requests_refused_total", (("reason", reason),)), 0
        ) == (expected), reason
    # every trickler was cut off by the deadline and counted; each round of 200 lasts about 3 s
    assert trick.cut >= 200 * (seconds // 6), trick.cut
    assert trick.cut <= refused["timeout"] <= trick.cut + 200
    assert threads_max <= 3  # the event loop, the scrape worker, nothing per connection
    assert rss_max < rss0 + 64 * 1024, (rss0, rss_max)
    assert final[("percpu_exporter_snapshots_total", ())] >= total  # scrapes read the maps (shared or not)


# --- no privileges after start ----------------------------------------------------------------------


def test_no_capabilities_after_start_and_exact_counts() -> None:
    cpu = list(cpu_lists().online)[-1]
    comm = "pcpu-nopriv"
    with running_exporter("-c", comm) as (target, proc):
        for task in os.listdir(f"/proc/{proc.pid}/task"):
            for field in ("CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"):
                assert int(status_field(proc.pid, field, int(task)), 16) == 0, (task, field)
        assert status_field(proc.pid, "NoNewPrivs") == "1"
        subprocess.run(
            [sys.executable, WORKLOAD, "300000", str(cpu), "--comm", comm],
            check=True,
            timeout=120,
            capture_output=True,
        )
        key = ("percpu_syscalls_total", (("cpu", str(cpu)), ("syscall", "getppid")))
        assert metrics(target)[key] == 0  # a new series is served at 0 first (docs/exporter.md)
        assert metrics(target)[key] == 300000
        assert int(status_field(proc.pid, "CapEff"), 16) == 0


def test_user_switch_after_start() -> None:
    with running_exporter("--user", "65534:65534") as (target, proc):
        assert status_field(proc.pid, "Uid").split()[:3] == ["65534"] * 3
        assert status_field(proc.pid, "Gid").split()[:3] == ["65534"] * 3
        assert int(status_field(proc.pid, "CapEff"), 16) == 0
        before = metrics(target)[("percpu_exporter_snapshots_total", ())]
        assert metrics(target)[("percpu_exporter_snapshots_total", ())] >= before


# --- TLS, basic auth, mTLS with a real Prometheus -----------------------------------------------------


def make_pki(tmp: Path) -> dict[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem: str, cert: x509.Certificate, k: ec.EllipticCurvePrivateKey) -> None:
        (tmp / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp / f"{stem}.key").write_bytes(
            k.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    ca_key = key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("percpu test CA"))
        .issuer_name(name("percpu test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    write("ca", ca, ca_key)
    for stem, usage in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        k = key()
        b = (
            x509.CertificateBuilder()
            .subject_name(name(f"percpu {stem}"))
            .issuer_name(ca.subject)
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if stem == "server":
            b = b.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        write(stem, b.sign(ca_key, hashes.SHA256()), k)
    return {s: str(tmp / s) for s in ("ca", "server", "client")}


# Prometheus's scrape timeout can be no longer than its interval. A TLS handshake plus a bcrypt check took
# over 1 s once on a busy 2-CPU machine, failing a scrape: these tests check that scrapes succeed, not how
# fast, so they scrape every 2 s with a 2 s timeout.
def prometheus_up(api: str, seconds: float = 60) -> None:
    """Prometheus scraped percpu successfully three times (``up`` is 1 for each). A scrape that failed in
    between is allowed: under load a TLS handshake and a bcrypt check can outlast the 2 s scrape timeout,
    which says nothing about the exporter (the callers check its own refusal counters exactly)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ok = query(api, 'sum_over_time(up{job="percpu"}[5m])')
        if ok and float(ok[0]["value"][1]) >= 3:
            return
        time.sleep(0.5)
    with urllib.request.urlopen(f"{api}/targets", timeout=10) as r:
        pytest.fail(f"Prometheus did not scrape successfully: {r.read()[:2000]!r}")


def test_tls_and_basic_auth_with_prometheus(tmp_path: Path) -> None:
    import bcrypt

    pki = make_pki(tmp_path)
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(10)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {pki['server']}.crt\n  key_file: {pki['server']}.key\n"
        f"basic_auth_users:\n  prom: {hashed}\n"
    )
    ctx = ssl.create_default_context(cafile=pki["ca"] + ".crt")
    with running_exporter(
        "--web.config.file", str(web), "--web.share-window", "1ms", scheme="https", ctx=ctx
    ) as (target, _):
        config = (
            "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n"
            "scrape_configs:\n  - job_name: percpu\n    scheme: https\n"
            f"    tls_config: {{ca_file: {pki['ca']}.crt}}\n"
            "    basic_auth: {username: prom, password: s3cret}\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        with running_prometheus(config) as api:
            prometheus_up(api)
        assert fetch(f"https://{target}/metrics", ctx, ("prom", "wrong"))[0] == 401
        assert fetch(f"https://{target}/metrics", ctx)[0] == 401
        assert fetch(f"https://{target}/metrics", ctx, ("nobody", "s3cret"))[0] == 401
        code, body = fetch(f"https://{target}/metrics", ctx, ("prom", "s3cret"))
        assert code == 200 and b"percpu_build_info" in body
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            fetch(f"http://{target}/metrics", auth=("prom", "s3cret"))  # plain HTTP to the TLS port
        refused = parse(fetch(f"https://{target}/metrics", ctx, ("prom", "s3cret"))[1].decode())
    assert refused[("percpu_exporter_requests_refused_total", (("reason", "unauthorized"),))] == 3
    assert refused[("percpu_exporter_requests_refused_total", (("reason", "tls"),))] >= 1


def test_mtls_with_prometheus(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {pki['server']}.crt\n  key_file: {pki['server']}.key\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki['ca']}.crt\n"
    )
    ctx = ssl.create_default_context(cafile=pki["ca"] + ".crt")
    ctx.load_cert_chain(pki["client"] + ".crt", pki["client"] + ".key")
    with running_exporter(
        "--web.config.file", str(web), "--web.share-window", "1ms", scheme="https", ctx=ctx
    ) as (target, _):
        config = (
            "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n"
            "scrape_configs:\n  - job_name: percpu\n    scheme: https\n"
            f"    tls_config: {{ca_file: {pki['ca']}.crt, cert_file: {pki['client']}.crt, "
            f"key_file: {pki['client']}.key}}\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        with running_prometheus(config) as api:
            prometheus_up(api)
        no_cert = ssl.create_default_context(cafile=pki["ca"] + ".crt")
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            fetch(f"https://{target}/metrics", no_cert)
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            fetch(f"http://{target}/metrics")
        code, body = fetch(f"https://{target}/metrics", ctx)
    assert code == 200
    assert parse(body.decode())[("percpu_exporter_requests_refused_total", (("reason", "tls"),))] >= 2


# --- -P while processes rename themselves -------------------------------------------------------------

RENAMER = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
end = time.monotonic() + float(sys.argv[1])
i = 0
while time.monotonic() < end:
    libc.prctl(15, f"rn{os.getpid() % 1000}-{i}".encode(), 0, 0, 0)  # PR_SET_NAME
    for _ in range(20):
        os.getppid()
    i += 1
print(i)
"""


def test_per_process_memory_bounded_while_processes_rename_themselves() -> None:
    with running_exporter("-P", "--max-comms", "10") as (target, proc):
        metrics(target)
        rss0 = rss_kb(proc.pid)
        renamers = [
            subprocess.Popen([sys.executable, "-c", RENAMER, "20"], stdout=subprocess.PIPE) for _ in range(2)
        ]
        try:
            rss_max, comms_max, keys_max, scrapes = rss0, 0, 0, 0
            while any(r.poll() is None for r in renamers):
                got = metrics(target)
                scrapes += 1
                comms = {dict(k[1])["comm"] for k in got if k[0] == "percpu_process_syscalls_total"}
                comms_max = max(comms_max, len(comms))
                keys_max = max(keys_max, int(got[("percpu_exporter_tracked_process_keys", ())]))
                assert got[("percpu_exporter_tracked_comms", ())] <= 10
                rss_max = max(rss_max, rss_kb(proc.pid))
                time.sleep(0.5)
            names = sum(int(r.communicate(timeout=30)[0]) for r in renamers)
        finally:
            for r in renamers:
                if r.poll() is None:
                    r.kill()
                    r.wait()
    print(
        f"\nnames taken {names:,}; comm series max {comms_max}; process keys max {keys_max}; "
        f"RSS {rss0} -> max {rss_max} kB over {scrapes} scrapes"
    )
    assert names > 10_000  # many more names than the exporter keeps
    assert comms_max <= 11  # 10 names + "other"
    # the kernel map's entries, and the rows of exited processes summed by name (as many, then one per
    # syscall)
    assert keys_max <= 2 * 10240 + 2048
    assert rss_max < rss0 + 48 * 1024, (rss0, rss_max)


def _sum(got: dict[Key, float], name: str, **labels: str) -> float:
    return sum(v for k, v in got.items() if k[0] == name and labels.items() <= dict(k[1]).items())


@pytest.mark.parametrize("table", [[], ["--proc-entries", "256"]], ids=["default table", "256 keys"])
def test_per_process_series_and_lost_add_up_over_thousands_of_processes(
    fork_calls: str, table: list[str]
) -> None:
    """5,000 short processes (about 15,000 process keys) between two scrapes: the per-process series grew,
    with the calls lost, by exactly the syscall series' growth (an LRU table dropped most of them, and the
    lost counter stayed 0)."""
    comm = os.path.basename(fork_calls)
    with running_exporter("-P", "-c", comm, *table) as (target, _):
        before = metrics(target)
        subprocess.run([fork_calls, "5000", "7"], check=True, timeout=600)
        metrics(target)  # series new since the first scrape are served at 0 once (born at 0)
        after = metrics(target)

    def grew(name: str, **labels: str) -> int:
        return int(_sum(after, name, **labels) - _sum(before, name, **labels))

    calls = grew("percpu_syscalls_total")
    assert grew("percpu_syscalls_total", syscall="getpriority") == 35_000
    procs = grew("percpu_process_syscalls_total")
    lost = grew("percpu_lost_syscalls_total", table="processes")
    print(f"\n{calls:,} calls: {procs:,} in the per-process series, {lost:,} lost")
    assert procs + lost == calls


# --- a plain install: no extras ------------------------------------------------------------------------


def test_plain_install_serves_and_names_the_extra(tmp_path: Path) -> None:
    """A virtualenv with percpu and numpy only (no prometheus_client, PyYAML or bcrypt) runs the exporter;
    --web.config.file there says in one line what to install."""
    import venv

    import numpy

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    deps = tmp_path / "deps"
    deps.mkdir()
    site = Path(numpy.__file__).parent.parent
    for name in ("numpy", "numpy.libs"):
        if (site / name).exists():
            (deps / name).symlink_to(site / name)
    src = Path(HERE).parent.parent / "src"
    purelib = next((env_dir / "lib").glob("python3*/site-packages"))
    (purelib / "percpu-test.pth").write_text(f"{src}\n{deps}\n")
    python = str(env_dir / "bin" / "python")
    for missing in ("prometheus_client", "yaml", "bcrypt"):
        probe = subprocess.run([python, "-c", f"import {missing}"], capture_output=True, text=True)
        assert probe.returncode != 0, f"{missing} is importable: the test does not show a plain install"
    port = free_port()
    p = subprocess.Popen(
        [python, "-m", "percpu", "exporter", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                code, body = fetch(f"http://127.0.0.1:{port}/metrics")
                break
            except OSError:
                assert p.poll() is None and time.monotonic() < deadline, "the exporter did not start"
                time.sleep(0.2)
        assert code == 200 and b'percpu_syscalls_total{cpu="' in body
        parse(body.decode())
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(15)
        assert p.stderr is not None
        assert b"Traceback" not in p.stderr.read()
        p.stderr.close()
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users: {}\n")
    out = subprocess.run(
        [python, "-m", "percpu", "exporter", "--web.config.file", str(web)], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert (
        out.stderr.strip() == "percpu: --web.config.file needs the PyYAML package: pip install 'percpu[web]'"
    )
