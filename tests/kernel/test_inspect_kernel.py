"""BTF-typed maps made by a BPF program, inspected with percpu (library and commands) and with bpftool."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

import percpu
from percpu import _machine
from percpu import btf as btf_mod
from percpu.btf import parse_btf
from percpu.objects import BpfObject, bundled

from ..unit.btf_kinds import kinds_json, kinds_raw
from ..unit.test_btf import FLOAT, INT_SIGNED, BtfBuilder
from .conftest import bpftool_dump, percpu_cmd

pytestmark = pytest.mark.kernel

POSSIBLE = list(percpu.cpu_lists().possible)
KERNEL = tuple(int(n) for n in os.uname().release.split("-")[0].split(".")[:2])


@pytest.fixture(scope="module")
def filled() -> Iterator[BpfObject]:
    """test_maps.bpf.o loaded and attached, with values driven by this process's system calls."""
    with BpfObject(bundled("test_maps.bpf.o")) as obj:
        obj.set_rodata(os.getpid().to_bytes(4, "little"))
        obj.load()
        link = obj.attach("fill")
        for _ in range(50):
            os.getppid()
        link.close()  # freeze the values: the tests below make system calls of their own
        yield obj


def bpftool_formatted(map_id: int) -> dict[object, dict[int, object]]:
    result: dict[object, dict[int, object]] = {}
    for e in bpftool_dump(map_id):
        f = e["formatted"]
        result[f["key"]] = {v["cpu"]: v["value"] for v in f["values"]}
    return result


@pytest.mark.parametrize("name", ["stats", "small", "nested"])
def test_btf_values_agree_with_bpftool_field_by_field(filled: BpfObject, name: str) -> None:
    with filled.map(name) as m:
        assert m.value_codec.dtype.names, "the value type came from BTF, not a declaration"
        theirs = bpftool_formatted(m.info.id)
        r = percpu_cmd("dump", str(m.info.id), "--json")
        assert r.returncode == 0, r.stderr
        ours = [json.loads(line) for line in r.stdout.splitlines()]
        assert len(ours) == len(theirs) > 0
        for entry in ours:
            # bpftool labels slot i as "cpu i"; with no gaps in the possible list they coincide here
            want = theirs[entry["key"]]
            for i, v in enumerate(entry["values"]):
                assert v["cpu"] == POSSIBLE[i]
                assert v["value"] == want[i]  # enums by name in both (nested's "kind": "PROTO_UDP")


def test_library_reads_btf_struct_values(filled: BpfObject) -> None:
    with filled.map("stats") as m:
        snap = m.snapshot()
        assert set(snap.values.dtype.names or ()) >= {"packets", "bytes", "flags", "port", "proto", "tag"}
        total = snap.values["packets"].sum()
        assert total >= 50
        assert (snap.values["port"][snap.values["packets"] > 0] == 443).all()


def test_dump_sum_cpu_key_and_table(filled: BpfObject) -> None:
    # A map of someone else's with the same name must not matter: everything here goes by id.
    with filled.map("stats") as m, percpu.PerCpuArray.create(np.uint64, 1, name="stats"):
        key = int(m.snapshot().keys[0])
        r = percpu_cmd("dump", str(m.info.id), "--key", str(key), "--sum", "--json")
        assert r.returncode == 0, r.stderr
        obj = json.loads(r.stdout)
        assert obj["key"] == key and obj["sum"]["port"] == 443 * sum(1 for v in m[key] if v["port"] == 443)
        r = percpu_cmd("dump", str(m.info.id), "--cpu", str(POSSIBLE[-1]))
        assert r.returncode == 0 and f"cpu{POSSIBLE[-1]}=" in r.stdout
        r = percpu_cmd("dump", str(m.info.id), "--limit", "2")
        assert r.returncode == 0, r.stderr
        assert "struct stat_val" in r.stdout and "2 entries" in r.stdout


@pytest.fixture
def bpffs() -> str:
    path = "/sys/fs/bpf"
    if not os.path.ismount(path):
        subprocess.run(["mount", "-t", "bpf", "bpf", path], check=True)
    return path


