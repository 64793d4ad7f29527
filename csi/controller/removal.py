"""The background removal of deleted volumes' directories (one worker thread per file system)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class RemovalQueue:
    """Deleted volumes whose directories are still to be removed, worked off by one thread
    per file system: a removal hung on one dead file system holds up only that one's.

    A removal that fails is retried with a growing delay (up to five minutes); what is
    queued is also on disk (records in state deleting), so a restart loses nothing.
    """

    def __init__(self, finish: Callable[[str, str], None], *, background: bool) -> None:
        self._finish = finish
        self._due: dict[tuple[str, str], tuple[float, int]] = {}  # -> (not before, failures)
        self._wake = threading.Condition()
        self._stopping = False
        self._threads: dict[str, threading.Thread] = {}
        self._background = background

    def add(self, fsname: str, volume_id: str) -> None:
        with self._wake:
            self._due.setdefault((fsname, volume_id), (0.0, 0))
            if self._background and fsname not in self._threads:
                worker = threading.Thread(
                    target=self._work, args=(fsname,), name=f"volume-removals {fsname}",
                    daemon=True,
                )
                worker.start()
                self._threads[fsname] = worker
            self._wake.notify_all()

    def run_all(self) -> int:
        with self._wake:
            items = list(self._due)
        for item in items:
            self._run(item)
        with self._wake:
            return len(self._due)

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()

    def _run(self, item: tuple[str, str]) -> None:
        try:
            self._finish(*item)
        except Exception as exc:  # any failure is retried, and logged
            with self._wake:
                failures = self._due.get(item, (0.0, 0))[1] + 1
                delay = min(300.0, 2.0**failures)
                self._due[item] = (time.monotonic() + delay, failures)
            log.warning("volume %s: removal failed (%s); retrying in %.0f s", item[1], exc, delay)
            return
        with self._wake:
            self._due.pop(item, None)

    def _work(self, fsname: str) -> None:
        while True:
            with self._wake:
                while not self._stopping:
                    now = time.monotonic()
                    mine = {item: due for item, (due, _) in self._due.items()
                            if item[0] == fsname}
                    ready = [item for item, due in mine.items() if due <= now]
                    if ready:
                        break
                    waits = [due - now for due in mine.values()]
                    self._wake.wait(min(waits) if waits else None)
                if self._stopping:
                    return
            for item in ready:
                self._run(item)
