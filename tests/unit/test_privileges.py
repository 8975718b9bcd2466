"""_privileges.py: what the exporter keeps when it drops privileges, from the machine's sysctl."""

from __future__ import annotations

import pytest

from percpu import _privileges
from percpu._machine import CAP_BPF, CAP_SYS_ADMIN

from .fake_kernel import FakeKernel, FakeMachine, installed


@pytest.mark.parametrize(
    ("disabled", "release", "caps"),
    [
        ("0", "5.4.0", 0),  # unprivileged bpf() allowed: fds already held need nothing
        ("1", "5.19.0", 0),  # since 5.19 an fd held is enough
        ("2", "6.18.0-1-amd64", 0),
        ("1", "5.15.0-91-generic", 1 << CAP_BPF),
        ("2", "5.8.0", 1 << CAP_BPF),
        ("1", "5.4.0", 1 << CAP_SYS_ADMIN),  # before CAP_BPF
        (None, "5.10.0", 1 << CAP_BPF),  # sysctl unreadable: the distribution default (disabled)
        ("junk", "5.10.0", 1 << CAP_BPF),
    ],
)
def test_caps_needed_to_keep_reading_maps(disabled: str | None, release: str, caps: int) -> None:
    kernel = FakeKernel(2)
    sysctls = {} if disabled is None else {"kernel.unprivileged_bpf_disabled": disabled}
    with installed(kernel, FakeMachine(kernel, sysctls=sysctls)):
        assert _privileges.caps_needed_to_read_maps(release) == caps


def test_resolve_user_refuses_names_that_do_not_exist() -> None:
    assert _privileges.resolve_user("0", None) == (0, 0)
    assert _privileges.resolve_user(None, "0") == (None, 0)
    with pytest.raises(_privileges.PercpuError, match="--user no-such-user-percpu: no such user"):
        _privileges.resolve_user("no-such-user-percpu", None)
