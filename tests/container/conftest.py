"""What the container check shares: podman in a store of its own, the image built once per session by
deploy/build-image, the manifest, and cleanup of everything a test started, however it ends.

Where containers cannot run (not root, no podman, an engine that cannot start one), every test here is
skipped with the reason; with ``PERCPU_CONTAINERS=require`` (scripts/container-check) that is a failure.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from .engine import HANG, Engine, configure, why_not

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy")
PROFILE = os.path.join(DEPLOY, "seccomp", "percpu-exporter.json")
SESSION = f"s{os.getpid()}"  # names and labels of this session's containers, pods and image
LABEL = f"percpu-check={SESSION}"
_built: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = os.path.dirname(os.path.abspath(__file__)) + os.sep
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.container)


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    reason = why_not()
    if reason:
        if os.environ.get("PERCPU_CONTAINERS") == "require":
            pytest.fail(f"containers cannot run here: {reason}")
        pytest.skip(f"containers cannot run here: {reason}")
    eng = configure()
    yield eng
    # Whatever a test left (it was stopped mid-way): this session's containers and pods, by label.
    for kind in ("pod", "container"):
        ids = eng.podman(kind, "ps", "-a", "-q", "--filter", f"label={LABEL}", check=False).stdout.split()
        if ids:
            eng.podman(kind, "rm", "-f", *ids, check=False)


@pytest.fixture(scope="session")
def image(engine: Engine) -> Iterator[str]:
    """The image under test: ``$PERCPU_IMAGE`` when given, else built now from this checkout."""
    given = os.environ.get("PERCPU_IMAGE")
    if given:
        yield given
        return
    tag = f"localhost/percpu-check:{SESSION}"
    out = subprocess.run(
        [os.path.join(DEPLOY, "build-image"), "--tag", tag],
        env=engine.env,
        capture_output=True,
        text=True,
        timeout=HANG,
    )
    if out.returncode != 0:
        pytest.fail(f"deploy/build-image failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    _built.append(out.stdout.strip().splitlines()[-1])
    try:
        yield tag
    finally:
        engine.podman("rmi", "--force", tag, check=False)


@pytest.fixture(scope="session")
def manifest() -> list[dict[str, Any]]:
    with open(os.path.join(DEPLOY, "daemonset.yaml"), encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def exporter_container(manifest: list[dict[str, Any]]) -> dict[str, Any]:
    (ds,) = [d for d in manifest if d["kind"] == "DaemonSet"]
    (ctr,) = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "percpu-exporter"]
    return ctr  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def run_options(manifest: list[dict[str, Any]]) -> list[str]:
    """`podman run` options that give a container what the manifest gives the exporter's: its user, its
    capabilities and nothing else, no privilege escalation, a read-only root, the shipped seccomp
    profile, the host's BTF read-only; on the host's network (loopback only: the tests listen there)."""
    sc = exporter_container(manifest)["securityContext"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    options = ["--label", LABEL, "--network", "host", "--user", str(sc["runAsUser"]), "--cap-drop", "all"]
    options += ["--cap-add", ",".join(sc["capabilities"]["add"])]
    if sc["allowPrivilegeEscalation"] is False:
        options += ["--security-opt", "no-new-privileges"]
    if sc["readOnlyRootFilesystem"]:
        options += ["--read-only"]
    options += ["--volume", "/sys/kernel/btf:/sys/kernel/btf:ro"]
    return [*options, "--security-opt", f"seccomp={PROFILE}"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _built:
        terminalreporter.write_line(line)
