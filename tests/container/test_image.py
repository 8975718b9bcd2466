"""percpu's container image, run for real with podman: what is in it, its default command, `percpu stat`
and `percpu top` in it, the capabilities it starts with and keeps, the shipped seccomp profile against the
engine's default, and deploy/daemonset.yaml played by `podman kube play` and scraped by Prometheus over TLS
with basic auth, counting a workload on the host exactly.

The machine is shared: every container and pod is named and labelled after this session and removed
however a test ends, servers listen on 127.0.0.1 only, and the counts are of this session's workload,
found by a command name no other session uses.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from percpu.cpus import cpu_lists

from ..conftest import unique_comm
from ..kernel.conftest import fetch, free_port, query, running_prometheus
from ..kernel.test_exporter_serving import make_pki
from .conftest import LABEL, PROFILE, SESSION
from .engine import HANG, Engine
from .kube import SECCOMP_ANNOTATION, playable

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOAD = os.path.join(HERE, "..", "helpers", "syscall_workload.py")
TOOLS = os.path.join(HERE, "..", "..", "tools")
CALLS = 300_000
# What the manifest grants (CAP_SETGID 6, CAP_SETUID 7, CAP_PERFMON 38, CAP_BPF 39), as /proc shows it.
MANIFEST_CAPS = (1 << 6) | (1 << 7) | (1 << 38) | (1 << 39)


def status(pid: int | str, task: int | str | None = None) -> dict[str, str]:
    path = f"/proc/{pid}/status" if task is None else f"/proc/{pid}/task/{task}/status"
    with open(path, encoding="ascii", errors="replace") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def caps(st: dict[str, str], field: str) -> int:
    return int(st[field], 16)


def workload(cpu: int, comm: str, calls: int = CALLS) -> dict[str, Any]:
    """CALLS getppid() calls from a host process pinned to ``cpu`` and named ``comm``."""
    out = subprocess.run(
        [sys.executable, WORKLOAD, str(calls), str(cpu), "--comm", comm],
        capture_output=True,
        text=True,
        check=True,
        timeout=HANG,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


# --- the image ------------------------------------------------------------------------------------


def test_the_image_holds_percpu_and_nothing_to_build_with(engine: Engine, image: str) -> None:
    size = int(engine.podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
    probe = textwrap.dedent(
        """
        import importlib.util as u, json, os, shutil, sys, numpy, percpu
        tools = ["gcc", "cc", "clang", "ld", "as", "make", "pip", "pip3", "apt", "apt-get"]
        headers = [f for _, _, fs in os.walk("/usr/include") for f in fs if f.endswith(".h")]
        debs = [f for f in os.listdir("/var/cache/apt/archives") if f.endswith(".deb")]
        caches = debs + [p for p in ("/root/.cache", "/tmp") if os.path.isdir(p) and os.listdir(p)]
        print(json.dumps({
            "tools": [t for t in tools if shutil.which(t)], "headers": len(headers), "caches": caches,
            "pip": u.find_spec("pip") is not None, "percpu": percpu.__file__, "numpy": numpy.__file__,
            "web": [u.find_spec(m) is not None for m in ("yaml", "bcrypt")], "python": sys.version.split()[0],
        }))
        """
    )
    out = engine.podman(
        "run", "--rm", "--label", LABEL, "--network", "none", "--entrypoint", "python3", image, "-c", probe
    )
    got = json.loads(out.stdout)
    print(f"\n{image}: {size / 1e6:.1f} MB; {got}")
    assert got["tools"] == [] and got["headers"] == 0 and got["pip"] is False and got["caches"] == []
    assert got["percpu"].startswith("/usr/local/lib/python3")  # the wheel, installed by the image's python3
    assert got["numpy"].startswith("/usr/lib/python3/dist-packages/")  # Debian's numpy, not a wheel's
    assert got["web"] == [True, True]  # PyYAML and bcrypt, for --web.config.file
    assert size < 180e6, f"{size / 1e6:.1f} MB: what grew?"


def test_the_default_command_is_the_exporter(engine: Engine, image: str) -> None:
    config = json.loads(engine.podman("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    assert config["Entrypoint"] == ["/usr/local/bin/percpu"] and config["Cmd"] == ["exporter"]
    assert "OPENBLAS_NUM_THREADS=1" in config["Env"]  # the exporter drops privileges while single-threaded
    out = engine.podman("run", "--rm", "--label", LABEL, "--network", "none", image, "--version")
    assert out.stdout.strip() == f"percpu {config['Labels']['org.opencontainers.image.version']}"


# --- percpu stat and percpu top in the container --------------------------------------------------


@contextlib.contextmanager
def started(engine: Engine, name: str, *argv: str, ready: str) -> Iterator[subprocess.Popen[str]]:
    """`podman run --name NAME ARGV` in the background until its stderr says ``ready``; removed after."""
    p = subprocess.Popen(
        ["podman", "run", "--name", name, *argv],
        env=engine.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stderr is not None
        said = ""
        while ready not in said:
            line = p.stderr.readline()
            if not line:
                pytest.fail(f"{name} ended before saying {ready!r}: {said}")
            said += line
        yield p
    finally:
        engine.podman("rm", "-f", name, check=False)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(60)
        if p.poll() is None:
            p.kill()
            p.wait()


def test_stat_in_the_container_counts_a_workload_on_the_host_exactly(
    engine: Engine, image: str, run_options: list[str]
) -> None:
    """The counters are kernel-wide: a container without the host's pid namespace counts a host process."""
    comm = unique_comm("pcpu-cstat")
    cpu = list(cpu_lists().online)[-1]
    name = f"percpu-stat-{SESSION}"
    argv = [*run_options, image, "stat", "-f", "json", "-c", comm]
    with started(engine, name, *argv, ready="counting system calls") as p:
        work = workload(cpu, comm)
        engine.podman("stop", "--time", "30", name)  # SIGTERM ends the count, like Ctrl-C
        out, err = p.communicate(timeout=HANG)
    assert p.returncode == 0, err
    report = json.loads(out)
    (getppid,) = [s for s in report["syscalls"] if s["name"] == "getppid"]
    print(
        f"\npercpu stat in the container: {getppid['per_cpu']} getppid() calls; the host process made "
        f"{work['calls']:,} on cpu{cpu}"
    )
    assert getppid["per_cpu"] == {str(c): (CALLS if c == cpu else 0) for c in report["cpus"]}


