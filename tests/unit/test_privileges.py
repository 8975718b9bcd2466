"""``percpu._privileges``: the one hint every command gives a user without privileges, and what reading
maps needs once they are dropped (from the machine's sysctl)."""

from __future__ import annotations

import pytest

from percpu import _privileges
from percpu._privileges import caps_needed_to_read_maps, privilege_hint, refusal_why

from .fake_kernel import FakeKernel, FakeMachine, installed

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


@pytest.mark.parametrize("euid", [0, 1000])
def test_a_refusal_despite_the_capabilities_under_seccomp_names_the_profile(euid: int) -> None:
    """A container's default seccomp profile answers EPERM to bpf() without CAP_SYS_ADMIN: "run as root"
    says nothing to a process that is root with CAP_BPF and CAP_PERFMON."""
    why = refusal_why(CAP_BPF | CAP_PERFMON, euid, 2)
    assert why.startswith("this process holds CAP_PERFMON and CAP_BPF, but runs under a seccomp filter")
    assert "may refuse bpf()" in why and "deploy/seccomp/percpu-exporter.json" in why
    assert refusal_why(CAP_BPF | CAP_PERFMON, euid, 0) == ""  # no filter: nothing to blame it on
    assert refusal_why(CAP_BPF | CAP_PERFMON, euid, None) == ""  # unreadable: nothing to say


def test_a_refusal_without_the_capabilities_is_explained_by_them_whatever_the_filter() -> None:
    assert refusal_why(0, 0, 2) == privilege_hint(0, 0, remedy=False)
    assert refusal_why(0, 1000, 2) == "you are not root"
    assert refusal_why(None, 0, 2) == ""


@pytest.mark.parametrize("caps", [0, None])
def test_not_root_is_told_to_be_root_or_grant_capabilities(caps: int | None) -> None:
    hint = privilege_hint(caps, 1000)
    assert hint.startswith("you are not root; run as root, or grant CAP_BPF and CAP_PERFMON")
    assert "setcap cap_bpf,cap_perfmon+ep" in hint
    assert privilege_hint(caps, 1000, remedy=False) == "you are not root"


@pytest.mark.parametrize(
    ("disabled", "release", "needed"),
    [
        ("0", "5.4.0", 0),  # unprivileged bpf() allowed: fds already held need nothing
        ("1", "5.19.0", 0),  # 5.19+: reading through a held fd needs nothing
        ("2", "6.18.0-1-amd64", 0),
        ("2", "5.15.0-91-generic", CAP_BPF),
        ("1", "5.8.0", CAP_BPF),
        ("1", "5.4.0", CAP_SYS_ADMIN),  # before CAP_BPF
        (None, "5.10.0", CAP_BPF),  # unreadable: the distribution default is assumed
        ("junk", "5.10.0", CAP_BPF),
    ],
)
def test_caps_needed_to_read_maps(disabled: str | None, release: str, needed: int) -> None:
    kernel = FakeKernel(2)
    sysctls = {} if disabled is None else {"kernel.unprivileged_bpf_disabled": disabled}
    with installed(kernel, FakeMachine(kernel, sysctls=sysctls)):
        assert caps_needed_to_read_maps(release) == needed


def test_resolve_user_refuses_names_that_do_not_exist() -> None:
    assert _privileges.resolve_user("0", None) == (0, 0)
    assert _privileges.resolve_user(None, "0") == (None, 0)
    with pytest.raises(_privileges.PercpuError, match="--user no-such-user-percpu: no such user"):
        _privileges.resolve_user("no-such-user-percpu", None)
