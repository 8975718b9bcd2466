"""Every per-CPU map type on the real kernel: round trips for every value size, agreement with bpftool,
the exact number of bytes the kernel writes, batches, pinning, and errors."""

from __future__ import annotations

import ctypes
import os
import subprocess
import tempfile
from collections.abc import Iterator

import numpy as np
import pytest

import percpu
from percpu import _machine, features
from percpu.layout import round8 as stride
from percpu.maps import CGROUP_STORAGE_KEY, MapType, cpu_flag_supported, user_value_bytes
from percpu.syscount import cgroup2_root

from ..conftest import Unprivileged
from .conftest import bpftool_dump

pytestmark = pytest.mark.kernel

SIZES = [1, 3, 4, 8, 12, 16, 100, 4096, 32768]
POSSIBLE = percpu.cpu_lists().possible
NCPU = len(POSSIBLE)
KERNEL = tuple(int(n) for n in os.uname().release.split("-")[0].split(".")[:2])


def rand_values(rng: np.random.Generator, size: int) -> list[bytes]:
    return [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for _ in range(NCPU)]


def hexbytes(items: list[str]) -> bytes:
    """bpftool's "0xHH" strings as bytes. One join and bytes.fromhex, not int() per byte: a 32 KiB value on
    32 possible CPUs is a million strings a map entry, which took most of a minute under TCG."""
    joined = "".join(items)
    assert len(joined) == 4 * len(items), "bpftool prints every byte as 0xHH"
    return bytes.fromhex(joined.replace("0x", ""))


def bpftool_values(entry: dict[str, object]) -> dict[int, bytes]:
    """{slot's CPU label: bytes} from one bpftool entry (bpftool labels the slot index as "cpu")."""
    return {int(v["cpu"]): hexbytes(v["value"]) for v in entry["values"]}  # type: ignore[index, union-attr]


# --- cgroup storage needs a program attached to a cgroup ----------------------------------------------

BPF_PROG_TYPE_CGROUP_SKB = 8
BPF_CGROUP_INET_EGRESS = 1


def _ld_map_fd(fd: int) -> list[tuple[int, int, int, int]]:
    # ld_imm64 r1, map fd (src_reg = BPF_PSEUDO_MAP_FD = 1)
    return [(0x18, 0x11, 0, fd), (0x00, 0x00, 0, 0)]


@pytest.fixture
def cgroup_dir() -> Iterator[str]:
    root = cgroup2_root()
    if root is None:
        pytest.fail("no cgroup v2 mount: PERCPU_CGROUP_STORAGE needs one to attach a program")
    path = tempfile.mkdtemp(prefix="percpu-test-", dir=root)
    try:
        yield path
    finally:
        os.rmdir(path)


@pytest.fixture
def attached_storage(cgroup_dir: str) -> Iterator[tuple[percpu.PerCpuCgroupStorage, object]]:
    """Makes cgroup storage maps with an element each: a CGROUP_SKB program using the map, attached."""
    lib = _machine.current().libbpf()
    made: list[tuple[int, int, percpu.PerCpuCgroupStorage]] = []
    cg_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)

    def make(value_size: int) -> tuple[percpu.PerCpuCgroupStorage, object]:
        m = percpu.PerCpuCgroupStorage.create(value=np.dtype((np.void, value_size)))
        insns = [
            *_ld_map_fd(m.fd),
            (0xB7, 0x02, 0, 0),  # r2 = 0 (flags)
            (0x85, 0x00, 0, 81),  # call bpf_get_local_storage
            (0xB7, 0x00, 0, 1),  # r0 = 1 (let the packet through)
            (0x95, 0x00, 0, 0),  # exit
        ]
        prog = lib.prog_load_insns(BPF_PROG_TYPE_CGROUP_SKB, "pcpu_cg_test", insns)
        lib.prog_attach(prog, cg_fd, BPF_CGROUP_INET_EGRESS)
        made.append((prog, cg_fd, m))
        key = np.zeros((), dtype=CGROUP_STORAGE_KEY)
        key["cgroup_inode_id"] = os.stat(cgroup_dir).st_ino
        key["attach_type"] = BPF_CGROUP_INET_EGRESS
        return m, key

    yield make  # type: ignore[misc]
    for prog, fd, m in made:
        lib.prog_detach(prog, fd, BPF_CGROUP_INET_EGRESS)
        os.close(prog)
        m.close()
    os.close(cg_fd)