def test_dump_pinned_and_raw_hex_without_btf(bpffs: str) -> None:
    path = os.path.join(bpffs, f"percpu_dump_{os.getpid()}")
    # A 3-byte integer has no BTF type, so percpu creates this map without BTF, as bcc's and bpftrace's
    # maps are (percpu gives the maps it creates BTF where BTF describes the types exactly).
    with percpu.PerCpuHash.create(np.uint32, percpu.Int(3), 4) as m:
        assert m.info.btf_id == 0
        m.update(7, [b"\x01\x02\x03"] * len(POSSIBLE))
        m.pin(path)
        try:
            r = percpu_cmd("dump", path, "--json")
            assert r.returncode == 0, r.stderr
            obj = json.loads(r.stdout)
            assert obj["key"] == "07000000"  # no BTF: raw hex
            assert [v["value"] for v in obj["values"]] == ["010203"] * len(POSSIBLE)
            for key in ("7", "0x7", "07"):  # a 4-byte key without BTF is taken as an integer
                r = percpu_cmd("dump", path, "--key", key, "-j")
                assert r.returncode == 0, r.stderr
                assert json.loads(r.stdout) == obj
        finally:
            os.unlink(path)


@pytest.mark.parametrize("spec", ["999999999", "/sys/fs/bpf/does_not_exist", "no_such_map_name"])
def test_missing_map_is_a_clear_error(spec: str) -> None:
    r = percpu_cmd("dump", spec)
    assert r.returncode == 1
    assert r.stderr.startswith("percpu: ") and "Traceback" not in r.stderr


def test_maps_lists_lookup_bytes(filled: BpfObject) -> None:
    r = percpu_cmd("maps", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["id"]: row for row in json.loads(r.stdout)}
    with filled.map("small") as m:
        row = rows[m.info.id]
        assert row["percpu"] and row["value_size"] == 12
        assert row["lookup_writes"] == 16 * len(POSSIBLE)


def doctor_json() -> tuple[int, str]:
    """`percpu doctor --json`'s exit status and output. In a VM guest the runner has just run that command on
    this kernel, in this boot, and names its report in PERCPU_DOCTOR_REPORT (tests/vm/run_matrix.py):
    running it again there took 15-43 s under TCG."""
    report = os.environ.get("PERCPU_DOCTOR_REPORT")
    if report:
        with open(report + ".rc", encoding="utf-8") as f:
            rc = int(f.read())
        with open(report, encoding="utf-8") as f:
            return rc, f.read()
    r = percpu_cmd("doctor", "--json")
    return r.returncode, r.stdout + r.stderr if r.returncode else r.stdout


def test_doctor_probes_features() -> None:
    rc, out = doctor_json()
    assert rc == 0, out
    report = json.loads(out)
    checks = {c["check"]: c for c in report["checks"]}
    # What each kernel is known to have (the VM matrix runs this on 5.10 to 7.x): batch ops on per-CPU
    # arrays from 5.13, BPF_F_CPU from 7.0.
    release = tuple(int(n) for n in os.uname().release.split("-")[0].split(".")[:2])
    assert checks["batch ops on PERCPU_HASH"]["status"] == "ok"
    assert checks["batch ops on PERCPU_ARRAY"]["status"] == ("ok" if release >= (5, 13) else "warn")
    assert checks["tp_btf program at sys_enter"]["status"] == "ok"
    assert checks["BPF_F_CPU (one CPU's slot)"]["status"] == ("ok" if release >= (7, 0) else "info")
    modes = {m["mode"]: m for m in report["syscall_counter_modes"]}
    assert set(modes) == {"default", "per-process", "errors", "latency", "failed only", "filters"}
    for m in modes.values():
        assert m["supported"] and m["hook"] == "tp_btf", m
        assert (
            checks[f"syscall counter: {m['mode']}" + (f" ({m['flag']})" if m["flag"] else "")]["status"]
            == "ok"
        )
    storage = "task local storage" if release >= (5, 11) else "a hash by thread id"
    assert storage in modes["latency"]["detail"]
    # 32-bit calls: as the kernel tells them apart (TS_COMPAT) on x86_64 with BTF; not at all on arm64.
    compat = "TS_COMPAT" if os.uname().machine == "x86_64" else "AArch32"
    assert {m["compat"] for m in modes.values()} == {compat}
    assert checks["syscall counter: 32-bit calls"]["status"] == ("ok" if compat == "TS_COMPAT" else "warn")


