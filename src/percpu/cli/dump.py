"""``percpu dump``: a map's entries, per-CPU values by CPU id, decoded with BTF or declared types."""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..btf import BtfCodec, CharArray, EnumValue, NanValue, btf_codec, load_btf
from ..errors import KeyNotFound, PercpuError, SizeMismatch
from ..maps import Map, PerCpuMap, open_map
from ..values import BytesCodec, Codec, IntCodec, reduce_cpus
from ._args import int_at_least

__all__ = ["register"]


def _json_value(v: Any, dt: np.dtype[Any] | None = None) -> Any:
    """A value decoded by numpy as JSON: records as objects, arrays as lists, C strings as text (with their
    bytes where the text is not all of them), other bytes as hex."""
    if isinstance(v, np.void) and v.dtype.names:
        return {n: _json_value(v[n], v.dtype.fields[n][0]) for n in v.dtype.names}  # type: ignore[index]
    if isinstance(v, np.void):
        return bytes(v.tobytes()).hex()
    if isinstance(v, np.ndarray):
        return [_json_value(x, v.dtype) for x in v]
    if isinstance(v, bytes | np.bytes_):
        # numpy drops a char array's trailing NULs; its dtype says how many bytes it has
        return _chars(bytes(v).ljust(dt.itemsize if dt is not None else 0, b"\0"))
    if isinstance(v, np.floating):
        return _float(float(v), int.from_bytes(v.tobytes(), sys.byteorder), v.dtype.itemsize)
    if isinstance(v, np.generic):
        return v.item()
    return v


def _btf_json(v: Any) -> Any:
    """A value decoded by BTF (:meth:`percpu.btf.Btf.value`) as JSON, losing nothing: enums by name (their
    number where no enumerator matches), every member of a union, char arrays as text plus their bytes
    where those differ, floats that JSON has no number for as text."""
    if isinstance(v, dict):
        return {k: _btf_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_btf_json(x) for x in v]
    if isinstance(v, EnumValue):
        return v.name if v.name is not None else int(v)
    if isinstance(v, NanValue):
        return _float(v, v.bits, v.size)
    if isinstance(v, float):
        return _float(v, 0, 0)
    if isinstance(v, CharArray):
        return _chars(bytes(v))
    if isinstance(v, bytes):  # RawBytes: nothing says what they mean
        return v.hex()
    return v


# The NaN each float width gets from arithmetic (positive, quiet, no payload): shown as "nan"; any other
# NaN shows its bits.
_QUIET_NAN = {2: 0x7E00, 4: 0x7FC00000, 8: 0x7FF8000000000000}


def _float(v: float, bits: int, size: int) -> float | str:
    """A float as JSON: a number where JSON has one (a 32-bit float's exact value, written as a double),
    else ``"inf"``, ``"-inf"``, ``"nan"``, or ``"nan:0x7fc00001"`` for a NaN with a sign or payload."""
    if math.isfinite(v):
        return v
    if not math.isnan(v):
        return "inf" if v > 0 else "-inf"
    return "nan" if bits == _QUIET_NAN.get(size) else f"nan:0x{bits:0{2 * size}x}"


def _chars(b: bytes) -> str | dict[str, str]:
    """A char array: its text when the text and NUL padding are all its bytes; else the text up to the
    first NUL (as C reads it, undecodable bytes replaced) and ``hex``, every byte."""
    head = b.split(b"\0", 1)[0]
    try:
        text = head.decode()
    except UnicodeDecodeError:
        pass
    else:
        if not b[len(head) :].strip(b"\0"):
            return text
    return {"text": head.decode(errors="replace"), "hex": b.hex()}


def _text(j: Any) -> str:
    """A JSON value as one cell of the table: text as itself when it is all printable (so a control
    character from another process's name never reaches the terminal raw), anything else as JSON."""
    if isinstance(j, str) and j and j.isprintable():
        return j
    return json.dumps(j, separators=(",", ":"))


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
        codec = m.key_codec
        if isinstance(codec, BtfCodec) and codec.btf.resolve(codec.type_id).kind in ("enum", "enum64"):
            return text.strip()  # an enumerator's name, as dump shows an enum key
        raise PercpuError(f"--key {text!r}: not an integer (decimal or 0x hex)") from exc