def _tmux(server: str, *args: str, env: dict[str, str]) -> str:
    out = subprocess.run(["tmux", "-L", server, *args], env=env, capture_output=True, text=True, timeout=30)
    out.check_returncode()
    return out.stdout


def test_top_runs_in_the_containers_terminal(engine: Engine, image: str, run_options: list[str]) -> None:
    """The full-screen view, in the terminal podman gives the container (-t): the image has the curses
    library and terminal descriptions it needs. q quits, and the container ends with it."""
    if not shutil.which("tmux"):
        pytest.fail("tmux is not installed: scripts/setup.sh --dev installs it")
    comm = unique_comm("pcpu-ctop")
    cpu = list(cpu_lists().online)[-1]
    name, server = f"percpu-top-{SESSION}", f"percpu-check-{SESSION}"
    command = shlex.join(
        ["podman", "run", "-it", "--rm", "--name", name, *run_options, image, "top", "-i", "0.5", "-c", comm]
    )
    _tmux(server, "new-session", "-d", "-s", "top", "-x", "120", "-y", "40", command, env=engine.env)
    try:
        deadline = time.monotonic() + HANG
        screen = ""
        while "getppid" not in screen:
            workload(cpu, comm, 20_000)
            screen = _tmux(server, "capture-pane", "-p", "-t", "top", env=engine.env)
            assert time.monotonic() < deadline, screen
            time.sleep(0.5)
        shown = "\n".join(line for line in screen.splitlines() if line.strip())
        print(f"\npercpu top in the container, one screen:\n{shown}")
        _tmux(server, "send-keys", "-t", "top", "q", env=engine.env)
        while engine.podman("container", "exists", name, check=False).returncode == 0:
            assert time.monotonic() < deadline, "top did not quit on q"
            time.sleep(0.2)
    finally:
        subprocess.run(["tmux", "-L", server, "kill-server"], capture_output=True, env=engine.env)
        engine.podman("rm", "-f", name, check=False)
        with contextlib.suppress(OSError):  # the server's socket, which kill-server leaves
            os.unlink(os.path.join(os.environ.get("TMUX_TMPDIR", "/tmp"), f"tmux-{os.getuid()}", server))


