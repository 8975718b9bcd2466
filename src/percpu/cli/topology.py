"""``percpu topology``: each possible CPU's place in the machine, as ``--by`` and ``--cpus`` see it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..cpus import cpu_lists
from ..topo import topology_lines

__all__ = ["register"]


def _cmd(args: argparse.Namespace) -> int:
    topo = cpu_lists().topology()
    if args.json:
        obj = {
            "possible": str(topo.possible),
            "isolated": str(topo.isolated),
            "housekeeping": str(topo.housekeeping),
            "absent": str(topo.absent),
            "partitions": [{"path": p.path, "kind": p.kind, "cpus": str(p.cpus)} for p in topo.partitions],
            "cpus": [
                {
                    **{k: v for k, v in c._asdict().items() if k not in ("siblings", "partition")},
                    "state": c.state,
                    "siblings": str(c.siblings),
                    "partition": None if c.partition is None else c.partition.path,
                    "groups": {by: c.label(by, topo.multi_die) for by in ("core", "package", "node")},
                }
                for c in topo.cpus
            ],
        }
        sys.stdout.write(json.dumps(obj) + "\n")
        return 0
    for line in topology_lines(topo):
        print(line)
    iso, hk, absent = (str(x) or "-" for x in (topo.isolated, topo.housekeeping, topo.absent))
    print(f"\nisolated: {iso}  housekeeping: {hk}  absent: {absent}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "topology",
        help="each possible CPU's node, package, core, SMT siblings and isolation (from sysfs)",
        description="Each possible CPU (one per-CPU value slot each) with its NUMA node, package, die, core, "
        "SMT siblings and isolation (isolcpus=, nohz_full=, cgroup v2 cpuset partitions). CPUs that are "
        "offline or absent (possible, never brought up) have no topology in sysfs and show '-'.",
    )
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=_cmd)
