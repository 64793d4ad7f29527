"""Runs the provisioner's loops in threads inside the CSI controller process.

Hand-written rather than kopf: what we need is one work queue of LustreFileSystem names fed by
three watches and a periodic resync, one worker, and a Lease (kopf's peering is not a Lease,
and it wants to own the event loop and the process's signals). This is ~200 lines with no
dependency beyond the Kubernetes client.

    runner = ProvisionerRunner(RestKube(api_client), namespace="lustre-csi")
    runner.start()      # returns at once; loops run in daemon threads
    ...
    runner.stop()       # graceful: finishes the current reconcile, releases the Lease

Every replica runs the elector; only the holder of the Lease runs the watches and the worker.
A leader that has not renewed within `renew_deadline_seconds` stops acting before the lease
can expire: a deadline timer (its own thread, so a renewal stuck in a slow API call cannot
hold it up) ends the term, and every write of the term's reconciler goes through
`LeaderOnlyKube`, which refuses it once the deadline has passed on our clock, even in the
middle of a reconcile; destructive steps also confirm the Lease on the API server first (see
leader.py). A replica that stops gracefully releases the lease so another takes over at its
next retry instead of waiting out the lease.
"""

from __future__ import annotations

import heapq
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from csi.lustre.client import LustreClient
from csi.metrics import ProvisionerMetrics, RpcMetrics
from csi.server_sets import FileSystemEndpoint
from provisioner.kubevirt import manifests
from provisioner.kubevirt.capacity import MountedUsage, UsageMeter, UsageReader
from provisioner.kubevirt.events import EventRecorder, now_rfc3339
from provisioner.kubevirt.kube import (
    LUSTRE_FILE_SYSTEMS,
    VIRTUAL_MACHINE_INSTANCES,
    VIRTUAL_MACHINES,
    GoneError,
    Kube,
    KubeError,
    Resource,
)
from provisioner.kubevirt.leader import (
    LeaderOnlyKube,
    LeadershipLost,
    LeaseElector,
    SessionGuard,
)
from provisioner.kubevirt.reconciler import Reconciler, ReconcilerConfig

log = logging.getLogger(__name__)
_ENDED = threading.Event()
_ENDED.set()  # the "term" of a runner that has not led yet: it may not act
WATCH_BACKOFF_START = 0.5
WATCH_BACKOFF_MAX = 10.0


@dataclass(frozen=True)
class RunnerConfig:
    namespace: str = "lustre-csi"  # the driver's: the Lease and the address claims
    server_namespace: str = ""  # the server VMs, their PVCs, Secrets, pods ("": namespace)
    driver_name: str = "lustre.csi.io"
    identity: str = ""  # default: hostname + pid
    lease_name: str = "lustre-csi-provisioner"
    lease_duration_seconds: int = 15
    renew_deadline_seconds: float = 10.0
    retry_period_seconds: float = 2.0
    resync_seconds: float = 30.0
    fence_after_seconds: float = 300.0
    deletion_retry_seconds: float = 10.0
    watch_timeout_seconds: int = 30
    usage_interval_seconds: float = 60.0  # lfs df of every Ready file system, this often


