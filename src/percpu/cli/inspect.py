"""``percpu maps``, ``percpu dump``, ``percpu doctor`` and ``percpu explain``: look at per-CPU maps."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, TypeVar

import numpy as np

from .. import _libbpf, _procfs
from ..cpus import CpuList, topology
from ..errors import BpfError, KeyNotFound, LibbpfError, NotSupported, PercpuError, SizeMismatch
from ..layout import alloc
from ..maps import (
    PERCPU_TYPES,
    Map,
    MapType,
    PerCpuMap,
    cpu_flag_supported,
    list_maps,
    open_map,
    user_value_bytes,
)
from ..values import BytesCodec, Codec, IntCodec, reduce_cpus, stride
from ._args import int_at_least

__all__ = ["register"]

T = TypeVar("T")


def _json_value(v: Any) -> Any:
    """A decoded value as JSON: records as objects, arrays as lists, C strings as text, other bytes as hex."""
    if isinstance(v, np.void) and v.dtype.names:
        return {n: _json_value(v[n]) for n in v.dtype.names}
    if isinstance(v, np.void):
        return bytes(v.tobytes()).hex()
    if isinstance(v, np.ndarray):
        return [_json_value(x) for x in v]
    if isinstance(v, bytes | np.bytes_):
        return _c_string(bytes(v))
    if isinstance(v, np.generic):
        return v.item()
    return v


def _c_string(b: bytes) -> str:
    """A char array as C reads it, up to its first NUL; hex when that is not printable text, so control
    characters from another process's name never reach the terminal raw."""
    head = b.split(b"\0", 1)[0]
    try:
        text = head.decode()
    except UnicodeDecodeError:
        return b.hex()
    return text if text.isprintable() else b.hex()


def _text(v: Any) -> str:
    j = _json_value(v)
    return j if isinstance(j, str) else json.dumps(j, separators=(",", ":"))


# --- percpu maps --------------------------------------------------------------------------------------


def _cmd_maps(args: argparse.Namespace) -> int:
    possible = len(topology().possible)
    rows = []
    for info in list_maps():
        percpu = info.type in PERCPU_TYPES
        if args.percpu and not percpu:
            continue
        rows.append(
            {
                "id": info.id,
                "name": info.name,
                "type": MapType.name_of(info.type),
                "percpu": percpu,
                "key_size": info.key_size,
                "value_size": info.value_size,
                "max_entries": info.max_entries,
                "flags": info.flags,
                "btf": bool(info.btf_value_type_id),
                "lookup_writes": user_value_bytes(info.type, info.value_size, possible),
            }
        )
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"{'id':>6} {'name':<16} {'type':<22} {'key':>5} {'value':>6} {'entries':>8} {'lookup writes':>14}")
    for r in rows:
        mark = "*" if r["percpu"] else " "
        print(
            f"{r['id']:>6} {r['name']:<16} {r['type']:<21}{mark} {r['key_size']:>5} {r['value_size']:>6} "
            f"{r['max_entries']:>8} {r['lookup_writes']:>14,}"
        )
    print(f"\n* per-CPU: a user-space lookup writes round_up(value_size, 8) x {possible} possible CPUs")
    return 0


# --- percpu dump --------------------------------------------------------------------------------------


def _parse_int(text: str) -> int:
    """A decimal (leading zeros allowed: ``07``) or ``0x`` hexadecimal integer."""
    t = text.strip()
    body = t.removeprefix("-")
    base = 16 if body[:2].lower() == "0x" else 10
    return int(t, base)


_INT_KEY_SIZES = (1, 2, 4, 8)


