"""``percpu maps``: every BPF map on the system; per-CPU ones with the bytes a lookup writes; each with the
kernel memory it takes when full."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..cpus import cpu_lists
from ..maps import PERCPU_TYPES, MapType, list_maps, memory_bytes, user_value_bytes
from ..maps._kinds import human_bytes

__all__ = ["register"]


def _cmd_maps(args: argparse.Namespace) -> int:
    possible = len(cpu_lists().possible)
    rows: list[dict[str, Any]] = []
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
                "memory_bytes": memory_bytes(
                    info.type, info.key_size, info.value_size, info.max_entries, possible, info.flags
                ),
            }
        )
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(
        f"{'id':>6} {'name':<16} {'type':<22} {'key':>5} {'value':>6} {'entries':>8} {'memory':>10} "
        f"{'lookup writes':>14}"
    )
    for r in rows:
        mark = "*" if r["percpu"] else " "
        print(
            f"{r['id']:>6} {r['name']:<16} {r['type']:<21}{mark} {r['key_size']:>5} {r['value_size']:>6} "
            f"{r['max_entries']:>8} {human_bytes(r['memory_bytes']):>10} {r['lookup_writes']:>14,}"
        )
    print(f"\n* per-CPU: a user-space lookup writes round_up(value_size, 8) x {possible} possible CPUs")
    print(
        "memory: what the map takes in the kernel when full, by the kernel's own accounting; for a per-CPU "
        f"map max_entries x round_up(value_size, 8) x {possible} possible CPUs, plus keys and headers"
    )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "maps",
        help="list BPF maps; per-CPU ones with the bytes a lookup writes",
        description="List every BPF map on the system (needs root). Per-CPU maps are marked, "
        "with the bytes one user-space lookup writes; every map with the kernel memory it takes when full.",
    )
    p.add_argument("--percpu", action="store_true", help="only per-CPU maps")
    p.add_argument("-j", "--json", action="store_true", help="JSON output")
    p.set_defaults(func=_cmd_maps)
