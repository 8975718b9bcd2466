"""Which of the maps on the system percpu made itself, so that `percpu maps` and `percpu doctor` can set
them apart from the user's.

A map closed by its last user is freed by the kernel later, once the programs that used it are freed
(after an RCU grace period: for programs at syscall tracepoints, a tasks-trace one that can last
seconds), and is listed until then. So the maps of a percpu run that just ended, or of the doctor's own
probes, stay on the list for a while beside the user's. They are told apart by what they are, not by
who holds them (a map being freed has no holder left):

* the syscall counter's maps (`counts`, `lost`, ... and `syscount.rodata`) carry the BTF of
  bpf/syscount.bpf.c, whose `struct percpu_config` no other program has;
* the feature probes' maps are named ``percpu_probe`` (:data:`percpu.features.PROBE_MAP_NAME`), and
  `percpu explain`'s scratch map ``percpu_explain``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from .. import _machine
from .._libbpf import MapInfo
from ..btf import parse_btf
from ..errors import PercpuError
from ..features import PROBE_MAP_NAME

__all__ = ["COUNTER", "EXPLAIN_MAP_NAME", "made_by_percpu"]

COUNTER = "syscall counter"
EXPLAIN_MAP_NAME = "percpu_explain"
_BY_NAME = {PROBE_MAP_NAME: "feature probe", EXPLAIN_MAP_NAME: "explain"}
_COUNTER_TYPE = "percpu_config"  # bpf/syscount.bpf.c's .rodata configuration (both objects have it)


def made_by_percpu(infos: Iterable[MapInfo]) -> dict[int, str]:
    """Map id -> what percpu made it for (``"syscall counter"``, ``"feature probe"``, ``"explain"``), for
    the maps of ``infos`` that percpu made. A BTF the kernel no longer gives (freed meanwhile, no
    privilege) leaves its maps unmarked: the user's, as far as anyone can tell."""
    out: dict[int, str] = {}
    counter = functools.cache(_is_counters)
    for info in infos:
        what = _BY_NAME.get(info.name)
        if what is None and info.btf_id and counter(info.btf_id):
            what = COUNTER
        if what is not None:
            out[info.id] = what
    return out


def _is_counters(btf_id: int) -> bool:
    try:
        btf = parse_btf(_machine.current().kernel.btf_raw(btf_id))
        btf.find(_COUNTER_TYPE, "struct")
    except (OSError, PercpuError):
        return False
    return True