def _parse_key(m: Map, text: str) -> Any:
    kt = m.key_codec.dtype
    size = m.info.key_size
    if kt.kind == "S":  # a C string: the text, NUL-padded to the key's size
        raw = text.encode()
        if len(raw) > size:
            raise PercpuError(f"--key {text!r}: {len(raw)} bytes; the map's {m.key_codec.name} holds {size}")
        return raw.ljust(size, b"\0")
    if isinstance(m.key_codec, IntCodec):
        try:
            return _parse_int(text)
        except ValueError as exc:
            raise PercpuError(f"--key {text!r}: not an integer (decimal or 0x hex)") from exc
    if kt.names:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PercpuError(
                f"--key for {m.key_codec.name}: give a JSON object of its fields ({exc})"
            ) from exc
        return obj
    if kt.kind == "V" and size in _INT_KEY_SIZES:
        # No BTF says what the key is; a key of an integer's size is taken as that integer, in the
        # byte order the kernel stores it in (this machine's).
        try:
            value = _parse_int(text)
        except ValueError as exc:
            raise PercpuError(
                f"--key {text!r}: the map's {size}-byte key has no BTF type; give it as an integer, "
                "decimal or 0x hex"
            ) from exc
        if not 0 <= value < 1 << (8 * size):
            raise PercpuError(f"--key {text!r}: a {size}-byte key is 0..{(1 << (8 * size)) - 1}")
        return value.to_bytes(size, sys.byteorder)
    if kt.kind == "V":
        h = text.replace(" ", "")
        try:
            raw = bytes.fromhex(h)
        except ValueError as exc:
            raise PercpuError(
                f"--key {text!r}: give the {size}-byte key as hex bytes, e.g. {'0a' * size}"
            ) from exc
        if len(raw) != size:
            raise PercpuError(f"--key {text!r}: {len(raw)} bytes; the map's keys are {size} bytes")
        return raw
    try:
        return _parse_int(text)
    except ValueError as exc:
        raise PercpuError(f"--key {text!r}: not an integer (decimal or 0x hex)") from exc


def _rows(m: Map, key: Any, args: argparse.Namespace) -> Iterator[tuple[Any, Any]]:
    """(key, per-CPU values array or single value), batch-read, at most --limit of them."""
    if key is not None:
        try:
            v = m.lookup(key)
        except KeyNotFound as exc:
            shown = f" (bytes {key.hex()})" if isinstance(key, bytes) else ""
            raise KeyNotFound(
                f"map {m.info.id} {m.name!r} has no key {args.key}{shown}", errno=exc.errno, map_name=m.name
            ) from exc
        arr = v.to_numpy() if isinstance(m, PerCpuMap) else v
        if args.cpu is not None and isinstance(m, PerCpuMap):
            arr = arr[list(m.cpus).index(args.cpu)]
        # Raw keys are shown as a dump shows them (hex bytes, or text for a char array), whatever was typed.
        if isinstance(key, bytes):
            key = np.bytes_(key) if m.key_codec.dtype.kind == "S" else np.void(key)
        yield key, arr
        return
    # --cpu: one CPU's values only (the kernel copies just those where it has BPF_F_CPU, Linux 7.0).
    snap = m.snapshot(cpu=args.cpu) if args.cpu is not None and isinstance(m, PerCpuMap) else m.snapshot()
    n = len(snap) if not args.limit else min(args.limit, len(snap))
    for i in range(n):
        yield snap.keys[i], snap.values[i]


def _open_typed(args: argparse.Namespace) -> Map:
    """The map, with the key and value types the command line declares (else BTF's, else bytes)."""
    try:
        return open_map(args.map, key=args.key_type, value=args.value_type)
    except SizeMismatch as exc:
        flag = f"--{exc.what}-type"
        given = args.key_type if exc.what == "key" else args.value_type
        if given is None:
            raise
        raise SizeMismatch(
            f"{flag} {given!r} is {exc.actual} bytes, but map {args.map!r} has {exc.expected}-byte "
            f"{exc.what}s; declare a type of {exc.expected} bytes",
            what=exc.what,
            expected=exc.expected,
            actual=exc.actual,
            map_name=exc.map_name,
        ) from exc


