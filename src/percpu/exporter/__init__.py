"""Prometheus metrics from the syscall counter, formatted by percpu itself.

Each scrape reads the BPF maps once (batch reads, no reset, no lock the programs wait on) and turns the
absolute counts into metric families, which :class:`Exposition` renders in the Prometheus text format or
OpenMetrics. prometheus_client is not needed to serve; :meth:`SyscallCollector.collect` still makes the
collector usable in a prometheus_client registry where that package is installed. Cardinality is bounded
by options:

* ``cpu_label=False`` (or ``"none"``) sums over CPUs; ``"core"``, ``"package"`` or ``"node"`` sums CPUs into
  those groups (from the sysfs topology read when the collector is made) under a label of that name;
* ``top_syscalls=N`` names the N busiest syscalls and puts the rest in ``syscall="other"``. A syscall
  once named stays named, and one that later enters the top N (by calls since the previous scrape) is
  named too, until 2N are named; see :meth:`SyscallCollector._update_kept` for why every exported counter,
  "other" included, stays monotonic;
* per-process series carry ``comm`` only (never pid; escaped as ``stat`` shows it, see
  :func:`percpu._text.printable`), at most ``max_comms`` of them (default 20) plus ``comm="other"``: half
  the names go to names as they appear, the busiest first, the other half to names among the busiest
  half since the previous scrape (:meth:`SyscallCollector._name_comms`). The series are accumulated
  from deltas, and a name's series counts from the scrape that named it, so every series only grows and
  the comm series of a syscall, "other" included, add up to its per-process calls; the rows of exited
  processes, which the counter sums by name (``syscount.ProcessTable``), are subtracted where they went.
  Memory stays bounded whatever names processes give themselves: the named set is at most
  ``max_comms``, every other name is folded into "other" without being remembered, and the per-key
  state is bounded by the counter's tables.

Every series of the kernel's counts (the syscall matrix, errors, latency histograms, per-process counts,
dropped, lost, skipped, program runs) is served at 0 the first time it is served, and at its value from
the next scrape on. Prometheus's ``increase()`` and ``rate()`` start from a series' first sample: a series
born at its full value hides every call counted before it (400,000 calls of a syscall new since the last
scrape were invisible to ``increase()``), while a series born at 0 shows them as its first increase.
OpenMetrics ``_created`` samples would say the same thing, but Prometheus 2.42 (Debian 12's) stores them
as series of their own that ``increase()`` ignores, and they double the series count; see
docs/exporter.md.
"""

from __future__ import annotations

from ._collector import BPF_STATS_SYSCTL, SyscallCollector
from ._comms import OTHER
from ._disturb import DisturbCollector
from ._exposition import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    Exposition,
    Family,
    Labels,
    Sample,
    render,
)

__all__ = [
    "BPF_STATS_SYSCTL",
    "OPENMETRICS_CONTENT_TYPE",
    "OTHER",
    "TEXT_CONTENT_TYPE",
    "DisturbCollector",
    "Exposition",
    "Family",
    "Labels",
    "Sample",
    "SyscallCollector",
    "render",
]
