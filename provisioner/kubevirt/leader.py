"""Leader election on a coordination.k8s.io/v1 Lease, as client-go does it, in two parts.

`decide` is the whole policy as a pure function: given the Lease as read, who we are, and how
long the record has stayed unchanged *as we observed it*, it says whether to write and what.
Expiry is judged by our own monotonic clock since the record last changed, never by comparing
another replica's renewTime with our wall clock, so clock skew between nodes cannot make two
leaders. `LeaseElector` does the I/O: read, decide, write with the read resourceVersion (a
concurrent writer gets a Conflict and loses the round).

A leader that has not renewed within `renew_deadline_seconds` stops acting before its lease
can expire and be taken, so there is never a moment with two acting leaders as long as the
deadline is shorter than the lease duration. The deadline is enforced on our clock from the
*start* of the last successful renewal round (the write may have landed any time after), and
it holds even in the middle of a round or a reconcile:

- `LeaseElector.holds()` answers from the clock alone, so a renewal stuck in a slow API call
  cannot extend it; the runner's deadline timer stops the loops when it lapses;
- `LeaderOnlyKube` refuses every write once `holds()` is False (`LeadershipLost`), so a
  reconcile that was mid-way stops at its next write;
- `LeaseElector.confirm(action)` is called immediately before destructive steps (fencing,
  deleting a file system's objects, releasing addresses): it reads the Lease from the API
  server and requires it to still name us, on top of `holds()`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from provisioner.kubevirt.kube import LEASES, ConflictError, Kube, KubeError, Object, Resource

log = logging.getLogger(__name__)


class LeadershipLost(Exception):
    """We may no longer act as the leader: the lease lapsed on our clock or names another."""


class LeadershipGuard(Protocol):
    def holds(self) -> bool:
        """Still the leader by our own clock (no API call)."""
        ...

    def confirm(self, action: str) -> None:
        """Raise LeadershipLost unless we still lead, checked against the API server too."""
        ...


@dataclass(frozen=True)
class LeaseState:
    holder: str
    duration_seconds: int
    transitions: int
    renew_time: str  # as written by the holder; used only to notice changes


@dataclass(frozen=True)
class Decision:
    write: bool  # write `state` (acquire, take over, renew); False: someone else leads
    state: LeaseState | None
    leading: bool


def decide(current: LeaseState | None, me: str, unchanged_for: float, now_text: str,
           duration_seconds: int) -> Decision:
    """What to do with the Lease `current`, unchanged for `unchanged_for` seconds (our clock)."""
    if current is None:
        return Decision(True, LeaseState(me, duration_seconds, 0, now_text), True)
    if current.holder == me:
        return Decision(True, LeaseState(me, duration_seconds, current.transitions, now_text),
                        True)
    if not current.holder or unchanged_for >= current.duration_seconds:
        return Decision(True, LeaseState(me, duration_seconds, current.transitions + 1,
                                         now_text), True)
    return Decision(False, None, False)


def micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """One round of election per `try_acquire_or_renew()` call."""

    def __init__(self, kube: Kube, namespace: str, name: str, identity: str,
                 duration_seconds: int = 15, renew_deadline_seconds: float = 10.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration_seconds = duration_seconds
        self.renew_deadline_seconds = renew_deadline_seconds
        self._monotonic = monotonic
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._lock = threading.Lock()
        self._renewed_at: float | None = None  # start of our last successful round

    def try_acquire_or_renew(self) -> bool:
        """True when we hold the lease after this round (and the round was quick enough)."""
        started = self._monotonic()
        lease = self._kube.get(LEASES, self.name, self.namespace)
        current = _state_of(lease)
        key = (current, (lease or {}).get("metadata", {}).get("resourceVersion"))
        if key != self._observed:
            self._observed, self._observed_at = key, self._monotonic()
        decision = decide(current, self.identity, self._monotonic() - self._observed_at,
                          micro_time(), self.duration_seconds)
        if not decision.write or decision.state is None:
            self.lapse()  # someone else holds it: we do not lead, whatever our clock says
            return False
        was_holder = current is not None and current.holder == self.identity
        spec = _spec_of(decision.state, acquire=not was_holder,
                        old=(lease or {}).get("spec") or {})
        try:
            if lease is None:
                self._kube.create(LEASES, {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": spec,
                }, self.namespace)
            else:
                self._kube.replace(LEASES, self.name, {**lease, "spec": spec}, self.namespace)
        except ConflictError:
            return False
        with self._lock:
            self._renewed_at = started
        if not was_holder:
            log.info("%s acquired lease %s/%s", self.identity, self.namespace, self.name)
        return self.holds()

    def remaining(self) -> float | None:
        """Seconds until our leadership lapses unless renewed; None when we do not hold it."""
        with self._lock:
            if self._renewed_at is None:
                return None
            return self._renewed_at + self.renew_deadline_seconds - self._monotonic()

    def holds(self) -> bool:
        remaining = self.remaining()
        return remaining is not None and remaining > 0

    def lapse(self) -> None:
        with self._lock:
            self._renewed_at = None

    def confirm(self, action: str) -> None:
        if not self.holds():
            raise LeadershipLost(f"{self.identity} has not renewed lease {self.namespace}/"
                                 f"{self.name} within {self.renew_deadline_seconds:.0f}s; "
                                 f"not acting: {action}")
        try:
            lease = self._kube.get(LEASES, self.name, self.namespace)
        except KubeError as error:
            raise LeadershipLost(f"cannot confirm lease {self.namespace}/{self.name} "
                                 f"({error}); not acting: {action}") from error
        holder = ((lease or {}).get("spec") or {}).get("holderIdentity") or ""
        if holder != self.identity:
            self.lapse()
            raise LeadershipLost(f"lease {self.namespace}/{self.name} is held by "
                                 f"{holder or 'nobody'}, not {self.identity}; not acting: "
                                 f"{action}")
        if not self.holds():  # the read itself may have outlasted the deadline
            raise LeadershipLost(f"lease {self.namespace}/{self.name} lapsed while being "
                                 f"confirmed; not acting: {action}")

    def release(self) -> None:
        """Give the lease up at once (graceful stop), so another replica need not wait."""
        self.lapse()
        try:
            lease = self._kube.get(LEASES, self.name, self.namespace)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1,
                    "renewTime": micro_time()}
            self._kube.replace(LEASES, self.name, {**lease, "spec": spec}, self.namespace)
            log.info("%s released lease %s/%s", self.identity, self.namespace, self.name)
        except KubeError as error:
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, error)


class SessionGuard:
    """Leadership of one term: the elector's, ended for good once the term's `stop` is set.

    A worker stuck in a slow call when its term ended must not act if we lead again later:
    the new term has its own guard.
    """

    def __init__(self, elector: LeaseElector, stop: threading.Event) -> None:
        self._elector = elector
        self._stop = stop

    def holds(self) -> bool:
        return not self._stop.is_set() and self._elector.holds()

    def confirm(self, action: str) -> None:
        if self._stop.is_set():
            raise LeadershipLost(f"this leadership term has ended; not acting: {action}")
        self._elector.confirm(action)


class LeaderOnlyKube:
    """A `Kube` whose writes are refused (LeadershipLost) once `guard` no longer holds."""

    def __init__(self, kube: Kube, guard: LeadershipGuard) -> None:
        self._kube = kube
        self._guard = guard

    def _check(self, verb: str, resource: Resource, name: str) -> None:
        if not self._guard.holds():
            raise LeadershipLost(f"no longer the leader: not sending {verb} {resource.kind} "
                                 f"{name}")

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> Object | None:
        return self._kube.get(resource, name, namespace)

    def list(self, resource: Resource, namespace: str | None = None,
             label_selector: str | None = None) -> tuple[list[Object], str]:
        return self._kube.list(resource, namespace, label_selector)

    def watch(self, resource: Resource, namespace: str | None, label_selector: str | None,
              resource_version: str, timeout_seconds: int) -> Iterator[tuple[str, Object]]:
        return self._kube.watch(resource, namespace, label_selector, resource_version,
                                timeout_seconds)

    def create(self, resource: Resource, body: Object, namespace: str | None = None) -> Object:
        self._check("create", resource, str((body.get("metadata") or {}).get("name")))
        return self._kube.create(resource, body, namespace)

    def patch(self, resource: Resource, name: str, patch: Object, namespace: str | None = None,
              subresource: str | None = None) -> Object:
        self._check("patch", resource, name)
        return self._kube.patch(resource, name, patch, namespace, subresource)

    def replace(self, resource: Resource, name: str, body: Object,
                namespace: str | None = None) -> Object:
        self._check("replace", resource, name)
        return self._kube.replace(resource, name, body, namespace)

    def delete(self, resource: Resource, name: str, namespace: str | None = None,
               grace_period_seconds: int | None = None) -> bool:
        self._check("delete", resource, name)
        return self._kube.delete(resource, name, namespace, grace_period_seconds)


def _state_of(lease: dict[str, Any] | None) -> LeaseState | None:
    if lease is None:
        return None
    spec = lease.get("spec") or {}
    return LeaseState(
        holder=spec.get("holderIdentity") or "",
        duration_seconds=int(spec.get("leaseDurationSeconds") or 15),
        transitions=int(spec.get("leaseTransitions") or 0),
        renew_time=spec.get("renewTime") or "",
    )


def _spec_of(state: LeaseState, acquire: bool, old: dict[str, Any]) -> dict[str, Any]:
    return {
        "holderIdentity": state.holder,
        "leaseDurationSeconds": state.duration_seconds,
        "leaseTransitions": state.transitions,
        "acquireTime": state.renew_time if acquire else old.get("acquireTime", state.renew_time),
        "renewTime": state.renew_time,
    }
