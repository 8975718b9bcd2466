"""errors.py: the one errno translation, and the fields and bases callers test for."""

from __future__ import annotations

import errno

import pytest

from percpu import errors
from percpu.errors import (
    BpfError,
    KeyExists,
    KeyNotFound,
    NotSupported,
    PercpuError,
    PermissionDenied,
    from_errno,
)


@pytest.mark.parametrize(
    ("err", "cls", "text"),
    [
        (errno.EPERM, PermissionDenied, "lookup on map 'm': Operation not permitted; "),
        (errno.EACCES, PermissionDenied, "lookup on map 'm': Permission denied; "),
        (errno.ENOENT, KeyNotFound, "lookup on map 'm': no such key"),
        (errno.EEXIST, KeyExists, "lookup on map 'm': the key exists"),
        (errno.EOPNOTSUPP, NotSupported, "lookup on map 'm': not supported by this kernel or map type"),
        (errors.ENOTSUPP, NotSupported, "lookup on map 'm': not supported by this kernel or map type"),
        (errno.ENOSYS, NotSupported, "lookup: this kernel has no bpf() syscall (CONFIG_BPF_SYSCALL)"),
        (errno.EFAULT, BpfError, "lookup on map 'm': Bad address (errno 14)"),
    ],
)
def test_each_errno_has_one_class_and_message(err: int, cls: type[BpfError], text: str) -> None:
    e = from_errno(err, "lookup", map_name="m")
    assert type(e) is cls
    assert str(e).startswith(text)
    assert e.errno == err


def test_privilege_errors_say_what_to_do() -> None:
    assert "CAP_BPF" in str(from_errno(errno.EPERM, "create map"))


def test_callers_can_catch_the_builtin_they_expect() -> None:
    assert issubclass(KeyNotFound, KeyError) and issubclass(errors.MapTypeError, TypeError)
    assert issubclass(errors.SizeMismatch, ValueError) and issubclass(errors.MapNotFound, LookupError)
    assert str(KeyNotFound("map 'm': no key 7")) == "map 'm': no key 7"  # not KeyError's repr()


def test_not_supported_errnos_are_the_three_the_kernel_uses() -> None:
    assert set(errors.NOT_SUPPORTED_ERRNOS) == {errno.EINVAL, errno.EOPNOTSUPP, errors.ENOTSUPP}
    assert errors.ENOTSUPP == 524
    assert all(issubclass(c, PercpuError) for c in (BpfError, NotSupported, errors.TopologyMismatch))