# --- seccomp --------------------------------------------------------------------------------------


def test_the_default_seccomp_profile_fails_cleanly(
    engine: Engine, image: str, run_options: list[str]
) -> None:
    """bookworm's podman (containers-common 0.50) refuses bpf() to a container without CAP_SYS_ADMIN: the
    exporter says so in one line, names the profile that fixes it, and exits 1; no traceback."""
    i = run_options.index(f"seccomp={PROFILE}")
    options = run_options[: i - 1] + run_options[i + 1 :]  # the engine's default profile instead
    out = engine.podman(
        "run", "--rm", *options, image, "exporter", "--listen", f"127.0.0.1:{free_port()}", check=False
    )
    print(f"\nexit {out.returncode}: {out.stderr.strip()}")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("percpu: load syscount.bpf.o: Operation not permitted")
    assert "but runs under a seccomp filter, which may refuse bpf()" in line
    assert "deploy/seccomp/percpu-exporter.json" in line


def _oci_seccomp(engine: Engine, image: str, options: list[str]) -> dict[str, Any]:
    """The seccomp filter podman resolved for a container created with ``options`` (its OCI config)."""
    name = f"percpu-seccomp-{SESSION}"
    engine.podman("create", "--name", name, "--label", LABEL, *options, image)
    try:
        engine.podman("init", name)
        path = engine.podman("inspect", "--format", "{{.OCIConfigPath}}", name).stdout.strip()
        with open(path, encoding="utf-8") as f:
            resolved: dict[str, Any] = json.load(f)["linux"]["seccomp"]
        return resolved
    finally:
        engine.podman("rm", "-f", name, check=False)


def _rules(profile: dict[str, Any], leave_out: tuple[str, ...] = ()) -> set[tuple[Any, ...]]:
    """One (syscall, action, errno, conditions) per name of every rule; valueTwo 0 is the same as none."""
    out = set()
    for r in profile["syscalls"]:
        args = [{k: v for k, v in a.items() if not (k == "valueTwo" and v == 0)} for a in r.get("args") or []]
        for n in r["names"]:
            if n not in leave_out:
                out.add((n, r["action"], r.get("errnoRet"), json.dumps(args, sort_keys=True)))
    return out


