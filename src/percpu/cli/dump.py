"""``percpu dump``: a map's entries, per-CPU values by CPU id, decoded with BTF or declared types."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import KeyNotFound, PercpuError, SizeMismatch
from ..maps import Map, PerCpuMap, open_map
from ..values import BytesCodec, Codec, IntCodec, reduce_cpus
from ._args import int_at_least

__all__ = ["register"]


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


def register(sub: Any) -> None:
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
