"""The disturbance counter's pure parts, without a kernel: the kernel-counter parsers, the snapshot and
delta types, the contract with bpf/disturb.bpf.c, and the arguments the counter refuses."""

from __future__ import annotations

import copy
import ctypes
import itertools
import os
import pickle

import numpy as np
import pytest

from percpu import _elf
from percpu.btf import Btf, parse_btf
from percpu.cpus import CpuList
from percpu.disturb import (
    SOFTIRQ_NAMES,
    VECTOR_NAMES,
    VECTOR_ROWS,
    DisturbCounter,
    DisturbSnapshot,
    Handlers,
    Lost,
    Tasks,
    Untimed,
    irq_names,
    parse_interrupts,
    parse_sched_debug,
    parse_schedstat,
    parse_softirqs,
    per_cpu,
    wrapping_delta,
)
from percpu.disturb import _contract as contract
from percpu.disturb._hooks import ATTACH_MODES, program_names
from percpu.disturb._hooks import kallsyms_address as _kallsyms_address
from percpu.errors import NotCopyable, PercpuError
from percpu.objects import BpfObject

from .fake_kernel import FakeKernel, installed
from .test_contract import ROOT, gen

OBJ = "src/percpu/_bpf/disturb.bpf.o"
ARM64_OBJ = "src/percpu/_bpf/arm64/disturb.bpf.o"
GENERATED = os.path.join(ROOT, "src", "percpu", "disturb", "_contract.py")

# x86, Linux 6.12: a shared line (two actions), an arch row with one machine-wide count (ERR), a row with
# a count of 2**32 - 1.
INTERRUPTS_X86 = """\
           CPU0       CPU1       CPU3
  0:         44          0          0   IO-APIC   2-edge      timer
  9:          0          3          0   IO-APIC   9-fasteoi   acpi, virtio2
 36: 4294967295         12          0   PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0
NMI:          0          0          0   Non-maskable interrupts
LOC:     73329      82888          7   Local timer interrupts
CAL:         10         20         30   Function call interrupts
ERR:          0
MIS:          0
"""
# arm64, Linux 7.x: IPIs are rows of their own, device rows print zeros as such.
INTERRUPTS_ARM64 = """\
           CPU0       CPU1
 11:       1200       1100  GICv3  27 Level     arch_timer
 47:          0          0  GICv3  79 Edge      virtio0
IPI0:        31         29  Rescheduling interrupts
IPI1:       150        140  Function call interrupts
Err:          0
"""
SOFTIRQS = """\
                    CPU0       CPU1
          HI:          0          1
       TIMER:      17926      20453
      NET_TX:          4          0
      NET_RX:     404670     413702
       BLOCK:          0      84318
    IRQ_POLL:          0          0
     TASKLET:          3          0
       SCHED:      28124      26552
     HRTIMER:          4          8
         RCU:      74456      77525
"""
SCHED_DEBUG_6 = """\
Sched Debug Version: v0.11, 6.12.118+deb13-amd64 #1
ktime                                   : 1000.0
cpu#0, 2596.150 MHz
  .nr_running                    : 5
  .nr_switches                   : 4639142
  .nr_uninterruptible            : 1899
cfs_rq[0]:/
  .nr_switches                   : 99
cpu#1, 2596.150 MHz
  .nr_running                    : 3
  .nr_switches                   : 4763360
"""
SCHED_DEBUG_ARM64 = """\
cpu#0
  .nr_running                    : 0
  .nr_switches                   : 12
"""


def test_interrupts_rows_per_cpu_column() -> None:
    cols, rows = parse_interrupts(INTERRUPTS_X86)
    assert cols == (0, 1, 3)
    assert rows["9"].counts == (0, 3, 0) and rows["9"].text == "IO-APIC 9-fasteoi acpi, virtio2"
    assert rows["36"].counts[0] == 2**32 - 1
    assert rows["LOC"].counts == (73329, 82888, 7) and rows["LOC"].text == "Local timer interrupts"
    assert rows["ERR"].counts == () and rows["ERR"].total == 0
    # columns are online CPUs: over the possible ones, a CPU without a column is 0
    assert per_cpu(cols, rows["CAL"].counts, CpuList([0, 1, 2, 3])).tolist() == [10, 20, 0, 30]


def test_interrupts_of_arm64_keep_the_ipi_rows() -> None:
    cols, rows = parse_interrupts(INTERRUPTS_ARM64)
    assert cols == (0, 1)
    assert rows["IPI1"].counts == (150, 140) and rows["IPI1"].text == "Function call interrupts"
    assert rows["47"].counts == (0, 0) and rows["Err"].total == 0


