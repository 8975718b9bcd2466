"""deploy/daemonset.yaml made playable by the podman at hand, and what had to change for it to be.

``podman kube play`` plays the manifest's kinds where it can. What it cannot play is replaced here by the
nearest thing it can, and every replacement is returned with its reason, so that the check prints them and
the docs can name them; nothing is copied by hand, so nothing can drift from the manifest:

* DaemonSet: podman plays it from 4.7.0 (commit "kube: add DaemonSet support"); before, it skips the
  kind ("Kube kind DaemonSet not supported"), and the Pod of its template is played instead, with the
  template's metadata and the same spec.
* A Secret volume: podman before 4.4.0 crashes on one without ``optional`` and, with it, mounts the
  Secret's ``data`` still base64-encoded and leaves its ``stringData`` out (seen with 4.3.1; podman#16269,
  #16625), so the same files are mounted from a host directory instead.
* ``ports``: podman before 4.8.0 publishes every ``containerPort`` on the host as if it were a
  ``hostPort`` (commit "Fix all ports exposed by kube play"; Kubernetes publishes nothing), which on the
  host's network it refuses ("PortMappings can only be used with Bridge or slirp4netns networking"), so
  they are left out; the probes name the port, which podman does not resolve in any case.
* ``securityContext.seccompProfile``: no podman release reads the field; it reads the annotations that
  Kubernetes used before it (``container.seccomp.security.alpha.kubernetes.io/NAME: localhost/FILE``),
  given here on the command line from the field, with ``--seccomp-profile-root`` for the directory.

And two changes that are the check's, not the engine's: the machine is shared with other test runs, so
the exporter listens on a free loopback port (on the host's network: the pod would otherwise need a
bridge and firewall rules on the host) and counts the check's own workload by its command name.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

DAEMONSET_SINCE = (4, 7, 0)
SECRET_VOLUMES_SINCE = (4, 4, 0)
CONTAINER_PORTS_UNPUBLISHED_SINCE = (4, 8, 0)
SECCOMP_ANNOTATION = "container.seccomp.security.alpha.kubernetes.io/"


@dataclass
class Playable:
    documents: list[dict[str, Any]]  # what to give `podman kube play`
    annotations: dict[str, str]  # its --annotation options
    changes: list[str] = field(default_factory=list)  # what differs from the manifest, and why
    unplayable: list[str] = field(default_factory=list)  # the manifest's kinds this podman does not play


def version_tuple(text: str) -> tuple[int, ...]:
    """``4.3.1`` -> (4, 3, 1); a suffix (``4.9.0-rc1``, ``5.4.2+ds1``) is ignored."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not m:
        raise ValueError(f"not a version: {text!r}")
    return tuple(int(g or 0) for g in m.groups())


def playable(
    manifest: list[dict[str, Any]],
    engine: tuple[int, ...],
    *,
    secret_dirs: dict[str, str],
    listen: str,
    extra_args: list[str],
    container: str = "percpu-exporter",
) -> Playable:
    """The documents of ``manifest`` (parsed YAML) that ``podman kube play`` version ``engine`` plays as
    the manifest means them. ``secret_dirs`` maps a Secret's name to the host directory that holds its
    files (used where the engine cannot mount the Secret itself)."""
    docs = copy.deepcopy([d for d in manifest if d])
    out = Playable([], {})
    for original in docs:
        doc, kind = original, original["kind"]
        if kind == "DaemonSet" and engine < DAEMONSET_SINCE:
            template = doc["spec"]["template"]
            meta = {"name": doc["metadata"]["name"], **template.get("metadata", {})}
            if "namespace" in doc["metadata"]:
                meta["namespace"] = doc["metadata"]["namespace"]
            doc = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]}
            out.unplayable.append(kind)
            out.changes.append(
                f"DaemonSet {meta['name']}: played as the Pod of its template (podman "
                f"{_dotted(engine)} skips the kind; it plays it from {_dotted(DAEMONSET_SINCE)})"
            )
        if kind == "Secret" and engine < SECRET_VOLUMES_SINCE:
            out.changes.append(
                f"Secret {doc['metadata']['name']}: not played; its files are mounted from "
                f"{secret_dirs[doc['metadata']['name']]} (podman {_dotted(engine)} mounts a Secret's data "
                f"base64-encoded and leaves stringData out, podman#16269 and #16625, fixed in "
                f"{_dotted(SECRET_VOLUMES_SINCE)})"
            )
            continue
        if kind not in ("Pod", "DaemonSet", "Secret"):
            out.changes.append(f"{kind} {doc['metadata']['name']}: not a kind podman plays (skipped)")
            out.unplayable.append(kind)
            continue
        spec = doc["spec"]["template"]["spec"] if doc["kind"] == "DaemonSet" else doc.get("spec")
        if spec is not None:
            _adapt(spec, out, engine, secret_dirs, listen, extra_args, container)
        out.documents.append(doc)
    return out


def _adapt(
    spec: dict[str, Any],
    out: Playable,
    engine: tuple[int, ...],
    secret_dirs: dict[str, str],
    listen: str,
    extra_args: list[str],
    container: str,
) -> None:
    profile = spec.get("securityContext", {}).get("seccompProfile")
    for ctr in spec["containers"]:
        own = ctr.get("securityContext", {}).get("seccompProfile", profile)
        if own and own["type"] == "Localhost":
            out.annotations[SECCOMP_ANNOTATION + ctr["name"]] = "localhost/" + own["localhostProfile"]
            out.changes.append(
                f"container {ctr['name']}: seccompProfile Localhost {own['localhostProfile']} given as "
                "podman's annotation (podman reads the annotation, not the field)"
            )
    if engine < SECRET_VOLUMES_SINCE:
        for vol in spec.get("volumes", []):
            if "secret" in vol:
                vol["hostPath"] = {"path": secret_dirs[vol.pop("secret")["secretName"]], "type": "Directory"}
    if engine < CONTAINER_PORTS_UNPUBLISHED_SINCE:
        for c in spec["containers"]:
            if c.pop("ports", None):
                out.changes.append(
                    f"container {c['name']}: ports left out (podman {_dotted(engine)} publishes a "
                    f"containerPort on the host, and refuses to on the host's network; not since "
                    f"{_dotted(CONTAINER_PORTS_UNPUBLISHED_SINCE)})"
                )
    (ctr,) = [c for c in spec["containers"] if c["name"] == container]
    args = [a for a in ctr["args"] if not a.startswith(("--listen=", "--web.listen-address="))]
    if len(args) != len(ctr["args"]) - 1:
        raise ValueError(f"{container}: expected one --listen=ADDRESS in {ctr['args']}")
    ctr["args"] = [*args, f"--listen={listen}", *extra_args]
    out.changes.append(
        f"container {container}: --listen={listen} and {' '.join(extra_args)} (the check's: a shared "
        "machine, the host's network, loopback only, its own workload counted)"
    )


def _dotted(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))
