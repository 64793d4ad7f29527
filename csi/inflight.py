"""In-flight request keys: a duplicate concurrent request is refused with ABORTED.

The CO retries an RPC while the first attempt may still be running (kubelet and the sidecars do
this after their own timeouts). Rather than serialising every RPC behind one lock, each request
claims the keys it works on (volume name, volume id, volume id + target path); a second claim
of a held key fails at once and unrelated requests run in parallel.

A request that answered UNAVAILABLE because one of its file-system calls hung (`CallHung`)
has not really ended: the hung call may still write. With `hold_past_hung_calls`, its keys
stay held until that call returns, and a retry answers UNAVAILABLE meanwhile. Without it, a
retry could run beside the late write and be undone by it: a record written "creating" by
the first attempt landing over the retry's "ready" one, or a "deleting" one over its removal.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from csi.errors import CallHung, InProgress, OperationInFlight


class InFlightKeys:
    def __init__(self, *, hold_past_hung_calls: bool = False) -> None:
        """`hold_past_hung_calls`: for the controller, whose every hung call may be a record's
        write. Not for the node: the unpublish and unstage of a mount whose server is gone must
        go ahead (lazily) while an earlier call's stat of it still hangs."""
        self._held: set[str] = set()
        self._shared: Counter[str] = Counter()
        self._hold_past_hung_calls = hold_past_hung_calls
        # Keys of requests that ended on a hung call, with the event set when it returns.
        self._hung: dict[str, threading.Event] = {}
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
            hung = [key for key in (*keys, *shared) if self._still_hung(key)]
            if hung:
                raise InProgress(
                    f"an earlier attempt at {hung[0]!r} is still waiting on its file system "
                    "(a call of it hung and may still take effect); retry later"
                )
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
        except CallHung as exc:
            if self._hold_past_hung_calls and exc.still_running:
                assert exc.returned is not None  # still_running
                with self._guard:
                    # Keys whose calls returned are dropped here too, not only when claimed
                    # again (a volume whose create hung may never be asked for again).
                    for key in [k for k, returned in self._hung.items() if returned.is_set()]:
                        del self._hung[key]
                    self._hung.update(dict.fromkeys((*keys, *shared), exc.returned))
            raise
        finally:
            with self._guard:
                self._held.difference_update(keys)
                self._shared.subtract(shared)
                self._shared += Counter()  # drop the keys that reached zero

    def _still_hung(self, key: str) -> bool:
        returned = self._hung.get(key)
        if returned is None:
            return False
        if returned.is_set():
            del self._hung[key]
            return False
        return True

    def __len__(self) -> int:
        with self._guard:
            return len(self._held) + len(self._shared)