def test_a_column_for_a_cpu_that_is_not_possible_is_refused() -> None:
    cols, rows = parse_interrupts(INTERRUPTS_X86)
    with pytest.raises(PercpuError, match="CPU 3 has a column but is not a possible CPU"):
        per_cpu(cols, rows["LOC"].counts, CpuList([0, 1]))


def test_kernel_counts_wrap_at_32_bits() -> None:
    later, earlier = np.array([5, 10], np.uint64), np.array([2**32 - 3, 4], np.uint64)
    assert wrapping_delta(later, earlier).tolist() == [8, 6]


def test_softirqs_by_name_in_vector_order() -> None:
    cols, rows = parse_softirqs(SOFTIRQS)
    assert cols == (0, 1)
    assert tuple(rows) == SOFTIRQ_NAMES
    assert rows["BLOCK"] == (0, 84318)


@pytest.mark.parametrize("text", ["", "no header here\n", "CPU0 CPU1\nTIMER: 1\n"])
def test_softirqs_that_do_not_parse_say_so(text: str) -> None:
    with pytest.raises(PercpuError, match="softirqs"):
        parse_softirqs(text)


def test_sched_debug_takes_each_cpus_own_nr_switches() -> None:
    """The first .nr_switches of each cpu#N section is the runqueue's (later ones are per task group)."""
    assert parse_sched_debug(SCHED_DEBUG_6) == {0: 4639142, 1: 4763360}
    assert parse_sched_debug(SCHED_DEBUG_ARM64) == {0: 12}
    with pytest.raises(PercpuError, match="no cpu#N section"):
        parse_sched_debug("Sched Debug Version: v0.11\n")


def test_schedstat() -> None:
    s = parse_schedstat("93719 2694644 2\n")
    assert (s.runtime_ns, s.run_delay_ns, s.switches) == (93719, 2694644, 2)
    with pytest.raises(PercpuError, match="three numbers"):
        parse_schedstat("1 2\n")


def test_irq_names_from_sysfs(tmp_path: object) -> None:
    root = os.path.join(str(tmp_path), "kernel", "irq")
    for irq, actions in (("9", "acpi,virtio2\n"), ("12", "\n"), ("36", "virtio1-req.0\n")):
        os.makedirs(os.path.join(root, irq))
        with open(os.path.join(root, irq, "actions"), "w") as f:
            f.write(actions)
    assert irq_names(str(tmp_path)) == {9: "acpi,virtio2", 36: "virtio1-req.0"}  # 12 has no action
    assert irq_names(os.path.join(str(tmp_path), "nowhere")) == {}


def test_kallsyms_address_of_a_text_symbol(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "kallsyms")
    with open(path, "w") as f:
        f.write("ffffffff8134afb0 t flush_tlb_func_remote\nffffffff8134afc0 t flush_tlb_func\n")
        f.write("ffffffff82000000 d flush_tlb_func_data\n")
    assert _kallsyms_address("flush_tlb_func", str(tmp_path)) == 0xFFFFFFFF8134AFC0
    assert _kallsyms_address("flush_tlb_other", str(tmp_path)) == 0
    assert _kallsyms_address("flush_tlb_func", os.path.join(str(tmp_path), "none")) == 0


# --- snapshots and deltas --------------------------------------------------------------------------------

CPUS = CpuList([0, 2, 3])


def u(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.uint64)


def handlers(ids: list[int], counts: list[list[int]], ns: list[list[int]] | None = None) -> Handlers:
    return Handlers(
        np.array(ids, dtype=np.int64),
        tuple(f"src{i}" for i in ids),
        np.array(counts, dtype=np.uint64).reshape(len(ids), -1),
        None if ns is None else np.array(ns, dtype=np.uint64),
    )


def tasks(pids: list[int], switches: list[list[int]]) -> Tasks:
    keys = np.zeros(len(pids), dtype=contract.TASK_KEY)
    keys["pid"] = pids
    keys["tgid"] = pids
    keys["comm"] = [f"t{p}".encode() for p in pids]
    n = len(pids)
    sw = np.array(switches, dtype=np.uint64).reshape(n, len(CPUS))
    return Tasks(keys, np.zeros(n, bool), np.zeros(n, bool), sw, sw * 1000, np.zeros_like(sw))


def snapshot(
    t: float, switches: np.ndarray, irqs: Handlers, task: Tasks, lost_tasks: np.ndarray
) -> DisturbSnapshot:
    z = u(0, 0, 0)
    return DisturbSnapshot(
        time=t,
        cpus=CPUS,
        switches=switches,
        gaps=z,
        irqs=irqs,
        tasks=task,
        lost=Lost(z, z, lost_tasks, skipped=1),
        untimed=Untimed(z, z, z, z),
    )


