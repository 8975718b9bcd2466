"""``percpu explain``: the per-CPU buffer overrun, shown safely on a scratch map with guard bytes."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NamedTuple

import numpy as np

from .. import _machine
from ..cpus import CpuList, cpu_lists
from ..errors import BpfError, PercpuError
from ..layout import alloc
from ..layout import round8 as stride

__all__ = ["register"]


def _hex(b: bytes, width: int = 16) -> list[str]:
    return [" ".join(f"{x:02x}" for x in b[i : i + width]) for i in range(0, len(b), width)]


_FILL = 0xEE  # what the buffer holds before the lookup; no slot pattern below uses it


def _slot_byte(i: int) -> int:
    """The byte slot ``i`` is filled with: distinct for neighbouring CPUs, never the fill byte."""
    return 0x10 + i % 0xD0


def _guard_state(guard: bytes) -> str:
    changed = sum(1 for x in guard if x != _FILL)
    if not changed:
        return f"intact: all {len(guard)} bytes still {_FILL:02x}"
    return f"OVERWRITTEN: {changed} of {len(guard)} bytes are no longer {_FILL:02x}"


_GUARD = 16  # bytes of fill on each side of what the kernel should write


class _Written(NamedTuple):
    """What the kernel wrote around a buffer sized for its per-CPU copy: ``first`` (its offset from the
    buffer's start), ``wrote`` (bytes), whether every slot holds its CPU's value."""

    first: int
    wrote: int
    slots_ok: bool


def _read_naively(size: int, n: int) -> bytes:
    """One lookup of a scratch per-CPU array whose slot i holds ``_slot_byte(i)``, into a buffer with
    ``_GUARD`` fill bytes on each side of the ``round_up(size, 8) x n`` the kernel should write; the whole
    buffer, guards included."""
    from ..maps import PerCpuArray

    expected = n * stride(size)
    with PerCpuArray.create(np.dtype((np.void, size)), 1, name="percpu_explain") as m:
        m.update(0, [bytes([_slot_byte(i)]) * size for i in range(n)])
        # The "naive" program's buffer is `size` bytes; we allocate enough for what the kernel should
        # write plus guards on both sides, so the overrun lands in our own memory, not the heap, and a
        # kernel that wrote even more would show in the guard after.
        buf = alloc(_GUARD + expected + _GUARD)
        buf[:] = _FILL
        inner = buf[_GUARD : _GUARD + expected]
        key = m.layout.key_buffer()
        try:
            _machine.current().kernel.map_lookup(m.fd, key, inner, m.layout)
        except OSError as exc:
            raise BpfError(f"lookup failed: {os.strerror(exc.errno or 0)}", errno=exc.errno) from exc
        return bytes(buf)


def _measure(raw: bytes, size: int, n: int) -> _Written:
    # Every byte the kernel writes (slot patterns, zeroed padding) differs from the fill byte, so the
    # span of changed bytes is what it wrote, measured rather than assumed.
    st = stride(size)
    changed = np.flatnonzero(np.frombuffer(raw, np.uint8) != _FILL)
    first = int(changed[0]) - _GUARD if changed.size else 0
    wrote = int(changed[-1]) - int(changed[0]) + 1 if changed.size else 0
    slots_ok = all(
        raw[_GUARD + i * st : _GUARD + (i + 1) * st] == bytes([_slot_byte(i)]) * size + bytes(st - size)
        for i in range(n)
    )
    return _Written(first, wrote, slots_ok)


def _show_buffer(raw: bytes, size: int, possible: CpuList) -> None:
    """The guards and the slots (the first eight and the last), each slot with whose memory it is."""
    n, st = len(possible), stride(size)
    before, after = raw[:_GUARD], raw[_GUARD + n * st :]
    print(f"  guard before  : {' '.join(_hex(before))}   {_guard_state(before)}")
    shown = 0
    for i, cpu in enumerate(possible):
        if shown >= 8 and i < n - 1:
            continue
        sl = raw[_GUARD + i * st : _GUARD + (i + 1) * st]
        if i == 0:
            owner = (
                "the program's buffer"
                if size == st
                else f"the program's {size} bytes, then padding past them"
            )
        else:
            owner = "PAST THE END of the program's buffer"
        cells = " ".join(_hex(sl[: min(st, 16)]))
        print(f"  slot {i:>3} cpu{cpu:<4}: {cells}{' ...' if st > 16 else ''}  <- {owner}")
        shown += 1
    print(f"  guard after   : {' '.join(_hex(after))}   {_guard_state(after)}")


def _show_rule(size: int, possible: CpuList, w: _Written) -> None:
    """What was measured, the rule that sizes a correct buffer, and what the same rule costs a map."""
    from ..maps import MapType, memory_bytes
    from ..maps._kinds import human_bytes

    n, st = len(possible), stride(size)
    expected = n * st
    print(
        f"\nMeasured: the kernel wrote {w.wrote} bytes"
        + (f" starting {w.first} bytes before the buffer" if w.first < 0 else "")
        + (f" starting {w.first} bytes into the buffer" if w.first > 0 else "")
        + f"; {'every' if w.slots_ok else 'NOT every'} slot holds the value stored for its CPU."
    )
    print(
        f"{max(w.wrote + w.first - size, 0)} bytes land past the end of a {size}-byte buffer: heap "
        "corruption that crashes now and then"
    )
    print("The rule: buffer = round_up(value_size, 8) * num_possible_cpus(), where possible CPUs come from")
    print(
        f"/sys/devices/system/cpu/possible ({possible}), not os.cpu_count() ({os.cpu_count()}) or online "
        f"CPUs ({cpu_lists().online})."
    )
    print("Slot i holds the i-th possible CPU, which is CPU id i only when that list has no gaps.")
    entries = 1 << 20
    cost = memory_bytes(MapType.PERCPU_ARRAY, 4, size, entries, n)
    print(
        f"The same rule sizes the map in the kernel: an entry holds {st} x {n} = {expected} bytes of values,"
    )
    print(
        f"so a PERCPU_ARRAY of {entries:,} such values takes {human_bytes(cost)} here, allocated when it is "
        "created\n(percpu.maps.memory_bytes(); create() refuses what this machine cannot hold)."
    )
    print("percpu sizes every buffer this way: PerCpuArray.create(...).lookup(key) returns a PerCpuValue.")


def _cmd_explain(args: argparse.Namespace) -> int:
    size = args.value_size
    if not 1 <= size <= 32768:
        raise PercpuError("--value-size must be 1..32768")
    possible = cpu_lists().possible
    n = len(possible)
    st = stride(size)
    expected = n * st
    raw = _read_naively(size, n)
    w = _measure(raw, size, n)
    print(f"A per-CPU map with {size}-byte values on a machine with {n} possible CPUs ({possible}).")
    print(f"A program that reads it into a buffer sized for one value ({size} bytes) passes the kernel this")
    print(f"buffer; the kernel writes round_up({size}, 8) x {n} = {st} x {n} = {expected} bytes into it:\n")
    _show_buffer(raw, size, possible)
    _show_rule(size, possible, w)
    if (w.first, w.wrote) != (0, expected) or not w.slots_ok:
        sys.stdout.flush()
        raise PercpuError(
            f"the kernel wrote {w.wrote} bytes at offset {w.first}, not the {expected} bytes at offset 0 "
            f"that round_up({size}, 8) x {n} possible CPUs predicts"
            + ("" if w.slots_ok else ", and the slots do not hold the values stored")
            + ": percpu's buffer sizing is wrong on this machine; please report it"
        )
    return 0


def register(sub: Any) -> None:
    e = sub.add_parser(
        "explain",
        help="show the per-CPU buffer overrun safely on a scratch map",
        description="Create a scratch per-CPU array and show, with guard bytes, what the kernel "
        "writes into a buffer sized for one value.",
    )
    e.add_argument("--value-size", type=int, default=8, help="value size in bytes (default 8)")
    e.set_defaults(func=_cmd_explain)
