"""podman as the container check uses it, and whether this machine can run a container at all.

The check keeps everything in a store of its own (``$PERCPU_CONTAINER_CACHE``, else
``~/.cache/percpu/container``; run-time state under /run/percpu-container), so it never touches the
machine's own images or containers, and podman reads a configuration written here (through
``CONTAINERS_CONF`` and ``CONTAINERS_STORAGE_CONF``) that works where the defaults do not:

* runc, not crun: bookworm's crun 1.8 refuses a machine whose cgroups are mounted v1 and v2 at once;
* cgroupfs where systemd is not running (podman's default manager is systemd's);
* the containers' open-file and process limits at most what this process has: podman's defaults raise
  them (nofile 1048576), which needs CAP_SYS_RESOURCE, and root in a sandbox may not hold it;
* a pause image of its own for the pods' infra containers, made from busybox-static: podman builds its
  own from catatonit, which bookworm does not package.

``python -m tests.container.engine`` prints why containers cannot run here (exit 1), or nothing (exit 0):
scripts/test asks it before running scripts/container-check.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from .kube import version_tuple

HANG = 600.0  # a guard against a hang, never a measurement
RUN = "/run/percpu-container"
PAUSE_IMAGE = "localhost/percpu-check-pause:1"
TOOLS = ("podman", "runc", "mmdebstrap")


def cache_dir() -> str:
    default = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "percpu")
    return os.environ.get("PERCPU_CONTAINER_CACHE") or os.path.join(default, "container")


@dataclass(frozen=True)
class Engine:
    env: dict[str, str]  # the environment every podman command (and deploy/build-image) runs with
    version: tuple[int, ...]

    def podman(
        self, *args: str, check: bool = True, timeout: float = HANG, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """``podman ARGS`` in the check's store; its output captured. A failure (with ``check``) raises
        :class:`PodmanFailed`, which says what podman said."""
        out: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout, **kw
        )
        if check and out.returncode != 0:
            raise PodmanFailed(out.returncode, out.args, out.stdout, out.stderr)
        return out


class PodmanFailed(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr.strip()[-3000:]}"


def _limit(which: int, wanted: int) -> int:
    hard = resource.getrlimit(which)[1]
    return wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)


def configure() -> Engine:
    """Write the check's podman configuration and return the environment that selects it."""
    cache = cache_dir()
    os.makedirs(cache, exist_ok=True)
    os.makedirs(RUN, mode=0o700, exist_ok=True)
    nofile = _limit(resource.RLIMIT_NOFILE, 2048)
    nproc = _limit(resource.RLIMIT_NPROC, 4096)
    manager = "systemd" if os.path.isdir("/run/systemd/system") else "cgroupfs"
    files = {
        "containers.conf": (
            "# written by tests/container/engine.py for scripts/container-check\n"
            "[containers]\n"
            f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
            'log_driver = "k8s-file"\n'
            "[engine]\n"
            'runtime = "runc"\n'
            f'cgroup_manager = "{manager}"\n'
            'events_logger = "file"\n'
            f'tmp_dir = "{RUN}/libpod"\n'
            f'infra_image = "{PAUSE_IMAGE}"\n'
        ),
        "storage.conf": (
            "# written by tests/container/engine.py for scripts/container-check\n"
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{os.path.join(cache, "storage")}"\n'
            f'runroot = "{RUN}/storage"\n'
        ),
    }
    for name, text in files.items():
        path = os.path.join(cache, name)
        with tempfile.NamedTemporaryFile("w", dir=cache, delete=False, encoding="utf-8") as f:
            f.write(text)
        os.replace(f.name, path)  # concurrent checks may write it at once: each sees a whole file
    env = {
        **os.environ,
        "CONTAINERS_CONF": os.path.join(cache, "containers.conf"),
        "CONTAINERS_STORAGE_CONF": os.path.join(cache, "storage.conf"),
    }
    out = subprocess.run(
        ["podman", "version", "--format", "{{.Client.Version}}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=HANG,
    )
    return Engine(env, version_tuple(out.stdout))


def pause_image(engine: Engine) -> None:
    """The infra containers' image: busybox-static's sleep, stopped by SIGKILL (it has nothing to save)."""
    if engine.podman("image", "exists", PAUSE_IMAGE, check=False).returncode == 0:
        return
    with tempfile.TemporaryDirectory() as tmp:
        os.mkdir(os.path.join(tmp, "bin"))
        shutil.copy2("/bin/busybox", os.path.join(tmp, "bin", "busybox"))
        subprocess.run(["tar", "-C", tmp, "-cf", os.path.join(tmp, "pause.tar"), "bin"], check=True)
        engine.podman(
            "import",
            "--quiet",
            "--change",
            'ENTRYPOINT ["/bin/busybox", "sleep", "2147483647"]',
            "--change",
            "STOPSIGNAL SIGKILL",
            os.path.join(tmp, "pause.tar"),
            PAUSE_IMAGE,
        )


def why_not() -> str | None:
    """Why this machine cannot run the container check, or None when it can (a container ran)."""
    if os.geteuid() != 0:
        return "needs root (podman as root, BPF in the container)"
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        return f"{', '.join(missing)} not installed (scripts/setup.sh --dev installs them)"
    if not os.path.exists("/bin/busybox"):
        return "busybox-static not installed (scripts/setup.sh --dev installs it)"
    try:
        engine = configure()
        pause_image(engine)
        engine.podman(
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "/bin/busybox",
            PAUSE_IMAGE,
            "true",
            timeout=120,
        )
    except subprocess.CalledProcessError as exc:
        said = (exc.stderr or exc.stdout or "").strip().splitlines()
        reason = f"podman cannot run a container here: {said[-1] if said else exc}"
        if "remount /," in reason:  # seen in a chroot: unpacking a layer remounts the root
            reason += " (a chroot whose root is not a mount point: bind-mount it on itself before chroot)"
        return reason
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"podman cannot run a container here: {exc}"
    return None


def main() -> int:
    reason = why_not()
    if reason:
        print(reason)
        return 1
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
