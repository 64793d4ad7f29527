"""Blocking calls into a file system that may hang, run with a deadline.

A Lustre client whose MDS or OSS is away blocks `stat`, `statvfs`, `mkdir` or `rmtree` in the
kernel until recovery ends (minutes) or forever. Run inside an RPC thread, one such call per
request soon occupies every worker, and Probe, NodeUnpublish and the liveness probe starve.
`BoundedCalls.run` runs the call in a thread of its own and stops waiting at the deadline: the
RPC answers UNAVAILABLE (retryable) and the stuck thread is left to finish or hang alone. The
number of threads that may be stuck at once is capped too, so a dead server cannot make the
process grow without bound; past the cap calls are refused at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from csi.errors import InProgress

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_STUCK = 8


class CallTimedOut(InProgress):
    """A file-system call did not answer in time (a server is away or recovering); retry."""


class BoundedCalls:
    def __init__(
        self, *, timeout_s: float = DEFAULT_TIMEOUT_S, max_stuck: int = DEFAULT_MAX_STUCK
    ) -> None:
        self._timeout_s = timeout_s
        self._slots = threading.BoundedSemaphore(max_stuck)

    def run(self, what: str, call: Callable[[], T], *, timeout_s: float | None = None) -> T:
        """`call()`'s result or exception; CallTimedOut when it takes longer than the deadline.

        `what` names the call for the error message ("stat /var/lib/kubelet/...").
        """
        if not self._slots.acquire(blocking=False):
            raise CallTimedOut(
                f"{what}: too many earlier file-system calls are still hung; "
                "is a Lustre server unreachable?"
            )
        outcome: dict[str, object] = {}

        def body() -> None:
            try:
                outcome["value"] = call()
            except BaseException as exc:  # handed to the caller's thread below
                outcome["error"] = exc
            finally:
                self._slots.release()

        worker = threading.Thread(target=body, name=f"bounded: {what}"[:60], daemon=True)
        worker.start()
        limit = self._timeout_s if timeout_s is None else timeout_s
        worker.join(limit)
        if worker.is_alive():
            raise CallTimedOut(
                f"{what} did not answer within {limit:g} s (a Lustre server may be away or "
                "in recovery); retry later"
            )
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        return outcome["value"]  # type: ignore[return-value]