# --- round trips ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", ["percpu_array", "percpu_hash", "lru_percpu_hash", "percpu_cgroup_storage"])
def test_round_trip_and_bpftool_agree(kind: str, size: int, request: pytest.FixtureRequest) -> None:
    rng = np.random.default_rng(size * 7 + len(kind))
    vt = np.dtype((np.void, size))
    keys: list[object]
    if kind == "percpu_array":
        m: percpu.PerCpuMap = percpu.PerCpuArray.create(vt, 8)
        keys = [0, 3, 7]
    elif kind == "percpu_hash":
        m = percpu.PerCpuHash.create(np.uint32, vt, 16)
        keys = [1, 42, 0xDEADBEEF]
    elif kind == "lru_percpu_hash":
        m = percpu.LruPerCpuHash.create(np.uint32, vt, 16)
        keys = [5, 6]
    else:
        if KERNEL < (6, 1) and size > 4096:
            # Linux 5.10 caps cgroup storage values at one page (E2BIG); 6.1 takes up to 32 KiB. percpu
            # must say so with its typed error, naming the size.
            with pytest.raises(percpu.SizeMismatch, match=f"{size}-byte") as e:
                request.getfixturevalue("attached_storage")(size)
            assert e.value.actual == size
            return
        m, key = request.getfixturevalue("attached_storage")(size)
        keys = [key]
    with m:
        assert m.value_bytes == stride(size) * NCPU
        written = {}
        for k in keys:
            vals = rand_values(rng, size)
            m.update(k, vals)
            written[k if not isinstance(k, np.ndarray) else 0] = vals
        for k in keys:
            got = m.lookup(k)
            want = written[k if not isinstance(k, np.ndarray) else 0]
            assert list(got) == want
            assert got.cpus == POSSIBLE
        # bpftool reads the same bytes (it labels slot i as "cpu i"); sample big values to keep it quick
        dump = bpftool_dump(m.info.id)
        assert len(dump) == (8 if kind == "percpu_array" else len(keys))
        by_slot = [bpftool_values(e) for e in dump]
        ours = [dict(enumerate(m.lookup(k))) for k in keys]
        for mine in ours:
            assert mine in by_slot


def test_kernel_writes_exactly_possible_times_stride() -> None:
    """A raw lookup into a guarded buffer: the kernel writes possible x stride bytes, padding zeroed."""
    lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    lib.bpf_map_lookup_elem.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    for size in (4, 12, 100):
        with percpu.PerCpuHash.create(np.uint32, np.dtype((np.void, size)), 4) as m:
            m.update(1, [bytes([0x11 + c]) * size for c in range(NCPU)])
            need = stride(size) * NCPU
            guard = 64
            buf = (ctypes.c_ubyte * (need + guard))(*([0xAA] * (need + guard)))
            key = ctypes.c_uint32(1)
            assert lib.bpf_map_lookup_elem(m.fd, ctypes.byref(key), buf) == 0
            raw = bytes(buf)
            assert raw[need:] == b"\xaa" * guard, "the kernel wrote past possible x stride"
            for c in range(NCPU):
                slot = raw[c * stride(size) : (c + 1) * stride(size)]
                assert slot[:size] == bytes([0x11 + c]) * size
                assert slot[size:] == b"\0" * (stride(size) - size), "padding is zeroed"
            assert user_value_bytes(MapType.PERCPU_HASH, size, NCPU) == need


def test_value_too_big_is_refused_before_the_kernel() -> None:
    with pytest.raises(percpu.SizeMismatch) as e:
        percpu.PerCpuArray.create(np.dtype((np.void, 32769)), 1)
    assert e.value.expected == 32768 and e.value.actual == 32769


