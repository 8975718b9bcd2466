"""Boot kernels in qemu (virtme-ng, TCG) with possible CPUs far above online CPUs and run percpu's kernel
tests inside each. Called by scripts/vm-matrix; prints one row per VM and exits non-zero if any VM failed.

The guest sees the host's files, so the project's .venv runs inside unchanged.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TESTS = "tests/vm tests/kernel/test_maps_kernel.py tests/kernel/test_syscount_kernel.py"


@dataclass
class Vm:
    name: str
    kernel: str | None  # path of the image, None when there is none to boot
    smp: str
    why_not: str = ""


def debian_kernel() -> str | None:
    images = sorted(glob.glob("/boot/vmlinuz-*-amd64"))
    return images[-1] if images else None


def host_kernel() -> tuple[str | None, str]:
    rel = os.uname().release
    for cand in (f"/boot/vmlinuz-{rel}", f"/lib/modules/{rel}/vmlinuz"):
        if os.path.exists(cand):
            return cand, ""
    return None, f"no image of the running kernel ({rel}) on disk (/boot, /lib/modules)"


def matrix() -> list[Vm]:
    deb = debian_kernel()
    vms = [
        Vm(
            "debian-smp2-max8",
            deb,
            "2,maxcpus=8",
            "" if deb else "no Debian kernel in /boot (linux-image-amd64)",
        ),
        Vm("debian-smp2-max64", deb, "2,maxcpus=64", "" if deb else "no Debian kernel in /boot"),
    ]
    img, why = host_kernel()
    vms.append(Vm("host-kernel-smp2-max8", img, "2,maxcpus=8", why))
    return vms


def run_vm(vm: Vm, py: str, tests: str, timeout: float) -> dict[str, str]:
    inner = (
        f"cd {REPO} && echo PERCPU_POSSIBLE=$(cat /sys/devices/system/cpu/possible) "
        f"PERCPU_ONLINE=$(cat /sys/devices/system/cpu/online) PERCPU_KERNEL=$(uname -r) && "
        # numpy's AVX2 sort kernels return wrong orders under QEMU's TCG emulation (seen with numpy 2.4:
        # np.argsort of uint32 was wrong, np.sort right): keep numpy on its baseline SIMD in the guest.
        f"NPY_DISABLE_CPU_FEATURES=X86_V3 TMPDIR=/tmp {py} -m pytest {tests} -q -p no:cacheprovider "
        "-m 'kernel or vm' -rs"
    )
    venv_bin = os.path.dirname(py)
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}"}
    cmd = [
        "vng",
        "--run",
        str(vm.kernel),
        "--disable-kvm",
        "--memory",
        "2G",
        f"--qemu-opts=-smp {vm.smp}",
        "--exec",
        inner,
    ]
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        out, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        out += f"\n(timed out after {timeout:.0f} s)"
        rc = 124
    secs = time.monotonic() - t0
    m = re.search(r"PERCPU_POSSIBLE=(\S+) PERCPU_ONLINE=(\S+) PERCPU_KERNEL=(\S+)", out)
    summary = ""
    for line in out.splitlines():
        if re.search(r"\d+ (passed|failed|error)", line) and " in " in line:
            summary = line.strip("= ")
    counts = {k: "0" for k in ("passed", "failed", "skipped", "error")}
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary):
        counts[what.rstrip("s") if what.startswith("error") else what] = n
    ok = rc == 0 and counts["failed"] == "0" and counts["error"] == "0" and counts["passed"] != "0"
    return {
        "vm": vm.name,
        "kernel": m.group(3) if m else "?",
        "possible": m.group(1) if m else "?",
        "online": m.group(2) if m else "?",
        **counts,
        "seconds": f"{secs:.0f}",
        "status": "ok" if ok else "FAILED",
        "output": out,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", help="run only this VM (repeatable)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per VM (default 900)")
    ap.add_argument("--tests", default=TESTS, help=f"pytest targets inside the VM (default: {TESTS})")
    ap.add_argument("--verbose", action="store_true", help="print each VM's whole output")
    args = ap.parse_args()
    py = os.path.join(REPO, os.environ.get("PERCPU_VENV", ".venv"), "bin", "python")
    if not os.path.exists(py):
        sys.exit(f"vm-matrix: no virtualenv at {py}: run scripts/setup.sh --dev")
    vng = shutil.which("vng", path=f"{os.path.dirname(py)}:{os.environ.get('PATH', '')}")
    if vng is None:
        sys.exit("vm-matrix: virtme-ng is not installed in the venv (pip install virtme-ng)")
    missing = [t for t in ("qemu-system-x86_64", "busybox") if not shutil.which(t)]
    if missing:
        sys.exit(f"vm-matrix: missing {', '.join(missing)}: apt-get install qemu-system-x86 busybox-static")
    rows = []
    failed = False
    for vm in matrix():
        if args.only and vm.name not in args.only:
            continue
        if vm.kernel is None:
            rows.append({"vm": vm.name, "status": f"not bootable here: {vm.why_not}"})
            continue
        print(f"vm-matrix: booting {vm.name} ({os.path.basename(vm.kernel)}, -smp {vm.smp}) ...", flush=True)
        r = run_vm(vm, py, args.tests, args.timeout)
        rows.append(r)
        if r["status"] != "ok" or args.verbose:
            print(r["output"][-6000:])
        failed |= r["status"] != "ok"
    print(
        f"\n{'vm':<24} {'kernel':<18} {'possible':>9} {'online':>7} {'passed':>7} {'failed':>7} "
        f"{'skipped':>8} {'secs':>5}  status"
    )
    for r in rows:
        if "kernel" not in r:
            print(f"{r['vm']:<24} {r['status']}")
            continue
        print(
            f"{r['vm']:<24} {r['kernel']:<18} {r['possible']:>9} {r['online']:>7} {r['passed']:>7} "
            f"{r['failed']:>7} {r['skipped']:>8} {r['seconds']:>5}  {r['status']}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