def _cmd_dump(args: argparse.Namespace) -> int:
    with _open_typed(args) as m:
        if not m.percpu:
            for flag, given in (("--cpu", args.cpu is not None), ("--sum", args.sum)):
                if given:
                    raise PercpuError(
                        f"map {m.info.id} {m.name!r} ({m.type_name}) is not a per-CPU map: it has one "
                        f"value per key; {flag} applies only to per-CPU maps"
                    )
        cpus = list(m.cpus)
        if args.cpu is not None and args.cpu not in cpus:
            raise PercpuError(f"--cpu {args.cpu}: not a possible CPU (possible: {m.cpus})")
        numeric = m.value_codec.numeric
        if args.sum and not numeric:
            hint = ""
            if isinstance(m.value_codec, BytesCodec):
                size = m.info.value_size
                example = f"u{size * 8}" if size <= 8 else "'struct {u32 pid; u64 n}'"
                hint = f"; declare what the {size}-byte values are, e.g. --value-type {example}"
            raise PercpuError(f"--sum needs numeric values; {m.value_codec.name} is not{hint}")
        wanted = None if args.key is None else _parse_key(m, args.key)
        out = sys.stdout
        if not args.json:
            print(
                f"map {m.info.id} {m.name!r}: {m.type_name}, key {m.key_codec.name}, "
                f"value {m.value_codec.name}" + (f", CPUs {m.cpus}" if m.percpu else ""),
                file=out,
            )
            for what, codec, type_id, size in (
                ("key", m.key_codec, m.info.btf_key_type_id, m.info.key_size),
                ("value", m.value_codec, m.info.btf_value_type_id, m.info.value_size),
            ):
                if type_id and isinstance(codec, BytesCodec):
                    why = _btf_refusal(m.info.btf_id, type_id, size, f"--{what}-type")
                    print(
                        f"  ({what}s shown as bytes: BTF type {type_id} {why})",
                        file=out,
                    )
        count = 0
        kc, vc = m.key_codec, m.value_codec
        for key, vals in _rows(m, wanted, args):
            count += 1
            k = _shown(kc, key)
            if not m.percpu:
                obj: dict[str, Any] = {"key": k, "value": _shown(vc, vals)}
            else:
                arr = np.asarray(vals)
                if args.cpu is not None:  # _rows gave this CPU's value alone
                    obj = {"key": k, "cpu": args.cpu, "value": _shown(vc, vals)}
                elif args.sum:
                    obj = {"key": k, "sum": _json_value(_sum(vc, arr))}
                else:
                    obj = {
                        "key": k,
                        "values": [{"cpu": c, "value": _shown(vc, arr[i])} for i, c in enumerate(cpus)],
                    }
                    if numeric:
                        obj["sum"] = _json_value(_sum(vc, arr))
            if args.json:
                out.write(json.dumps(obj) + "\n")
            else:
                _print_row(obj, out)
        if not args.json:
            print(f"{count} entries", file=out)
    return 0


def _btf_refusal(btf_id: int, type_id: int, size: int, flag: str) -> str:
    """Why a map's BTF type gave no codec, for the dump header (the map itself reads as bytes)."""
    from ..btf import btf_codec, load_btf

    try:
        btf = load_btf(btf_id)
        name = btf.type_name(type_id)
        if btf.size(type_id) != size:
            return f"({name}) is {btf.size(type_id)} bytes, not the map's {size}; {flag} declares a type"
        btf_codec(btf, type_id, size)
    except (PercpuError, OSError) as exc:
        return f"was not decoded: {exc}; {flag} declares a type"
    return f"({name}) has no exact layout (bitfields, or a kind numpy cannot hold); {flag} declares a type"


def _odd_int(codec: Codec) -> bool:
    """An integer numpy has no type for (u24, u128): held as bytes, decoded by the codec."""
    return isinstance(codec, IntCodec) and codec.dtype.kind == "V"


def _shown(codec: Codec, v: Any) -> Any:
    if _odd_int(codec):
        return codec.decode(np.asarray(v))
    return _json_value(v)


def _sum(codec: Codec, arr: np.ndarray) -> Any:
    if _odd_int(codec):
        return sum(codec.decode(x) for x in arr)
    return reduce_cpus(arr, "sum")


def _print_row(obj: dict[str, Any], out: Any) -> None:
    key = obj["key"] if isinstance(obj["key"], str) else json.dumps(obj["key"], separators=(",", ":"))
    if "values" in obj:
        cells = "  ".join(f"cpu{v['cpu']}={_text(v['value'])}" for v in obj["values"])
        tail = f"  sum={_text(obj['sum'])}" if "sum" in obj else ""
        out.write(f"key {key}: {cells}{tail}\n")
    elif "cpu" in obj:
        out.write(f"key {key}: cpu{obj['cpu']}={_text(obj['value'])}\n")
    elif "sum" in obj:
        out.write(f"key {key}: sum={_text(obj['sum'])}\n")
    else:
        out.write(f"key {key}: {_text(obj['value'])}\n")


# --- percpu doctor ------------------------------------------------------------------------------------

Check = tuple[str, str, str]  # (status ok|warn|fail|info|unknown, what, detail)

