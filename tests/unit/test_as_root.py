"""scripts/lib/as-root.sh: the scripts rerun themselves through sudo when not root, with the settings they
read passed on (sudo resets the environment), and say what to do where there is no sudo."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _exe(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _run(tmp_path: Path, with_sudo: bool) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _exe(bin_dir / "id", "echo 1000\n")  # not root, whoever runs the tests
    if with_sudo:
        _exe(bin_dir / "sudo", 'for a in "$@"; do echo "arg:$a"; done\n')
    basename = shutil.which("basename")
    assert basename
    (bin_dir / "basename").symlink_to(basename)
    script = tmp_path / "needs-root"
    script.write_text(f'#!/bin/bash\n. "{REPO}/scripts/lib/as-root.sh"\necho "ran as root"\n')
    script.chmod(0o755)
    env = {
        "PATH": str(bin_dir),  # only the shims: no real sudo, whatever this machine has
        "PERCPU_SKIP_VM": "1",
        "PERCPU_VM_CACHE": "/var/cache/with space",
        "CI": "true",
        "PIP_INDEX_URL": "https://mirror.example/simple",
        "https_proxy": "http://proxy:3128",
        "SECRET_TOKEN": "not passed on",
    }
    return subprocess.run(
        ["/bin/bash", str(script), "a b", "--flag"], env=env, capture_output=True, text=True
    )


def test_reruns_through_sudo_with_the_settings_passed_on(tmp_path: Path) -> None:
    r = _run(tmp_path, with_sudo=True)
    assert r.returncode == 0, r.stderr
    args = [line.removeprefix("arg:") for line in r.stdout.splitlines()]
    assert "ran as root" not in r.stdout  # exec'd sudo instead of going on
    assert args[:2] == ["--", "env"]
    passed = args[2:-3]
    assert sorted(passed) == sorted(
        [
            "PERCPU_SKIP_VM=1",
            "PERCPU_VM_CACHE=/var/cache/with space",
            "CI=true",
            "PIP_INDEX_URL=https://mirror.example/simple",
            "https_proxy=http://proxy:3128",
        ]
    )
    assert args[-3:] == [str(tmp_path / "needs-root"), "a b", "--flag"]


def test_without_sudo_it_says_to_run_as_root(tmp_path: Path) -> None:
    r = _run(tmp_path, with_sudo=False)
    assert r.returncode == 1
    assert r.stderr == (
        "needs-root: needs root (BPF programs, system packages), and sudo is not installed: run it as root\n"
    )
    assert "ran as root" not in r.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the real id must say 0")
def test_as_root_it_goes_on_without_sudo(tmp_path: Path) -> None:
    script = tmp_path / "needs-root"
    script.write_text(f'#!/bin/bash\n. "{REPO}/scripts/lib/as-root.sh"\necho "ran as root"\n')
    r = subprocess.run(
        ["/bin/bash", str(script)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
    )
    assert r.returncode == 0 and r.stdout == "ran as root\n"