def _rows(m: Map, key: Any, args: argparse.Namespace) -> Iterator[tuple[bytes, list[bytes], np.ndarray]]:
    """(key bytes, the bytes of each CPU's value or of the one value, the same values as a typed array
    for sums), batch-read, at most --limit of them. Each key and value is shown from all its bytes, as
    the kernel holds them."""
    ksize, vsize = m.info.key_size, m.info.value_size
    if key is not None:
        kraw = m.key_codec.encode(key)
        try:
            if isinstance(m, PerCpuMap):
                arr = m.lookup(key).to_numpy()
                if args.cpu is not None:
                    arr = arr[list(m.cpus).index(args.cpu)]
                values = _split(arr, vsize)
            else:
                values = [_lookup_bytes(m, args.map, kraw)]
                arr = _typed(m.value_codec, values)
        except KeyNotFound as exc:
            shown = f" (bytes {key.hex()})" if isinstance(key, bytes) else ""
            raise KeyNotFound(
                f"map {m.info.id} {m.name!r} has no key {args.key}{shown}", errno=exc.errno, map_name=m.name
            ) from exc
        yield kraw, values, arr
        return
    # --cpu: one CPU's values only (the kernel copies just those where it has BPF_F_CPU, Linux 7.0).
    snap = m.snapshot(cpu=args.cpu) if args.cpu is not None and isinstance(m, PerCpuMap) else m.snapshot()
    n = len(snap) if not args.limit else min(args.limit, len(snap))
    kbuf, vbuf = _bytes_of(snap.keys[:n]), _bytes_of(snap.values[:n])
    per_key = len(vbuf) // (n * vsize) if n else 0
    for i in range(n):
        first = i * per_key
        yield (
            bytes(kbuf[i * ksize : (i + 1) * ksize]),
            [bytes(vbuf[(first + j) * vsize : (first + j + 1) * vsize]) for j in range(per_key)],
            snap.values[i],
        )


def _bytes_of(arr: np.ndarray) -> memoryview:
    """The bytes of a typed array, every element's in order: numpy's own scalars drop a char array's
    trailing NULs and turn a _Bool's byte 2 into True, so elements are decoded from these instead."""
    flat: Any = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    return memoryview(flat)


def _split(arr: np.ndarray, size: int) -> list[bytes]:
    """The bytes of each element of a typed array, in order."""
    buf = _bytes_of(arr)
    return [bytes(buf[i : i + size]) for i in range(0, len(buf), size)]


