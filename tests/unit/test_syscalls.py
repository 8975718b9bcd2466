"""Syscall name tables and their generator."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from percpu.errors import PercpuError, UnknownSyscall
from percpu.syscalls import machine_arch, max_nr, syscall_name, syscall_number, syscall_table

from .fake_kernel import FakeKernel, FakeMachine, installed
from .vm_scripts import tool

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
GENERATED = os.path.join(ROOT, "src", "percpu", "syscalls", "_tables.py")
TABLES_DIR = os.path.join(ROOT, "tools", "syscall-tables")
# What _tables.py's first line says made it; test_generator_is_reproducible runs exactly this.
COMMAND = ["tools/gen_syscalls.py", "--tables", "tools/syscall-tables"]


@pytest.mark.parametrize(
    ("arch", "compat", "nr", "name"),
    [
        ("x86_64", False, 0, "read"),
        ("x86_64", False, 1, "write"),
        ("x86_64", False, 39, "getpid"),
        ("x86_64", False, 59, "execve"),
        ("x86_64", False, 110, "getppid"),
        ("x86_64", False, 231, "exit_group"),
        ("x86_64", False, 335, "uretprobe"),
        ("x86_64", False, 435, "clone3"),
        ("x86_64", False, 451, "cachestat"),
        ("x86_64", False, 462, "mseal"),
        ("x86_64", False, 464, "getxattrat"),
        ("x86_64", False, 467, "open_tree_attr"),
        ("x86_64", False, 469, "file_setattr"),
        ("x86_64", True, 3, "read"),
        ("x86_64", True, 4, "write"),
        ("x86_64", True, 11, "execve"),
        ("x86_64", True, 64, "getppid"),
        ("x86_64", True, 462, "mseal"),
        ("x86_64", True, 468, "file_getattr"),
        ("arm64", False, 63, "read"),
        ("arm64", False, 64, "write"),
        ("arm64", False, 173, "getppid"),
        ("arm64", False, 221, "execve"),
        ("arm64", False, 38, "renameat"),
        ("arm64", False, 451, "cachestat"),
        ("arm64", False, 462, "mseal"),
        ("arm64", False, 469, "file_setattr"),
        ("riscv64", False, 173, "getppid"),
        ("riscv64", False, 221, "execve"),
        ("riscv64", False, 258, "riscv_hwprobe"),
        ("riscv64", False, 259, "riscv_flush_icache"),
        ("riscv64", False, 462, "mseal"),
    ],
)
def test_known_numbers(arch: str, compat: bool, nr: int, name: str) -> None:
    assert syscall_name(nr, arch, compat=compat) == name
    assert syscall_number(name, arch, compat=compat) == nr


def test_unknown_numbers_are_never_named() -> None:
    assert syscall_name(1000, "x86_64") == "syscall_1000"
    assert syscall_name(38, "riscv64") == "syscall_38"  # riscv64 has no renameat
    assert syscall_name(259, "arm64") == "syscall_259"  # riscv's own call, not arm64's
    assert syscall_name(336, "x86_64", compat=True) == "perf_event_open"  # i386 numbering, not x86_64's
    assert syscall_name(336, "arm64") == "syscall_336"  # uprobe is x86_64's only
    assert syscall_name(512, "x86_64") == "syscall_512"  # x32's numbers are not x86_64's
    assert syscall_name(5, "sparc") == "syscall_5"
    assert syscall_number("syscall_1000", "x86_64") == 1000


def test_unknown_name_is_a_clear_error() -> None:
    with pytest.raises(UnknownSyscall, match="did you mean getppid") as e:
        syscall_number("getppdi", "x86_64")
    assert isinstance(e.value, PercpuError)


@pytest.mark.parametrize(("uname", "arch", "getppid"), [("x86_64", "x86_64", 110), ("aarch64", "arm64", 173)])
def test_the_machine_in_use_picks_the_table(uname: str, arch: str, getppid: int) -> None:
    kernel = FakeKernel(1)
    with installed(kernel, FakeMachine(kernel, arch=uname)):
        assert machine_arch() == arch
        assert syscall_name(getppid) == "getppid" and syscall_number("getppid") == getppid
        assert dict(syscall_table())[getppid] == "getppid" and max_nr() == max_nr(arch)


def _generator():  # type: ignore[no-untyped-def]
    return tool("gen_syscalls")


def test_generator_parses_tbl_with_abi_filter() -> None:
    gen = _generator()
    text = (
        "# comment\n0\tcommon\tread\tsys_read\n13\t64\trt_sigaction\tsys_rt_sigaction\n"
        "512\tx32\trt_sigaction\tx\n"
    )
    assert gen.parse_tbl(text, ("common", "64")) == {0: "read", 13: "rt_sigaction"}
    generic = (
        "38\trenameat renameat\tsys_renameat\n163\trlimit\tgetrlimit\tsys_getrlimit\n"
        "63\tcommon\tread\tsys_read\n"
    )
    assert gen.parse_tbl(generic, gen.TBL_ABIS["riscv64"]) == {163: "getrlimit", 63: "read"}
    assert gen.parse_tbl(generic, gen.TBL_ABIS["arm64"]) == {38: "renameat", 163: "getrlimit", 63: "read"}
    with pytest.raises(ValueError, match="malformed"):
        gen.parse_tbl("7 common\n", ("common",))


def test_generator_resolves_header_macros() -> None:
    gen = _generator()
    text = (
        "#define __NR3264_fcntl 25\n#define __NR_fcntl __NR3264_fcntl\n#define __NR_read 63\n"
        "#define __NR_arch_specific_syscall 244\n"
        "#define __NR_riscv_flush_icache (__NR_arch_specific_syscall + 15)\n"
        "#define __NR_syscalls 451\n"
    )
    assert gen.parse_defines(text) == {25: "fcntl", 63: "read", 259: "riscv_flush_icache"}


def test_generated_file_says_so() -> None:
    with open(GENERATED, encoding="utf-8") as f:
        assert f.readline() == f"# Generated by python3 {' '.join(COMMAND)}; do not edit.\n"
        assert f.readline().startswith("# Source: the syscall tables of Linux 6.18")


def test_generator_is_reproducible(tmp_path: Path) -> None:
    """The committed _tables.py is exactly what its generator makes from the committed .tbl copies."""
    out = tmp_path / "_tables.py"
    subprocess.run([sys.executable, *COMMAND, "-o", str(out)], cwd=ROOT, check=True, capture_output=True)
    with open(GENERATED, "rb") as f:
        committed = f.read()
    assert out.read_bytes() == committed, "_tables.py drifted from its generator: rerun the command in line 1"


def test_committed_tables_are_the_kernels(tmp_path: Path) -> None:
    gen = _generator()
    assert gen.git_blob_id(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's empty blob
    tables, source = gen.from_tables(TABLES_DIR)
    assert source.startswith("the syscall tables of Linux 6.18")
    assert tables["x86_64"][462] == "mseal"
    assert 258 not in tables["arm64"] and tables["riscv64"][258] == "riscv_hwprobe"
    # A table that is not byte for byte the kernel's file its README names is refused.
    copy = tmp_path / "tables"
    shutil.copytree(TABLES_DIR, copy)
    path = copy / "syscall_64.tbl"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("\tcachestat\t", "\tcachestats\t"), encoding="utf-8")
    with pytest.raises(ValueError, match="blob id"):
        gen.from_tables(str(copy))


def test_merge_latency_rows_and_overflow() -> None:
    """Each CPU numbers its own histogram rows; the overflow hash adds to the same (slot, bucket) keys."""
    import numpy as np

    from percpu._contract import LAT_KEY, LAT_ROWS, NR_SLOTS, ROW_BUCKETS, ROW_FIRST_BUCKET
    from percpu.syscount import merge_latency

    index = np.zeros((2, NR_SLOTS), dtype=np.uint8)
    rows = np.zeros((LAT_ROWS, 2, ROW_BUCKETS), dtype=np.uint64)
    index[0, 110] = 1  # CPU 0: getppid in row 0
    index[1, 110] = 3  # CPU 1: getppid in row 2
    index[1, 3] = 1  # CPU 1: close in row 0
    index[0, 0] = 2  # CPU 0: read in row 1, all zero: left out
    rows[0, 0, 8 - ROW_FIRST_BUCKET] = 5
    rows[2, 1, 8 - ROW_FIRST_BUCKET] = 7
    rows[2, 1, 9 - ROW_FIRST_BUCKET] = 1
    rows[0, 1, 8 - ROW_FIRST_BUCKET] = 100  # CPU 1's row 0 is close's, not getppid's
    okeys = np.array([(110, 2), (110, 8), (1, 40)], dtype=LAT_KEY)
    ocounts = np.array([[1, 0], [2, 3], [0, 4]], dtype=np.uint64)
    keys, counts = merge_latency(index, rows, (okeys, ocounts))
    got = {(int(k["slot"]), int(k["bucket"])): counts[i].tolist() for i, k in enumerate(keys)}
    assert got == {
        (1, 40): [0, 4],
        (3, 8): [0, 100],
        (110, 2): [1, 0],
        (110, 8): [7, 10],
        (110, 9): [0, 1],
    }
    assert counts.dtype == np.uint64


def test_merge_latency_empty() -> None:
    import numpy as np

    from percpu._contract import LAT_KEY, LAT_ROWS, NR_SLOTS, ROW_BUCKETS
    from percpu.syscount import merge_latency

    keys, counts = merge_latency(
        np.zeros((3, NR_SLOTS), dtype=np.uint8),
        np.zeros((LAT_ROWS, 3, ROW_BUCKETS), dtype=np.uint64),
        (np.zeros(0, dtype=LAT_KEY), np.zeros((0, 3), dtype=np.uint64)),
    )
    assert len(keys) == 0 and counts.shape == (0, 3)
