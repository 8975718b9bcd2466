"""Loading and attaching the syscall counter's BPF object: which hook, which programs and maps, what its
``.rodata`` says, and the slower paths a kernel without a feature gets.

:func:`configure` turns the counter's options into the ``PercpuConfig`` its programs read (so the verifier
removes every disabled feature from the hot path). A :class:`Loader` loads ``syscount.bpf.o`` (or
``syscount_nobtf.bpf.o`` on a kernel without BTF) with it, attaches it at the cheapest hook that works
(``tp_btf`` -> ``raw_tp`` -> classic tracepoint) and hands back the object and its typed maps
(:class:`Loaded`). Reading those maps into snapshots is the counter's (:mod:`._counter`).
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import _machine, features
from .._contract import COMPAT_BASE, ERR_KEY, LAT_KEY, PROC_KEY
from .._contract import LAT_INDEX as _LAT_INDEX
from .._contract import LAT_ROW as _LAT_ROW
from .._contract import PercpuConfig as _Config
from ..cpulist import CpuList
from ..errors import AttachError, NotSupported, PercpuError, ProgramLoadError
from ..maps import Map
from ..objects import BpfObject
from ._filters import Filters, pid_namespace
from ._procs import PROC_CACHE, flush_caches

__all__ = ["ATTACH_MODES", "Loaded", "Loader", "configure", "kernel_btf"]

ATTACH_MODES = ("tp_btf", "raw_tp", "tracepoint")
_PROGRAMS = {
    "tp_btf": ("enter_btf", "exit_btf"),
    "raw_tp": ("enter_raw", "exit_raw"),
    "tracepoint": ("enter_tp", "exit_tp"),
}
# What each attach mode needs, for error messages (the syscount.bpf.o flavours also need kernel BTF for
# their CO-RE reads; without BTF, syscount_nobtf.bpf.o attaches at raw_tp only).
_MIN_KERNEL = {
    "tp_btf": f"{features.TP_BTF.needs} with BTF",
    "raw_tp": features.RAW_TP.needs,
    "tracepoint": f"{features.TRACEPOINT.needs} and tracefs",
}


def kernel_btf() -> bool:
    """Whether the kernel has BTF of its own: the CO-RE object needs it, else syscount_nobtf.bpf.o."""
    return _machine.current().kernel_btf is not None


def configure(
    filters: Filters, *, per_process: bool, errors: bool, latency: bool, detect_compat: bool, arch: str
) -> _Config:
    """The ``.rodata`` configuration for these filters and switches (the paths a kernel allows are chosen
    at load, by :class:`Loader`)."""
    f = filters
    cfg = _Config()
    cfg.filter_tgid = f.tgid or 0
    cfg.filter_tid = f.tid or 0
    cfg.filter_cgroup = f.cgroup_id() or 0
    comm = f.comm_bytes()
    if comm is not None:
        cfg.filter_comm = comm
    slots = f.slots(arch)
    if f.syscalls is not None:
        cfg.use_syscall_mask = 1
        for s in slots:
            if s >= COMPAT_BASE:
                raise PercpuError("the syscall filter takes native syscalls only")
            cfg.syscall_mask[s // 64] |= 1 << (s % 64)
    cfg.failed_only = int(f.failed_only)
    cfg.per_process = int(per_process)
    cfg.errors = int(errors)
    cfg.latency = int(latency)
    cfg.detect_compat = int(detect_compat)
    ns = pid_namespace() if f.tgid is not None or f.tid is not None or per_process else None
    if ns is not None:
        cfg.pidns_dev, cfg.pidns_ino = ns
    return cfg


class Loaded(NamedTuple):
    """A loaded and attached object, its typed maps by name, and the fd of the program that flushes the
    per-CPU per-process caches (-1 without them). The caller closes the maps, then the object."""

    obj: BpfObject
    maps: dict[str, Map]
    flush_fd: int
    mode: str


@dataclass(frozen=True)
class Loader:
    """What one counter loads, and how.

    ``config`` is the counter's: the loader writes into it the paths it chose (task pointer, task storage,
    per-CPU start slot, per-process cache), so it always says what the loaded object was given.
    ``failures`` collects why each hook, or each faster path of a hook, was refused. ``nobtf``: the
    kernel has no BTF and ``path`` is percpu's object without CO-RE, which attaches at raw_tp only.
    """

    config: _Config
    path: str
    nobtf: bool
    attach: str  # "auto" or one of ATTACH_MODES
    per_process: bool
    errors: bool
    latency: bool
    needs_exit: bool
    default_mode: bool  # nothing but counting: the program with the fewest instructions does it
    proc_entries: int
    errors_entries: int
    latency_entries: int
    latency_percpu: bool
    process_cache: bool
    cpus: CpuList
    failures: dict[str, str]

    def load(self) -> Loaded:
        """Load and attach, trying attach modes in order of cost; raises if none works."""
        modes = ATTACH_MODES if self.attach == "auto" else (self.attach,)
        errors: list[str] = []
        # (Per-process pids from a namespace stay the kernel's there: only a filter must be refused.)
        if self.nobtf and self.config.pidns_ino and (self.config.filter_tgid or self.config.filter_tid):
            raise NotSupported(
                "a pid filter from inside a pid namespace (a container) needs the kernel's BTF, which this "
                "kernel lacks: its pids are not the kernel's. Run percpu in the host's pid namespace, or "
                "filter by cgroup (--cgroup) or command name (-c) instead",
                feature="pid namespace filter",
            )
        for mode in modes:
            if self.nobtf and mode != "raw_tp":
                why = "this kernel has no BTF (/sys/kernel/btf/vmlinux): without it percpu attaches at raw_tp"
                self.failures[mode] = why
                errors.append(f"{mode}: {why}")
                continue
            try:
                return self._load_mode(mode)
            except (ProgramLoadError, AttachError, NotSupported) as exc:
                if getattr(exc, "errno", None) in (1, 13) and self.attach != "auto":
                    raise
                first = str(exc).splitlines()[0]
                self.failures[mode] = first
                errors.append(f"{mode} (needs {_MIN_KERNEL[mode]}): {first}")
                if getattr(exc, "errno", None) in (1, 13):
                    raise
        raise NotSupported(
            "cannot attach the syscall counter at any hook:\n  " + "\n  ".join(errors),
            feature="syscall tracepoints",
            min_kernel=features.RAW_TP.since,
        )

    def _load_mode(self, mode: str) -> Loaded:
        """Load at one hook, the faster paths first and each alone, then without them."""
        feats = features.kernel_features()
        if mode == "tracepoint":
            _machine.ensure_tracefs()
        # Paths for kernels without TASK_BTF or TASK_STORAGE (helpers instead of the task pointer, start
        # times by thread id) are chosen per feature, so each mode works wherever its own needs are met.
        self.config.task_btf = int(feats.task_btf and not self.nobtf)
        self.config.task_storage = int(feats.task_storage and not self.nobtf)
        # Latency at tp_btf keeps the start of the call in flight in a per-CPU slot, which a sched_switch
        # program spills to the task's store when the task leaves the CPU mid-call (about 90 ns less per
        # call than two task storage lookups). A kernel that refuses that program gets the previous path:
        # the start in the task's store at every sys_enter.
        # Per-process counts likewise gather in a per-CPU cache when the kernel can run the flush program
        # on a given CPU (features.TEST_RUN_ON_CPU); else each call looks up the hash.
        slot = mode == "tp_btf" and self.latency and self.latency_percpu
        cache = self.per_process and self.process_cache
        tries: list[tuple[bool, bool]] = []
        for t in ((slot, cache), (False, cache), (slot, False)):
            if any(t) and t not in tries:
                tries.append(t)
        for lat_percpu, proc_cache in tries:
            self.config.lat_percpu = int(lat_percpu)
            self.config.proc_cache = int(proc_cache)
            try:
                return self._load_object(mode)
            except (ProgramLoadError, AttachError, NotSupported) as exc:
                if getattr(exc, "errno", None) in (1, 13):
                    raise
                what = " and ".join(
                    n
                    for n, on in (("per-CPU start slot", lat_percpu), ("per-process cache", proc_cache))
                    if on
                )
                self.failures[f"{mode} {what}"] = str(exc).splitlines()[0]
        self.config.lat_percpu = 0
        self.config.proc_cache = 0
        return self._load_object(mode)

    def _load_object(self, mode: str) -> Loaded:
        obj = BpfObject(self.path)
        maps: dict[str, Map] = {}
        try:
            enter, exit_, switch, flush = self._prepare(obj, mode)
            obj.load()
            if switch:
                obj.attach(switch)  # first: the slot must never hold a start its task took off the CPU
            obj.attach(enter)
            if self.needs_exit:
                obj.attach(exit_)
            maps = self._maps(obj, flush is not None)
            flush_fd = -1
            if flush:
                flush_fd = obj.programs[flush].fd
                # Refused here (no BPF_PROG_TEST_RUN on a CPU): the caller takes the hash path instead.
                flush_caches(flush_fd, self.cpus)
        except BaseException:
            for m in maps.values():
                m.close()
            obj.close()
            raise
        return Loaded(obj, maps, flush_fd, mode)

    def _prepare(self, obj: BpfObject, mode: str) -> tuple[str, str, str | None, str | None]:
        """Configure the opened object: its ``.rodata``, which programs load and which maps are made, at
        what size; returns the programs (enter, exit, sched_switch or None, flush or None)."""
        view = obj.rodata()
        if len(view) < ctypes.sizeof(_Config):
            raise PercpuError(
                f"{os.path.basename(self.path)}: .rodata is {len(view)} bytes, the config is "
                f"{ctypes.sizeof(_Config)}: the BPF object and this percpu do not match; reinstall"
            )
        obj.set_rodata(self.config)
        enter, exit_ = _PROGRAMS[mode]
        if mode == "tp_btf" and self.default_mode:
            enter = "enter_btf_fast"
        switch = "switch_btf" if self.config.lat_percpu else None
        flush = "flush_procs" if self.config.proc_cache else None
        for extra in (switch, flush):
            if extra and extra not in obj.programs:
                raise NotSupported(f"{os.path.basename(self.path)} has no {extra} program", feature=extra)
        for name, prog in obj.programs.items():
            prog.autoload = name in (enter, switch, flush) or (name == exit_ and self.needs_exit)
        # Maps of the modes not asked for shrink to one entry: their memory is per possible CPU (tens
        # of MB on a machine with 256 possible CPUs), and the verifier has removed their code anyway.
        obj.set_max_entries("proc_counts", self.proc_entries if self.per_process else 1)
        obj.set_max_entries("errors", self.errors_entries if self.errors else 1)
        obj.set_max_entries("latency", self.latency_entries if self.latency else 1)
        if not self.latency:
            obj.set_max_entries("lat_rows", 1)
        # Only the start-time map latency uses is created: a kernel without task local storage
        # (features.TASK_STORAGE) cannot create that map at all, and an unused LRU hash is allocated
        # up front.
        names = obj.map_names
        if "starts" in names:
            obj.set_autocreate("starts", self.latency and bool(self.config.task_storage))
        if "starts_tid" in names:
            obj.set_autocreate("starts_tid", self.latency and not self.config.task_storage)
        if "inflight" in names:
            obj.set_autocreate("inflight", bool(self.config.lat_percpu))
        if "proc_cache" in names:
            obj.set_autocreate("proc_cache", bool(self.config.proc_cache))
        return enter, exit_, switch, flush

    def _maps(self, obj: BpfObject, cache: bool) -> dict[str, Map]:
        """The loaded object's maps this counter reads, typed; closed again if one cannot be opened."""
        maps: dict[str, Map] = {}
        try:
            maps["counts"] = obj.map("counts", value=np.uint64)
            maps["dropped"] = obj.map("dropped", value=np.uint64)
            maps["lost"] = obj.map("lost", value=np.uint64)
            if self.per_process:
                maps["proc_counts"] = obj.map("proc_counts", key=PROC_KEY, value=np.uint64)
                if "proc_inserts" in obj.map_names:
                    maps["proc_inserts"] = obj.map("proc_inserts", value=np.uint64)
            if cache:
                maps["proc_cache"] = obj.map("proc_cache", value=PROC_CACHE)
            if self.errors:
                maps["errors"] = obj.map("errors", key=ERR_KEY, value=np.uint64)
            if self.latency:
                maps["latency"] = obj.map("latency", key=LAT_KEY, value=np.uint64)
                maps["lat_index"] = obj.map("lat_index", value=_LAT_INDEX)
                maps["lat_rows"] = obj.map("lat_rows", value=_LAT_ROW)
        except BaseException:
            for m in maps.values():
                m.close()
            raise
        return maps
