"""Debian's kernels by package name, fetched into a cache for the VM matrix (never installed on the host).

Each kernel series maps to a suite and a package-name pattern; the newest package of the series is picked
from the suite's package list. A private apt configuration (its own sources list, lists and archive
directories under the cache) runs ``apt-get download``, and ``dpkg-deb -x`` unpacks the packages into
``CACHE/kernels/PACKAGE/root``. Nothing is written to /boot or the host's /lib/modules, and the host's apt
state is not touched. ``depmod -b`` indexes the unpacked modules, which virtme-ng then offers to the guest
under /lib/modules/VERSION.

Safe to rerun: package lists are refreshed at most every 12 hours (and a stale list is used when the
network is down), and a kernel already unpacked is reused.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
LIST_MAX_AGE = 12 * 3600


@dataclass(frozen=True)
class Series:
    """A kernel series in Debian's archive: the image package (and, from 7.x, a separate modules one)."""

    name: str
    suite: str
    image: str  # full-match regex for the image package
    modules: str | None = None  # package holding the modules, "{version}" standing for the image's


SERIES = {
    "5.10": Series("5.10", "bullseye", r"linux-image-5\.10\.0-[0-9]+-amd64"),
    "6.1": Series("6.1", "bookworm", r"linux-image-6\.1\.0-[0-9]+-amd64"),
    "6.12": Series("6.12", "trixie", r"linux-image-6\.12\.[0-9]+\+deb13-amd64"),
    # trixie-backports splits the 7.x image (usr/lib/modules/VER/vmlinuz) from its modules.
    "7": Series(
        "7", "trixie-backports", r"linux-binary-7\.[0-9]+\.[0-9]+\+deb13-amd64", "linux-modules-{version}"
    ),
}

SOURCES = [
    f"deb [signed-by={KEYRING}] {MIRROR} bullseye main",
    f"deb [signed-by={KEYRING}] {SECURITY} bullseye-security main",
    f"deb [signed-by={KEYRING}] {MIRROR} bookworm main",
    f"deb [signed-by={KEYRING}] {SECURITY} bookworm-security main",
    f"deb [signed-by={KEYRING}] {MIRROR} trixie main",
    f"deb [signed-by={KEYRING}] {SECURITY} trixie-security main",
    f"deb [signed-by={KEYRING}] {MIRROR} trixie-backports main",
]


class KernelUnavailable(Exception):
    """The series' kernel could not be fetched or unpacked here; the message says why."""


@dataclass(frozen=True)
class Kernel:
    series: str
    package: str
    version: str  # uname -r
    image: str  # path of the vmlinuz
    root: str  # the unpacked tree (lib/modules/VERSION under it)


def cache_dir() -> str:
    base = os.environ.get("PERCPU_VM_CACHE")
    if base:
        return base
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "percpu", "vm")


def apt_opts(cache: str, arch: str = "amd64") -> list[str]:
    """apt options for a private apt setup under cache/apt that fetches packages of one architecture."""
    apt = os.path.join(cache, "apt")
    return [
        "-o", f"Dir::Etc::SourceList={apt}/sources.list",
        "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State={apt}/state",
        "-o", "Dir::State::status=/dev/null",
        "-o", f"Dir::Cache={apt}/cache",
        "-o", "Debug::NoLocking=1",
        "-o", "Acquire::Languages=none",
        "-o", f"APT::Architecture={arch}",
        "-o", f"APT::Architectures={arch}",
        # Downloads land in a directory of whoever runs this, which apt's _apt sandbox user cannot write.
        "-o", "APT::Sandbox::User=" + ("root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")),
    ]  # fmt: skip


def _run(cmd: list[str], cwd: str | None = None) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        raise KernelUnavailable(f"{' '.join(cmd[:2])} failed: {' / '.join(tail)}")
    return p.stdout


