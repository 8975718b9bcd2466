"""BTF (the kernel's type format) parsed in pure Python, turned into numpy dtypes, and decoded exactly.

A map created from a compiled BPF object carries BTF ids for its key and value types; with them percpu
decodes values field by field without the user declaring anything. The layout of a BTF blob is the one in
``include/uapi/linux/btf.h``: a header, a type section, a string section.

Two views of one value. :meth:`Btf.dtype` is the numpy layout the library reads and writes in bulk; what
numpy cannot hold exactly (a union, a struct with bitfields, an int narrower than its bytes) keeps its
raw storage there, as ``np.void`` bytes, rather than a guess. :meth:`Btf.value` decodes every kind from
the bytes, bit by bit where it must: bitfields signed and unsigned, enums with their enumerator names,
every member of a union, floats, char arrays with all their bytes. ``percpu dump`` prints the second.

Inside, one idea a file: ``_model`` (kinds, limits, type records, decoded value types), ``_btf``
(:class:`Btf`: sizes, names, numpy layouts), ``_decode`` (exact decoding), ``_parse`` (reading blobs, the
kernel's BTF by id); the codecs the maps use are here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..codecs import Codec, NumpyCodec
from ..errors import BtfError, PercpuError
from ._btf import Btf
from ._model import MAX_FIELDS, BtfType, CharArray, EnumValue, NanValue, RawBytes
from ._parse import load_btf, parse_btf

__all__ = [
    "MAX_FIELDS",
    "Btf",
    "BtfCodec",
    "BtfError",
    "BtfType",
    "CharArray",
    "EnumValue",
    "NanValue",
    "RawBytes",
    "btf_codec",
    "codec_from_btf",
    "load_btf",
    "parse_btf",
]

_BYTES = (bytes, bytearray, memoryview)


class BtfCodec(NumpyCodec):
    """A key or value typed by a map's BTF.

    ``dtype`` is its numpy layout, which the library reads, writes and sums in bulk; where numpy cannot
    hold the type exactly (a union, a struct with bitfields) it is the raw storage, ``np.void`` of the
    type's size, and values are given and returned as bytes. :meth:`value` decodes one value exactly,
    whatever its kind (:meth:`Btf.value`): what ``percpu dump`` prints.
    """

    def __init__(self, btf: Btf, type_id: int, dtype: np.dtype[Any]) -> None:
        super().__init__(dtype)
        self.btf = btf
        self.type_id = type_id
        self.name = btf.type_name(type_id)

    def value(self, raw: bytes) -> Any:
        """The exact decoding of one value's bytes. Raises :class:`BtfError` where BTF cannot say."""
        return self.btf.value(self.type_id, raw)

    def encode(self, value: Any) -> bytes:
        if isinstance(value, str) and self.btf.resolve(self.type_id).kind in ("enum", "enum64"):
            by_name = {n: v for v, n in self.btf.enum_values(self.type_id).items()}
            if value not in by_name:
                raise PercpuError(f"{value!r} is not an enumerator of {self.name} ({', '.join(by_name)})")
            value = by_name[value]
        elif self.dtype.names is None and self.dtype.kind == "V" and not isinstance(value, _BYTES):
            raise PercpuError(
                f"cannot store {value!r} as {self.name}: numpy has no exact layout for it (a union or "
                f"bitfields), so give its {self.size} bytes"
            )
        return super().encode(value)


def codec_from_btf(btf_id: int, type_id: int, size: int) -> Codec | None:
    """A codec for a map's key or value from its BTF, or None when BTF cannot give a layout (the map
    then reads as raw bytes). Whatever the BTF holds, this returns in time linear in its size."""
    try:
        btf = load_btf(btf_id)
        return btf_codec(btf, type_id, size)
    except (PercpuError, OSError):
        return None


def btf_codec(btf: Btf, type_id: int, size: int) -> BtfCodec | None:
    """The codec of ``type_id`` in ``btf`` for a key or value of ``size`` bytes, or None where its size
    differs or it has no layout at all (a function, a forward declaration). Raises :class:`BtfError` for a
    malformed type."""
    if btf.size(type_id) != size:  # before any layout: the map's own size bounds what is built
        return None
    dt = btf.dtype(type_id)
    if dt is None or dt.itemsize != size:
        return None
    return BtfCodec(btf, type_id, dt)