class WorkQueue:
    """Names to reconcile: deduplicated, with delayed re-adds; one consumer.

    Two lanes: what a watch event or a retry asks for is served before what the periodic
    resync re-checks, so a new file system does not wait behind a resync of a hundred others.
    A name has at most one pending delayed re-add, the earliest asked for: a reconcile that
    asks to be looked at again on every pass (and every failed retry) cannot pile them up.
    """

    def __init__(self) -> None:
        self._ready: deque[str] = deque()
        self._background: deque[str] = deque()
        self._queued: set[str] = set()
        self._due: dict[str, float] = {}  # name -> when its one delayed re-add is due
        self._delayed: list[tuple[float, str]] = []  # heap; entries not in _due are stale
        self._cond = threading.Condition()

    def add(self, name: str, after: float = 0.0, *, background: bool = False) -> None:
        with self._cond:
            if after > 0:
                due = time.monotonic() + after
                if name in self._due and self._due[name] <= due:
                    return  # an earlier re-add is already pending: it serves this one too
                self._due[name] = due
                heapq.heappush(self._delayed, (due, name))
                if len(self._delayed) > 2 * len(self._due) + 64:
                    self._delayed = [(d, n) for n, d in self._due.items()]
                    heapq.heapify(self._delayed)
            elif name not in self._queued:
                self._queued.add(name)
                (self._background if background else self._ready).append(name)
            elif not background and name in self._background:
                self._background.remove(name)  # promoted: something changed, serve it now
                self._ready.append(name)
            self._cond.notify()

    @property
    def pending_delayed(self) -> int:
        """How many delayed re-adds are waiting (at most one per name)."""
        with self._cond:
            return len(self._due)

    def get(self, stop: threading.Event, timeout: float = 0.5) -> str | None:
        with self._cond:
            deadline = time.monotonic() + timeout
            while not stop.is_set():
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    due, name = heapq.heappop(self._delayed)
                    if self._due.get(name) != due:
                        continue  # replaced by an earlier re-add, already served
                    del self._due[name]
                    if name not in self._queued:
                        self._queued.add(name)
                        self._ready.append(name)
                if self._ready or self._background:
                    name = (self._ready or self._background).popleft()
                    self._queued.discard(name)
                    return name
                wait = deadline - now
                if self._delayed:
                    wait = min(wait, self._delayed[0][0] - now)
                if wait <= 0:
                    return None
                self._cond.wait(wait)
            return None

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class ProvisionerRunner:
    """See the module docstring. `usage`: how file systems' use is measured (None: it is not,
    until `attach_controller` gives the controller's Lustre client and mounts)."""

    def __init__(self, kube: Kube, config: RunnerConfig = RunnerConfig(), *,
                 usage: UsageReader | None = None) -> None:
        self._kube = kube
        self.config = config
        self.metrics = ProvisionerMetrics()
        self._meter = UsageMeter(usage, self.metrics) if usage is not None else None
        self.identity = config.identity or f"{socket.gethostname()}-{os.getpid()}"
        self.server_namespace = config.server_namespace or config.namespace
        self._events = EventRecorder(kube, self.identity)
        self._reconciler_config = ReconcilerConfig(
            namespace=self.server_namespace, claims_namespace=config.namespace,
            driver_name=config.driver_name, fence_after_seconds=config.fence_after_seconds,
            deletion_retry_seconds=config.deletion_retry_seconds,
        )
        self._elector = LeaseElector(kube, config.namespace, config.lease_name, self.identity,
                                     config.lease_duration_seconds,
                                     config.renew_deadline_seconds)
        self._stop = threading.Event()
        self._leading = threading.Event()
        self._session_lock = threading.RLock()  # term start/stop: elector and deadline timer
        self._session_stop: threading.Event | None = None
        self._session_threads: list[threading.Thread] = []
        self._thread: threading.Thread | None = None
        self._deadline_thread: threading.Thread | None = None
        self.queue = WorkQueue()
        self.reconciler = self._term_reconciler(_ENDED)

    def _term_reconciler(self, stop: threading.Event) -> Reconciler:
        """A reconciler that may act only during the term `stop` ends."""
        guard = SessionGuard(self._elector, stop)
        meter = self._meter
        return Reconciler(LeaderOnlyKube(self._kube, guard), self._reconciler_config,
                          self._events, guard=guard, metrics=self.metrics,
                          usage=meter.latest if meter is not None else None)

    # -- public ------------------------------------------------------------------------------
    def attach_controller(self, metrics: RpcMetrics, lustre: LustreClient,
                          mountpoint: Callable[[FileSystemEndpoint], Path]) -> None:
        """Measure use through the controller's Lustre client and its own mounts
        (`ControllerMounts.mountpoint`), and serve our metrics on its /metrics. Before start."""
        metrics.include(self.metrics)
        self._meter = UsageMeter(MountedUsage(lustre, mountpoint, now_rfc3339), self.metrics)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._elect, name="lustre-provisioner-elector",
                                        daemon=True)
        self._deadline_thread = threading.Thread(target=self._enforce_deadline, daemon=True,
                                                 name="lustre-provisioner-lease-deadline")
        self._thread.start()
        self._deadline_thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loops (the reconcile in progress finishes), then release the Lease."""
        self._stop.set()
        self.queue.wake()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._deadline_thread is not None:
            self._deadline_thread.join(timeout)

    @property
    def is_leader(self) -> bool:
        return self._leading.is_set()

    def wait_until_leader(self, timeout: float) -> bool:
        return self._leading.wait(timeout)

    # -- election ----------------------------------------------------------------------------
    def _elect(self) -> None:
        while not self._stop.is_set():
            try:
                held = self._elector.try_acquire_or_renew()
            except KubeError as error:
                log.warning("lease round failed: %s", error)
                held = False
            with self._session_lock:
                if held and not self._leading.is_set():
                    self._start_session()
                elif self._leading.is_set() and not self._elector.holds():
                    self._step_down()
            self._stop.wait(self.config.retry_period_seconds)
        with self._session_lock:
            if self._leading.is_set():
                self._stop_session()
        self._elector.release()

    def _enforce_deadline(self) -> None:
        """The renew deadline as a timer: wakes when it falls due, whatever the elector does."""
        while not self._stop.is_set():
            remaining = self._elector.remaining()
            if self._leading.is_set() and (remaining is None or remaining <= 0):
                with self._session_lock:
                    if self._leading.is_set() and not self._elector.holds():
                        self._step_down()
                continue
            wait = self.config.retry_period_seconds
            if self._leading.is_set() and remaining is not None:
                wait = min(wait, remaining)
            self._stop.wait(max(wait, 0.005))

    def _step_down(self) -> None:
        log.warning("%s has not renewed lease %s within %.1fs (or lost it): stepping down",
                    self.identity, self.config.lease_name, self.config.renew_deadline_seconds)
        self._stop_session()

    def _start_session(self) -> None:
        log.info("%s is the provisioner leader", self.identity)
        stop = threading.Event()
        self._session_stop = stop
        # A reconciler per term: its node observations start afresh (there was a gap while we
        # did not lead), and a worker of an ended term stuck in a slow call cannot act later.
        self.reconciler = reconciler = self._term_reconciler(stop)
        self._leading.set()
        watches: list[tuple[Resource, str | None, str | None]] = [
            (LUSTRE_FILE_SYSTEMS, None, None),
            (VIRTUAL_MACHINES, self.server_namespace, manifests.LABEL_FS),
            (VIRTUAL_MACHINE_INSTANCES, self.server_namespace, manifests.LABEL_FS),
        ]
        self._session_threads = [
            threading.Thread(target=self._work, args=(stop, reconciler),
                             name="lustre-provisioner-worker", daemon=True),
            threading.Thread(target=self._resync, args=(stop,), name="lustre-provisioner-resync",
                             daemon=True),
            *([threading.Thread(target=self._measure, args=(stop, self._meter), daemon=True,
                                name="lustre-provisioner-usage")] if self._meter else []),
            *(threading.Thread(target=self._watch, args=(stop, *w), daemon=True,
                               name=f"lustre-provisioner-watch-{w[0].plural}") for w in watches),
        ]
        for thread in self._session_threads:
            thread.start()

    def _stop_session(self) -> None:
        if self._session_stop is not None:
            self._session_stop.set()  # from here on the term's writes are refused
        self._leading.clear()
        self.queue.wake()
        # The worker is joined so a reconcile normally ends before we say we stopped. Watches
        # notice the stop at their next event or timeout; they only feed the queue.
        for thread in self._session_threads[:1]:
            thread.join(self.config.renew_deadline_seconds)
        self._session_threads = []
        log.info("%s stopped leading", self.identity)

    # -- loops -------------------------------------------------------------------------------
    def _work(self, stop: threading.Event, reconciler: Reconciler) -> None:
        failures: dict[str, int] = {}
        while not stop.is_set():
            name = self.queue.get(stop)
            if name is None:
                continue
            started = time.monotonic()
            try:
                again = reconciler.reconcile(name)
            except LeadershipLost as error:
                log.info("reconcile of %s stopped: %s", name, error)
                self.queue.add(name)  # for whoever leads next in this process
                continue
            except Exception as error:  # a failed pass is retried with backoff
                failures[name] = failures.get(name, 0) + 1
                delay = min(30.0, 0.2 * 2 ** failures[name])
                log.warning("reconcile of %s failed (%s); retrying in %.1fs", name, error, delay,
                            exc_info=not isinstance(error, KubeError))
                self.queue.add(name, after=delay)
                continue
            failures.pop(name, None)
            log.debug("reconciled %s in %.3fs", name, time.monotonic() - started)
            if again is not None:
                self.queue.add(name, after=again)

    def _resync(self, stop: threading.Event) -> None:
        while not stop.wait(self.config.resync_seconds):
            try:
                for item in self._kube.list(LUSTRE_FILE_SYSTEMS)[0]:
                    self.queue.add(item["metadata"]["name"], background=True)
            except KubeError as error:
                log.warning("resync list failed: %s", error)

    def _measure(self, stop: threading.Event, meter: UsageMeter) -> None:
        """lfs df of each Ready file system, then a reconcile writes it (capacity.py)."""
        while not stop.is_set():
            try:
                for name in meter.measure_all(self._kube.list(LUSTRE_FILE_SYSTEMS)[0]):
                    if stop.is_set():
                        return
                    self.queue.add(name)
            except Exception as error:  # the next round tries again; the status keeps the last
                log.warning("measuring the file systems' use failed: %s", error,
                            exc_info=not isinstance(error, KubeError))
            stop.wait(self.config.usage_interval_seconds)

    def _watch(self, stop: threading.Event, resource: Resource, namespace: str | None,
               label: str | None) -> None:
        """List, then watch from the list's version; relist when the watch is too old (410).

        Every relist after a failure waits a backoff first (410 Gone included: an API server
        whose cache keeps answering Gone must not be relisted in a tight loop); the backoff
        resets once a watch has run to its timeout or delivered an event.
        """
        selector = label  # "label" alone selects objects that have the label at all
        backoff = WATCH_BACKOFF_START
        while not stop.is_set():
            try:
                items, version = self._kube.list(resource, namespace, selector)
                for item in items:
                    self._enqueue_for(item, label)
                while not stop.is_set():
                    for kind, obj in self._kube.watch(resource, namespace, selector, version,
                                                      self.config.watch_timeout_seconds):
                        if stop.is_set():
                            return
                        version = obj.get("metadata", {}).get("resourceVersion", version)
                        if kind != "BOOKMARK":
                            self._enqueue_for(obj, label)
                        backoff = WATCH_BACKOFF_START
                    backoff = WATCH_BACKOFF_START
            except GoneError:
                log.info("watch of %s is too old (410 Gone); relisting in %.1fs",
                         resource.plural, backoff)
            except Exception as error:  # keep watching through API hiccups
                log.warning("watch of %s failed: %s; relisting in %.1fs", resource.plural,
                            error, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, WATCH_BACKOFF_MAX)

    def _enqueue_for(self, obj: dict[str, object], label: str | None) -> None:
        metadata = obj.get("metadata")
        if not isinstance(metadata, dict):
            return
        if label is None:
            self.queue.add(str(metadata.get("name")))
            return
        owner = (metadata.get("labels") or {}).get(label)
        if owner:
            self.queue.add(str(owner))
