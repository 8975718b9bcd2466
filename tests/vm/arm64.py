"""percpu on arm64, proven in qemu-system-aarch64 (TCG) with Debian's arm64 kernel and userspace.

    scripts/arm64-check [--kernel 6.1|7] [--calls N] [--smp N] [--maxcpus M] [--online K] [--timeout S]
                        [--results FILE] [--verbose]

What it does, all cached under $PERCPU_VM_CACHE/arm64 (default ~/.cache/percpu/vm/arm64), nothing installed
on the host:
  1. Debian's newest arm64 kernel of a series by package name, with ``apt-get download`` through a private
     apt configuration (its own sources list, lists and archive for arm64): bookworm's
     ``linux-image-6.1.0-N-arm64`` (``--kernel 6.1``, the default) or trixie-backports'
     ``linux-binary-7.X.Y+deb13-arm64`` (``--kernel 7``). The image is unpacked with dpkg-deb. The guest
     needs no module: BPF, BTF, tmpfs and the PL011 console are built in, and the root file system is the
     initramfs.
  2. An arm64 root file system from Debian packages: ``mmdebstrap --variant=extract`` of python3,
     python3-numpy, libbpf1 and busybox-static with their dependencies. The extract variant unpacks and
     runs no maintainer script, so it needs neither binfmt_misc nor qemu-user on the host (no global state
     changes); the one thing a maintainer script would have done that the guest needs, the BLAS/LAPACK
     alternatives numpy links against, is done here. Packed once as a cpio archive.
  3. Per run, a small second cpio archive with percpu's src/, the guest check (tests/vm/arm64_guest.py),
     the syscall workload and /init; the kernel unpacks both archives into its rootfs in order.
  4. ``qemu-system-aarch64 -M virt -cpu max -smp 2,maxcpus=8``, kernel argument ``maxcpus=1``: CPU 1 is
     possible but offline until the guest brings it up. That is how possible > online is had on arm64:
     QEMU's virt board describes only the CPUs it starts (-smp N), so QEMU's maxcpus adds no possible
     CPU; more CPUs (--smp) with fewer brought up (--online) widen the gap. The guest check prints its
     rows; the table and a JSON result are printed here. Exit status 0 when every row passed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kernels  # a sibling script, not a package import (for its cache directory)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SUITE = "bookworm"  # the root file system's


@dataclass(frozen=True)
class KernelSeries:
    """Where a series' newest arm64 kernel is: its suite, its package names, and the image in the package."""

    suite: str
    prefix: str  # what the package names start with (apt-cache pkgnames PREFIX)
    package: str  # a regular expression for the whole name; its group "release" is the kernel release
    image: str  # the image's path in the package, with {release}


KERNELS = {
    "6.1": KernelSeries(
        "bookworm",
        "linux-image-6.1.0-",
        r"linux-image-(?P<release>6\.1\.0-(?P<abi>[0-9]+)-arm64)",
        "boot/vmlinuz-{release}",
    ),
    # trixie-backports splits the 7.x image (usr/lib/modules/VER/vmlinuz, an uncompressed Image) from its
    # modules, which the guest does not need.
    "7": KernelSeries(
        "trixie-backports",
        "linux-binary-7.",
        r"linux-binary-(?P<release>7\.(?P<minor>[0-9]+)\.(?P<patch>[0-9]+)\+deb13-arm64)",
        "usr/lib/modules/{release}/vmlinuz",
    ),
}
PACKAGES = ("python3", "python3-numpy", "libbpf1", "busybox-static")
LIST_MAX_AGE = 12 * 3600
# Binaries numpy links by their alternatives names (update-alternatives, a maintainer script's job).
ALTERNATIVES = {
    "usr/lib/aarch64-linux-gnu/libblas.so.3": "blas/libblas.so.3",
    "usr/lib/aarch64-linux-gnu/liblapack.so.3": "lapack/liblapack.so.3",
}
# Never needed by the check, and a third of the archive the guest unpacks at every boot.
PRUNE = ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info", "var/cache/apt")


class Unavailable(Exception):
    """A download or build step failed; the message says which and why."""


def log(msg: str) -> None:
    print(f"arm64-check: {msg}", flush=True)


def cache_dir() -> str:
    return os.path.join(kernels.cache_dir(), "arm64")


def _run(cmd: list[str], cwd: str | None = None) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        raise Unavailable(f"{' '.join(cmd[:3])} failed: {' / '.join(tail)}")
    return p.stdout


def _apt_opts(cache: str) -> list[str]:
    return kernels.apt_opts(cache, "arm64")


