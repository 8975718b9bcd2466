"""percpu: per-CPU eBPF maps read and written correctly, and per-CPU system-call statistics.

The public API is re-exported here; the modules behind it are layered, each importing only from those
below it, lowest first: ``layout`` (per-CPU geometry, buffers), ``_libbpf`` (the one binding to libbpf),
``_machine`` (the one seam), ``features`` (memoized probes), ``cpus`` (CPU lists), ``values``, ``maps``
(typed maps), ``objects`` (programs, links), ``syscount`` (collector), ``views`` / ``plots`` /
``exporter``, ``cli``. The layers are import-linter contracts in pyproject.toml, checked by
``lint-imports`` (docs/architecture.md).

Importing percpu makes no bpf() call and loads no library of its own; libbpf is loaded on first use.
"""

from ._version import __version__
from .cpus import CpuList, CpuLists, cpu_lists
from .errors import (
    AttachError,
    BpfError,
    BtfError,
    CpuNotPossible,
    InvalidArgument,
    KeyExists,
    KeyNotFound,
    LibbpfError,
    MapFull,
    MapNotFound,
    MapTooLarge,
    MapTypeError,
    NotCopyable,
    NotSupported,
    PercpuError,
    PermissionDenied,
    ProgramLoadError,
    SizeMismatch,
    TopologyMismatch,
    TypeSpecError,
    UnknownSyscall,
)
from .maps import (
    BPF_ANY,
    BPF_EXIST,
    BPF_NOEXIST,
    Array,
    Hash,
    LruPerCpuHash,
    Map,
    MapType,
    PerCpuArray,
    PerCpuCgroupStorage,
    PerCpuHash,
    PerCpuMap,
    Snapshot,
    list_maps,
    open_map,
)
from .topo import CpuGroups, CpuInfo, CpuTopology
from .typespec import parse_type
from .values import Int, PerCpuValue

# Names of earlier releases, kept working with a DeprecationWarning (a *layout* is a map's bytes in percpu;
# the machine's CPU lists and each CPU's place in it have names of their own).
_DEPRECATED = {"Topology": "CpuLists", "topology": "cpu_lists", "CpuLayout": "CpuTopology"}


def __getattr__(name: str) -> object:
    new = _DEPRECATED.get(name)
    if new is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    warnings.warn(f"percpu.{name} is now percpu.{new}", DeprecationWarning, stacklevel=2)
    return globals()[new]


__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_NOEXIST",
    "Array",
    "AttachError",
    "BpfError",
    "BtfError",
    "CpuGroups",
    "CpuInfo",
    "CpuList",
    "CpuLists",
    "CpuNotPossible",
    "CpuTopology",
    "Hash",
    "Int",
    "InvalidArgument",
    "KeyExists",
    "KeyNotFound",
    "LibbpfError",
    "LruPerCpuHash",
    "Map",
    "MapFull",
    "MapNotFound",
    "MapTooLarge",
    "MapType",
    "MapTypeError",
    "NotCopyable",
    "NotSupported",
    "PerCpuArray",
    "PerCpuCgroupStorage",
    "PerCpuHash",
    "PerCpuMap",
    "PerCpuValue",
    "PercpuError",
    "PermissionDenied",
    "ProgramLoadError",
    "SizeMismatch",
    "Snapshot",
    "TopologyMismatch",
    "TypeSpecError",
    "UnknownSyscall",
    "__version__",
    "cpu_lists",
    "list_maps",
    "open_map",
    "parse_type",
]
