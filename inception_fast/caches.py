"""Bounded per-shape caches.

Everything this package remembers per input shape (every measured choice of
``inception_fast.choices``; the Triton launchers' tuned-config memos and tuning log)
is held in an ``LRUDict``: a server that sees many shapes keeps at most
``cache_capacity()`` entries in each, dropping the least recently used one (which is measured or
tuned again if its shape comes back).  The cap is ``INCEPTION_FAST_CACHE_ENTRIES`` (default
256), read whenever an entry is added.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Optional

__all__ = [
    "ENV_CACHE_ENTRIES",
    "DEFAULT_CACHE_ENTRIES",
    "MEASURING",
    "cache_capacity",
    "LRUDict",
    "trim",
    "short_error",
]

ENV_CACHE_ENTRIES = "INCEPTION_FAST_CACHE_ENTRIES"
DEFAULT_CACHE_ENTRIES = 256
_ERROR_CHARS = 200

# Held, process-wide, while a miss is measured: a measured choice timing its candidates
# (inception_fast.choices) or a Triton autotuner benchmarking a shape's configs
# (backends/triton/_common.launch_configured).  Threads whose first forwards meet the same miss at
# once (DataParallel's replicas, inference threads sharing a model) measure one after the other,
# and the later ones find the answer: Triton's Autotuner keeps each call's arguments and its
# choice on the shared kernel object, and a CUDA-graph timing capture must not meet another
# thread's capture.  Re-entrant: timing a candidate may autotune its kernels.
MEASURING = threading.RLock()


def cache_capacity() -> int:
    """Entries each per-shape cache keeps: INCEPTION_FAST_CACHE_ENTRIES, default 256."""
    raw = os.environ.get(ENV_CACHE_ENTRIES, "").strip()
    if not raw:
        return DEFAULT_CACHE_ENTRIES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{ENV_CACHE_ENTRIES} must be a positive integer, got {raw!r}")
    return value


class LRUDict(OrderedDict):
    """A dict that keeps its ``cache_capacity()`` (or ``capacity``, where given) most recently used
    entries (``get`` and setting an item count as use).  ``get``, setting an item, ``clear`` and
    ``snapshot`` hold the dict's lock, so inference threads sharing one (the measured choices are
    process-wide) never see it change under them: a hit reorders it and a new entry drops the
    oldest.  Read it through those; iterating it directly is for one thread only."""

    def __init__(self, *args, capacity: Optional[int] = None, **kwargs) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"an LRUDict keeps at least one entry, got capacity {capacity}")
        self._lock = threading.RLock()
        self._capacity = capacity
        super().__init__(*args, **kwargs)

    def get(self, key, default=None):
        with self._lock:
            if key not in self:
                return default
            self.move_to_end(key)
            return self[key]

    def __setitem__(self, key, value) -> None:
        with self._lock:
            super().__setitem__(key, value)
            self.move_to_end(key)
            trim(self, cache_capacity() if self._capacity is None else self._capacity)

    def snapshot(self) -> dict:
        """A plain dict copy of the entries, oldest first."""
        with self._lock:
            return dict(self.items())

    def clear(self) -> None:
        with self._lock:
            super().clear()

    def __reduce__(self):  # the lock is not pickled (deep copies and pickles rebuild one)
        return (_lru_copy, (type(self), self._capacity, list(self.items())))


def _lru_copy(cls, capacity: Optional[int], items: list) -> LRUDict:
    """An LRUDict rebuilt by a copy or a pickle: its capacity set before its entries go in (they
    would otherwise be trimmed to ``cache_capacity()``)."""
    rebuilt = cls(capacity=capacity)
    rebuilt.update(items)
    return rebuilt


def trim(mapping: dict, capacity: int) -> None:
    """Drops the oldest entries of an insertion-ordered dict beyond ``capacity``."""
    while len(mapping) > capacity:
        del mapping[next(iter(mapping))]


def short_error(exc: BaseException) -> str:
    """``Type: first line of the message``, at most 200 characters: what cached records keep of a
    failure (a full cuDNN or compiler error runs to kilobytes)."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 1] + "…"
