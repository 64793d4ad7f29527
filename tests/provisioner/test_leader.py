import threading

import pytest

from provisioner.kubevirt.kube import PODS
from provisioner.kubevirt.leader import (
    LeaderOnlyKube,
    LeadershipLost,
    LeaseElector,
    LeaseState,
    SessionGuard,
    decide,
)


def test_no_lease_is_acquired():
    decision = decide(None, "a", 0, "t1", 15)
    assert decision.leading and decision.state == LeaseState("a", 15, 0, "t1")


def test_holder_renews_and_keeps_the_transition_count():
    decision = decide(LeaseState("a", 15, 3, "t0"), "a", 100, "t1", 15)
    assert decision.leading and decision.state == LeaseState("a", 15, 3, "t1")


def test_a_live_leader_is_not_challenged():
    decision = decide(LeaseState("a", 15, 0, "t0"), "b", 14.9, "t1", 15)
    assert not decision.leading and not decision.write


def test_an_expired_or_released_lease_is_taken_over():
    expired = decide(LeaseState("a", 15, 2, "t0"), "b", 15.0, "t1", 15)
    assert expired.leading and expired.state == LeaseState("b", 15, 3, "t1")
    released = decide(LeaseState("", 1, 2, "t0"), "b", 0.0, "t1", 15)
    assert released.leading and released.state.transitions == 3


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _LeaseServer:
    """Just enough of the API for one Lease; `on_get` runs inside a read (a slow call)."""

    def __init__(self, clock: _Clock) -> None:
        self.lease: dict | None = None
        self.version = 0
        self.on_get = None
        self.writes: list[str] = []
        self._clock = clock

    def get(self, resource, name, namespace=None):
        if self.on_get is not None:
            self.on_get()
        return self.lease

    def create(self, resource, body, namespace=None):
        self.writes.append(f"create {resource.kind}")
        self.version += 1
        metadata = {**body["metadata"], "resourceVersion": str(self.version)}
        self.lease = {**body, "metadata": metadata}
        return self.lease

    def replace(self, resource, name, body, namespace=None):
        self.writes.append(f"replace {resource.kind}")
        return self.create(resource, body, namespace)

    def patch(self, resource, name, patch, namespace=None, subresource=None):
        self.writes.append(f"patch {resource.kind} {name}")
        return {}

    def delete(self, resource, name, namespace=None, grace_period_seconds=None):
        self.writes.append(f"delete {resource.kind} {name}")
        return True


def test_a_renewal_stuck_in_a_slow_call_loses_leadership_at_the_deadline() -> None:
    clock = _Clock()
    server = _LeaseServer(clock)
    elector = LeaseElector(server, "ns", "lease", "me", duration_seconds=15,
                           renew_deadline_seconds=10, monotonic=clock)
    assert elector.try_acquire_or_renew() and elector.holds()
    clock.now += 9
    seen_while_stuck = []

    def slow() -> None:  # the API call takes 20 s; meanwhile the deadline passes
        clock.now += 20
        seen_while_stuck.append(elector.holds())

    server.on_get = slow
    renewed = elector.try_acquire_or_renew()
    # Lapsed during the call, and a renewal that took longer than the deadline does not count.
    assert seen_while_stuck == [False]
    assert not renewed and not elector.holds()


def test_writes_are_refused_mid_reconcile_once_the_deadline_has_passed() -> None:
    clock = _Clock()
    server = _LeaseServer(clock)
    elector = LeaseElector(server, "ns", "lease", "me", renew_deadline_seconds=10,
                           monotonic=clock)
    assert elector.try_acquire_or_renew()
    term = threading.Event()
    kube = LeaderOnlyKube(server, SessionGuard(elector, term))
    kube.delete(PODS, "launcher-1", "servers")
    clock.now += 10.5  # no renewal within the deadline
    with pytest.raises(LeadershipLost):
        kube.delete(PODS, "launcher-2", "servers")
    with pytest.raises(LeadershipLost):
        kube.patch(PODS, "launcher-2", {}, "servers")
    assert server.writes[-1] == "delete Pod launcher-1"
    # A term that has ended stays ended, even if this process leads again later.
    assert elector.try_acquire_or_renew()
    term.set()
    with pytest.raises(LeadershipLost):
        kube.delete(PODS, "launcher-3", "servers")


def test_destructive_steps_confirm_the_lease_still_names_us() -> None:
    clock = _Clock()
    server = _LeaseServer(clock)
    elector = LeaseElector(server, "ns", "lease", "me", monotonic=clock)
    assert elector.try_acquire_or_renew()
    elector.confirm("fence")  # ours, within the deadline
    server.lease["spec"]["holderIdentity"] = "someone-else"  # taken without our clock noticing
    assert elector.holds()
    with pytest.raises(LeadershipLost, match="held by someone-else"):
        elector.confirm("force-delete launcher pod p")
    assert not elector.holds()