def test_the_shipped_profile_is_the_engines_default_for_the_manifests_container_plus_bpf(
    engine: Engine, image: str, run_options: list[str]
) -> None:
    """Nothing but bpf() is allowed that the engine's own default does not allow this container: podman's
    resolution of its default for the manifest's capabilities, against tools/gen_seccomp.py's for this
    architecture; and with the shipped file podman allows bpf() and still refuses perf_event_open()."""
    sys.path.insert(0, TOOLS)
    try:
        import gen_seccomp
    finally:
        sys.path.remove(TOOLS)
    i = run_options.index(f"seccomp={PROFILE}")
    default_options = run_options[: i - 1] + run_options[i + 1 :]
    default = _oci_seccomp(engine, image, default_options)
    with open(gen_seccomp.BASE, encoding="utf-8") as f:
        base = json.load(f)
    arch = {"x86_64": "amd64", "aarch64": "arm64"}[os.uname().machine]
    ours = gen_seccomp.generate(base, gen_seccomp.manifest_caps(), (arch,))
    assert (default["defaultAction"], default.get("defaultErrnoRet")) == (
        ours["defaultAction"],
        ours["defaultErrnoRet"],
    )
    assert default["architectures"] == ours["architectures"]
    assert _rules(default, ("bpf",)) == _rules(ours, ("bpf",))
    assert ("bpf", "SCMP_ACT_ERRNO", 1, "[]") in _rules(default)  # EPERM: the refusal the profile lifts
    shipped = _oci_seccomp(engine, image, run_options)
    assert ("bpf", "SCMP_ACT_ALLOW", None, "[]") in _rules(shipped)
    assert ("perf_event_open", "SCMP_ACT_ERRNO", 1, "[]") in _rules(shipped)
    print(
        f"\npodman's default for this container: {len(_rules(default))} (syscall, action) rules; "
        f"the shipped profile on {arch}: the same, with bpf allowed instead of refused"
    )


# --- the manifest, played -------------------------------------------------------------------------


def _web_files(manifest: list[dict[str, Any]], where: Path, password: str) -> dict[str, str]:
    """The manifest Secret's files, with a real certificate, key and password hash in place of its
    placeholders; the web config is the manifest's own otherwise."""
    import bcrypt

    (secret,) = [d for d in manifest if d["kind"] == "Secret"]
    pki = make_pki(where)
    web = yaml.safe_load(secret["stringData"]["web.yml"])
    (user,) = web["basic_auth_users"]
    web["basic_auth_users"][user] = bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode()
    files = where / "secret"
    files.mkdir()
    (files / "web.yml").write_text(yaml.safe_dump(web))
    shutil.copy(pki["server"] + ".crt", files / "tls.crt")
    shutil.copy(pki["server"] + ".key", files / "tls.key")
    assert set(secret["stringData"]) == {p.name for p in files.iterdir()}
    for p in files.iterdir():
        p.chmod(0o400)  # the Secret's defaultMode
    return {"dir": str(files), "user": user, "ca": pki["ca"] + ".crt", "secret": secret["metadata"]["name"]}


