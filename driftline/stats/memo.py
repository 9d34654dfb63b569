"""A small memo bounded by bytes, for work that is a pure function of immutable bytes.

The service compares one stored reference with window after window, and the sidecar's judge one
reference with each closed window: what depends on the reference alone is the same every time. A
sketch's serialized bytes are its whole state, so a result keyed on them can never be stale, whatever
object the bytes came from (the service deserializes its reference afresh for every comparison).

It takes no lock (the pure core leaves threads to the shells): every change to the table is one
``OrderedDict`` operation done in C, which no other thread can interleave under the GIL, and the byte
total is recounted from the table itself whenever the running figure says the budget is passed. A race
between two threads can therefore delay an eviction by a put, never lose, corrupt or mix up an entry.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["BytesMemo"]

V = TypeVar("V")


class BytesMemo(Generic[V]):
    """Least-recently-used values of at most ``max_bytes`` in all (each value's size from ``size_of``).

    A value larger than the whole budget is not kept. The values themselves must be immutable, since
    every caller shares them; safe to share between threads without a lock (see the module's note).
    """

    def __init__(self, max_bytes: int, size_of: Callable[[Hashable, V], int]) -> None:
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._bytes = 0  # a running figure, made exact again by every eviction pass

    def get(self, key: Hashable) -> V | None:
        hit = self._items.get(key)
        if hit is None:
            return None
        try:
            self._items.move_to_end(key)
        except KeyError:  # evicted by another thread since the lookup: the value is still right
            pass
        return hit[0]

    def put(self, key: Hashable, value: V) -> None:
        size = self._size_of(key, value)
        if size > self.max_bytes:
            return
        self._items[key] = (value, size)
        self._bytes += size
        if self._bytes > self.max_bytes:
            self._evict()

    def _evict(self) -> None:
        """Recount the total from the table (one C-level copy) and drop the oldest until within budget."""
        total = sum(size for _, size in list(self._items.values()))
        while total > self.max_bytes:
            try:
                _, (_, dropped) = self._items.popitem(last=False)
            except KeyError:  # emptied by another thread
                total = 0
                break
            total -= dropped
        self._bytes = total

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes held now (by ``size_of``), recounted from the table."""
        return sum(size for _, size in list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)
