"""tests/vm/arm64.py: which arm64 kernel package each series picks from the package lists, and where its
image is in the package."""

from __future__ import annotations

from typing import Any

import pytest

from . import vm_scripts

NAMES = [
    "linux-image-6.1.0-9-arm64",
    "linux-image-6.1.0-57-arm64",
    "linux-image-6.1.0-57-cloud-arm64",
    "linux-image-6.1.0-57-rt-arm64",
    "linux-image-6.1.0-57-arm64-unsigned",
    "linux-binary-7.3.4+deb13-arm64",
    "linux-binary-7.10.1+deb13-arm64",
    "linux-binary-7.10.1+deb13-arm64-16k",
    "linux-binary-7.10.1+deb13-cloud-arm64",
    "linux-binary-7.2.12+deb13-arm64",
]


def _arm64() -> Any:
    return vm_scripts.load("arm64")


@pytest.mark.parametrize(
    ("series", "package", "image"),
    [
        ("6.1", "linux-image-6.1.0-57-arm64", "boot/vmlinuz-6.1.0-57-arm64"),
        ("7", "linux-binary-7.10.1+deb13-arm64", "usr/lib/modules/7.10.1+deb13-arm64/vmlinuz"),
    ],
)
def test_the_newest_generic_kernel_of_each_series(
    monkeypatch: pytest.MonkeyPatch, series: str, package: str, image: str
) -> None:
    """Numbers compare as numbers (57 > 9, 7.10 > 7.3), and the cloud, rt, 16k and unsigned flavours
    are never picked."""
    arm64 = _arm64()
    asked: list[list[str]] = []

    def fake_run(cmd: list[str], cwd: str | None = None) -> str:
        asked.append(cmd)
        prefix = cmd[-1]
        return "\n".join(n for n in NAMES if n.startswith(prefix))

    monkeypatch.setattr(arm64, "_run", fake_run)
    s = arm64.KERNELS[series]
    pkg, release = arm64._newest_image("/nonexistent", s)
    assert pkg == package
    assert s.image.format(release=release) == image
    assert asked[0][-2:] == ["pkgnames", s.prefix]


def test_no_matching_package_says_which_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    arm64 = _arm64()
    monkeypatch.setattr(arm64, "_run", lambda cmd, cwd=None: "linux-binary-7.3.4+deb13-cloud-arm64\n")
    with pytest.raises(arm64.Unavailable, match="trixie-backports's arm64 package lists"):
        arm64._newest_image("/nonexistent", arm64.KERNELS["7"])
