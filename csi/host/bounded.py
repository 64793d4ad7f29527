"""Blocking calls into a file system that may hang, run with a deadline.

A Lustre client whose MDS or OSS is away blocks `stat`, `statvfs`, `mkdir` or `rmtree` in the
kernel until recovery ends (minutes) or forever. Run inside an RPC thread, one such call per
request soon occupies every worker, and Probe, NodeUnpublish and the liveness probe starve.
`BoundedCalls.run` runs the call in a thread of its own and stops waiting at the deadline: the
RPC answers UNAVAILABLE (retryable) and the stuck thread is left to finish or hang alone.

Only calls past their deadline (stuck) are counted; calls still running are not (their
callers, RPC threads, are bounded already). Stuck calls are capped per key (the mount's device
or file system the call goes to) and in all, so a dead server cannot make the process grow
without bound, and its stuck calls cannot refuse calls to healthy mounts: past a cap, calls to
that key (or, past the total cap, every call) are refused at once until stuck ones return.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from csi.errors import CallHung

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_STUCK = 64
DEFAULT_MAX_STUCK_PER_KEY = 4
# Calls given no key: capped by the total only.
NO_KEY = ""


class CallTimedOut(CallHung):
    """A file-system call did not answer in time (a server is away or recovering); retry.

    Raised at the deadline with `returned` (set when the stuck call returns), or at once,
    without it, when too many calls are stuck already (nothing was started).
    """


class BoundedCalls:
    def __init__(
        self,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_stuck: int = DEFAULT_MAX_STUCK,
        max_stuck_per_key: int = DEFAULT_MAX_STUCK_PER_KEY,
    ) -> None:
        self._timeout_s = timeout_s
        self._max_stuck = max_stuck
        self._max_stuck_per_key = min(max_stuck_per_key, max_stuck)
        # Guards only the counters below, held for a few instructions, never across a call.
        self._lock = threading.Lock()
        self._stuck: Counter[str] = Counter()
        self._stuck_total = 0
        self._workers = _Workers()

    def run(
        self,
        what: str,
        call: Callable[[], T],
        *,
        timeout_s: float | None = None,
        key: str = NO_KEY,
    ) -> T:
        """`call()`'s result or exception; CallTimedOut when it takes longer than the deadline.

        `what` names the call for the error message ("stat /var/lib/kubelet/..."); `key` the
        file system (or mount device) it goes to, whose stuck calls are capped on their own
        (calls without one only by the total).
        """
        with self._lock:
            if key != NO_KEY and self._stuck[key] >= self._max_stuck_per_key:
                raise CallTimedOut(
                    f"{what}: too many earlier calls to the same file system "
                    f"({self._stuck[key]}) are still hung; is its Lustre server unreachable? "
                    "Retry later"
                )
            if self._stuck_total >= self._max_stuck:
                raise CallTimedOut(
                    f"{what}: too many earlier file-system calls ({self._stuck_total}) are "
                    "still hung; are Lustre servers unreachable? Retry later"
                )
        outcome: dict[str, object] = {}
        # "running" -> "done" (answered in time, or after the deadline: then uncounted) or
        # "running" -> "stuck" (counted until it returns) -> "done".
        state = ["running"]
        # Made only for a call past its deadline (for the caller's error); set when it returns.
        returned: list[threading.Event] = []
        answered = threading.Lock()  # released by the call's thread once it is done
        answered.acquire()

        def body() -> None:
            try:
                outcome["value"] = call()
            except BaseException as exc:  # handed to the caller's thread below
                outcome["error"] = exc
            finally:
                with self._lock:
                    if state[0] == "stuck":
                        self._uncount(key)
                        returned[0].set()
                    state[0] = "done"
                answered.release()

        self._workers.submit(body, what)
        limit = self._timeout_s if timeout_s is None else timeout_s
        answered.acquire(timeout=limit)
        with self._lock:
            timed_out = state[0] != "done"
            if timed_out:
                state[0] = "stuck"
                returned.append(threading.Event())
                self._stuck[key] += 1
                self._stuck_total += 1
        if timed_out:
            raise CallTimedOut(
                f"{what} did not answer within {limit:g} s (a Lustre server may be away or "
                "in recovery); retry later",
                returned[0],
            )
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        return outcome["value"]  # type: ignore[return-value]

    def stuck(self, key: str | None = None) -> int:
        """How many calls (to `key`, or in all) are past their deadline and not back yet."""
        with self._lock:
            return self._stuck_total if key is None else self._stuck[key]

    def _uncount(self, key: str) -> None:
        self._stuck[key] -= 1
        if not self._stuck[key]:
            del self._stuck[key]
        self._stuck_total -= 1


class _Workers:
    """Threads that run bounded calls, kept for the next call once theirs returns.

    A thread per call cost a thread start (whose handshake waits for the new thread to be
    scheduled) on every file-system step: 7 per CreateVolume. A call always gets a thread at
    once (an idle one, else a new one), so a hung call never delays another; a thread whose
    call hangs is simply not idle until it returns. At most `MAX_IDLE` wait for work, each for
    `IDLE_S` at most.
    """

    MAX_IDLE = 16
    IDLE_S = 30.0  # an idle thread ends after this long without a call

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []

    def submit(self, job: Callable[[], None], what: str) -> None:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None:
            worker = _Worker(self)
            try:
                worker.start()
            except RuntimeError as exc:  # no thread to be had (a limit of the process or system)
                raise CallTimedOut(
                    f"{what}: could not start a thread for it ({exc}); retry later"
                ) from exc
        worker.give(job)

    def retire(self, worker: _Worker) -> bool:
        """Whether an idle `worker` that waited `IDLE_S` for work may end (it is not being
        handed a call right now)."""
        with self._lock:
            if worker in self._idle:
                self._idle.remove(worker)
                return True
            return False

    def idle(self, worker: _Worker) -> bool:
        """Take `worker` back for later calls; False when enough wait already (it ends)."""
        with self._lock:
            if len(self._idle) >= self.MAX_IDLE:
                return False
            self._idle.append(worker)
            return True


class _Worker(threading.Thread):
    def __init__(self, pool: _Workers) -> None:
        super().__init__(name="bounded call", daemon=True)
        self._pool = pool
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

    def give(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def run(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=_Workers.IDLE_S)
            except queue.Empty:
                if self._pool.retire(self):
                    return
                continue  # taken for a call at the same instant: its job is on the way
            job()
            if not self._pool.idle(self):
                return