def test_typed_values_ints_structs_ctypes() -> None:
    class Pair(ctypes.Structure):
        _fields_ = [("a", ctypes.c_uint32), ("b", ctypes.c_int16)]

    with percpu.PerCpuHash.create(np.uint64, Pair, 4) as m:
        m.update(9, [Pair(c, -c) for c in range(NCPU)])
        got = m[9]
        assert [(p.a, p.b) for p in got] == [(c, -c) for c in range(NCPU)]
    dt = np.dtype([("pkts", "<u8"), ("bytes", "<u8"), ("flags", "<u2")])
    with percpu.PerCpuArray.create(dt, 2) as a:
        a.update(1, [(c, 10 * c, 3) for c in range(NCPU)])
        v = a[1]
        assert v.sum()["bytes"] == 10 * sum(range(NCPU))
        snap = a.snapshot()
        assert snap.values.shape == (2, NCPU) and snap.values["pkts"][1].tolist() == list(range(NCPU))
    with percpu.PerCpuArray.create(percpu.Int(3, signed=True), 1) as i3:
        i3.update(0, [-(2**23) + c for c in range(NCPU)])
        assert list(i3[0]) == [-(2**23) + c for c in range(NCPU)]


def test_wrong_declared_size_is_an_error_before_any_syscall() -> None:
    with percpu.PerCpuArray.create(np.uint64, 1) as m:
        with pytest.raises(percpu.SizeMismatch) as e:
            percpu.PerCpuArray.from_id(m.info.id, value=np.uint32)
        assert (e.value.what, e.value.expected, e.value.actual) == ("value", 8, 4)
        with pytest.raises(percpu.MapTypeError):
            percpu.PerCpuHash.from_id(m.info.id)


# --- batches, iteration, one CPU ---------------------------------------------------------------------


@pytest.mark.parametrize("cls", [percpu.PerCpuHash, percpu.LruPerCpuHash])
def test_batches_on_hashes(cls: type[percpu.PerCpuHash]) -> None:
    n = 5000
    # An LRU hash evicts before it is completely full (per-CPU free lists): give it room.
    with cls.create(np.uint32, np.uint64, n if cls is percpu.PerCpuHash else 4 * n) as m:
        keys = np.arange(n, dtype=np.uint32) * 3
        vals = np.arange(n * NCPU, dtype=np.uint64).reshape(n, NCPU)
        m.update_batch(keys, vals)
        snap = m.snapshot()
        assert len(snap) == n
        order = np.argsort(snap.keys)
        assert (snap.keys[order] == keys).all()
        assert (snap.values[order] == vals).all()
        walk = m.snapshot(batch=False)
        o2 = np.argsort(walk.keys)
        assert (walk.keys[o2] == keys).all() and (walk.values[o2] == vals).all()
        m.delete_batch(keys[:100])
        assert len(m.snapshot()) == n - 100
        taken = m.lookup_and_delete_batch()
        assert len(taken) == n - 100 and len(m.snapshot()) == 0


def test_the_batch_probe_says_what_the_kernel_has() -> None:
    """Batch operations on per-CPU hashes since 5.6, on per-CPU arrays since 5.13: a kernel that has them
    and is probed "no" fails (the VM matrix runs this on 5.10 to 7.x)."""
    assert features.batch_ops(MapType.PERCPU_HASH, strict=True) is (KERNEL >= (5, 6))
    assert features.batch_ops(MapType.LRU_PERCPU_HASH, strict=True) is (KERNEL >= (5, 6))
    assert features.batch_ops(MapType.PERCPU_ARRAY, strict=True) is (KERNEL >= (5, 13))


