"""The binding's calls for BPF objects (``.bpf.o`` files through ``bpf_object__*``), their programs and
maps before load, links, loaded programs (info, test runs, raw instructions, cgroup attach), BTF and the
kernel's run-time stats."""

from __future__ import annotations

import ctypes
import errno as _errno
import os
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from .._libc import c_text, checked
from .._uapi import (
    BPF_F_TEST_RUN_ON_CPU,
    BpfBtfInfo,
    BpfInsn,
    BpfProgInfo,
    BtfLoadOpts,
    ObjectOpenOpts,
    TestRunOpts,
)
from ..layout import alloc
from ._library import _SZ, Library, _check, _ptr, _struct

_BTF_LOG_BYTES = 1 << 16  # the kernel's BTF verifier log of a refused blob: its last line says why


class ProgInfo(NamedTuple):
    """The parts of ``struct bpf_prog_info`` percpu uses."""

    id: int
    type: int
    name: str
    tag: str
    run_time_ns: int
    run_cnt: int
    recursion_misses: int  # runs the kernel skipped: the program was already running on that CPU
    map_ids: tuple[int, ...]
    btf_id: int


class ObjectCalls(Library):
    """What percpu asks libbpf about objects, programs, links and BTF."""

    # --- BTF ------------------------------------------------------------------------------------------

    def btf_load(self, data: bytes) -> int:
        """Load a BTF blob into the kernel and return the BTF object's fd (a map created with it keeps
        its own reference). A refusal raises OSError whose text ends with the kernel's reason: its
        verifier log, asked for on a second attempt only, as libbpf does."""
        blob = alloc(len(data))
        blob[:] = np.frombuffer(data, dtype=np.uint8)
        opts = _struct(BtfLoadOpts)
        opts.sz = ctypes.sizeof(BtfLoadOpts)
        load = self.fn("bpf_btf_load")
        ret = int(load(_ptr(blob), len(data), ctypes.byref(opts)))
        if ret >= 0:
            return ret
        log = alloc(_BTF_LOG_BYTES)
        opts.log_buf = _ptr(log)
        opts.log_size = _BTF_LOG_BYTES
        opts.log_level = 1
        again = int(load(_ptr(blob), len(data), ctypes.byref(opts)))
        if again >= 0:
            return again
        lines = log.tobytes().split(b"\0", 1)[0].decode(errors="replace").strip().splitlines()
        why = os.strerror(-ret)
        raise OSError(-ret, f"{why}: {lines[-1].strip()}" if lines else why)

    def btf_get_fd_by_id(self, btf_id: int) -> int:
        return _check(self.fn("bpf_btf_get_fd_by_id")(checked(btf_id, "BTF id")))

    def btf_raw(self, btf_id: int) -> bytes:
        """The raw BTF blob (header, types, strings) the kernel holds under ``btf_id``."""
        fd = self.btf_get_fd_by_id(btf_id)
        try:
            first = _struct(BpfBtfInfo)
            self._info(fd, first)
            data = alloc(first.btf_size)
            second = _struct(BpfBtfInfo)
            second.btf = data.ctypes.data
            second.btf_size = first.btf_size
            self._info(fd, second)
            return data[: min(second.btf_size, first.btf_size)].tobytes()
        finally:
            os.close(fd)

    # --- loaded programs ------------------------------------------------------------------------------

    def prog_get_fd_by_id(self, prog_id: int) -> int:
        """A fd for a loaded program (benchmarks/bench_syscalls.py reads other tools' programs' stats)."""
        return _check(self.fn("bpf_prog_get_fd_by_id")(checked(prog_id, "program id")))

    def prog_info(self, fd: int) -> ProgInfo:
        i = _struct(BpfProgInfo)
        self._info(fd, i)
        n = i.nr_map_ids
        ids = alloc(4 * n).view(np.uint32)
        if n:
            j = _struct(BpfProgInfo)
            j.nr_map_ids = n
            j.map_ids = ids.ctypes.data
            self._info(fd, j)
            i = j
        return ProgInfo(
            id=i.id,
            type=i.type,
            name=i.name.decode(errors="replace"),
            tag=bytes(i.tag).hex(),
            run_time_ns=i.run_time_ns,
            run_cnt=i.run_cnt,
            recursion_misses=i.recursion_misses,
            map_ids=tuple(int(x) for x in ids[: min(n, i.nr_map_ids)]),
            btf_id=i.btf_id,
        )

    def prog_recursion_misses(self, fd: int) -> int:
        """Runs of the program the kernel skipped (one info call, without the map ids prog_info asks)."""
        i = _struct(BpfProgInfo)
        self._info(fd, i)
        return int(i.recursion_misses)

    def prog_run_on_cpu(self, fd: int, cpu: int) -> int:
        """Run a raw_tp program once on ``cpu`` (BPF_PROG_TEST_RUN, Linux 5.10: an interrupt on that CPU
        when it is not this thread's) and return its return value. ENXIO: the CPU is offline."""
        opts = _struct(TestRunOpts)
        opts.sz = ctypes.sizeof(TestRunOpts)
        opts.flags = BPF_F_TEST_RUN_ON_CPU
        opts.cpu = checked(cpu, "cpu")
        _check(self.fn("bpf_prog_test_run_opts")(checked(fd, "fd", "fd"), ctypes.byref(opts)))
        return int(opts.retval)

    def enable_stats(self) -> int:
        """Turn on run-time stats (BPF_STATS_RUN_TIME) for as long as the returned fd stays open."""
        return _check(self.fn("bpf_enable_stats")(0))

    def probe_helper(self, prog_type: int, helper_id: int) -> bool:
        """Whether programs of ``prog_type`` may call BPF helper ``helper_id`` on this kernel."""
        ret = int(
            self.fn("libbpf_probe_bpf_helper")(
                checked(prog_type, "program type", "i32"), checked(helper_id, "helper id", "i32"), None
            )
        )
        if ret < 0:
            raise OSError(-ret, os.strerror(-ret))
        return ret == 1

    # --- programs from raw instructions (tests, probes) ---------------------------------------------

    def prog_load_insns(self, prog_type: int, name: str, insns: list[tuple[int, int, int, int]]) -> int:
        """Load a program given as (code, regs, off, imm) tuples; used for probes and tests."""
        mem = alloc(ctypes.sizeof(BpfInsn) * len(insns))
        arr = (BpfInsn * len(insns)).from_buffer(mem.data)
        for slot, (c, r, o, i) in zip(arr, insns, strict=True):
            regs = checked(r, "instruction registers", "u8")
            slot.code = checked(c, "instruction code", "u8")
            slot.dst_reg, slot.src_reg = regs & 0xF, regs >> 4
            slot.off = checked(o, "instruction offset", "i16")
            slot.imm = checked(i, "instruction immediate", "i32")
        return _check(
            self.fn("bpf_prog_load")(
                checked(prog_type, "program type", "i32"),
                c_text(name, "program name", limit=15),
                b"GPL",
                ctypes.addressof(arr),
                len(insns),
                None,
            )
        )

    def prog_attach(self, prog_fd: int, target_fd: int, attach_type: int) -> None:
        _check(
            self.fn("bpf_prog_attach")(
                checked(prog_fd, "program fd", "fd"),
                checked(target_fd, "target fd", "fd"),
                checked(attach_type, "attach type", "i32"),
                0,
            )
        )

    def prog_detach(self, prog_fd: int, target_fd: int, attach_type: int) -> None:
        _check(
            self.fn("bpf_prog_detach2")(
                checked(prog_fd, "program fd", "fd"),
                checked(target_fd, "target fd", "fd"),
                checked(attach_type, "attach type", "i32"),
            )
        )

    # --- objects (bpf_object__*) ---------------------------------------------------------------------

    def object_open(self, path: str, log_buf: ctypes.Array[ctypes.c_char]) -> int:
        opts = ObjectOpenOpts(
            sz=ctypes.sizeof(ObjectOpenOpts),
            kernel_log_buf=ctypes.cast(log_buf, ctypes.c_char_p),
            kernel_log_size=len(log_buf),
            kernel_log_level=0,  # libbpf retries a failed load with level 1 into this buffer
        )
        ctypes.set_errno(0)
        obj = self.fn("bpf_object__open_file")(c_text(path, "path"), ctypes.byref(opts))
        if not obj:
            err = ctypes.get_errno() or _errno.EINVAL
            raise OSError(err, os.strerror(err))
        return int(obj)

    def object_load(self, obj: int) -> None:
        _check(self.fn("bpf_object__load")(obj))

    def object_close(self, obj: int) -> None:
        self.fn("bpf_object__close")(obj)

    def object_maps(self, obj: int) -> Iterator[int]:
        m = self.fn("bpf_object__next_map")(obj, None)
        while m:
            yield int(m)
            m = self.fn("bpf_object__next_map")(obj, m)

    def object_programs(self, obj: int) -> Iterator[int]:
        p = self.fn("bpf_object__next_program")(obj, None)
        while p:
            yield int(p)
            p = self.fn("bpf_object__next_program")(obj, p)

    def map_name(self, m: int) -> str:
        return bytes(self.fn("bpf_map__name")(m) or b"").decode()

    def map_fd(self, m: int) -> int:
        return _check(self.fn("bpf_map__fd")(m))

    def map_set_max_entries(self, m: int, n: int) -> None:
        _check(self.fn("bpf_map__set_max_entries")(m, checked(n, "max_entries")))

    def map_set_autocreate(self, m: int, on: bool) -> None:
        # libbpf (1.1+) turns a loaded program's references to a map it did not create into a call that
        # fails verification if reached: code the verifier finds dead may name such a map.
        _check(self.fn("bpf_map__set_autocreate")(m, on))

    def map_initial_value(self, m: int) -> tuple[int, int]:
        """(address, size) of a global-data map's contents before load, e.g. .rodata."""
        size = _SZ(0)
        p = self.fn("bpf_map__initial_value")(m, ctypes.byref(size))
        if not p:
            raise OSError(_errno.EINVAL, "map has no initial value")
        return int(p), int(size.value)

    def program_name(self, p: int) -> str:
        return bytes(self.fn("bpf_program__name")(p) or b"").decode()

    def program_section(self, p: int) -> str:
        return bytes(self.fn("bpf_program__section_name")(p) or b"").decode()

    def program_set_autoload(self, p: int, on: bool) -> None:
        _check(self.fn("bpf_program__set_autoload")(p, on))

    def program_fd(self, p: int) -> int:
        return _check(self.fn("bpf_program__fd")(p))

    def program_attach(self, p: int) -> int:
        ctypes.set_errno(0)
        link = self.fn("bpf_program__attach")(p)
        if not link:
            err = ctypes.get_errno() or _errno.EINVAL
            raise OSError(err, os.strerror(err))
        return int(link)

    def link_destroy(self, link: int) -> None:
        self.fn("bpf_link__destroy")(link)
