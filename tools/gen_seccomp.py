#!/usr/bin/env python3
"""Generate deploy/seccomp/percpu-exporter.json: the container engine's default seccomp profile as it
applies to the exporter's container, plus bpf().

The default profile of podman and CRI-O (containers-common's ``seccomp.json``, like moby's) says which
rules apply to which container with ``includes``/``excludes`` conditions on capabilities and
architectures; the engine resolves them when it creates a container. Before containers-common 0.60
(bookworm ships 0.50) it allows ``bpf`` and ``perf_event_open`` only to a container that holds
CAP_SYS_ADMIN and answers EPERM to every other, CAP_BPF and CAP_PERFMON notwithstanding.

This writes the profile those rules give a container with exactly the capabilities that
deploy/daemonset.yaml adds (read from it), on x86_64 and arm64 (the architectures percpu ships BPF
objects for), in the OCI runtime-spec form: no ``includes``/``excludes``, which containerd does not
understand (it reads a Localhost profile straight into the OCI spec, where every rule would apply to
every container). The one change: ``bpf`` leaves the EPERM rule and is allowed. Nothing else is allowed
that the default does not allow this container.

``perf_event_open`` stays refused: percpu attaches at ``tp_btf`` (kernels with BTF) or ``raw_tp`` (kernels
without), both through bpf(); only ``--attach tracepoint`` opens perf events, and it needs tracefs, which
the container has not got (mounting it needs CAP_SYS_ADMIN). Checked in a container with this profile:
every mode of the exporter and of ``percpu stat`` (``-e -L -P``, ``--failed``, ``--attach raw_tp``) counts.

    .venv/bin/python tools/gen_seccomp.py           # rewrite deploy/seccomp/percpu-exporter.json
    .venv/bin/python tools/gen_seccomp.py --check   # exit 1 if the committed file is not what it makes

tests/unit/test_exporter_web.py regenerates it from the installed default and compares; the container
check (tests/container) compares it with what podman itself resolves for that container.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BASE = "/usr/share/containers/seccomp.json"  # Debian: golang-github-containers-common
MANIFEST = os.path.join(ROOT, "deploy", "daemonset.yaml")
OUT = os.path.join(ROOT, "deploy", "seccomp", "percpu-exporter.json")
CONTAINER = "percpu-exporter"
# Go's architecture names, as the default profile's conditions spell them, for the two percpu ships.
ARCHES = ("amd64", "arm64")
NATIVE = {"amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64"}
ADDED = ("bpf",)  # for CAP_BPF (Linux 5.8+)


def manifest_caps(path: str = MANIFEST) -> list[str]:
    """The capabilities deploy/daemonset.yaml gives the exporter's container, as CAP_ names."""
    import yaml

    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    (ctr,) = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == CONTAINER]
    caps = ctr["securityContext"]["capabilities"]
    if caps.get("drop") != ["ALL"]:
        raise SystemExit(f"{path}: the container must drop ALL capabilities before adding any")
    return sorted("CAP_" + c.upper().removeprefix("CAP_") for c in caps["add"])


def _applies(rule: dict[str, Any], caps: list[str], arch: str) -> bool:
    inc = rule.get("includes") or {}
    exc = rule.get("excludes") or {}
    unknown = (set(inc) | set(exc)) - {"caps", "arches"}
    if unknown:
        raise SystemExit(f"a rule has conditions this generator does not resolve: {sorted(unknown)}")
    # An include names what the container must all have, an exclude what it must have none of (the
    # engines check the bounding set, which the manifest's drop ALL + add makes exactly these).
    return (
        all(c in caps for c in inc.get("caps", []))
        and not any(c in caps for c in exc.get("caps", []))
        and (not inc.get("arches") or arch in inc["arches"])
        and arch not in exc.get("arches", [])
    )


def generate(base: dict[str, Any], caps: list[str], arches: tuple[str, ...] = ARCHES) -> dict[str, Any]:
    """The profile for a container with capabilities ``caps`` on ``arches`` (Go's names)."""
    architectures: list[str] = []
    for arch in arches:
        (entry,) = [m for m in base["archMap"] if m["architecture"] == NATIVE[arch]]
        architectures += [entry["architecture"], *entry["subArchitectures"]]
    syscalls: list[dict[str, Any]] = []
    for rule in base["syscalls"]:
        if not any(_applies(rule, caps, arch) for arch in arches):
            continue
        names = [n for n in rule["names"] if n not in ADDED]
        if rule["action"] == "SCMP_ACT_ALLOW" and len(names) != len(rule["names"]):
            raise SystemExit(f"the default already allows {ADDED} to this container: nothing to add")
        if not names:
            continue
        out: dict[str, Any] = {"names": names, "action": rule["action"]}
        if rule.get("args"):
            out["args"] = rule["args"]
        if rule.get("errnoRet") is not None:
            out["errnoRet"] = rule["errnoRet"]
        syscalls.append(out)
    syscalls.append({"names": list(ADDED), "action": "SCMP_ACT_ALLOW"})
    profile: dict[str, Any] = {"defaultAction": base["defaultAction"]}
    if base.get("defaultErrnoRet") is not None:
        profile["defaultErrnoRet"] = base["defaultErrnoRet"]
    profile["architectures"] = architectures
    profile["syscalls"] = syscalls
    return profile


def render(profile: dict[str, Any]) -> str:
    return json.dumps(profile, indent=2) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default=BASE, help=f"the engine's default profile (default {BASE})")
    ap.add_argument("--check", action="store_true", help="compare with the committed file, write nothing")
    args = ap.parse_args()
    with open(args.base, encoding="utf-8") as f:
        text = render(generate(json.load(f), manifest_caps()))
    if args.check:
        with open(OUT, encoding="utf-8") as f:
            if f.read() != text:
                print(f"{os.path.relpath(OUT, ROOT)} is not what {args.base} gives: run {sys.argv[0]}")
                return 1
        return 0
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {os.path.relpath(OUT, ROOT)} for {', '.join(manifest_caps())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
