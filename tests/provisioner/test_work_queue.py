"""The provisioner's work queue and watches: events and retries before periodic resyncs,
one pending requeue per name, relists after 410 Gone with backoff."""

from __future__ import annotations

import threading
from typing import Any

from provisioner.kubevirt.kube import LUSTRE_FILE_SYSTEMS, GoneError
from provisioner.kubevirt.runner import ProvisionerRunner, RunnerConfig, WorkQueue


def _drain(queue: WorkQueue) -> list[str]:
    stop = threading.Event()
    names = []
    while (name := queue.get(stop, timeout=0.01)) is not None:
        names.append(name)
    return names


def test_a_watched_change_is_served_before_a_resync_backlog() -> None:
    queue = WorkQueue()
    for n in range(100):
        queue.add(f"fs{n}", background=True)
    queue.add("new-fs")
    queue.add("fs50")  # changed while waiting for its resync: promoted, not duplicated
    names = _drain(queue)
    assert names[:2] == ["new-fs", "fs50"]
    assert sorted(names) == sorted({"new-fs", *(f"fs{n}" for n in range(100))})


def test_names_are_deduplicated_and_delayed_adds_wait() -> None:
    queue = WorkQueue()
    queue.add("a")
    queue.add("a")
    queue.add("b", after=30)
    assert _drain(queue) == ["a"]


def test_repeated_delayed_requeues_leave_one_pending_and_the_earliest_wins() -> None:
    queue = WorkQueue()
    for _ in range(1000):  # a reconcile that asks again on every pass, or a retry storm
        queue.add("a", after=0.5)
    queue.add("a", after=0.01)  # an earlier ask replaces the later ones
    queue.add("b", after=0.02)
    stop = threading.Event()
    served = []
    while (name := queue.get(stop, timeout=1.0)) is not None:
        served.append(name)
    # "a" is served once, early; the thousand later asks did not each come back.
    assert served == ["a", "b"]
    queue.add("c", after=30)
    queue.add("c", after=60)
    assert queue.pending_delayed == 1


class _RecordingStop(threading.Event):
    """A stop event that records how long each wait asked for (and never really sleeps)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0.0))
        return self.is_set()


class _AlwaysGone:
    """An API server whose watch cache always answers 410 Gone."""

    def __init__(self, stop: threading.Event, lists_before_stop: int) -> None:
        self.lists = 0
        self._stop = stop
        self._limit = lists_before_stop

    def list(self, resource: Any, namespace: Any = None, selector: Any = None):
        self.lists += 1
        if self.lists >= self._limit:
            self._stop.set()
        return [], "100"

    def watch(self, *args: Any, **kwargs: Any):
        raise GoneError(410, "Expired", "too old resource version: 100 (200)")
        yield  # pragma: no cover  (a generator, as the real watch is)


def test_a_watch_answered_410_gone_relists_with_backoff_not_in_a_tight_loop() -> None:
    stop = _RecordingStop()
    kube = _AlwaysGone(stop, lists_before_stop=6)
    runner = ProvisionerRunner(kube, RunnerConfig(identity="t"))  # type: ignore[arg-type]
    runner._watch(stop, LUSTRE_FILE_SYSTEMS, None, None)
    assert kube.lists == 6
    # A wait before every relist, each at least as long as the one before.
    assert len(stop.waits) >= 5 and all(w > 0 for w in stop.waits[:5])
    assert stop.waits[:5] == sorted(stop.waits[:5]) and stop.waits[4] > stop.waits[0]
