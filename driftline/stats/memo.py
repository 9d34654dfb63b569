"""A small thread-safe memo bounded by bytes, for work that is a pure function of immutable bytes.

The service compares one stored reference with window after window, and the sidecar's judge one
reference with each closed window: what depends on the reference alone is the same every time. A
sketch's serialized bytes are its whole state, so a result keyed on them can never be stale, whatever
object the bytes came from (the service deserializes its reference afresh for every comparison).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["BytesMemo"]

V = TypeVar("V")


class BytesMemo(Generic[V]):
    """Least-recently-used values of at most ``max_bytes`` in all (each value's size from ``size_of``).

    A value larger than the whole budget is not kept. Lookups and stores take one lock; the values
    themselves must be immutable, since every caller shares them.
    """

    def __init__(self, max_bytes: int, size_of: Callable[[Hashable, V], int]) -> None:
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
            return hit[0]

    def put(self, key: Hashable, value: V) -> None:
        size = self._size_of(key, value)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes held now (by ``size_of``)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)