# Capability bits (linux/capability.h). CAP_BPF and CAP_PERFMON appeared in 5.8; before that only
# CAP_SYS_ADMIN let a process create maps and load tracing programs.
_CAPS = ((21, "CAP_SYS_ADMIN"), (38, "CAP_PERFMON"), (39, "CAP_BPF"))
_PRIV_HINT = "grant CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def _privileges(caps: int | None) -> Check:
    euid = os.geteuid()
    if caps is None:
        return ("unknown", "privileges", f"euid {euid}; CapEff not readable from /proc/self/status")
    names = [name for bit, name in _CAPS if caps >> bit & 1]
    have = f"euid {euid}, effective capabilities: {', '.join(names) or 'none'}"
    if _procfs.can_load_bpf(caps):
        return ("ok", "privileges", have)
    if euid == 0:
        why = "root without them (a container or setpriv dropped them): " + _PRIV_HINT
    else:
        why = "run as root or " + _PRIV_HINT
    return ("fail", "privileges", f"{have}; {why}")


class _Failed(NamedTuple):
    """A probe that raised: ``status`` is "unknown" when it could not run (privileges, no libbpf), else the
    status its caller gave for a kernel that says no."""

    status: str
    reason: str


def _attempt(fn: Callable[[], T], *, refused: str = "warn") -> T | _Failed:
    """Run one probe; its failure becomes a check result rather than the end of the report."""
    try:
        return fn()
    except LibbpfError as exc:
        return _Failed("unknown", str(exc))
    except NotSupported as exc:
        return _Failed(refused, f"not supported ({os.strerror(exc.errno) if exc.errno else exc})")
    except (PercpuError, OSError) as exc:
        e = getattr(exc, "errno", None)
        if e in (errno.EPERM, errno.EACCES):
            return _Failed("unknown", f"{os.strerror(e)} (see privileges)")
        return _Failed(refused, os.strerror(e) if e else str(exc))


def _probe_check(what: str, probe: Callable[[], None], ok: str) -> Check:
    r = _attempt(probe)
    if not isinstance(r, _Failed):
        return ("ok", what, ok)
    return (r.status, what, f"could not probe: {r.reason}" if r.status == "unknown" else r.reason)


def _cpu_lists() -> tuple[CpuList, CpuList, CpuList]:
    topo = topology()
    return topo.possible, topo.online, topo.present


def _tracefs(mounts: str) -> str | None:
    with open(mounts, encoding="ascii", errors="replace") as f:
        return next((line.split()[1] for line in f if line.split()[2:3] == ["tracefs"]), None)


def _enable_stats() -> None:
    os.close(_libbpf.libbpf().enable_stats())


def _percpu_maps(possible: int) -> list[dict[str, Any]]:
    return [
        {
            "id": info.id,
            "name": info.name,
            "type": MapType.name_of(info.type),
            "value_size": info.value_size,
            "stride": stride(info.value_size),
            "possible_cpus": possible,
            "reader_buffer_bytes": user_value_bytes(info.type, info.value_size, possible),
        }
        for info in list_maps()
        if info.type in PERCPU_TYPES
    ]


def _syscount_checks(modes: list[dict[str, Any]] | None = None) -> list[Check]:
    """One check per mode of the syscall counter, each loaded and attached for real; ``modes`` (when
    given) receives the structured results for the JSON report."""
    from ..syscount import mode_support

    res = _attempt(mode_support)
    if isinstance(res, _Failed):
        return [("unknown", "syscall counter modes", f"could not probe: {res.reason}")]
    out: list[Check] = []
    for m in res:
        label = f"syscall counter: {m.mode}" + (f" ({m.flag})" if m.flag else "")
        if m.supported:
            out.append(("ok", label, m.detail))
        else:
            denied = "Operation not permitted" in m.detail or "Permission denied" in m.detail
            out.append(("unknown" if denied else "fail" if m.mode == "default" else "warn", label, m.detail))
        if modes is not None:
            modes.append(dataclasses.asdict(m))
    return out


