"""The exporter's HTTP core and web configuration on loopback, with a fake counter; the deploy files."""

from __future__ import annotations

import base64
import gzip
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from percpu._web import Limits, MetricsServer
from percpu._webconfig import BasicAuth, WebConfig, WebConfigError, load_web_config
from percpu.exporter import Exposition, SyscallCollector

from .synthetic import FakeCounter, served

DEPLOY = Path(__file__).resolve().parent.parent.parent / "deploy"


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[int, MetricsServer]]]:
    servers: list[tuple[MetricsServer, threading.Thread]] = []

    def start(scrape: Callable[[], Exposition] | None = None, **limits: Any) -> tuple[int, MetricsServer]:
        if scrape is None:
            f = FakeCounter(4)
            f.counts[:, 0] = 3
            scrape = served(SyscallCollector(f)).scrape
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        sock.setblocking(False)
        srv = MetricsServer(sock, scrape, Limits(**limits))
        t = threading.Thread(target=srv.serve, daemon=True)
        t.start()
        servers.append((srv, t))
        deadline = time.monotonic() + 10
        while srv._loop is None or srv._pool is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return sock.getsockname()[1], srv

    yield start
    for srv, t in servers:
        srv.stop()
        t.join(10)
        srv.sock.close()


def request(port: int, raw: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def split(resp: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = resp.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def test_get_head_gzip_and_methods(serve: Callable[..., tuple[int, MetricsServer]]) -> None:
    port, srv = serve()
    code, h, body = split(request(port, b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n"))
    assert code == 200 and int(h["content-length"]) == len(body) and b'syscall="read"} 3' in body
    code, h2, head_body = split(request(port, b"HEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n"))
    assert code == 200 and head_body == b"" and int(h2["content-length"]) > 0
    code, h, gz = split(
        request(port, b"GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n")
    )
    assert h["content-encoding"] == "gzip" and b'syscall="read"} 3' in gzip.decompress(gz)
    code, h, body = split(
        request(port, b"GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip;q=0\r\nConnection: close\r\n\r\n")
    )
    assert "content-encoding" not in h
    code, h, body = split(
        request(
            port,
            b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\nConnection: close\r\n\r\n",
        )
    )
    assert h["content-type"].startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")
    for method in (b"POST", b"PUT", b"DELETE", b"FOO"):
        code, h, _ = split(request(port, method + b" /metrics HTTP/1.1\r\n\r\n"))
        assert code == 405 and h["allow"] == "GET, HEAD"
    for path, want in ((b"/", 200), (b"/-/ready", 200), (b"/-/healthy", 200), (b"/nope", 404)):
        assert split(request(port, b"GET " + path + b" HTTP/1.1\r\nConnection: close\r\n\r\n"))[0] == want
    assert srv.refused["method"] == 4


def test_keep_alive_serves_several_requests_on_one_connection(
    serve: Callable[..., tuple[int, MetricsServer]],
) -> None:
    port, _ = serve()
    out = request(
        port, b"GET /-/ready HTTP/1.1\r\n\r\n" * 3 + b"GET /-/ready HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    assert out.count(b"HTTP/1.1 200 OK") == 4


@pytest.mark.parametrize(
    ("raw", "code", "reason"),
    [
        (b"GET /" + b"x" * 9000 + b" HTTP/1.1\r\n\r\n", 414, "uri_too_long"),
        (b"GET / HTTP/1.1\r\nX: " + b"y" * 9000 + b"\r\n\r\n", 431, "headers_too_large"),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431, "headers_too_large"),
        (
            b"GET / HTTP/1.1\r\n"
            + b"X: "
            + b"y" * 4000
            + b"\r\n" * 1
            + b"Y: "
            + b"z" * 4000
            + b"\r\n"
            + b"Z: "
            + b"w" * 9000,
            431,
            "headers_too_large",
        ),
        (b"GET /\r\n\r\n", 400, "malformed"),
        (b"GET / HTTP/2.0\r\n\r\n", 400, "malformed"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, "malformed"),
        (b"GET / HTTP/1.1\r\nbad header\r\n\r\n", 400, "malformed"),
        (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "malformed"),
    ],
)
def test_bad_requests_are_refused_and_counted(
    serve: Callable[..., tuple[int, MetricsServer]], raw: bytes, code: int, reason: str
) -> None:
    port, srv = serve()
    got, h, _ = split(request(port, raw))
    assert got == code and h["connection"] == "close"
    assert srv.refused[reason] == 1
    assert sum(srv.refused.values()) == 1


def test_one_deadline_per_request_cuts_tricklers(serve: Callable[..., tuple[int, MetricsServer]]) -> None:
    port, srv = serve(request_timeout=1.0)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        closed = False
        for ch in b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 100:  # one byte every 0.2 s: 25 s in all
            try:
                s.sendall(bytes([ch]))
            except OSError:
                closed = True
                break
            s.settimeout(0.2)
            try:
                if s.recv(100) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
    assert closed, "a client trickling one byte at a time was not cut off"
    assert srv.refused["timeout"] == 1


def test_concurrent_scrapes_share_one_snapshot_and_requests_are_bounded(
    serve: Callable[..., tuple[int, MetricsServer]],
) -> None:
    f = FakeCounter(8)
    f.counts[:, 1] = 9
    col = served(SyscallCollector(f))
    release = threading.Event()
    calls = []

    def slow_scrape() -> Exposition:
        calls.append(1)
        release.wait(20)
        return col.scrape()

    port, srv = serve(slow_scrape, max_requests=10)
    results: list[bytes] = []

    def get() -> None:
        results.append(request(port, b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n", timeout=30))

    threads = [threading.Thread(target=get) for _ in range(10)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while srv.in_flight < 10:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # the eleventh is over --web.max-requests while ten wait for the scrape in progress
    code, _, _ = split(request(port, b"GET /metrics HTTP/1.1\r\n\r\n"))
    assert code == 503 and srv.refused["requests"] == 1
    release.set()
    for t in threads:
        t.join(30)
    assert len(calls) == 1  # ten requests, one map read
    bodies = {split(r)[2] for r in results}
    assert len(results) == 10 and len(bodies) == 1 and b'syscall="write"} 9' in bodies.pop()


def test_max_connections(serve: Callable[..., tuple[int, MetricsServer]]) -> None:
    port, srv = serve(max_connections=3)
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    try:
        deadline = time.monotonic() + 10
        while srv.open_connections < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        try:
            answer = request(port, b"GET /-/ready HTTP/1.1\r\n\r\n")
        except ConnectionResetError:
            answer = b""
        assert answer == b""  # closed at once, unanswered
        assert srv.refused["connections"] == 1
    finally:
        for s in held:
            s.close()


# --- web configuration ------------------------------------------------------------------------------


def _pki(tmp: Path) -> tuple[str, str]:
    key, crt = tmp / "k.pem", tmp / "c.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", "/CN=percpu"],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(crt), str(key)


def test_web_config_tls_and_users(tmp_path: Path) -> None:
    import bcrypt

    crt, key = _pki(tmp_path)
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    cfg = tmp_path / "web.yml"
    cfg.write_text(
        f"tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n  min_version: TLS13\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {crt}\n"
        f"http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        f"basic_auth_users:\n  alice: {hashed}\n"
    )
    web = load_web_config(str(cfg))
    assert web.ssl_context is not None and web.auth is not None
    assert web.headers == [("X-Frame-Options", "deny")]
    inline = tmp_path / "inline.yml"
    pem = Path(crt).read_text().replace("\n", "\n    ")
    pkey = Path(key).read_text().replace("\n", "\n    ")
    inline.write_text(f"tls_server_config:\n  cert: |\n    {pem}\n  key: |\n    {pkey}\n")
    assert load_web_config(str(inline)).ssl_context is not None


def test_basic_auth_checks() -> None:
    import bcrypt

    auth = BasicAuth({"alice": bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()})

    def hdr(s: str) -> str:
        return "Basic " + base64.b64encode(s.encode()).decode()

    assert auth.check(hdr("alice:pw")) and auth.check(hdr("alice:pw"))  # the second from the cache
    assert not auth.check(hdr("alice:wrong"))
    assert not auth.check(hdr("bob:pw"))
    assert not auth.check(None) and not auth.check("Basic !!!") and not auth.check("Bearer x")
    assert not auth.check(hdr("alicepw"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls_server_config:\n  cert_file: /nonexistent\n  key_file: /nonexistent\n", "cannot load"),
        ("tls_server_config:\n  key_file: /x\n", "needs cert_file"),
        (
            "tls_server_config:\n  cert_file: C\n  key_file: K\n  client_auth_type: RequestClientCert\n",
            "unverified client certificates",
        ),
        (
            "tls_server_config:\n  cert_file: C\n  key_file: K\n"
            "  client_auth_type: RequireAndVerifyClientCert\n",
            "needs client_ca_file",
        ),
        (
            "tls_server_config:\n  cert_file: C\n  key_file: K\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
            "Go's names",
        ),
        ("tls_server_config:\n  cert_file: C\n  key_file: K\n  min_version: TLS99\n", "TLS99"),
        ("tls_server_config:\n  cert_flie: C\n", "unknown field(s) cert_flie"),
        ("basic_auth_users:\n  bob: plaintext\n", "not a bcrypt hash"),
        ("rate_limit:\n  interval: 1s\n  burst: 5\n", "rate_limit is not implemented"),
        ("http_server_config:\n  headers:\n    Set-Cookie: x\n", "Set-Cookie cannot be set"),
        ("what: [\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_web_config_errors(tmp_path: Path, text: str, message: str) -> None:
    crt, key = _pki(tmp_path)
    cfg = tmp_path / "web.yml"
    cfg.write_text(
        text.replace("cert_file: C", f"cert_file: {crt}").replace("key_file: K", f"key_file: {key}")
    )
    with pytest.raises(WebConfigError, match=re.escape(message)):
        load_web_config(str(cfg))
    with pytest.raises(WebConfigError, match="No such file"):
        load_web_config(str(tmp_path / "absent.yml"))


def test_default_web_config_is_plain() -> None:
    assert WebConfig().ssl_context is None and WebConfig().auth is None


# --- deploy files -----------------------------------------------------------------------------------


def test_daemonset_is_unprivileged_and_valid_yaml() -> None:
    import yaml

    docs = {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "daemonset.yaml").read_text())}
    assert set(docs) == {"Secret", "DaemonSet", "NetworkPolicy"}
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"] == {
        "type": "Localhost",
        "localhostProfile": "percpu-exporter.json",  # deploy/seccomp/, installed on each node
    }
    assert (DEPLOY / "seccomp" / "percpu-exporter.json").is_file()
    assert "hostPID" not in pod and "hostNetwork" not in pod
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["BPF", "PERFMON", "SETUID", "SETGID"]}
    assert c["readinessProbe"]["httpGet"]["path"] == "/-/ready"  # not a scrape
    assert "--user=65534:65534" in c["args"] and "--web.config.file=/etc/percpu/web.yml" in c["args"]
    web = yaml.safe_load(docs["Secret"]["stringData"]["web.yml"])
    assert set(web) == {"tls_server_config", "basic_auth_users"}
    policy = docs["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"] == {"app": "percpu-exporter"}
    assert [p["port"] for p in policy["ingress"][0]["ports"]] == [9435] and policy["egress"] == []


def _gen_seccomp() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_seccomp", DEPLOY.parent / "tools" / "gen_seccomp.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_seccomp_profile_allows_bpf_and_nothing_else_the_default_refuses() -> None:
    """In the OCI form every engine reads (containerd reads a Localhost profile straight into the OCI
    spec: a rule with moby's includes/excludes would apply to every container); bpf() allowed once,
    perf_event_open() still refused."""
    import json

    profile = json.loads((DEPLOY / "seccomp" / "percpu-exporter.json").read_text())
    assert set(profile) == {"defaultAction", "defaultErrnoRet", "architectures", "syscalls"}
    assert {"SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"} <= set(profile["architectures"])
    assert all(set(r) <= {"names", "action", "args", "errnoRet"} for r in profile["syscalls"])
    allowing = [r for r in profile["syscalls"] if r["action"] == "SCMP_ACT_ALLOW"]
    assert [r for r in allowing if "bpf" in r["names"]] == [{"names": ["bpf"], "action": "SCMP_ACT_ALLOW"}]
    assert not [r for r in allowing if "perf_event_open" in r["names"]]
    (refusing,) = [r for r in profile["syscalls"] if "perf_event_open" in r["names"]]
    assert refusing["action"] == "SCMP_ACT_ERRNO" and refusing["errnoRet"] == 1  # EPERM, as the default


def test_the_seccomp_profile_is_what_the_engines_default_gives() -> None:
    """tools/gen_seccomp.py regenerates the shipped profile from the installed default (containers-common's,
    which podman installs) for the manifest's capabilities: a change to either shows here."""
    import json

    gen = _gen_seccomp()
    if not os.path.exists(gen.BASE):
        pytest.skip(f"{gen.BASE} is not installed (podman's package brings it: scripts/setup.sh --dev)")
    base = json.loads(Path(gen.BASE).read_text())
    assert gen.manifest_caps() == ["CAP_BPF", "CAP_PERFMON", "CAP_SETGID", "CAP_SETUID"]
    shipped = (DEPLOY / "seccomp" / "percpu-exporter.json").read_text()
    assert gen.render(gen.generate(base, gen.manifest_caps())) == shipped, "run tools/gen_seccomp.py"


@pytest.mark.parametrize("engine", [(4, 3, 1), (4, 8, 0)])
def test_the_pod_played_for_the_daemonset_has_its_spec(engine: tuple[int, ...]) -> None:
    """What the container check plays (tests/container/kube.py) is the manifest's, but for the changes it
    lists: podman 4.3.1 (bookworm's) gets the template's Pod, the Secret's files from a host directory and
    no ports; 4.8 the DaemonSet and the Secret as they are. Every podman gets the seccomp annotation."""
    import copy

    import yaml

    from tests.container.kube import SECCOMP_ANNOTATION, playable

    manifest = [d for d in yaml.safe_load_all((DEPLOY / "daemonset.yaml").read_text()) if d]
    before = copy.deepcopy(manifest)
    play = playable(
        manifest,
        engine,
        secret_dirs={"percpu-exporter-web": "/srv/web"},
        listen="127.0.0.1:1",
        extra_args=["-x"],
    )
    assert manifest == before  # not edited in place
    assert play.annotations == {SECCOMP_ANNOTATION + "percpu-exporter": "localhost/percpu-exporter.json"}
    (ds,) = [d for d in manifest if d["kind"] == "DaemonSet"]
    template = copy.deepcopy(ds["spec"]["template"])
    (ctr,) = template["spec"]["containers"]
    ctr["args"] = [a for a in ctr["args"] if not a.startswith("--listen=")] + ["--listen=127.0.0.1:1", "-x"]
    kinds = [d["kind"] for d in play.documents]
    if engine < (4, 4):
        assert kinds == ["Pod"] and sorted(play.unplayable) == ["DaemonSet", "NetworkPolicy"]
        (pod,) = play.documents
        assert pod["metadata"]["labels"] == template["metadata"]["labels"]
        del ctr["ports"]
        (web,) = [v for v in template["spec"]["volumes"] if v["name"] == "web"]
        web.pop("secret")
        web["hostPath"] = {"path": "/srv/web", "type": "Directory"}
        assert pod["spec"] == template["spec"]
    else:
        assert kinds == ["Secret", "DaemonSet"] and play.unplayable == ["NetworkPolicy"]
        assert play.documents[1]["spec"]["template"] == template
    assert len(play.changes) == (6 if engine < (4, 4) else 3), play.changes


def test_systemd_unit_is_loopback_and_scores_low() -> None:
    unit = (DEPLOY / "percpu-exporter.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", unit, re.M)
    assert "--listen 127.0.0.1:" in exec_start
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is not installed: scripts/setup.sh --dev installs systemd")
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(DEPLOY / "percpu-exporter.service")],
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_COLORS": "0"},
    )
    score = float(re.findall(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)[0])
    print(f"\nsystemd-analyze security --offline=yes: {score}")
    assert score <= 2.0, out.stdout[-3000:]


def test_a_scrape_not_built_within_the_request_timeout_is_a_503_that_says_so(
    serve: Callable[..., tuple[int, MetricsServer]],
) -> None:
    """The request's deadline covers building its answer: a scrape late past it gets a 503 naming the
    option to raise, within the deadline, not a connection closed with nothing; the next one is served."""
    f = FakeCounter(4)
    f.counts[:, 0] = 3
    col = served(SyscallCollector(f))
    release = threading.Event()

    def slow_scrape() -> Exposition:
        release.wait(60)
        return col.scrape()

    port, srv = serve(slow_scrape, request_timeout=2.0)
    get = b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n"
    try:
        code, h, body = split(request(port, get, timeout=30))
    finally:
        release.set()
    assert code == 503 and h["connection"] == "close", (code, h, body)
    assert b"--web.request-timeout" in body and b"2 s" in body
    assert srv.refused["timeout"] == 1
    code, _, body = split(request(port, get, timeout=30))
    assert code == 200 and b"percpu_syscalls_total" in body
