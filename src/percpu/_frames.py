"""Per-CPU values and snapshots as pandas objects, labelled by real CPU ids.

pandas is optional: it is imported when a conversion is asked for, never at import time, and its absence
is a :class:`~percpu.PercpuError` that says how to install it. The shapes follow xarray's two
conversions: ``to_pandas()`` keeps the data's own dimensions (a key x CPU table), ``to_dataframe()`` is
the long form, one row per (key, CPU), whose MultiIndex ``DataFrame.to_xarray()`` turns back into
dimensions.

A value that is a record, or holds an array, becomes one column per field and element: ``calls``,
``comm``, ``a.b`` for a nested record, ``h[0]`` for an array's element. C strings (``char[16]``) stay one
column of bytes, raw bytes one column of ``bytes``, integers of odd widths (``Int(3)``) Python ints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .codecs import Codec, IntCodec
from .errors import PercpuError

if TYPE_CHECKING:
    from .cpus import CpuList

__all__ = ["CPU", "KEY", "VALUE", "cpu_index", "flat_columns", "key_index", "key_levels", "pandas"]

KEY, CPU, VALUE = "key", "cpu", "value"


def pandas(what: str) -> Any:
    """The pandas module, or a one-line error naming what needed it and how to install it."""
    try:
        import pandas as pd
    except ImportError:
        raise PercpuError(f"{what} needs pandas, which is not installed: pip install pandas") from None
    return pd


def _scalars(a: np.ndarray, codec: Codec | None) -> np.ndarray:
    """``a`` as pandas can hold it: odd-width integers decoded to Python ints, raw bytes as ``bytes``."""
    if a.dtype.kind != "V" or a.dtype.names is not None:
        return a
    flat = a.reshape(-1)
    if isinstance(codec, IntCodec):
        out = [codec.decode(flat[i]) for i in range(flat.size)]
    else:
        out = [bytes(flat[i].tobytes()) for i in range(flat.size)]
    arr = np.empty(flat.size, dtype=object)
    arr[:] = out
    return arr.reshape(a.shape)


def flat_columns(
    a: np.ndarray, lead: int, top: str, codec: Codec | None = None
) -> list[tuple[str, np.ndarray]]:
    """``(name, array)`` for every scalar column of ``a``, each of ``a``'s first ``lead`` dimensions.

    Records give their fields (``a.b`` when nested), arrays their elements (``h[0]``); a value that is
    neither is one column called ``top``.
    """
    out: list[tuple[str, np.ndarray]] = []

    def walk(x: np.ndarray, name: str) -> None:
        if x.ndim > lead:  # a sub-array: one column per element
            for i in range(x.shape[lead]):
                walk(x[(slice(None),) * lead + (i,)], f"{name}[{i}]")
        elif x.dtype.names is not None:
            for field in x.dtype.names:
                walk(x[field], f"{name}.{field}" if name else field)
        else:
            out.append((name or top, _scalars(x, codec)))

    walk(a, "" if a.dtype.names is not None else top)
    return out


def key_levels(keys: np.ndarray, codec: Codec | None) -> list[tuple[str, np.ndarray]]:
    """The keys as index levels: one called ``key``, or one per field (and element) of a record key."""
    cols = flat_columns(keys, 1, KEY, codec)
    if any(name == CPU for name, _ in cols):  # a key field called "cpu": the long form has a CPU level
        return [(f"{KEY}.{name}", col) for name, col in cols]
    return cols


def key_index(keys: np.ndarray, codec: Codec | None) -> Any:
    """The keys as a pandas Index (``key``), or a MultiIndex of their fields for record keys."""
    pd = pandas("a key index")
    levels = key_levels(keys, codec)
    if len(levels) == 1:
        return pd.Index(levels[0][1], name=levels[0][0])
    return pd.MultiIndex.from_arrays([c for _, c in levels], names=[n for n, _ in levels])


def cpu_index(cpus: CpuList) -> Any:
    return pandas("a CPU index").Index(list(cpus), name=CPU)