def test_doctor_as_root_without_capabilities() -> None:
    """The common container case: uid 0 with an empty capability set. Every check still reports."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed; it is how this test drops capabilities")
    r = subprocess.run(
        [setpriv, "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-m", "percpu", "doctor", "-j"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "essential check(s) failed: privileges" in r.stderr
    checks = {c["check"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["privileges"]["status"] == "fail"
    assert "effective capabilities: none" in checks["privileges"]["detail"]
    assert checks["libbpf"]["status"] == "ok" and checks["kernel BTF"]["status"] == "ok"
    for what in (
        "batch ops on PERCPU_ARRAY",
        "BPF_F_CPU (one CPU's slot)",
        "tp_btf program at sys_enter",
        "bpf_stats (BPF_ENABLE_STATS)",
        "per-CPU maps on this system",
    ):
        assert checks[what]["status"] == "unknown", what
        assert "Operation not permitted" in checks[what]["detail"], what


def test_dump_cpu_on_a_map_that_is_not_per_cpu() -> None:
    with percpu.Array.create(np.uint64, 2) as m:
        r = percpu_cmd("dump", str(m.info.id), "--cpu", str(POSSIBLE[0]))
    assert r.returncode == 1 and r.stdout == ""
    assert "is not a per-CPU map" in r.stderr and "--cpu applies only to per-CPU maps" in r.stderr


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            "/etc/passwd",
            "/etc/passwd is not in a BPF file system (bpffs); pinned maps live under /sys/fs/bpf",
        ),
        ("/etc/no_such_file", "/etc/no_such_file is not in a BPF file system (bpffs)"),
        ("/sys/fs/bpf", "/sys/fs/bpf is a directory in bpffs, not a pinned map"),
    ],
)
def test_dump_of_a_path_that_is_not_a_pin(bpffs: str, path: str, message: str) -> None:
    r = percpu_cmd("dump", path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"percpu: {message}")


def test_dump_of_a_pinned_program(bpffs: str) -> None:
    path = os.path.join(bpffs, f"percpu_prog_{os.getpid()}")
    with BpfObject(bundled("floor.bpf.o")) as obj:
        for name, p in obj.programs.items():
            p.autoload = name == "enter_raw"
        obj.load()
        _machine.current().kernel.obj_pin(obj.programs["enter_raw"].fd, path)
        try:
            r = percpu_cmd("dump", path)
        finally:
            os.unlink(path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr == f"percpu: {path} is a pinned BPF program, not a map; `percpu maps` lists the maps\n"


@pytest.mark.parametrize("size", [12, 8, 100])
def test_explain_shows_the_overrun(size: int) -> None:
    r = percpu_cmd("explain", "--value-size", str(size))
    assert r.returncode == 0, r.stderr
    n = len(percpu.cpu_lists().possible)
    st = (size + 7) // 8 * 8
    wrote = n * st
    assert f"the kernel writes round_up({size}, 8) x {n} = {st} x {n} = {wrote} bytes" in r.stdout
    assert f"Measured: the kernel wrote {wrote} bytes; every slot holds the value stored" in r.stdout
    assert f"{wrote - size} bytes land past the end of a {size}-byte buffer" in r.stdout
    intact = " ".join(["ee"] * 16) + "   intact: all 16 bytes still ee"
    assert f"guard before  : {intact}" in r.stdout and f"guard after   : {intact}" in r.stdout


def test_vmlinux_btf_parses() -> None:
    with open("/sys/kernel/btf/vmlinux", "rb") as f:
        btf = parse_btf(f.read())
    key = btf.find("bpf_cgroup_storage_key", "struct")
    dt = btf.dtype(key)
    assert dt is not None and dt.names == ("cgroup_inode_id", "attach_type")
    assert dt.fields["attach_type"][1] == 8 and dt.itemsize == 16
    assert btf.type_name(btf.find("task_struct", "struct")) == "struct task_struct"


def test_vmlinux_char_arrays_are_strings_and_u8_arrays_numbers() -> None:
    """The kernel's own BTF (pahole's): task_struct.comm is text, in6_addr's __u8 bytes are numbers."""
    with open("/sys/kernel/btf/vmlinux", "rb") as f:
        btf = parse_btf(f.read())
    task = btf.type(btf.find("task_struct", "struct"))
    comm = next(mtype for name, mtype, _off in task.extra if name == "comm")
    assert btf.dtype(comm) == np.dtype("S16")
    char = btf.resolve(btf.type(comm).extra[0])
    assert char.name == "char" and not (char.extra[0] >> 24) & 2  # pahole sets no INT_CHAR bit either
    in6 = btf.dtype(btf.find("in6_addr", "struct"))
    assert in6 is not None and in6.itemsize == 16  # a union of __u8[16], __be16[8], __be32[4]: bytes
    sockaddr = btf.dtype(btf.find("sockaddr", "struct"))
    assert sockaddr is not None and sockaddr.fields is not None
    assert sockaddr.fields["sa_family"][0] == np.dtype("<u2")


