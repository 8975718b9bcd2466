"""Privileges: what to tell a user who lacks them, and giving them up once the BPF programs are attached
and the maps are open.

What reading the maps needs afterwards depends on the kernel (kernel/bpf/syscall.c):

* ``kernel.unprivileged_bpf_disabled = 0``: nothing; any process may use a BPF fd it holds.
* Linux 5.19 and later (commit "bpf: refine kernel.unprivileged_bpf_disabled behaviour"): nothing; the
  sysctl then only guards creating maps, loading programs and BTF, and looking objects up by id. Reading
  a map or a program's run statistics through an fd the process holds needs no capability.
* Linux 5.8 to 5.18 with the sysctl at 1 or 2: every bpf() command needs CAP_BPF, which is kept.
* before 5.8: CAP_SYS_ADMIN, which is kept.

Everything else goes: effective, permitted and inheritable sets, ambient capabilities, the bounding set
(where CAP_SETPCAP allows; a service manager or container runtime usually bounds it already), and the
user and group where one is given. no_new_privs is set, so nothing executed later can gain any.
"""

from __future__ import annotations

import grp
import os
import pwd
from typing import NamedTuple

from . import _libc, _machine
from .errors import PercpuError

__all__ = [
    "Dropped",
    "caps_needed_to_read_maps",
    "drop_privileges",
    "privilege_hint",
    "refusal_why",
    "resolve_user",
]

CAP_SYS_ADMIN = _machine.CAP_SYS_ADMIN
CAP_BPF = _machine.CAP_BPF
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4


_NEEDED = "CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)"


def privilege_hint(caps: int | None, euid: int, *, remedy: bool = True) -> str:
    """Why this process cannot load BPF programs, and what to do, in the words every command uses; ""
    when its effective capabilities ``caps`` suffice (or, as root, cannot be read). Being root proves
    nothing: a container runtime or setpriv can leave uid 0 without a capability. ``remedy=False`` gives
    the why alone, for a message that says what to do already."""
    if caps is not None and _machine.can_load_bpf(caps):
        return ""
    if euid == 0:
        if caps is None:
            return ""
        why = f"you are root, but without {_NEEDED}: a container or setpriv dropped them"
        fix = "run percpu where root keeps them"
    else:
        why = "you are not root"
        fix = f"run as root, or grant {_NEEDED}, e.g. sudo setcap cap_bpf,cap_perfmon+ep on the interpreter"
    return f"{why}; {fix}" if remedy else why


SECCOMP_MODE_FILTER = 2


def refusal_why(caps: int | None, euid: int, seccomp: int | None) -> str:
    """Why the kernel refused a BPF operation (EPERM) to this process, for a message that already says
    what the privileges are; "" when nothing here explains it.

    A process that holds the capabilities and still gets EPERM is, most often, in a container whose
    seccomp profile refuses bpf(): the default profiles written before CAP_BPF (Docker's before 23.0,
    containerd's before 1.6.9, podman's and CRI-O's before containers-common 0.60, which podman 5.2
    vendors; bookworm's podman 4.3 has 0.50) allow bpf() only to a container that holds CAP_SYS_ADMIN,
    and answer EPERM to any other."""
    why = privilege_hint(caps, euid, remedy=False)
    if why or caps is None or seccomp != SECCOMP_MODE_FILTER:
        return why
    held = " and ".join(_machine.bpf_cap_names(caps))
    return (
        f"this process holds {held}, but runs under a seccomp filter, which may refuse bpf(): container "
        "engines' default profiles written before CAP_BPF allow it only with CAP_SYS_ADMIN; use a profile "
        "that allows bpf, such as percpu's deploy/seccomp/percpu-exporter.json (listing every map on the "
        "system and --enable-bpf-stats need CAP_SYS_ADMIN whatever the profile)"
    )


class Dropped(NamedTuple):
    kept: int  # capability mask still effective
    uid: int
    gid: int
    bounding_dropped: bool  # False when the process lacked CAP_SETPCAP (its bounding set is left)


def _kernel_version(release: str) -> tuple[int, int]:
    parts = release.split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def caps_needed_to_read_maps(release: str | None = None) -> int:
    """The capability mask a process needs to keep reading maps through fds it already holds."""
    disabled = _machine.current().sysctl_int("kernel.unprivileged_bpf_disabled")
    if disabled is None:
        disabled = 1  # unknown: assume the distribution default
    version = _kernel_version(release or os.uname().release)
    if disabled == 0 or version >= (5, 19):
        return 0
    return 1 << (CAP_BPF if version >= (5, 8) else CAP_SYS_ADMIN)


def resolve_user(user: str | None, group: str | None) -> tuple[int | None, int | None]:
    """``--user USER[:GROUP]`` as ids (names or numbers); PercpuError for a name that does not exist."""
    uid = gid = None
    if user is not None:
        try:
            pw = pwd.getpwnam(user) if not user.isdigit() else None
        except KeyError as exc:
            raise PercpuError(f"--user {user}: no such user") from exc
        uid = pw.pw_uid if pw else int(user)
        gid = pw.pw_gid if pw else int(user)
    if group is not None:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError as exc:
            raise PercpuError(f"--user ...:{group}: no such group") from exc
    return uid, gid


def drop_privileges(keep: int = 0, user: str | None = None, group: str | None = None) -> Dropped:
    """Drop every capability but ``keep``, switch user/group if given, set no_new_privs.

    Capabilities belong to threads: this must run while the process has one thread, so that every
    thread started later inherits the reduced sets.
    """
    machine = _machine.current()
    threads = machine.threads()
    if threads != 1:
        raise PercpuError(
            f"cannot drop privileges: the process has {threads} threads and capabilities belong to each "
            "(numpy's BLAS starts some: set OPENBLAS_NUM_THREADS=1), or pass --keep-privileges"
        )
    uid, gid = resolve_user(user, group)
    try:
        _libc.prctl(PR_SET_NO_NEW_PRIVS, 1)
        bounding = True
        last_cap = machine.sysctl_int("kernel.cap_last_cap")
        for cap in range((63 if last_cap is None else last_cap) + 1):
            if keep >> cap & 1:
                continue
            try:
                _libc.prctl(PR_CAPBSET_DROP, cap)
            except OSError:
                bounding = False  # no CAP_SETPCAP: the bounding set stays as the caller set it
                break
        _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        if gid is not None:
            os.setgroups([])
            os.setgid(gid)
        if uid is not None:
            if keep:
                _libc.prctl(PR_SET_KEEPCAPS, 1)  # setuid would clear the permitted set
            os.setuid(uid)
        _libc.capset(keep, keep, 0)
    except OSError as exc:
        raise PercpuError(f"cannot drop privileges: {exc.strerror}") from exc
    eff = machine.effective_caps()
    if eff is not None and eff & ~keep:
        raise PercpuError(f"capabilities still effective after dropping them: {eff:#x}")
    return Dropped(keep, os.getuid(), os.getgid(), bounding)