def _refresh_lists(cache: str) -> None:
    apt = os.path.join(cache, "apt")
    for d in ("state/lists/partial", "cache/archives/partial"):
        os.makedirs(os.path.join(apt, d), exist_ok=True)
    sources = (
        f"deb [signed-by={KEYRING}] {MIRROR} {SUITE} main\n"
        f"deb [signed-by={KEYRING}] {SECURITY} {SUITE}-security main\n"
        f"deb [signed-by={KEYRING}] {MIRROR} trixie-backports main\n"
    )
    path = os.path.join(apt, "sources.list")
    stamp = os.path.join(apt, "updated")
    try:
        with open(path, encoding="ascii") as f:
            same = f.read() == sources
    except FileNotFoundError:
        same = False
    if not same:  # a new suite's lists are needed now, whatever the age of the others
        with open(path, "w", encoding="ascii") as f:
            f.write(sources)
        if os.path.exists(stamp):
            os.remove(stamp)
    if os.path.exists(stamp) and time.time() - os.path.getmtime(stamp) < LIST_MAX_AGE:
        return
    if not os.path.exists(KEYRING):
        raise Unavailable(f"{KEYRING} is missing: apt-get install debian-archive-keyring")
    log("updating the arm64 package lists (bookworm, trixie-backports)")
    try:
        _run(["apt-get", *_apt_opts(cache), "-q", "update"])
    except Unavailable:
        if not os.listdir(os.path.join(apt, "state/lists")):
            raise
        log("package list update failed; using the lists from the last update")
        return
    with open(stamp, "w", encoding="ascii") as f:
        f.write(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))


def _version(m: re.Match[str]) -> tuple[int, ...]:
    return tuple(int(v) for k, v in m.groupdict().items() if k != "release")


def _newest_image(cache: str, series: KernelSeries) -> tuple[str, str]:
    """(package, release) of the series' newest arm64 kernel in the package lists."""
    names = _run(["apt-cache", *_apt_opts(cache), "pkgnames", series.prefix]).split()
    found = [m for m in map(re.compile(series.package).fullmatch, names) if m]
    if not found:
        raise Unavailable(f"no package matching {series.package} in {series.suite}'s arm64 package lists")
    m = max(found, key=_version)
    return m.group(0), m.group("release")


def fetch_kernel(cache: str, series: KernelSeries) -> tuple[str, str]:
    """(package, image path) of the series' newest arm64 kernel, downloaded and unpacked once."""
    _refresh_lists(cache)
    pkg, release = _newest_image(cache, series)
    root = os.path.join(cache, "kernel", pkg)
    member = series.image.format(release=release)
    image = os.path.join(root, member)
    if os.path.exists(image):
        return pkg, image
    debs = os.path.join(cache, "debs")
    os.makedirs(debs, exist_ok=True)
    log(f"downloading {pkg}")
    _run(["apt-get", *_apt_opts(cache), "-q", "download", pkg], cwd=debs)
    (deb,) = [f for f in os.listdir(debs) if f.startswith(pkg + "_") and f.endswith(".deb")]
    tmp = root + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    # Only the image: the guest loads no module.
    tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", os.path.join(debs, deb)], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", tmp, "./" + member], stdin=tar.stdout, check=True)
    if tar.wait() != 0:
        raise Unavailable(f"dpkg-deb could not read {deb}")
    os.replace(tmp, root)
    return pkg, image


def build_root(cache: str) -> str:
    """The cpio archive of the arm64 root file system, built once per package list."""
    out = os.path.join(cache, "root.cpio")
    key = os.path.join(cache, "root.packages")
    # The recipe: a change to any part of it rebuilds the archive.
    want = json.dumps([SUITE, PACKAGES, ALTERNATIVES, PRUNE]) + "\n"
    if os.path.exists(out) and os.path.exists(key):
        with open(key, encoding="ascii") as f:
            if f.read() == want:
                return out
    if not shutil.which("mmdebstrap"):
        raise Unavailable("mmdebstrap is missing: apt-get install mmdebstrap (or run scripts/setup.sh --dev)")
    log(f"building the arm64 root file system ({', '.join(PACKAGES)})")
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        tarball = os.path.join(tmp, "root.tar")
        _run(
            [
                "mmdebstrap", "--quiet", "--arch=arm64", "--variant=extract",
                f"--include={','.join(PACKAGES)}", SUITE, tarball, MIRROR,
            ]
        )  # fmt: skip
        tree = os.path.join(tmp, "root")
        os.makedirs(tree)
        _run(["tar", "-x", "-f", tarball, "-C", tree])
        for name, target in ALTERNATIVES.items():
            link = os.path.join(tree, name)
            if not os.path.exists(os.path.join(os.path.dirname(link), target)):
                raise Unavailable(f"{name}: {target} is not in the root file system")
            if not os.path.lexists(link):
                os.symlink(target, link)
        for d in PRUNE:
            shutil.rmtree(os.path.join(tree, d), ignore_errors=True)
        for d in ("proc", "sys", "dev", "tmp", "run"):
            os.makedirs(os.path.join(tree, d), exist_ok=True)
        _cpio(tree, out + ".tmp")
        os.replace(out + ".tmp", out)
    with open(key, "w", encoding="ascii") as f:
        f.write(want)
    return out