def test_the_manifest_plays_drops_every_privilege_and_is_scraped_exactly(
    engine: Engine, image: str, manifest: list[dict[str, Any]], tmp_path: Path
) -> None:
    # deploy/daemonset.yaml as it is (its image: the one just built), created but not started: which of
    # its kinds does this podman play?
    verbatim = copy.deepcopy(manifest)
    for d in verbatim:
        if d["kind"] == "DaemonSet":
            d["spec"]["template"]["spec"]["containers"][0]["image"] = image
            d["metadata"] = {
                **d["metadata"],
                "labels": {**d["metadata"].get("labels", {}), "percpu-check": SESSION},
            }
    (tmp_path / "verbatim.yaml").write_text(yaml.safe_dump_all(verbatim))
    played = engine.podman(
        "--log-level",
        "info",
        "kube",
        "play",
        "--start=false",
        "--network",
        "host",
        str(tmp_path / "verbatim.yaml"),
    )
    skipped = sorted(set(re.findall(r"Kube kind (\w+) not supported", played.stderr)))
    engine.podman("pod", "rm", "-f", "--ignore", "percpu-exporter", check=False)
    engine.podman("secret", "rm", "percpu-exporter-web", check=False)
    version = ".".join(map(str, engine.version))
    print(f"\npodman {version}, kube play deploy/daemonset.yaml: kinds not supported: {skipped}")

    password = "scrape-" + SESSION
    web = _web_files(manifest, tmp_path, password)
    port = free_port()
    comm = unique_comm("pcpu-cpod")
    play = playable(
        manifest,
        engine.version,
        secret_dirs={web["secret"]: web["dir"]},
        listen=f"127.0.0.1:{port}",
        extra_args=[f"--comm={comm}"],
    )
    # The engine's own verdict and the generator's version gates agree: what it skipped was replaced.
    assert sorted(play.unplayable) == skipped, (play.unplayable, skipped)
    for doc in play.documents:
        if doc["kind"] == "Pod":
            doc["metadata"]["name"] += "-" + SESSION  # several sessions may share the store
            doc["metadata"]["labels"]["percpu-check"] = SESSION
            doc["spec"]["containers"][0]["image"] = image
            pod, args = doc["metadata"]["name"], doc["spec"]["containers"][0]["args"]
    play.changes.append(f"Pod name {pod} and image {image}: this session's")
    print("what differs from deploy/daemonset.yaml:\n  " + "\n  ".join(play.changes))
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump_all(play.documents))
    annotations = [a for k, v in play.annotations.items() for a in ("--annotation", f"{k}={v}")]
    assert annotations == [
        "--annotation",
        f"{SECCOMP_ANNOTATION}percpu-exporter=localhost/percpu-exporter.json",
    ]
    ctr = f"{pod}-percpu-exporter"
    try:
        engine.podman(
            "kube",
            "play",
            "--start=false",
            "--network",
            "host",
            "--seccomp-profile-root",
            os.path.dirname(PROFILE),
            *annotations,
            str(tmp_path / "pod.yaml"),
        )
        _check_the_pod(engine, pod, ctr, args, port, comm, web, password)
    finally:
        engine.podman("pod", "rm", "-f", pod, check=False)


