"""Leader election on a coordination.k8s.io/v1 Lease, as client-go does it, in two parts.

`decide` is the whole policy as a pure function: given the Lease as read, who we are, and how
long the record has stayed unchanged *as we observed it*, it says whether to write and what.
Expiry is judged by our own monotonic clock since the record last changed, never by comparing
another replica's renewTime with our wall clock, so clock skew between nodes cannot make two
leaders. `LeaseElector` does the I/O: read, decide, write with the read resourceVersion (a
concurrent writer gets a Conflict and loses the round).

A leader that cannot renew for `renew_deadline` stops acting (see runner.py) before its lease
can expire and be taken, so there is never a moment with two acting leaders as long as the
deadline is shorter than the lease duration.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from provisioner.kubevirt.kube import LEASES, ConflictError, Kube, KubeError

log = logging.getLogger(__name__)


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
                 duration_seconds: int = 15,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration_seconds = duration_seconds
        self._monotonic = monotonic
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0

    def try_acquire_or_renew(self) -> bool:
        """True when we hold the lease after this round."""
        lease = self._kube.get(LEASES, self.name, self.namespace)
        current = _state_of(lease)
        key = (current, (lease or {}).get("metadata", {}).get("resourceVersion"))
        if key != self._observed:
            self._observed, self._observed_at = key, self._monotonic()
        decision = decide(current, self.identity, self._monotonic() - self._observed_at,
                          micro_time(), self.duration_seconds)
        if not decision.write or decision.state is None:
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
        if not was_holder:
            log.info("%s acquired lease %s/%s", self.identity, self.namespace, self.name)
        return True

    def release(self) -> None:
        """Give the lease up at once (graceful stop), so another replica need not wait."""
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