def _cpio(tree: str, out: str) -> None:
    """A newc archive of tree's contents (not of tree itself: the root directory keeps its mode)."""
    names = subprocess.run(["find", ".", "-mindepth", "1"], cwd=tree, capture_output=True, check=True).stdout
    with open(out, "wb") as f:
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=tree, input=names, stdout=f, check=True)


INIT = """#!/bin/busybox sh
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
$bb mount -t tmpfs tmpfs /tmp
$bb mount -t tracefs tracefs /sys/kernel/tracing
$bb mount -t cgroup2 cgroup2 /sys/fs/cgroup
/sbin/ldconfig
echo "ARM64-BOOTED $($bb cut -d' ' -f1 /proc/uptime)"
/usr/bin/python3 /percpu/tests/vm/arm64_guest.py /percpu/src /percpu/tests/helpers/syscall_workload.py {calls}
echo "ARM64-EXIT $? $($bb cut -d' ' -f1 /proc/uptime)"
$bb poweroff -f
"""


def overlay(tmp: str, calls: int) -> str:
    """This run's archive: percpu's source, the guest check, the workload and /init."""
    tree = os.path.join(tmp, "overlay")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(
        os.path.join(REPO, "src", "percpu"), os.path.join(tree, "percpu", "src", "percpu"), ignore=ignore
    )
    for rel in ("tests/vm/arm64_guest.py", "tests/helpers/syscall_workload.py"):
        dst = os.path.join(tree, "percpu", rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy(os.path.join(REPO, rel), dst)
    with open(os.path.join(tree, "init"), "w", encoding="ascii") as f:
        f.write(INIT.format(calls=calls))
    os.chmod(os.path.join(tree, "init"), 0o755)
    out = os.path.join(tmp, "overlay.cpio")
    _cpio(tree, out)
    return out


def boot(image: str, initrd: str, args: argparse.Namespace, logfile: str) -> dict[str, Any]:
    """Boot the guest; returns what it printed (rows, result, times)."""
    append = "console=ttyAMA0 rdinit=/init panic=-1 quiet" + (
        f" maxcpus={args.online}" if args.online else ""
    )
    cmd = [
        "qemu-system-aarch64", "-M", "virt", "-cpu", "max", "-smp", f"{args.smp},maxcpus={args.maxcpus}",
        "-m", "1024", "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
        "-kernel", image, "-initrd", initrd, "-append", append,
    ]  # fmt: skip
    got: dict[str, Any] = {"rows": [], "result": None, "booted_s": None, "guest_s": None, "timeout": False}
    t0 = time.monotonic()
    with open(logfile, "w", encoding="utf-8") as lf:
        lf.write(" ".join(cmd) + "\n")
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert proc.stdout is not None

        def expire() -> None:  # a guest that hangs silently prints no line to notice the deadline with
            got["timeout"] = True
            os.killpg(proc.pid, signal.SIGKILL)

        watchdog = threading.Timer(args.timeout, expire)
        watchdog.start()
        try:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                lf.write(line + "\n")
                if args.verbose:
                    print(line, flush=True)
                if line.startswith("ARM64-BOOTED "):
                    got["booted_s"] = round(time.monotonic() - t0, 1)
                    log(f"guest up after {got['booted_s']} s (guest uptime {line.split()[1]} s)")
                elif line.startswith("ARM64-ROW "):
                    row = json.loads(line[len("ARM64-ROW ") :])
                    got["rows"].append(row)
                    if not args.verbose:
                        log(f"{'pass' if row['ok'] else 'FAIL'} {row['check']} ({row['seconds']} s)")
                elif line.startswith("ARM64-RESULT "):
                    got["result"] = json.loads(line[len("ARM64-RESULT ") :])
                elif line.startswith("ARM64-EXIT "):
                    got["guest_s"] = float(line.split()[2])
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    got["qemu_s"] = round(time.monotonic() - t0, 1)
    return got


def table(rows: list[dict[str, Any]]) -> str:
    width = max([len(r["check"]) for r in rows] + [5])
    lines = [f"{'check':<{width}}  result  detail", f"{'-' * width}  ------  ------"]
    for r in rows:
        lines.append(f"{r['check']:<{width}}  {'pass' if r['ok'] else 'FAIL':<6}  {r['detail']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/arm64-check", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--kernel",
        choices=sorted(KERNELS),
        default="6.1",
        help="the arm64 kernel series: 6.1 (bookworm, the default) or 7 (trixie-backports' newest 7.x)",
    )
    ap.add_argument("--calls", type=int, default=20000, help="getppid calls per count (default 20000)")
    ap.add_argument("--smp", type=int, default=2, help="QEMU's CPUs (-smp N; default 2)")
    ap.add_argument("--maxcpus", type=int, default=8, help="QEMU's -smp N,maxcpus=M (default 8)")
    ap.add_argument(
        "--online",
        type=int,
        default=1,
        help="CPUs the kernel brings up at boot (its maxcpus= argument; default 1, 0 for all); the rest are "
        "possible but offline, and the guest brings CPU 1 up before counting",
    )
    ap.add_argument("--timeout", type=float, default=1200, help="seconds before the guest is killed")
    ap.add_argument("--results", help="also write the result as JSON to this file")
    ap.add_argument("--verbose", action="store_true", help="show the guest's console")
    args = ap.parse_args(argv)
    if args.smp < 2 or args.maxcpus < args.smp or not 0 <= args.online <= args.smp:
        ap.error("give --smp >= 2 (CPU 1 is counted on), --maxcpus >= --smp, 0 <= --online <= --smp")
    for tool, pkg in (("qemu-system-aarch64", "qemu-system-arm"), ("cpio", "cpio"), ("dpkg-deb", "dpkg")):
        if not shutil.which(tool):
            print(f"arm64-check: {tool} is missing: apt-get install {pkg}", file=sys.stderr)
            return 2
    cache = cache_dir()
    os.makedirs(os.path.join(cache, "logs"), exist_ok=True)
    t0 = time.monotonic()
    try:
        pkg, image = fetch_kernel(cache, KERNELS[args.kernel])
        base = build_root(cache)
    except Unavailable as e:
        print(f"arm64-check: {e}", file=sys.stderr)
        return 2
    prepared = round(time.monotonic() - t0, 1)
    log(f"kernel {pkg}, root {os.path.getsize(base) >> 20} MiB (ready in {prepared} s); booting")
    # one log per run: two runs sharing the cache must not truncate each other's console
    logfile = os.path.join(cache, "logs", f"arm64-console.{os.getpid()}.log")
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        initrd = os.path.join(tmp, "initrd.cpio")
        with open(initrd, "wb") as out:
            for part in (base, overlay(tmp, args.calls)):
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        got = boot(image, initrd, args, logfile)
    result = got["result"]
    rows = result["rows"] if result else got["rows"]
    ok = bool(result and result["ok"]) and not got["timeout"]
    summary = {
        "ok": ok,
        "package": pkg,
        "calls": args.calls,
        "qemu": f"-M virt -cpu max -smp {args.smp},maxcpus={args.maxcpus}"
        + (f", kernel maxcpus={args.online}" if args.online else ""),
        "facts": result["facts"] if result else {},
        "rows": rows,
        "seconds": {
            "prepare": prepared,
            "boot": got["booted_s"],
            "qemu": got["qemu_s"],
            "guest_uptime": got["guest_s"],
            "total": round(time.monotonic() - t0, 1),
        },
    }
    print()
    print(table(rows))
    facts = summary["facts"]
    if facts:
        print(
            f"\nkernel {facts.get('kernel')} ({pkg}), {summary['qemu']}: possible {facts.get('possible')}, "
            f"online at boot {facts.get('online')}"
        )
    print(f"times (s): {json.dumps(summary['seconds'])}; console log: {logfile}")
    if got["timeout"]:
        print(f"arm64-check: FAILED: the guest did not finish within {args.timeout:.0f} s", file=sys.stderr)
    elif result is None:
        print(f"arm64-check: FAILED: the guest printed no result; see {logfile}", file=sys.stderr)
    if not ok and not args.verbose:
        with open(logfile, encoding="utf-8") as f:
            print("last lines of the guest's console:\n" + "".join(f.readlines()[-25:]), file=sys.stderr)
    if args.results:
        with open(args.results, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
            f.write("\n")
    print(f"arm64-check: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