def _lookup_bytes(m: Map, spec: str, kraw: bytes) -> bytes:
    """One value of a map that is not per-CPU, as bytes: its typed lookup returns a decoded value, and
    some (a NaN's payload, a _Bool's byte) cannot be turned back into the bytes they came from."""
    with open_map(spec, key=bytes, value=bytes) as raw:
        if raw.info.id != m.info.id:
            raise PercpuError(
                f"{spec!r} is map {raw.info.id} now, not map {m.info.id}: it was replaced; retry"
            )
        v = raw.lookup(kraw)
    return bytes(v)


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
        notes: list[str] = []
        kc, vc = m.key_codec, m.value_codec
        key_json, value_json = _decoder(kc, "key", notes), _decoder(vc, "value", notes)
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
        for note in notes:  # JSON lines have no header: there the note goes to stderr
            print(
                f"  {note}" if not args.json else f"percpu: dump: {note}",
                file=sys.stderr if args.json else out,
            )
        count = 0
        for kraw, vraws, arr in _rows(m, wanted, args):
            count += 1
            k = key_json(kraw)
            if not m.percpu:
                obj: dict[str, Any] = {"key": k, "value": value_json(vraws[0])}
            elif args.cpu is not None:  # _rows gave this CPU's value alone
                obj = {"key": k, "cpu": args.cpu, "value": value_json(vraws[0])}
            elif args.sum:
                obj = {"key": k, "sum": _json_value(_sum(vc, arr))}
            else:
                obj = {
                    "key": k,
                    "values": [{"cpu": c, "value": value_json(vraws[i])} for i, c in enumerate(cpus)],
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


def _decoder(codec: Codec, what: str, notes: list[str]) -> Callable[[bytes], Any]:
    """Bytes of one key or value -> JSON: decoded by BTF where the map has it (enum names, bitfields,
    unions), else by the codec's numpy layout."""
    if isinstance(codec, BtfCodec):
        try:
            decode = codec.btf.decoder(codec.type_id)
        except PercpuError as exc:
            notes.append(f"({what}s shown by their numpy layout, without BTF's names and bits: {exc})")
        else:
            return lambda raw: _btf_json(decode(raw))
    if _odd_int(codec):
        return lambda raw: codec.decode(_typed(codec, [raw])[0])
    return _scalar(codec.dtype) or (lambda raw: _json_value(_typed(codec, [raw])[0], codec.dtype))


def _scalar(dt: np.dtype[Any]) -> Callable[[bytes], Any] | None:
    """Bytes -> JSON for a plain number, without building a numpy scalar for each (a dump of a million
    counters makes millions of them)."""
    if dt.names or dt.subdtype or dt.kind not in "iubf" or (dt.kind == "f" and dt.itemsize not in (2, 4, 8)):
        return None
    order: Any = "big" if dt.byteorder == ">" else "little" if dt.byteorder == "<" else sys.byteorder
    if dt.kind == "b":
        return lambda raw: bool(raw[0]) if raw[0] < 2 else raw[0]  # a _Bool's byte 2 stays 2
    if dt.kind == "f":
        unpack = struct.Struct({"big": ">", "little": "<"}[order] + {2: "e", 4: "f", 8: "d"}[dt.itemsize])
        return lambda raw: _float(unpack.unpack(raw)[0], int.from_bytes(raw, order), dt.itemsize)
    signed = dt.kind == "i"
    return lambda raw: int.from_bytes(raw, order, signed=signed)


def _typed(codec: Codec, raws: list[bytes]) -> np.ndarray:
    """Values' bytes as an array of the codec's dtype, one row each (a u64[4] value is a row of 4)."""
    arr: np.ndarray = np.ndarray((len(raws),), dtype=codec.dtype, buffer=b"".join(raws))
    return arr


def _btf_refusal(btf_id: int, type_id: int, size: int, flag: str) -> str:
    """Why a map's BTF type gave no codec, for the dump header (the map itself reads as bytes)."""
    try:
        btf = load_btf(btf_id)
        name = btf.type_name(type_id)
        if btf.size(type_id) != size:
            return f"({name}) is {btf.size(type_id)} bytes, not the map's {size}; {flag} declares a type"
        btf_codec(btf, type_id, size)
    except (PercpuError, OSError) as exc:
        return f"was not decoded: {exc}; {flag} declares a type"
    return f"({name}) has no layout: it is not a type a value can have; {flag} declares a type"


def _odd_int(codec: Codec) -> bool:
    """An integer numpy has no type for (u24, u128): held as bytes, decoded by the codec."""
    return isinstance(codec, IntCodec) and codec.dtype.kind == "V"


def _sum(codec: Codec, arr: np.ndarray) -> Any:
    if _odd_int(codec):
        return sum(codec.decode(x) for x in arr)
    return reduce_cpus(arr, "sum")


def _print_row(obj: dict[str, Any], out: Any) -> None:
    key = _text(obj["key"])
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
        "with BTF where the map has it (field names, enumerator names, bitfields, every member of a "
        "union, char arrays as text with their bytes where those differ), raw hex where not. Reads use "
        "batch operations.",
    )
    d.add_argument("map", help="map id, name, or pinned path (/sys/fs/bpf/...)")
    d.add_argument("--sum", action="store_true", help="per key, the total over all CPUs (per-CPU maps)")
    d.add_argument("--cpu", type=int, help="only this CPU's values (per-CPU maps)")
    d.add_argument(
        "--key",
        help="only this key. A struct key (from BTF or --key-type): a JSON object of its fields. A char[N] "
        "key: its text. An enum key: an enumerator's name or its number. An integer key, or a 1, 2, 4 or "
        "8-byte key without a type: a decimal or 0x hex "
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