def _doctor_checks(
    status: str = "/proc/self/status",
    mounts: str = "/proc/self/mounts",
    modes: list[dict[str, Any]] | None = None,
) -> tuple[list[Check], list[dict[str, Any]]]:
    """Every check, each probe run on its own so one that fails (EPERM in a container, no libbpf) is
    reported with its reason and the others still run."""
    checks: list[Check] = []
    lists = _attempt(_cpu_lists, refused="fail")
    n_possible = 0
    if isinstance(lists, _Failed):
        checks.append(("fail", "CPU lists", lists.reason))
    else:
        possible, online, present = lists
        n_possible = len(possible)
        checks.append(("info", "possible CPUs", f"{possible} ({len(possible)})"))
        checks.append(("info", "online CPUs", f"{online} ({len(online)})"))
        checks.append(("info", "present CPUs", f"{present} ({len(present)})"))
        if len(possible) != len(online):
            extra = len(possible) - len(online)
            checks.append(
                (
                    "warn",
                    "possible != online",
                    f"a reader that sizes per-CPU buffers by online CPUs (os.cpu_count()) overruns by "
                    f"{extra} slots x round_up(value_size, 8) bytes",
                )
            )
        if possible.ids != tuple(range(len(possible))):
            checks.append(("warn", "gaps in possible CPUs", "slot i is not CPU id i: map slots to CPU ids"))
    checks.append(_privileges(_procfs.effective_caps(status)))
    unpriv = _read("/proc/sys/kernel/unprivileged_bpf_disabled")
    checks.append(("info", "kernel.unprivileged_bpf_disabled", unpriv or "unknown"))
    try:
        lib = _libbpf.libbpf()
        checks.append(("ok", "libbpf", f"{lib.version_string} ({lib.path})"))
    except LibbpfError as exc:
        checks.append(("fail", "libbpf", str(exc)))
    btf = os.path.exists("/sys/kernel/btf/vmlinux")
    checks.append(
        (
            "ok" if btf else "warn",
            "kernel BTF",
            "/sys/kernel/btf/vmlinux" if btf else "missing: tp_btf is unavailable, raw_tp is used",
        )
    )
    tracefs = _attempt(lambda: _tracefs(mounts))
    if isinstance(tracefs, _Failed):
        checks.append(("unknown", "tracefs", f"cannot read {mounts}: {tracefs.reason}"))
    else:
        checks.append(
            (
                "ok" if tracefs else "info",
                "tracefs",
                tracefs or "not mounted (percpu mounts it when the classic tracepoint is needed)",
            )
        )
    stats = _read("/proc/sys/kernel/bpf_stats_enabled")
    checks.append(
        (
            "info",
            "kernel.bpf_stats_enabled",
            f"{stats} (1: programs report run count and time; percpu exporter --enable-bpf-stats)",
        )
    )
    for t in (MapType.PERCPU_ARRAY, MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH):
        checks.append(_probe_check(f"batch ops on {t.name}", functools.partial(_probe_batch, t), "ok"))
    flag = _attempt(cpu_flag_supported)
    what = "BPF_F_CPU (one CPU's slot)"
    if isinstance(flag, _Failed):
        checks.append(("unknown", what, f"could not probe: {flag.reason}"))
    elif flag:
        checks.append(("ok", what, "supported"))
    else:
        checks.append(
            (
                "info",
                what,
                "not supported (Linux 7.0 adds it): update_cpu() reads, modifies and writes all slots",
            )
        )
    for hook, prog in (("tp_btf", "enter_btf"), ("raw_tp", "enter_raw"), ("tracepoint", "enter_tp")):
        checks.append(
            _probe_check(f"{hook} program at sys_enter", functools.partial(_probe_load, prog), "loads")
        )
    checks.append(_probe_check("bpf_stats (BPF_ENABLE_STATS)", _enable_stats, "can be turned on"))
    checks.extend(_syscount_checks(modes))
    maps = _attempt(lambda: _percpu_maps(n_possible)) if n_possible else _Failed("unknown", "no CPU list")
    if isinstance(maps, _Failed):
        checks.append(("unknown", "per-CPU maps on this system", f"could not list them: {maps.reason}"))
        return checks, []
    return checks, maps


def _probe_load(program: str) -> None:
    """Load (not attach) one empty program of the shipped floor object: the real test of a hook type."""
    from ..objects import BpfObject, bundled

    with BpfObject(bundled("floor.bpf.o")) as obj:
        for name, p in obj.programs.items():
            p.autoload = name == program
        obj.load()


