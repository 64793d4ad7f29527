"""The provisioner's work queue: watch events and retries before periodic resyncs."""

from __future__ import annotations

import threading

from provisioner.kubevirt.runner import WorkQueue


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
