"""One lock per key (a file system name), created on first use.

For the few places where work on one file system must not interleave (mounting it once,
rewriting its ledger) while other file systems proceed in parallel.
"""

from __future__ import annotations

import threading


class KeyedLocks:
    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def __call__(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())