def test_delta_aligns_rows_by_id_and_key() -> None:
    """A source or task that appeared between two snapshots counts from zero; others subtract row by row
    whatever their order; tasks with nothing new drop out."""
    a = snapshot(
        1.0,
        u(5, 0, 1),
        handlers([9, 36], [[1, 0, 0], [2, 2, 2]]),
        tasks([7, 8], [[1, 0, 0], [0, 4, 0]]),
        u(0, 0, 0),
    )
    b = snapshot(
        3.0,
        u(9, 2, 1),
        handlers([4, 9, 36], [[6, 0, 0], [1, 5, 0], [3, 2, 2]]),
        tasks([8, 7, 11], [[0, 4, 0], [2, 0, 0], [0, 0, 5]]),
        u(1, 0, 0),
    )
    d = b.delta(a)
    assert d.seconds == 2.0 and d.switches.tolist() == [4, 2, 0]
    assert d.irqs is not None and d.irqs.ids.tolist() == [4, 9, 36]
    assert d.irqs.counts.tolist() == [[6, 0, 0], [0, 5, 0], [1, 0, 0]]
    assert d.tasks is not None and d.tasks.keys["pid"].tolist() == [7, 11]
    assert d.tasks.switches.tolist() == [[1, 0, 0], [0, 0, 5]]
    assert d.tasks.ns is not None and d.tasks.ns.tolist() == [[1000, 0, 0], [0, 0, 5000]]
    assert d.lost.tasks.tolist() == [1, 0, 0] and d.lost.skipped == 0
    assert d.tasks.comm(1) == "t11"


def test_snapshots_of_other_cpus_do_not_subtract() -> None:
    a = snapshot(
        1.0,
        u(1, 1, 1),
        Handlers(np.zeros(0, np.int64), (), np.zeros((0, 3), np.uint64)),
        tasks([], []),
        u(0, 0, 0),
    )
    b = DisturbSnapshot(time=2.0, cpus=CpuList([0, 1, 2]), switches=u(1, 1, 1))
    with pytest.raises(PercpuError, match="different CPU layouts"):
        b.delta(a)


def test_shapes_are_checked() -> None:
    with pytest.raises(PercpuError, match="switches shaped"):
        DisturbSnapshot(time=0.0, cpus=CPUS, switches=u(1, 2))
    with pytest.raises(PercpuError, match="irqs: expected"):
        DisturbSnapshot(time=0.0, cpus=CPUS, switches=u(1, 2, 3), irqs=handlers([1], [[1, 2]]))
    with pytest.raises(PercpuError, match="2 ids, 2 names, 1 rows"):
        Handlers(np.array([1, 2]), ("a", "b"), np.zeros((1, 3), np.uint64))


def test_vector_rows_sum_the_two_function_call_vectors() -> None:
    counts = [[i + 1, 0, 10 * (i + 1)] for i in range(len(VECTOR_NAMES))]
    snap = DisturbSnapshot(
        time=0.0, cpus=CPUS, switches=u(0, 0, 0), vectors=handlers(list(range(len(VECTOR_NAMES))), counts)
    )
    rows = snap.since_start().vector_rows()
    assert list(rows) == ["LOC", "RES", "CAL", "IWI", "TLB"]
    assert rows["CAL"].tolist() == [3 + 4, 0, 30 + 40]
    # a row is left out, not under-counted, when one of its vectors was not counted
    partial = DisturbSnapshot(
        time=0.0, cpus=CPUS, switches=u(0, 0, 0), vectors=handlers([0, 2], [[1, 1, 1], [2, 2, 2]])
    )
    assert list(partial.since_start().vector_rows()) == ["LOC"]


# --- the contract with bpf/disturb.bpf.c -----------------------------------------------------------------


def _btf(obj: str) -> Btf:
    return parse_btf(_elf.section(os.path.join(ROOT, obj), ".BTF"))


def test_contract_is_generated_from_the_shipped_object() -> None:
    with open(GENERATED, encoding="utf-8") as f:
        committed = f.read()
    assert gen.generate(OBJ, gen.DISTURB) == committed, (
        "disturb/_contract.py drifted: run tools/gen_contract.py"
    )
    theirs = gen.generate(ARM64_OBJ, gen.DISTURB).splitlines()
    assert theirs[1:] == committed.splitlines()[1:], "the arm64 object shares every layout"