def _probe_batch(t: MapType) -> None:
    from ..maps import LruPerCpuHash, PerCpuArray, PerCpuHash

    m: Map
    if t == MapType.PERCPU_ARRAY:
        m = PerCpuArray.create(np.uint64, 4, name="percpu_probe")
    elif t == MapType.PERCPU_HASH:
        m = PerCpuHash.create(np.uint32, np.uint64, 4, name="percpu_probe")
    else:
        m = LruPerCpuHash.create(np.uint32, np.uint64, 4, name="percpu_probe")
    with m:
        m.snapshot(batch=True)


def _cmd_doctor(args: argparse.Namespace) -> int:
    modes: list[dict[str, Any]] = []
    checks, maps = _doctor_checks(modes=modes)
    if args.json:
        json.dump(
            {
                "kernel": os.uname().release,
                "machine": os.uname().machine,
                "checks": [{"status": s, "check": w, "detail": d} for s, w, d in checks],
                "syscall_counter_modes": modes,
                "percpu_maps": maps,
            },
            sys.stdout,
            indent=2,
        )
        sys.stdout.write("\n")
    else:
        for status, what, detail in checks:
            print(f"[{status:>7}] {what}: {detail}")
        if maps:
            print("\nper-CPU maps on this system and the buffer a correct reader needs for one lookup:")
            for m in maps:
                print(
                    f"  id {m['id']:>5} {m['name']:<16} {m['type']:<22} value {m['value_size']:>6} B -> "
                    f"{m['reader_buffer_bytes']:,} B ({m['stride']} x {m['possible_cpus']} CPUs)"
                )
    failed = [what for status, what, _ in checks if status == "fail"]
    if failed:
        sys.stdout.flush()
        print(
            f"percpu: doctor: {len(failed)} essential check(s) failed: {', '.join(failed)}", file=sys.stderr
        )
        return 1
    return 0


# --- percpu explain -----------------------------------------------------------------------------------


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