def test_percpu_array_batch_and_one_cpu() -> None:
    with percpu.PerCpuArray.create(np.uint64, 300) as m:
        m.update_batch(np.arange(300), np.arange(300, dtype=np.uint64))  # one value on every CPU
        snap = m.snapshot()
        assert snap.values.shape == (300, NCPU)
        assert (snap.values == np.arange(300, dtype=np.uint64)[:, None]).all()
        m.update(7, [70 + i for i in range(NCPU)])  # a value per CPU
        # Read by index, as a kernel without batch reads of per-CPU arrays (before 5.13) is read: the same
        batch, by_index = m.snapshot(), m.snapshot(batch=False)
        assert (by_index.keys == np.arange(300)).all() and (by_index.keys == batch.keys).all()
        assert (by_index.values == batch.values).all() and list(by_index.values[7]) == [
            70 + i for i in range(NCPU)
        ]
        # BPF_F_CPU arrives in Linux 7.0 (6.18 says EINVAL); the VM matrix runs this on 5.10 to 7.x.
        release = tuple(int(n) for n in os.uname().release.split("-")[0].split(".")[:2])
        assert cpu_flag_supported() is (release >= (7, 0))
        last = POSSIBLE[-1]
        m.update_cpu(5, last, 999)
        assert m.lookup_cpu(5, last) == 999
        assert m[5][last] == 999 and all(m[5][c] == 5 for c in POSSIBLE if c != last)


def test_lookup_and_delete_and_iteration_bounds() -> None:
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 64) as m:
        for k in range(10):
            m.update_all(k, k)
        if KERNEL < (5, 14):  # lookup-and-delete of a per-CPU hash element arrived in Linux 5.14
            with pytest.raises(percpu.NotSupported, match=r"5\.14"):
                m.lookup_and_delete(3)
            m.delete(3)
        else:
            v = m.lookup_and_delete(3)
            assert list(v) == [3] * NCPU
        with pytest.raises(percpu.KeyNotFound):
            m.lookup(3)
        with pytest.raises(KeyError):
            m[3]
        seen = []
        for k in m:  # deleting while iterating must neither repeat nor loop forever
            seen.append(k)
            m.delete(k)
        assert sorted(seen) == [k for k in range(10) if k != 3]


# --- opening ------------------------------------------------------------------------------------------


def test_pin_name_id_and_missing() -> None:
    bpffs = "/sys/fs/bpf"
    if not os.path.ismount(bpffs):
        subprocess.run(["mount", "-t", "bpf", "bpf", bpffs], check=True)
    path = os.path.join(bpffs, f"percpu_test_{os.getpid()}")
    with percpu.PerCpuArray.create(np.uint32, 4, name="pcpu_pin_test") as m:
        m.update_all(2, 77)
        m.pin(path)
        try:
            with percpu.open_map(path, value=np.uint32) as p:
                assert isinstance(p, percpu.PerCpuArray) and p[2].sum() == 77 * NCPU
            with percpu.open_map(m.info.id, value=np.uint32) as q:
                assert q[2][POSSIBLE[0]] == 77
            with percpu.PerCpuArray.from_name("pcpu_pin_test", value=np.uint32) as r:
                assert r.info.id == m.info.id
        finally:
            os.unlink(path)
    with pytest.raises(percpu.MapNotFound):
        percpu.open_map(path)
    with pytest.raises(percpu.MapNotFound):
        percpu.open_map(2**31 - 5)
    with pytest.raises(percpu.MapNotFound):
        percpu.open_map("no_such_map_xyz")


def test_plain_maps_for_comparison() -> None:
    with percpu.Array.create(np.uint64, 4) as a:
        a[1] = 5
        assert a[1] == 5 and a.snapshot().values.tolist() == [0, 5, 0, 0]
    with percpu.Hash.create(np.uint32, np.int32, 4) as h:
        h[7] = -3
        assert h[7] == -3 and dict(h.items()) == {7: -3}


def test_permission_denied_names_the_fix(unprivileged: Unprivileged) -> None:
    code = (
        "import numpy as np, percpu\n"
        "try:\n"
        "    percpu.PerCpuArray.create(np.uint64, 1)\n"
        "except percpu.PermissionDenied as e:\n"
        "    print('DENIED', e)\n"
    )
    r = subprocess.run(
        unprivileged.command("-c", code),
        capture_output=True,
        text=True,
        timeout=600,  # an interpreter start and numpy import: minutes under TCG
        env=unprivileged.env,
    )
    assert "DENIED" in r.stdout, r.stdout + r.stderr
    assert "CAP_BPF" in r.stdout and "root" in r.stdout


