"""percpu: per-CPU eBPF maps read and written correctly, and per-CPU system-call statistics.

The public API is re-exported here; the modules behind it are layered, each importing only from those
below it, lowest first: ``layout`` (per-CPU geometry, buffers), ``_libbpf`` (the one binding to libbpf),
``_machine`` (the one seam), ``features`` (memoized probes), ``cpus`` (CPU lists), ``values``, ``maps``
(typed maps), ``objects`` (programs, links), ``syscount`` (collector), ``views`` / ``plots`` /
``exporter``, ``cli``. The layers are import-linter contracts in pyproject.toml, checked by
``lint-imports`` (docs/architecture.md).

Importing percpu makes no bpf() call and loads no library of its own; each public name's module is imported
on its first use (no numpy until then), and libbpf is loaded on first use.
"""

import importlib
from typing import TYPE_CHECKING

from ._version import __version__

if TYPE_CHECKING:
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

# Where each public name lives. Importing percpu imports none of it (no numpy, no libbpf): the name's module
# is imported on first use. The `percpu` command relies on that: its Ctrl-C handling is in place before
# anything slow is imported (__main__.py).
_PUBLIC = {
    "CpuList": "cpus",
    "CpuLists": "cpus",
    "cpu_lists": "cpus",
    "AttachError": "errors",
    "BpfError": "errors",
    "BtfError": "errors",
    "CpuNotPossible": "errors",
    "InvalidArgument": "errors",
    "KeyExists": "errors",
    "KeyNotFound": "errors",
    "LibbpfError": "errors",
    "MapFull": "errors",
    "MapNotFound": "errors",
    "MapTooLarge": "errors",
    "MapTypeError": "errors",
    "NotCopyable": "errors",
    "NotSupported": "errors",
    "PercpuError": "errors",
    "PermissionDenied": "errors",
    "ProgramLoadError": "errors",
    "SizeMismatch": "errors",
    "TopologyMismatch": "errors",
    "TypeSpecError": "errors",
    "UnknownSyscall": "errors",
    "BPF_ANY": "maps",
    "BPF_EXIST": "maps",
    "BPF_NOEXIST": "maps",
    "Array": "maps",
    "Hash": "maps",
    "LruPerCpuHash": "maps",
    "Map": "maps",
    "MapType": "maps",
    "PerCpuArray": "maps",
    "PerCpuCgroupStorage": "maps",
    "PerCpuHash": "maps",
    "PerCpuMap": "maps",
    "Snapshot": "maps",
    "list_maps": "maps",
    "open_map": "maps",
    "CpuGroups": "topo",
    "CpuInfo": "topo",
    "CpuTopology": "topo",
    "parse_type": "typespec",
    "Int": "values",
    "PerCpuValue": "values",
}

# Names of earlier releases, kept working with a DeprecationWarning (a *layout* is a map's bytes in percpu;
# the machine's CPU lists and each CPU's place in it have names of their own).
_DEPRECATED = {"Topology": "CpuLists", "topology": "cpu_lists", "CpuLayout": "CpuTopology"}


def __getattr__(name: str) -> object:
    home = _PUBLIC.get(name)
    if home is not None:
        value: object = getattr(importlib.import_module(f".{home}", __name__), name)
        globals()[name] = value  # the next use is a plain attribute
        return value
    new = _DEPRECATED.get(name)
    if new is not None:
        import warnings

        warnings.warn(f"percpu.{name} is now percpu.{new}", DeprecationWarning, stacklevel=2)
        return __getattr__(new)
    if not name.startswith("__"):
        # `import percpu` then `percpu.maps...`, as when the package imported its modules eagerly.
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