def _check_the_pod(
    engine: Engine,
    pod: str,
    ctr: str,
    args: list[str],
    port: int,
    comm: str,
    web: dict[str, str],
    password: str,
) -> None:
    # Before the exporter runs: the container's process, made by the runtime and waiting to execute
    # percpu (`podman init`), holds what the manifest grants and nothing else.
    engine.podman("init", ctr)
    pid = engine.podman("inspect", "--format", "{{.State.Pid}}", ctr).stdout.strip()
    before = status(pid)
    print(
        f"before: {before['Name']} Uid {before['Uid'].split()[0]} Gid {before['Gid'].split()[0]} CapEff "
        f"{before['CapEff']} CapPrm {before['CapPrm']} CapInh {before['CapInh']} CapAmb {before['CapAmb']} "
        f"CapBnd {before['CapBnd']} NoNewPrivs {before['NoNewPrivs']} Seccomp {before['Seccomp']}"
    )
    assert before["Uid"].split() == ["0"] * 4
    for field in ("CapEff", "CapPrm", "CapBnd"):
        assert caps(before, field) == MANIFEST_CAPS, (field, before[field])
    assert caps(before, "CapInh") == caps(before, "CapAmb") == 0
    assert (
        before["NoNewPrivs"] == "1" and before["Seccomp"] == "2"
    )  # allowPrivilegeEscalation false; a filter

    engine.podman("pod", "start", pod)
    base = f"https://127.0.0.1:{port}"
    trusted = ssl.create_default_context(cafile=web["ca"])
    unverified = ssl._create_unverified_context()  # as the kubelet's HTTPS probes are
    deadline = time.monotonic() + HANG
    while True:
        with contextlib.suppress(OSError):
            if fetch(base + "/-/ready", unverified)[0] == 200:
                break
        state = engine.podman("inspect", "--format", "{{.State.Status}}", ctr).stdout.strip()
        if state != "running" or time.monotonic() > deadline:
            pytest.fail(
                f"the exporter did not start ({state}): {engine.podman('logs', ctr, check=False).stderr}"
            )
        time.sleep(0.2)
    assert fetch(base + "/-/healthy", unverified) == (200, b"OK\n")  # the liveness probe's question

    # After attaching: nobody, no capability, in every thread (checked again after Prometheus's scrapes,
    # which start the exporter's scrape thread).
    pid = engine.podman("inspect", "--format", "{{.State.Pid}}", ctr).stdout.strip()
    print(f"after:  {_unprivileged(pid)}")
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    assert argv == ["/usr/bin/python3", "/usr/local/bin/percpu", *args], argv  # the Pod's args, as played

    # Prometheus scrapes it over TLS with basic auth, while a host process pinned to one CPU calls
    # getppid() CALLS times: what Prometheus stores is that count, on that CPU only.
    assert fetch(base + "/metrics", trusted, (web["user"], "wrong"))[0] == 401
    assert fetch(base + "/metrics", trusted)[0] == 401
    cpu = list(cpu_lists().online)[-1]
    config = (
        "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n"
        "scrape_configs:\n  - job_name: percpu\n    scheme: https\n"
        f"    tls_config: {{ca_file: {web['ca']}}}\n"
        f"    basic_auth: {{username: {web['user']}, password: {password}}}\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
    )
    with running_prometheus(config) as api:

        def value(q: str) -> float:
            res = query(api, q)
            return float(res[0]["value"][1]) if res else 0.0

        while value('sum_over_time(up{job="percpu"}[5m])') < 2:
            assert time.monotonic() < deadline, "Prometheus did not scrape the exporter"
            time.sleep(0.5)
        work = workload(cpu, comm)
        total = f'percpu_syscalls_total{{syscall="getppid",cpu="{cpu}"}}'
        while value(total) < work["calls"]:
            assert time.monotonic() < deadline, f"Prometheus has {value(total)} of {work['calls']}"
            time.sleep(0.5)
        time.sleep(4)  # two more scrapes, which must not add a call
        stored = value(total)
        elsewhere = value(f'sum(percpu_syscalls_total{{syscall="getppid",cpu!="{cpu}"}})')
        up = value('min_over_time(up{job="percpu"}[5m])')
    print(f"after scrapes: {_unprivileged(pid)}")
    print(
        f"Prometheus stored {stored:,.0f} getppid() calls on cpu{cpu} (the host process made "
        f"{work['calls']:,}), {elsewhere:,.0f} elsewhere; up {up:.0f} on every scrape"
    )
    assert stored == work["calls"] == CALLS and elsewhere == 0 and up == 1

    # SIGTERM (the pod stopping) detaches the programs and exits 0.
    engine.podman("pod", "stop", "--time", "30", pod)
    code = engine.podman("inspect", "--format", "{{.State.ExitCode}}", ctr).stdout.strip()
    assert code == "0", engine.podman("logs", ctr, check=False).stderr


def _unprivileged(pid: str) -> str:
    """Every thread of ``pid`` is nobody's and holds no capability; the bounding set is the runtime's
    (dropping from it needs CAP_SETPCAP, which the manifest does not grant; with no_new_privs it can
    grant nothing). Returns what the main thread's status says."""
    tasks = os.listdir(f"/proc/{pid}/task")
    for task in tasks:
        st = status(pid, task)
        assert st["Uid"].split() == ["65534"] * 4 and st["Gid"].split() == ["65534"] * 4, st
        for field in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
            assert caps(st, field) == 0, (task, field, st[field])
        assert caps(st, "CapBnd") == MANIFEST_CAPS and st["NoNewPrivs"] == "1" and st["Seccomp"] == "2"
    st = status(pid)
    return (
        f"{st['Name']} Uid {st['Uid'].split()[0]} Gid {st['Gid'].split()[0]} CapEff {st['CapEff']} "
        f"CapPrm {st['CapPrm']} CapInh {st['CapInh']} CapAmb {st['CapAmb']} CapBnd {st['CapBnd']} "
        f"NoNewPrivs {st['NoNewPrivs']} Seccomp {st['Seccomp']}; {len(tasks)} thread(s), all alike"
    )
