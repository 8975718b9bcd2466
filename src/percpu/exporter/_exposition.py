"""The text the exporter serves: metric families and their samples, rendered once per scrape in the
Prometheus text format or OpenMetrics, with label values escaped as the formats require."""

from __future__ import annotations

import gzip as _gzip
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "OPENMETRICS_CONTENT_TYPE",
    "TEXT_CONTENT_TYPE",
    "Exposition",
    "Family",
    "Labels",
    "Sample",
    "escape_label",
    "render",
]

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


class Sample(NamedTuple):
    suffix: str  # "_total", "_bucket", "" ...
    labels: Labels
    value: float


@dataclass
class Family:
    """One metric family. ``name`` is the base name (no ``_total``); ``kind`` counter, gauge or histogram.

    ``text`` holds chunks of sample lines already formatted (the per-CPU matrix, formatted in bulk, one
    chunk per row, joined only once with the rest of the body), identical in both exposition formats;
    ``cells`` then yields the same samples one by one for other consumers.
    """

    name: str
    kind: str
    help: str
    samples: list[Sample] = field(default_factory=list)
    text: list[bytes] = field(default_factory=list)
    cells: Callable[[], Iterator[Sample]] | None = None
    count: int = 0  # samples in ``text``

    def add(self, labels: Labels, value: float, suffix: str | None = None) -> None:
        self.samples.append(
            Sample("_total" if suffix is None and self.kind == "counter" else suffix or "", labels, value)
        )

    def all_samples(self) -> Iterator[Sample]:
        yield from self.samples
        if self.cells is not None:
            yield from self.cells()

    def __len__(self) -> int:
        return len(self.samples) + self.count


def escape_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels_text(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in labels) + "}"


def _value_text(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v.is_integer() and abs(v) < 2**53:
        return str(int(v))
    return repr(v)


def render(families: Iterable[Family], openmetrics: bool) -> bytes:
    """Families as Prometheus text format 0.0.4 or OpenMetrics 1.0 (which ends with ``# EOF``)."""
    parts: list[bytes] = []
    for fam in families:
        head = fam.name + "_total" if fam.kind == "counter" and not openmetrics else fam.name
        doc = fam.help.replace("\\", "\\\\").replace("\n", "\\n")
        if openmetrics:
            doc = doc.replace('"', '\\"')
        lines = [f"# HELP {head} {doc}\n# TYPE {head} {fam.kind}\n"]
        lines += [
            f"{fam.name}{s.suffix}{_labels_text(s.labels)} {_value_text(s.value)}\n" for s in fam.samples
        ]
        parts.append("".join(lines).encode())
        parts += fam.text
    if openmetrics:
        parts.append(b"# EOF\n")
    return b"".join(parts)


class Exposition:
    """One scrape's families, rendered on demand and at most once per format and encoding.

    Concurrent requests served from the same scrape share these bytes: one copy of the body per format,
    however many clients read it.
    """

    def __init__(self, families: list[Family], taken: float) -> None:
        self.families = families
        self.taken = taken  # time.monotonic() when the maps were read
        self.series = sum(len(f) for f in families)
        self._bodies: dict[tuple[bool, bool], bytes] = {}
        self._lock = threading.Lock()

    def body(self, openmetrics: bool, gzipped: bool = False) -> bytes:
        key = (openmetrics, gzipped)
        with self._lock:
            b = self._bodies.get(key)
            if b is None:
                if gzipped:
                    plain = self._bodies.get((openmetrics, False)) or render(self.families, openmetrics)
                    self._bodies[(openmetrics, False)] = plain
                    # Level 1: the exposition is repetitive text that compresses about 10x even so, and
                    # the time is the scrape's.
                    b = _gzip.compress(plain, compresslevel=1, mtime=0)
                else:
                    b = render(self.families, openmetrics)
                self._bodies[key] = b
            return b