def test_a_program_fd_is_not_read_as_a_map() -> None:
    """The kernel answers BPF_OBJ_GET_INFO_BY_FD on a program fd with a program's info; percpu must not
    read that as a map's (key_size 0, garbage value size)."""
    from percpu.objects import BpfObject, bundled

    with BpfObject(bundled("floor.bpf.o")) as obj:
        for name, p in obj.programs.items():
            p.autoload = name == "enter_raw"
        obj.load()
        fd = os.dup(obj.programs["enter_raw"].fd)
        with pytest.raises(percpu.MapTypeError, match="is a BPF program, not a map"):
            percpu.Map.from_fd(fd)
        os.fstat(fd)  # still open: a refused fd stays the caller's
        os.close(fd)


def test_paths_that_cannot_hold_a_pin() -> None:
    with pytest.raises(percpu.MapNotFound, match="not in a BPF file system"):
        percpu.open_map("/etc/passwd")
    with pytest.raises(percpu.MapNotFound, match="not in a BPF file system"):
        percpu.open_map("/etc/no-such-pin")


def test_a_dropped_copy_leaves_the_original_on_its_own_map() -> None:
    """The report, as it ran: copy.copy(m) shared m's fd and closed it when dropped; the next map created
    got that fd number, and writes to m landed in it (victim.get(7) was PerCpuValue({0: 99, 1: 99}))."""
    import copy
    import gc
    import pickle

    with percpu.PerCpuHash.create(np.uint32, np.uint64, 16, name="mine") as m:
        copy.copy(m)
        gc.collect()
        with percpu.PerCpuHash.create(np.uint32, np.uint64, 16, name="victim") as victim:
            m.update_all(7, 99)
            assert victim.get(7) is None
            assert m[7].sum() == 99 * NCPU
            assert victim.info.id != m.info.id and victim.fd != m.fd
        with copy.deepcopy(m) as twin:
            assert twin.info.id == m.info.id and twin[7].sum() == 99 * NCPU
        assert m[7].sum() == 99 * NCPU  # the deep copy's close left m's fd open
        with pytest.raises(percpu.NotCopyable, match=r"percpu\.open_map\("):
            pickle.dumps(m)


def test_a_fork_while_another_thread_is_inside_a_map_call() -> None:
    """The report: a fork() while another thread was inside a map call left the child deadlocked on the
    map's lock for good, even in close(). Here the other thread is inside a real batch write (held there
    by the map's own lock), and the child reads, writes and closes the real map through its fd."""
    import threading

    from ..unit.forking import run_in_child

    with percpu.PerCpuHash.create(np.uint32, np.uint64, 64, name="forked") as m:
        m.update_all(1, 3)
        inside, release = threading.Event(), threading.Event()

        def writer() -> None:
            with m.handle.held():  # what every call holds while it uses the fd
                inside.set()
                release.wait(60)
                m.update_batch(np.arange(10, 18), np.full(8, 2, np.uint64))

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        assert inside.wait(60)

        def child() -> None:
            assert m[1].sum() == 3 * NCPU
            m.update_all(2, 5)
            assert m[2].sum() == 5 * NCPU
            m.close()

        try:
            assert run_in_child(child) == 0, "the child could not use the map (a negative code: killed)"
        finally:
            release.set()
            t.join(60)
        assert m[2].sum() == 5 * NCPU  # one kernel map: the child's write is there
        assert m[17].sum() == 2 * NCPU  # and the parent's thread finished its call


