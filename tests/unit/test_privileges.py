"""``percpu._privileges``: the one hint every command gives a user without privileges, and what reading
maps needs once they are dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from percpu._privileges import caps_needed_to_read_maps, privilege_hint

CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 1 << 21, 1 << 38, 1 << 39


@pytest.mark.parametrize("caps", [CAP_SYS_ADMIN, CAP_BPF | CAP_PERFMON])
@pytest.mark.parametrize("euid", [0, 1000])
def test_no_hint_when_the_capabilities_suffice(caps: int, euid: int) -> None:
    assert privilege_hint(caps, euid) == ""


def test_root_without_capabilities_is_told_why() -> None:
    hint = privilege_hint(0, 0)
    assert hint.startswith("you are root, but without CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)")
    assert "a container or setpriv dropped them" in hint
    assert privilege_hint(CAP_BPF, 0, remedy=False) == (
        "you are root, but without CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN): a container or setpriv "
        "dropped them"
    )
    assert privilege_hint(None, 0) == ""  # root whose capabilities cannot be read: nothing to say


@pytest.mark.parametrize("caps", [0, None])
def test_not_root_is_told_to_be_root_or_grant_capabilities(caps: int | None) -> None:
    hint = privilege_hint(caps, 1000)
    assert hint.startswith("you are not root; run as root, or grant CAP_BPF and CAP_PERFMON")
    assert "setcap cap_bpf,cap_perfmon+ep" in hint
    assert privilege_hint(caps, 1000, remedy=False) == "you are not root"


@pytest.mark.parametrize(
    ("release", "sysctl", "needed"),
    [
        ("6.18.0", "2", 0),  # 5.19+: reading through a held fd needs nothing
        ("5.15.0-91-generic", "2", CAP_BPF),
        ("5.15.0", "0", 0),
        ("5.4.0", "1", CAP_SYS_ADMIN),
        ("5.15.0", None, CAP_BPF),  # unreadable: the distribution default is assumed
    ],
)
def test_caps_needed_to_read_maps(tmp_path: Path, release: str, sysctl: str | None, needed: int) -> None:
    path = tmp_path / "unprivileged_bpf_disabled"
    if sysctl is not None:
        path.write_text(sysctl + "\n", encoding="ascii")
    assert caps_needed_to_read_maps(release, sysctl=str(path)) == needed
