"""percpu: per-CPU eBPF maps read and written correctly, and per-CPU system-call statistics.

The public API is re-exported here; the modules behind it are layered, each importing only downward:

``layout`` (per-CPU geometry, buffers) -> ``_libbpf`` (the one binding to libbpf) -> ``cpus`` (topology)
-> ``features`` (memoized probes) -> ``values`` / ``maps`` (typed maps) -> ``objects`` (programs, links)
-> ``syscount`` (collector) -> ``cli`` / ``exporter``.

Importing percpu makes no syscall and loads no library; libbpf is loaded on first use.
"""

from .cpus import CpuList, Topology, topology
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
from .topo import CpuGroups, CpuInfo, CpuLayout
from .typespec import parse_type
from .values import Int, PerCpuValue

__version__ = "0.1.0"

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
    "CpuLayout",
    "CpuList",
    "CpuNotPossible",
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
    "Topology",
    "TopologyMismatch",
    "TypeSpecError",
    "UnknownSyscall",
    "__version__",
    "list_maps",
    "open_map",
    "parse_type",
    "topology",
]