@pytest.mark.parametrize("obj", [OBJ, ARM64_OBJ])
def test_config_is_all_of_rodata_and_maps_use_the_contract_types(obj: str) -> None:
    rodata = _elf.section(os.path.join(ROOT, obj), ".rodata")
    assert rodata == bytes(contract.DisturbConfig())
    btf = _btf(obj)
    for map_name, part, struct_name in (
        ("irqs", "value", "runs"),
        ("softirqs", "value", "runs"),
        ("vectors", "value", "runs"),
        ("cpu", "value", "cpu_counts"),
        ("sched", "value", "sched_cpu"),
        ("tasks", "key", "task_key"),
        ("tasks", "value", "task_stat"),
    ):
        definition = btf.resolve(btf.type(btf.find(map_name, "var")).size_or_type)
        (ptr,) = [m[1] for m in definition.extra if m[0] == part]
        assert btf.resolve(btf.type(ptr).size_or_type).name == struct_name, map_name
    assert (
        ctypes.sizeof(contract.DisturbConfig)
        == btf.resolve(btf.find("disturb_config", "struct")).size_or_type
    )


def test_constants_and_names() -> None:
    assert len(VECTOR_NAMES) == len(VECTOR_ROWS) == contract.VECTOR_SLOTS
    assert VECTOR_NAMES[contract.VEC_TLB] == "tlb_shootdown"
    assert VECTOR_NAMES[contract.VEC_CALL_FUNCTION_SINGLE] == "call_function_single"
    assert len(SOFTIRQ_NAMES) <= contract.SOFTIRQ_SLOTS


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_every_program_the_counter_loads_is_in_the_object(arch: str) -> None:
    """Opening the object needs no kernel: each attach mode's programs exist under the names the counter
    asks for, and the TLB programs exist where the architecture has them."""
    path = os.path.join(ROOT, OBJ if arch == "x86_64" else ARM64_OBJ)
    with BpfObject(path) as obj:
        names = set(obj.programs)
    every_slot = tuple(range(contract.VEC_TLB))
    for mode, tasks, times in itertools.product(ATTACH_MODES, (False, True), (False, True)):
        entries, exits = program_names(
            mode,
            irqs=True,
            softirqs=True,
            vector_slots=every_slot,
            tlb=None,
            switches=True,
            tasks=tasks,
            times=times,
        )
        assert set(entries) | set(exits) <= names, (mode, tasks, times)
    assert "tlb_csd" in names
    assert ({"tlb_fentry", "tlb_fentry_remote"} <= names) == (arch == "x86_64")
    assert ATTACH_MODES == ("tp_btf", "raw_tp")


def test_programs_of_counts_alone_are_not_the_timed_ones() -> None:
    """Counts alone load the counting builds and no exit program; times load the entry builds that take a
    start and the exit programs that end it; the tasks table has a sched_switch program of its own. So a
    program of counts alone reads no configuration at each event (bpf/disturb.bpf.c)."""
    kw = {"irqs": True, "softirqs": True, "vector_slots": (0, 1), "tlb": "tlb_csd", "switches": True}
    counts = program_names("tp_btf", **kw, tasks=False, times=False)
    assert counts == (
        ["irq_count_btf", "softirq_count_btf", "local_timer_count_btf", "reschedule_count_btf", "tlb_csd",
         "switch_count_btf"],
        [],
    )  # fmt: skip
    timed = program_names("raw_tp", **kw, tasks=True, times=True)
    assert timed == (
        ["irq_entry_raw", "softirq_entry_raw", "local_timer_entry_raw", "reschedule_entry_raw", "tlb_csd",
         "switch_raw"],
        ["irq_exit_raw", "softirq_exit_raw", "local_timer_exit_raw", "reschedule_exit_raw"],
    )  # fmt: skip
    assert program_names("tp_btf", **kw, tasks=True, times=False)[0][-1] == "switch_btf"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"irqs": False, "softirqs": False, "vectors": False, "switches": False}, "nothing to count"),
        ({"attach": "kprobe"}, "attach mode 'kprobe'"),
        ({"task_entries": 0}, "task_entries=0"),
        ({"irq_entries": True}, "irq_entries=True"),
    ],
)
def test_arguments_the_counter_refuses(kw: dict[str, object], message: str) -> None:
    with installed(FakeKernel(2)), pytest.raises(PercpuError, match=message):
        DisturbCounter(start=False, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("make", [copy.copy, copy.deepcopy, pickle.dumps], ids=["copy", "deepcopy", "pickle"])
def test_the_counter_has_one_owner_copies_and_pickles_are_refused(make: object) -> None:
    """A shallow copy shared the counter's BPF object and maps: its close() detached the original's programs
    and closed its maps. Refused as the syscall counter's are, one rule for both (percpu._loaded)."""
    with installed(FakeKernel(2)):
        c = DisturbCounter(start=False)
        with pytest.raises(NotCopyable, match="the disturbance counter cannot be copied or pickled"):
            make(c)  # type: ignore[operator]