def test_ids_and_flags_beyond_their_c_type_are_refused() -> None:
    """The report: open_map(2**32 + id) returned map id (ctypes kept the low 32 bits), and
    update(..., flags=2**64) was taken as flags 0."""
    with percpu.PerCpuHash.create(np.uint32, np.uint64, 4, name="ranges") as m:
        with pytest.raises(percpu.InvalidArgument, match=f"it would reach the kernel as {m.info.id}$"):
            percpu.open_map(2**32 + m.info.id)
        with pytest.raises(percpu.InvalidArgument, match=r"flags 18446744073709551616 .* as 0$"):
            m.update(1, [5] * NCPU, flags=2**64)
        with pytest.raises(percpu.InvalidArgument, match=r"flags 18446744073709551618 .* as 2$"):
            m.update_batch(np.arange(2), np.ones(2, np.uint64), flags=2**64 + 2)
        assert m.get(1) is None and m.get(0) is None  # nothing was written
        with pytest.raises(
            percpu.InvalidArgument, match=r"has a NUL byte: C would read it as '/sys/fs/bpf/x'"
        ):
            m.pin("/sys/fs/bpf/x\0y")


def test_sums_over_cpus_are_exact_past_64_bits() -> None:
    """The report: int64 [2**63-1, 2**63-1] summed to -2, [-2**63, -1] to +9223372036854775807, uint64
    [2**64-1]*2 to 2**64-2, in PerCpuValue.sum() and Snapshot.sum() alike."""
    with (
        percpu.PerCpuArray.create(np.int64, 2, name="sum_i64") as signed,
        percpu.PerCpuArray.create(np.uint64, 2, name="sum_u64") as unsigned,
    ):
        signed.update_all(0, 2**63 - 1)
        signed.update(1, [-(2**63)] + [-1] * (NCPU - 1))
        unsigned.update_all(0, 2**64 - 1)
        unsigned.update_all(1, 7)
        assert signed[0].sum() == (2**63 - 1) * NCPU
        assert signed[1].sum() == -(2**63) - (NCPU - 1)
        assert unsigned[0].sum() == (2**64 - 1) * NCPU
        assert signed.snapshot().sum().tolist() == [(2**63 - 1) * NCPU, -(2**63) - (NCPU - 1)]
        assert unsigned.snapshot().sum().tolist() == [(2**64 - 1) * NCPU, 7 * NCPU]


def _memlock(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("memlock:"))


@pytest.mark.skipif(
    KERNEL < (6, 4), reason="fdinfo's memlock counts a map's memory by map type since Linux 6.4"
)
@pytest.mark.parametrize(
    ("cls", "types", "flags"),
    [
        (percpu.PerCpuArray, (np.uint64,), 0),
        (percpu.PerCpuHash, (np.uint32, np.dtype((np.void, 12))), 0),
        (percpu.PerCpuHash, (np.uint32, np.uint64), 1),  # BPF_F_NO_PREALLOC: buckets only, at first
        (percpu.LruPerCpuHash, (np.dtype((np.void, 20)), np.uint64), 0),
        (percpu.Array, (np.uint64,), 0),
        (percpu.Hash, (np.uint32, np.uint64), 0),
    ],
    ids=["percpu_array", "percpu_hash", "percpu_hash_no_prealloc", "lru_percpu_hash", "array", "hash"],
)
def test_what_a_map_costs_is_what_the_kernel_counts(
    cls: type[percpu.Map], types: tuple[object, ...], flags: int
) -> None:
    """The figure create() checks against the machine's memory is the kernel's own accounting: the same
    per-element growth exactly, and the same total up to the size of the map's header on this kernel."""
    got: dict[int, tuple[int, int]] = {}
    for n in (1000, 3000):
        with cls.create(*types, n, flags=flags) as m:  # type: ignore[attr-defined]
            at_creation = percpu.maps.memory_bytes(
                m.info.type, m.info.key_size, m.info.value_size, n, NCPU, flags, at_creation=True
            )
            got[n] = (at_creation, _memlock(m.fd))
            assert abs(at_creation - got[n][1]) <= 1024, got
            if not flags:
                assert m.memory_bytes == at_creation  # preallocated: what it holds now is what it holds full
            else:
                m.update_batch(np.arange(n), np.ones(n, np.uint64))  # full: every element allocated now
                assert abs(m.memory_bytes - _memlock(m.fd)) <= 1024
    assert got[3000][0] - got[1000][0] == got[3000][1] - got[1000][1]
