"""In-flight request keys: a duplicate concurrent request is refused with ABORTED.

The CO retries an RPC while the first attempt may still be running (kubelet and the sidecars do
this after their own timeouts). Rather than serialising every RPC behind one lock, each request
claims the keys it works on (volume name, volume id, volume id + target path); a second claim
of a held key fails at once and unrelated requests run in parallel.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from csi.errors import OperationInFlight


class InFlightKeys:
    def __init__(self) -> None:
        self._held: set[str] = set()
        self._shared: Counter[str] = Counter()
        # Guards only the sets themselves, for the instant of a test; never held during work.
        self._guard = threading.Lock()

    @contextmanager
    def claim(self, *keys: str, shared: Sequence[str] = ()) -> Iterator[None]:
        """Hold all `keys` for the duration of the block, or raise OperationInFlight.

        `shared` keys may be held by many claims at once, but not while one claim holds the
        same key exclusively (in `keys`), nor the other way round: publishes of one staging
        path run side by side, an unstage of it waits for none of them and runs alone.
        """
        with self._guard:
            busy = [key for key in keys if key in self._held or self._shared[key]]
            busy += [key for key in shared if key in self._held]
            if busy:
                raise OperationInFlight(
                    f"an operation on {busy[0]!r} is already in progress; retry later"
                )
            self._held.update(keys)
            self._shared.update(shared)
        try:
            yield
        finally:
            with self._guard:
                self._held.difference_update(keys)
                self._shared.subtract(shared)
                self._shared += Counter()  # drop the keys that reached zero

    def __len__(self) -> int:
        with self._guard:
            return len(self._held) + len(self._shared)