@pytest.fixture
def proc_counts() -> Iterator[percpu.Map]:
    """syscount.bpf.o's proc_counts map (key struct proc_key with char comm[16]), no program loaded.
    Only the maps every kernel can create: `starts` is task local storage, which Linux 5.10 lacks."""
    with BpfObject(bundled("syscount.bpf.o")) as obj:
        for p in obj.programs.values():
            p.autoload = False
        obj.set_autocreate("starts", False)
        obj.load()
        with obj.map("proc_counts") as m:
            yield m


def test_dump_shows_char_arrays_as_text_like_bpftool(proc_counts: percpu.Map) -> None:
    m = proc_counts
    m.update({"tgid": 4242, "slot": 3, "comm": b"percpu-test"}, [5] * len(POSSIBLE))
    m.update({"tgid": 1, "slot": 4, "comm": b"\x1b[31mred"}, [1] * len(POSSIBLE))
    r = percpu_cmd("dump", str(m.info.id), "--json")
    assert r.returncode == 0, r.stderr
    ours = {(e["key"]["tgid"], e["key"]["slot"]): e for e in map(json.loads, r.stdout.splitlines())}
    assert ours[(4242, 3)]["key"]["comm"] == "percpu-test"
    assert ours[(4242, 3)]["sum"] == 5 * len(POSSIBLE)
    # A name with control characters is its exact text, which JSON escapes (a hex string could not be told
    # from a process named "1b5b..."); never written raw to the terminal.
    assert ours[(1, 4)]["key"]["comm"] == "\x1b[31mred"
    assert '"comm": "\\u001b[31mred"' in r.stdout
    out = subprocess.run(
        ["bpftool", "-j", "map", "dump", "id", str(m.info.id)], capture_output=True, text=True, check=True
    )
    theirs = {
        (e["formatted"]["key"]["tgid"], e["formatted"]["key"]["slot"]): e for e in json.loads(out.stdout)
    }
    assert theirs[(4242, 3)]["formatted"]["key"]["comm"] == "percpu-test"
    table = percpu_cmd("dump", str(m.info.id))
    assert '"comm":"percpu-test"' in table.stdout and "\x1b" not in table.stdout
    assert '"comm":"\\u001b[31mred"' in table.stdout


