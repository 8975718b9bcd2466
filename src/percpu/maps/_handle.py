"""``MapHandle``: one open map as the kernel knows it, and the one way to call the kernel about it.

A handle holds the map's fd under a lock, the kernel the map lives in (the machine's, when the map was
opened), and the map's identity: the kernel's :class:`~percpu._libbpf.MapInfo` (name, type, sizes) and
the :class:`~percpu.layout.Layout` that sizes every buffer of it. :meth:`MapHandle.call`, as cilium/ebpf's
``wrapMapError``, is where every kernel call about the map goes through: it holds the fd for the call and
translates a failure once, with what the errno means for this map (:func:`percpu.maps._errors.map_error`).
The maps, readers and writers above call the kernel through it alone.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

from .. import _fork
from .._libbpf import MapInfo
from ..errors import NotCopyable, PercpuError
from ..layout import Layout
from ._errors import Op, map_error
from ._kinds import ARRAY_TYPES, MapType

if TYPE_CHECKING:
    from .._machine import Kernel
    from ._encoding import Encoding

__all__ = ["MapHandle", "MapParts", "Op"]

P = ParamSpec("P")
T = TypeVar("T")


class MapHandle:
    """A map's fd, its lock and its kernel, with the map's ``info`` and ``layout``.

    ``close()`` in another thread waits for a call in progress, and later calls raise
    :class:`~percpu.errors.PercpuError`: no call reaches the kernel with an fd number that was closed and
    maybe reused by another map. A dropped handle closes its fd; a child forked while another thread was
    inside a call finds the handle usable, with a lock of its own.
    """

    def __init__(self, fd: int, info: MapInfo, layout: Layout, kernel: Kernel) -> None:
        self.info = info
        self.layout = layout
        self.kernel = kernel
        self._lock = threading.RLock()
        self._fd: int | None = fd
        _fork.track(self)

    # --- identity -----------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def type_name(self) -> str:
        """The kernel's name of the map type, e.g. ``PERCPU_HASH``."""
        return MapType.name_of(self.info.type).upper()

    @property
    def is_array(self) -> bool:
        """An array: ``max_entries`` elements, always there, indexed by a 32-bit integer."""
        return self.info.type in ARRAY_TYPES

    # --- the fd -------------------------------------------------------------------------------------

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise PercpuError(f"map {self.name!r} is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd is None

    @property
    def state(self) -> str:
        """``fd=N``, or ``closed`` (for a map's repr)."""
        fd = self._fd
        return "closed" if fd is None else f"fd={fd}"

    @contextlib.contextmanager
    def held(self) -> Iterator[int]:
        """The fd, held open for one operation (what :meth:`call` does around the kernel's)."""
        with self._lock:
            yield self.fd

    def call(self, op: Op, fn: Callable[Concatenate[int, P], T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(fd, *args, **kwargs)``, a call of this map's kernel, with the fd held for it. An
        :class:`OSError` becomes the error :func:`~percpu.maps._errors.map_error` says ``op``'s errno
        means for this map, raised from it."""
        try:
            with self._lock:
                return fn(self.fd, *args, **kwargs)
        except OSError as exc:
            raise map_error(self.info, op, exc) from exc

    # --- lifetime -----------------------------------------------------------------------------------

    def clone(self) -> MapHandle:
        """Another handle on the same kernel map, with a duplicate of the fd of its own (close-on-exec)."""
        return MapHandle(self.call(Op("dup"), self.kernel.dup), self.info, self.layout, self.kernel)

    def close(self) -> None:
        """Release the fd (the kernel frees the map when nothing else holds it); waits for a call."""
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            self.kernel.close(fd)

    def __del__(self) -> None:
        # A handle dropped without close(): release its fd through the kernel that opened it.
        fd = getattr(self, "_fd", None)
        if fd is not None:
            self._fd = None
            with contextlib.suppress(Exception):
                self.kernel.close(fd)

    def _after_fork_in_child(self) -> None:
        # The thread that held the lock at fork() is not in the child, and its call does not go on there:
        # the child's handle gets a free lock, and its fd (inherited) stays usable.
        self._lock = threading.RLock()

    def __copy__(self) -> MapHandle:
        return self.clone()

    def __deepcopy__(self, memo: dict[int, Any]) -> MapHandle:
        return self.clone()

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise NotCopyable(
            f"the handle of map {self.name!r} (id {self.info.id}) cannot be pickled: its fd means nothing "
            f"in another process; reopen the map there with percpu.open_map({self.info.id})",
            map_name=self.name,
        )


class MapParts(Protocol):
    """What the readers and writers take of a map: its handle and its encoding (a ``Map`` is one)."""

    @property
    def handle(self) -> MapHandle: ...
    @property
    def enc(self) -> Encoding: ...
