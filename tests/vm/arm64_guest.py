"""The arm64 proof, run inside the qemu-system-aarch64 guest that tests/vm/arm64.py boots (no compiler, no
pytest there: Debian's python3, python3-numpy and libbpf1, and percpu's source tree on sys.path).

usage: arm64_guest.py SRC WORKLOAD CALLS

Checks, each a row of the table tests/vm/arm64.py prints:
  * the machine: aarch64, possible CPUs read from /sys/devices/system/cpu/possible, and the running
    kernel's struct pt_regs (from its BTF) at the offsets the shipped arm64 objects were compiled for;
  * odd value sizes (1, 3, 7, 12, 13, 20 bytes) in PERCPU_ARRAY and PERCPU_HASH: a distinct value per
    possible CPU written and read back exactly, while CPU 1 is still offline when the guest was booted
    with maxcpus=1 (possible > online);
  * the syscall counter: CALLS getppid calls (arm64 number 173) pinned to CPU 1, counted exactly on CPU 1
    and nowhere else, under the name "getppid", at each hook (tp_btf, raw_tp, the classic tracepoint),
    through sys_exit too (latency and errno modes read the number from pt_regs; 33 failing close calls
    counted under EBADF), and with the kernel's BTF
    hidden, where percpu loads arm64/syscount_nobtf.bpf.o;
  * the CLI: ``python3 -m percpu stat -f json -- WORKLOAD`` counting the same calls.
Prints one ``ARM64-RESULT {json}`` line at the end; exit status 0 when every check passed.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

SRC, WORKLOAD, CALLS = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, SRC)

import numpy as np  # noqa: E402

import percpu  # noqa: E402
from percpu.btf import parse_btf  # noqa: E402
from percpu.cpus import parse_cpu_list  # noqa: E402
from percpu.layout import round8 as stride  # noqa: E402
from percpu.objects import bundled  # noqa: E402
from percpu.syscalls import syscall_name, syscall_number  # noqa: E402
from percpu.syscount import Filters, SyscallCounter  # noqa: E402

CPU = 1
FAILS = 33
COMM = "pcpu_arm64"
SIZES = (1, 3, 7, 12, 13, 20)
rows: list[dict[str, Any]] = []
facts: dict[str, Any] = {}


def check(name: str, fn: Callable[[], str]) -> None:
    """Run one check; its row says pass or fail and what was measured (or the exception)."""
    t0 = time.monotonic()
    try:
        detail, ok = fn(), True
    except AssertionError as e:
        detail, ok = f"assertion: {e}", False
    except Exception as e:  # a failure of any kind is a row, not the end of the run
        detail, ok = f"{type(e).__name__}: {e}", False
        traceback.print_exc()
    rows.append({"check": name, "ok": ok, "detail": detail, "seconds": round(time.monotonic() - t0, 1)})
    print(f"ARM64-ROW {json.dumps(rows[-1])}", flush=True)


def read(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read().strip()


def machine() -> str:
    topo = percpu.cpu_lists()
    possible = read("/sys/devices/system/cpu/possible")
    facts.update(
        kernel=os.uname().release,
        machine=os.uname().machine,
        possible=possible,
        online=read("/sys/devices/system/cpu/online"),
        n_possible=len(topo.possible),
    )
    assert os.uname().machine == "aarch64", os.uname().machine
    assert str(topo.possible) == possible or len(topo.possible) == len(parse_cpu_list(possible))
    assert bundled("syscount.bpf.o").endswith("/_bpf/arm64/syscount.bpf.o"), bundled("syscount.bpf.o")
    assert syscall_number("getppid") == 173 and syscall_name(173) == "getppid"
    return f"{facts['kernel']}: possible {possible}, online {facts['online']}"


def pt_regs() -> str:
    """The kernel's own layout: what the CO-RE object relocates against and the no-BTF object hard-codes."""
    with open("/sys/kernel/btf/vmlinux", "rb") as f:
        btf = parse_btf(f.read())
    t = btf.resolve(btf.find("pt_regs", "struct"))
    members = {name: (bit // 8, btf.size(type_id)) for name, type_id, bit in t.extra}
    facts["pt_regs_syscallno"] = members["syscallno"]
    # bpf/syscount.bpf.c: REGS_NR_OFF 280 (no-BTF build), `int syscallno` (CO-RE build).
    assert members["syscallno"] == (280, 4), members["syscallno"]
    return f"struct pt_regs is {t.size_or_type} bytes; syscallno at offset 280, 4 bytes"


def value_sizes() -> str:
    topo = percpu.cpu_lists()
    cpus = list(topo.possible)
    checked = 0
    for size in SIZES:
        vt = np.dtype((np.void, size))
        vals = [bytes((17 * i + j + size) % 251 + 1 for j in range(size)) for i in range(len(cpus))]
        assert len(set(vals)) == len(vals)
        with percpu.PerCpuArray.create(vt, 4) as a, percpu.PerCpuHash.create(np.uint32, vt, 4) as h:
            for m in (a, h):
                assert m.value_bytes == len(cpus) * stride(size), (m.value_bytes, size)
                m.update(2, vals)
                got = m[2]
                assert list(got.cpus) == cpus
                for i, cpu in enumerate(cpus):
                    assert bytes(got[cpu]) == vals[i], (type(m).__name__, size, cpu, bytes(got[cpu]), vals[i])
                checked += 1
    online = read("/sys/devices/system/cpu/online")
    sizes = ",".join(map(str, SIZES))
    return f"{checked} maps, sizes {sizes}: exact on {len(cpus)} possible CPUs (online {online})"


def online_cpu1() -> str:
    ctl = f"/sys/devices/system/cpu/cpu{CPU}/online"
    if read("/sys/devices/system/cpu/online") != "0-1" and os.path.exists(ctl):
        with open(ctl, "w", encoding="ascii") as f:
            f.write("1")
    online = read("/sys/devices/system/cpu/online")
    assert CPU in parse_cpu_list(online), online
    return f"online now {online}"


def workload(fail: int = 0) -> None:
    out = subprocess.run(
        [sys.executable, WORKLOAD, str(CALLS), str(CPU), "--comm", COMM, "--fail", str(fail)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert json.loads(out.stdout)["calls"] == CALLS


def counted(
    attach: str = "auto", *, latency: bool = False, errors: bool = False, obj: str = "syscount.bpf.o"
) -> str:
    nr = syscall_number("getppid")
    with SyscallCounter(filters=Filters(comm=COMM), attach=attach, latency=latency, errors=errors) as c:
        assert c._obj_path.endswith(f"/_bpf/arm64/{obj}"), c._obj_path
        before = c.snapshot()
        workload(FAILS if errors else 0)
        d = c.snapshot().delta(before)
        mode = c.attach_mode
        snap = c.snapshot()
    cpus = list(d.cpus)
    col = d.counts[:, nr]
    on_cpu = int(col[cpus.index(CPU)])
    assert on_cpu == CALLS, f"{on_cpu} on CPU {CPU}, want {CALLS}"
    assert int(col.sum()) == CALLS, f"{int(col.sum())} in all, want {CALLS}"
    assert d.name(nr) == "getppid", d.name(nr)
    extra = ""
    if latency:
        assert snap.latency is not None
        keys, counts = snap.latency
        lat = int(counts[keys["slot"] == nr].sum())
        assert lat == CALLS, f"{lat} latency samples, want {CALLS}"
        extra = f", {lat} latency samples"
    if errors:
        # The errno comes from sys_exit's return value: close(-1) fails with EBADF FAILS times.
        assert snap.errors is not None
        keys, counts = snap.errors
        close = syscall_number("close")
        bad = int(counts[(keys["slot"] == close) & (keys["err"] == errno.EBADF)].sum())
        assert bad == FAILS, f"{bad} close EBADF, want {FAILS}"
        extra += f", {bad} close (nr {close}) EBADF"
    return f"{mode} {obj}: {on_cpu} {d.name(nr)} (nr {nr}) on CPU {CPU}, {int(col.sum())} in all{extra}"


def cli() -> str:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "percpu",
            "stat",
            "-f",
            "json",
            "-q",
            "--",
            sys.executable,
            WORKLOAD,
            str(CALLS),
            str(CPU),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert r.returncode == 0, r.stderr[-500:]
    doc = json.loads(r.stderr)  # a command's report is on standard error
    (row,) = [s for s in doc["syscalls"] if s["slot"] == syscall_number("getppid")]
    assert row["name"] == "getppid", row
    assert (row["total"], row["per_cpu"][str(CPU)]) == (CALLS, CALLS), row
    on_cpu = row["per_cpu"][str(CPU)]
    return (
        f"percpu stat -f json ({doc['attach']}): {on_cpu} {row['name']} on CPU {CPU}, {row['total']} in all"
    )


def hide_btf() -> str:
    subprocess.run(["/bin/busybox", "mount", "-t", "tmpfs", "none", "/sys/kernel/btf"], check=True)
    assert not os.path.exists("/sys/kernel/btf/vmlinux")
    return "/sys/kernel/btf hidden under a tmpfs"


def main() -> int:
    check("machine", machine)
    check("pt_regs in the kernel's BTF", pt_regs)
    check("odd value sizes", value_sizes)
    check(f"cpu{CPU} online", online_cpu1)
    check("count tp_btf", lambda: counted("tp_btf"))
    check("count tp_btf, sys_exit", lambda: counted("tp_btf", latency=True, errors=True))
    check("count raw_tp, sys_exit", lambda: counted("raw_tp", latency=True))
    check("count tracepoint", lambda: counted("tracepoint"))
    check("cli stat -f json", cli)
    check("hide BTF", hide_btf)
    check(
        "count no-BTF, sys_exit",
        lambda: counted(latency=True, errors=True, obj="syscount_nobtf.bpf.o"),
    )
    ok = all(r["ok"] for r in rows)
    print("ARM64-RESULT " + json.dumps({"ok": ok, "calls": CALLS, "facts": facts, "rows": rows}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