def _cmd_explain(args: argparse.Namespace) -> int:
    from ..maps import PerCpuArray

    size = args.value_size
    if not 1 <= size <= 32768:
        raise PercpuError("--value-size must be 1..32768")
    possible = topology().possible
    n = len(possible)
    st = stride(size)
    guard = 16
    expected = n * st
    with PerCpuArray.create(np.dtype((np.void, size)), 1, name="percpu_explain") as m:
        m.update(0, [bytes([_slot_byte(i)]) * size for i in range(n)])
        # The "naive" program's buffer is `size` bytes; we allocate enough for what the kernel should
        # write plus guards on both sides, so the overrun lands in our own memory, not the heap, and a
        # kernel that wrote even more would show in the guard after.
        buf = alloc(guard + expected + guard)
        buf[:] = _FILL
        inner = buf[guard : guard + expected]
        key = m.layout.key_buffer()
        b = _libbpf.backend()
        try:
            b.map_lookup(m.fd, key, inner, m.layout)
        except OSError as exc:
            raise BpfError(f"lookup failed: {os.strerror(exc.errno or 0)}", errno=exc.errno) from exc
        raw = bytes(buf)
    # Every byte the kernel writes (slot patterns, zeroed padding) differs from the fill byte, so the
    # span of changed bytes is what it wrote, measured rather than assumed.
    changed = np.flatnonzero(buf != _FILL)
    first = int(changed[0]) - guard if changed.size else 0
    wrote = int(changed[-1]) - int(changed[0]) + 1 if changed.size else 0
    before, after = raw[:guard], raw[guard + expected :]
    slots_ok = all(
        raw[guard + i * st : guard + (i + 1) * st] == bytes([_slot_byte(i)]) * size + bytes(st - size)
        for i in range(n)
    )
    print(f"A per-CPU map with {size}-byte values on a machine with {n} possible CPUs ({possible}).")
    print(f"A program that reads it into a buffer sized for one value ({size} bytes) passes the kernel this")
    print(f"buffer; the kernel writes round_up({size}, 8) x {n} = {st} x {n} = {expected} bytes into it:\n")
    print(f"  guard before  : {' '.join(_hex(before))}   {_guard_state(before)}")
    shown = 0
    for i, cpu in enumerate(possible):
        if shown >= 8 and i < n - 1:
            continue
        sl = raw[guard + i * st : guard + (i + 1) * st]
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
    print(
        f"\nMeasured: the kernel wrote {wrote} bytes"
        + (f" starting {first} bytes before the buffer" if first < 0 else "")
        + (f" starting {first} bytes into the buffer" if first > 0 else "")
        + f"; {'every' if slots_ok else 'NOT every'} slot holds the value stored for its CPU."
    )
    print(
        f"{max(wrote + first - size, 0)} bytes land past the end of a {size}-byte buffer: heap corruption "
        "that crashes now and then"
    )
    print("The rule: buffer = round_up(value_size, 8) * num_possible_cpus(), where possible CPUs come from")
    print(
        f"/sys/devices/system/cpu/possible ({possible}), not os.cpu_count() ({os.cpu_count()}) or online "
        f"CPUs ({topology().online})."
    )
    print("Slot i holds the i-th possible CPU, which is CPU id i only when that list has no gaps.")
    print("percpu sizes every buffer this way: PerCpuArray.create(...).lookup(key) returns a PerCpuValue.")
    if (first, wrote) != (0, expected) or not slots_ok:
        sys.stdout.flush()
        raise PercpuError(
            f"the kernel wrote {wrote} bytes at offset {first}, not the {expected} bytes at offset 0 that "
            f"round_up({size}, 8) x {n} possible CPUs predicts"
            + ("" if slots_ok else ", and the slots do not hold the values stored")
            + ": percpu's buffer sizing is wrong on this machine; please report it"
        )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "maps",
        help="list BPF maps; per-CPU ones with the bytes a lookup writes",
        description="List every BPF map on the system (needs root). Per-CPU maps are marked, "
        "with the bytes one user-space lookup writes.",
    )
    p.add_argument("--percpu", action="store_true", help="only per-CPU maps")
    p.add_argument("-j", "--json", action="store_true", help="JSON output")
    p.set_defaults(func=_cmd_maps)

    d = sub.add_parser(
        "dump",
        help="dump a map with real CPU ids and BTF field names",
        description="Dump a map's entries. Per-CPU values are shown per CPU id (not slot), decoded "
        "with BTF field names where the map has BTF, raw hex where not. Reads use batch "
        "operations.",
    )
    d.add_argument("map", help="map id, name, or pinned path (/sys/fs/bpf/...)")
    d.add_argument("--sum", action="store_true", help="per key, the total over all CPUs (per-CPU maps)")
    d.add_argument("--cpu", type=int, help="only this CPU's values (per-CPU maps)")
    d.add_argument(
        "--key",
        help="only this key. A struct key (from BTF or --key-type): a JSON object of its fields. A char[N] "
        "key: its text. An integer key, or a 1, 2, 4 or 8-byte key without a type: a decimal or 0x hex "
        "integer (laid out in this machine's byte order, as the kernel stores it). Any other key without "
        "a type: its bytes in hex, e.g. 0a0b0c for 3 bytes",
    )
    for what in ("key", "value"):
        d.add_argument(
            f"--{what}-type",
            metavar="TYPE",
            help=f"decode {what}s as TYPE, for maps without BTF (bpftrace's, bcc's): u64, i32, u24, u32be, "
            "f64, char[16], u64[4], 'struct {u32 pid; char comm[16]; u64 n}' or pid:u32,comm:char[16],n:u64 "
            "(see docs/inspect.md). Its size must be the map's",
        )
    d.add_argument(
        "--limit",
        type=int_at_least(0, " (0: all)"),
        default=0,
        metavar="N",
        help="at most N entries (default 0: all)",
    )
    d.add_argument("-j", "--json", action="store_true", help="one JSON object per entry")
    d.set_defaults(func=_cmd_dump)

    c = sub.add_parser(
        "doctor",
        help="what a correct per-CPU reader needs on this machine",
        description="Check CPU lists, privileges, libbpf, BTF, tracefs and probe kernel features "
        "(batch operations, BPF_F_CPU, program types, bpf_stats); list the buffer size each "
        "per-CPU map on the system needs.",
    )
    c.add_argument("-j", "--json", action="store_true", help="JSON output")
    c.set_defaults(func=_cmd_doctor)

    e = sub.add_parser(
        "explain",
        help="show the per-CPU buffer overrun safely on a scratch map",
        description="Create a scratch per-CPU array and show, with guard bytes, what the kernel "
        "writes into a buffer sized for one value.",
    )
    e.add_argument("--value-size", type=int, default=8, help="value size in bytes (default 8)")
    e.set_defaults(func=_cmd_explain)