def refresh_lists(cache: str, log: bool = True) -> None:
    """Write the private sources list and update it when older than LIST_MAX_AGE."""
    apt = os.path.join(cache, "apt")
    for d in ("state/lists/partial", "cache/archives/partial"):
        os.makedirs(os.path.join(apt, d), exist_ok=True)
    src = os.path.join(apt, "sources.list")
    text = "\n".join(SOURCES) + "\n"
    old = None
    if os.path.exists(src):
        with open(src) as f:
            old = f.read()
    changed = old != text
    if changed:
        with open(src, "w") as f:
            f.write(text)
    stamp = os.path.join(apt, "updated")
    fresh = os.path.exists(stamp) and time.time() - os.path.getmtime(stamp) < LIST_MAX_AGE
    if fresh and not changed:
        return
    if not os.path.exists(KEYRING):
        raise KernelUnavailable(f"{KEYRING} is missing: apt-get install debian-archive-keyring")
    if log:
        print("vm-matrix: updating the kernel package lists (bullseye .. trixie-backports)", flush=True)
    try:
        _run(["apt-get", *apt_opts(cache), "-q", "update"])
    except KernelUnavailable:
        if not os.listdir(os.path.join(apt, "state/lists")):
            raise
        print("vm-matrix: package list update failed; using the lists from the last update", flush=True)
        return
    with open(stamp, "w") as f:
        f.write(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"[0-9]+", name))


def newest(cache: str, series: Series) -> str:
    """Name of the newest image package of a series in the cached lists."""
    out = _run(["apt-cache", *apt_opts(cache), "search", "--names-only", f"^{series.image}$"])
    names = [line.split(" ", 1)[0] for line in out.splitlines()]
    names = [n for n in names if re.fullmatch(series.image, n)]
    if not names:
        raise KernelUnavailable(f"no package matching {series.image} in {series.suite}")
    return max(names, key=_version_key)


def _find_image(root: str) -> tuple[str, str]:
    for d in ("usr/lib/modules", "lib/modules"):
        for ver in sorted(os.listdir(os.path.join(root, d))) if os.path.isdir(os.path.join(root, d)) else ():
            img = os.path.join(root, d, ver, "vmlinuz")
            if os.path.exists(img):
                return img, ver
    boot = os.path.join(root, "boot")
    for f in sorted(os.listdir(boot)) if os.path.isdir(boot) else ():
        if f.startswith("vmlinuz-"):
            return os.path.join(boot, f), f[len("vmlinuz-") :]
    raise KernelUnavailable(f"no vmlinuz in {root}")


def fetch(series_name: str, cache: str | None = None) -> Kernel:
    """The newest kernel of a series, downloaded and unpacked into the cache on first use."""
    series = SERIES[series_name]
    cache = cache or cache_dir()
    refresh_lists(cache)
    pkg = newest(cache, series)
    dest = os.path.join(cache, "kernels", pkg)
    root = os.path.join(dest, "root")
    if not os.path.exists(os.path.join(dest, "complete")):
        version = pkg.split("-", 2)[2]  # linux-image-VER / linux-binary-VER
        pkgs = [pkg] + ([series.modules.format(version=version)] if series.modules else [])
        debs = os.path.join(cache, "debs")
        os.makedirs(debs, exist_ok=True)
        print(f"vm-matrix: fetching {' '.join(pkgs)}", flush=True)
        _run(["apt-get", *apt_opts(cache), "-q", "download", *pkgs], cwd=debs)
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".unpack-", dir=os.path.dirname(dest))
        for p in pkgs:
            for deb in sorted(f for f in os.listdir(debs) if f.startswith(p + "_") and f.endswith(".deb")):
                _run(["dpkg-deb", "-x", os.path.join(debs, deb), os.path.join(tmp, "root")])
        troot = os.path.join(tmp, "root")
        # depmod -b looks under BASE/lib/modules; trixie's packages put modules under usr/lib/modules.
        if not os.path.exists(os.path.join(troot, "lib")) and os.path.isdir(os.path.join(troot, "usr/lib")):
            os.symlink("usr/lib", os.path.join(troot, "lib"))
        _, ver = _find_image(troot)
        _run(["depmod", "-b", troot, ver])
        with open(os.path.join(tmp, "complete"), "w") as f:
            f.write(pkg + "\n")
        os.rename(tmp, dest)
        for p in pkgs:  # the unpacked tree is what is kept
            for deb in os.listdir(debs):
                if deb.startswith(p + "_"):
                    os.unlink(os.path.join(debs, deb))
    image, ver = _find_image(root)
    return Kernel(series_name, pkg, ver, image, root)


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Fetch Debian's kernels for the VM matrix into the cache")
    ap.add_argument("series", nargs="*", default=list(SERIES), help=f"any of {', '.join(SERIES)}")
    args = ap.parse_args()
    rc = 0
    for s in args.series:
        try:
            k = fetch(s)
            print(f"{s:<6} {k.package:<36} {k.version:<22} {k.image}")
        except KernelUnavailable as exc:
            print(f"{s:<6} unavailable: {exc}")
            rc = 1
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