def test_dag_shaped_btf_from_the_kernel_is_refused_in_one_visit_per_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kernel-valid BTF whose 8-byte value type holds 8^7 empty structs through one shared type at each
    level: the kernel accepts it (bpftool takes tens of seconds to print it); percpu lays out each type
    once, refuses the 2 million fields and reads the value as raw bytes."""
    b = BtfBuilder()
    u32 = b.int_("unsigned int", 4)
    u64 = b.int_("unsigned long long", 8)
    z = b.struct("z0", 0, [])
    for level in range(1, 8):
        z = b.struct(f"z{level}", 0, [(f"f{i}", z, 0) for i in range(8)])
    top = b.struct("top", 8, [("x", u64, 0), ("pad", z, 64)])
    raw = b.blob()
    lib = _machine.current().libbpf()
    buf = ctypes.create_string_buffer(raw, len(raw))
    btf_fd = lib.fn("bpf_btf_load")(buf, len(raw), None)
    assert btf_fd >= 0, f"the kernel refused the BTF: {os.strerror(-btf_fd)}"
    try:
        fd = lib.map_create(6, "dag_val", 4, 8, 1, btf_fd=btf_fd, btf_key_type_id=u32, btf_value_type_id=top)
    finally:
        os.close(btf_fd)
    built: list[int] = []
    real = btf_mod.Btf._build

    def counting(self: btf_mod.Btf, type_id: int, depth: int, busy: set[int]) -> object:
        built.append(type_id)
        return real(self, type_id, depth, busy)

    monkeypatch.setattr(btf_mod.Btf, "_build", counting)
    with percpu.Map.from_fd(fd) as m:
        assert m.info.btf_value_type_id == top
        assert m.value_codec.name == "bytes[8]"
        assert len(built) <= top  # at most once per type id; the old walk made 8^7
        m.update(0, [(7 + i).to_bytes(8, "little") for i in range(len(POSSIBLE))])
        r = percpu_cmd("dump", str(m.info.id), "--value-type", "u64", "--sum", "-j")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"key": 0, "sum": sum(7 + i for i in range(len(POSSIBLE)))}
        r = percpu_cmd("dump", str(m.info.id))
        assert r.returncode == 0 and "value bytes[8]" in r.stdout, r.stderr
        assert f"(values shown as bytes: BTF type {top} was not decoded: " in r.stdout
        assert "more than 65,536 fields when flattened" in r.stdout
        assert "; --value-type declares a type)" in r.stdout


# --- every BTF kind, decoded exactly -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def kinds_maps() -> Iterator[tuple[percpu.Map, percpu.Map]]:
    """test_maps.bpf.o's maps of struct kinds_val, made by the kernel from clang's BTF; no program runs."""
    with BpfObject(bundled("test_maps.bpf.o")) as obj:
        for p in obj.programs.values():
            p.autoload = False
        obj.load()
        with obj.map("kinds") as m, obj.map("kinds_by_color") as h:
            yield m, h


def kernel_has_btf_float(m: percpu.Map) -> bool:
    """Whether the kernel's copy of the map's BTF has floats: before Linux 5.13 libbpf loads each float as
    an empty struct of its size (bpf_object__sanitize_btf), and dump shows its bytes."""
    btf = btf_mod.load_btf(m.info.btf_id)
    f = next(tid for name, tid, _off in btf.type(m.info.btf_value_type_id).extra if name == "f")
    return btf.resolve(f).kind == "float"


def test_dump_decodes_every_btf_kind_exactly(kinds_maps: tuple[percpu.Map, percpu.Map]) -> None:
    """struct kinds_val written raw, byte by byte, a different value on each CPU, read back by `percpu
    dump` through the kernel's BTF: enum color's BLUE (-3, which clang 14 writes as 4294967293 without a
    sign flag), signed and unsigned bitfields, every member of a union, floats (a NaN's payload too),
    char arrays with every byte, a const volatile typedef chain, restrict and type-tagged pointers."""
    m, _h = kinds_maps
    floats = kernel_has_btf_float(m)
    m.update(0, [kinds_raw(i % 2) for i in range(len(POSSIBLE))])
    r = percpu_cmd("dump", str(m.info.id), "--json")
    assert r.returncode == 0 and not r.stderr, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["key"] for row in rows] == [0, 1]
    for i, v in enumerate(rows[0]["values"]):
        assert v["cpu"] == POSSIBLE[i]
        want = kinds_json(i % 2, floats)
        for field, value in want.items():  # field by field, so a failure names the field
            assert v["value"][field] == value, f"cpu {v['cpu']} {field}"
        assert v["value"] == want
    table = percpu_cmd("dump", str(m.info.id), "--key", "0")
    assert table.returncode == 0, table.stderr
    assert f"map {m.info.id} 'kinds': PERCPU_ARRAY, key uint32, value struct kinds_val, CPUs " in table.stdout
    assert "shown as bytes" not in table.stdout and "\x1b" not in table.stdout
    cell = ('"color":"BLUE","other":5,"bits":{"s4":-3,"u3":5,"c4":"BLUE","s40":-123456789012,"u21":1752286,'
            '"flag":true}')  # fmt: skip
    assert f"key 0: cpu{POSSIBLE[0]}={{{cell}" in table.stdout
    assert '"name":{"text":"ab","hex":"6162006364ff"},"names":["xyz","w"],"cv":-2,"yes":true' in table.stdout


def test_dump_of_a_map_keyed_by_an_enum_the_kernel_holds(kinds_maps: tuple[percpu.Map, percpu.Map]) -> None:
    """kinds_by_color, a HASH (one value per key) keyed by enum color: keys by name, --key by name."""
    m, h = kinds_maps
    floats = kernel_has_btf_float(m)
    h.update(-3, kinds_raw(0))
    h.update(99, kinds_raw(1))
    r = percpu_cmd("dump", str(h.info.id), "-j")
    assert r.returncode == 0, r.stderr
    rows = {row["key"]: row["value"] for row in map(json.loads, r.stdout.splitlines())}
    assert rows == {"BLUE": kinds_json(0, floats), 99: kinds_json(1, floats)}
    r = percpu_cmd("dump", str(h.info.id), "--key", "BLUE", "-j")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"key": "BLUE", "value": kinds_json(0, floats)}
    r = percpu_cmd("dump", str(h.info.id), "--key", "GREEN")
    assert r.returncode == 1 and "has no key GREEN" in r.stderr


def test_dump_decodes_btf_encodings_clang_14_does_not_write() -> None:
    """The kinds and marks of BTF this machine's clang 14 does not emit, loaded into the kernel by hand:
    enums signed by kind_flag (Linux 6.0), enum64 signed and unsigned, an unmarked enum with its top bit
    set in a blob that marks signedness (unsigned), bitfields in the encoding before kind_flag (an int of
    3 bits; an int of 5 bits at its own bit offset 2), a _Float16."""
    b = BtfBuilder()
    u32 = b.int_("unsigned int", 4)
    level = b.enum("level", 4, {"NEG": -2, "POS": 2}, signed=True)
    flags = b.enum("flags", 4, {"LOW": 1, "TOP": 0x80000000})
    wide = b.enum64("wide", {"BIG": 1 << 40, "ALL": (1 << 64) - 1})
    swide = b.enum64("swide", {"MIN": -(1 << 63), "ONE": 1}, signed=True)
    s3 = b.int_("int", 4, INT_SIGNED, bits=3)
    u5 = b.int_("unsigned int", 4, bits=5, bit_offset=2)
    half = b.add(FLOAT, "_Float16", 2)
    members = [("level", level, 0), ("flags", flags, 32), ("wide", wide, 64), ("swide", swide, 128),
               ("a", s3, 192), ("b", u5, 195), ("h", half, 208), ("top", flags, 224), ("other", level, 256),
               ("big", wide, 320)]  # fmt: skip
    val = b.struct("modern", 48, members)
    raw = b.blob()
    lib = _machine.current().libbpf()
    buf = ctypes.create_string_buffer(raw, len(raw))
    btf_fd = lib.fn("bpf_btf_load")(buf, len(raw), None)
    if btf_fd < 0 and KERNEL < (6, 0):
        pytest.skip(f"Linux {os.uname().release} predates enum64 and signed enums in BTF (Linux 6.0)")
    assert btf_fd >= 0, f"the kernel refused the BTF: {os.strerror(-btf_fd)}"
    try:
        fd = lib.map_create(
            6, "modern_val", 4, 48, 1, btf_fd=btf_fd, btf_key_type_id=u32, btf_value_type_id=val
        )
    finally:
        os.close(btf_fd)
    v = bytearray(48)
    struct.pack_into("<iIQq", v, 0, -2, 0x80000001, (1 << 64) - 1, -(1 << 63))
    bits = (-3 & 7) | (17 << 5)  # a at bits 192..194, b at 195 + 2 = 197..201: bytes 24 and 25
    v[24:26] = bits.to_bytes(2, "little")
    struct.pack_into("<eIi4xQ", v, 26, -0.5, 0x80000000, -7, 1 << 41)
    with percpu.Map.from_fd(fd) as m:
        m.update(0, [bytes(v)] * len(POSSIBLE))
        r = percpu_cmd("dump", str(m.info.id), "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)["values"][0]["value"]
    assert got == {"level": "NEG", "flags": 0x80000001, "wide": "ALL", "swide": "MIN", "a": -3, "b": 17,
                   "h": -0.5, "top": "TOP", "other": -7, "big": 1 << 41}  # fmt: skip


def test_doctor_lists_the_maps_from_before_it_ran_and_tells_percpus_own_apart() -> None:
    """The doctor listed its own probe maps (closed, not yet freed by the kernel) among the user's. Its
    list now ends at the highest map id when it started, and marks the maps percpu made: a syscall
    counter's by the BTF of bpf/syscount.bpf.c, a probe's by name; a map of the user's is not marked."""
    from percpu.syscount import SyscallCounter

    with SyscallCounter() as counter, percpu.PerCpuArray.create(np.uint64, 4, name="pcpu_users") as mine:
        used = {i for p in counter.programs() for i in p.info().map_ids}  # the counter's maps
        r = percpu_cmd("doctor", "--json")
        after = percpu_cmd("maps", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    until = report["percpu_maps_up_to_id"]
    listed = {m["id"]: m for m in report["percpu_maps"]}
    assert until >= mine.info.id and all(i <= until for i in listed)
    assert listed[mine.info.id]["made_by_percpu"] is None
    percpu_types = {i for i in used if i in listed}
    assert percpu_types and all(listed[i]["made_by_percpu"] == "syscall counter" for i in percpu_types)
    # what the doctor made (its probes, its counters of every mode) came after: not listed, but percpu's
    made_after = [m for m in json.loads(after.stdout) if m["id"] > until and m["made_by_percpu"]]
    assert not any(m["id"] in listed for m in made_after)
    rows = {m["id"]: m for m in json.loads(after.stdout)}
    assert all(rows[i]["made_by_percpu"] == "syscall counter" for i in used if i in rows)
    assert rows[mine.info.id]["made_by_percpu"] is None
