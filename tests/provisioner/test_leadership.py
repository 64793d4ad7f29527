"""Two leaders must never both act: the renew deadline is a timer, and address claims are one
object written with resourceVersion guards (against the real kube-apiserver)."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import replace
from typing import Any

import pytest

from csi.errors import InProgress
from provisioner.kubevirt.addresses import CLAIMS_NAME
from provisioner.kubevirt.events import EventRecorder
from provisioner.kubevirt.kube import CONFIG_MAPS, LEASES, LUSTRE_FILE_SYSTEMS, KubeError
from provisioner.kubevirt.reconciler import Reconciler, ReconcilerConfig
from tests.provisioner.conftest import (
    FAST,
    NAMESPACE,
    SERVER_NAMESPACE,
    KubeEnv,
    template,
    wait_for,
)

pytestmark = pytest.mark.kube


class HangingLeaseCalls:
    """A replica whose Lease calls hang (a slow API server) once `hang` is set."""

    def __init__(self, kube: Any) -> None:
        self._kube = kube
        self.hang = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._kube, name)

        def call(resource: Any, *args: Any, **kwargs: Any) -> Any:
            if resource is LEASES and self.hang.is_set():
                self.release.wait(30)
            return method(resource, *args, **kwargs)

        return call


def test_a_leader_whose_renewal_hangs_stops_leading_before_another_takes_over(env: KubeEnv):
    link = HangingLeaseCalls(env.sa)
    first = env.runner(replace(FAST, identity="hang-1"), kube=link)
    assert first.wait_until_leader(10)
    second = env.runner(replace(FAST, identity="hang-2"))
    link.hang.set()  # replica-1's next renewal never returns
    try:
        # It steps down by its own timer while the renewal is still stuck...
        wait_for(lambda: not first.is_leader, 10, "hang-1 steps down mid-round")
        assert not second.is_leader or not first.is_leader
        # ...and only then, once the lease has expired, does the other replica take over.
        assert second.wait_until_leader(15)
        assert not first.is_leader
    finally:
        link.release.set()
    wait_for(lambda: env.admin.get(LEASES, FAST.lease_name, NAMESPACE)["spec"]["holderIdentity"]
             == "hang-2", 10, "hang-2 holds the lease")
    assert not first.is_leader


class RunsRivalBeforeFirstWrite:
    """A reconciler's client that lets a rival leader run a whole pass just before the first
    write this one sends: both read the same free addresses, the rival writes first."""

    def __init__(self, kube: Any, rival: Any) -> None:
        self._kube = kube
        self._rival = rival

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._kube, name)
        if name not in ("create", "patch", "replace", "delete"):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            rival, self._rival = self._rival, None
            if rival is not None:
                rival()
            return method(*args, **kwargs)

        return call


def _request(env: KubeEnv, fs: str) -> None:
    with contextlib.suppress(InProgress):
        env.provider().ensure_file_system(fs, template(ip_pool="10.47.0.1-10.47.0.20/24"))
    lfs = env.lfs(fs)
    # Both start with the finalizer in place, so the first write of a pass is its plan.
    env.admin.patch(LUSTRE_FILE_SYSTEMS, fs, {"metadata": {
        "finalizers": ["lustre.csi.io/server-set"]}})
    assert lfs is not None


def test_two_leaders_planning_at_once_never_give_one_address_to_two_file_systems(env: KubeEnv):
    config = ReconcilerConfig(namespace=SERVER_NAMESPACE, claims_namespace=NAMESPACE)
    _request(env, "race-a")
    _request(env, "race-b")
    rival = Reconciler(env.sa, config, EventRecorder(env.sa))

    def rival_pass() -> None:
        with contextlib.suppress(KubeError):
            rival.reconcile("race-b")

    first = Reconciler(RunsRivalBeforeFirstWrite(env.sa, rival_pass), config,
                       EventRecorder(env.sa))
    for _ in range(3):  # a pass that lost a write race looks again
        with contextlib.suppress(KubeError):
            if first.reconcile("race-a") != 0.0:
                break
    with contextlib.suppress(KubeError):
        rival.reconcile("race-b")

    def addresses(fs: str) -> list[str]:
        return [s["address"] for s in (env.lfs(fs) or {}).get("status", {}).get("servers", [])]

    a, b = addresses("race-a"), addresses("race-b")
    assert a and b, (a, b)
    assert not set(a) & set(b), f"one address given to two file systems: {a} {b}"
    claims = env.admin.get(CONFIG_MAPS, CLAIMS_NAME, NAMESPACE)["data"]
    assert {claims[x] for x in a} == {f"race-a/{s}" for s in ("mds0", "oss0")}
    assert {claims[x] for x in b} == {f"race-b/{s}" for s in ("mds0", "oss0")}

    # Deleting a file system releases its claims once its servers are gone, not before.
    for fs in ("race-a", "race-b"):
        env.admin.delete(LUSTRE_FILE_SYSTEMS, fs)
        wait_for(lambda fs=fs: (rival.reconcile(fs), env.lfs(fs) is None)[1], 20,
                 f"{fs} deleted")
    claims = env.admin.get(CONFIG_MAPS, CLAIMS_NAME, NAMESPACE).get("data") or {}
    assert not [o for o in claims.values() if o.startswith("race-")], claims


def test_an_address_claimed_by_another_file_system_is_reported_not_taken_over(env: KubeEnv):
    config = ReconcilerConfig(namespace=SERVER_NAMESPACE, claims_namespace=NAMESPACE)
    reconciler = Reconciler(env.sa, config, EventRecorder(env.sa))
    _request(env, "dup-a")
    wait_for(lambda: (_reconcile(reconciler, "dup-a"), addresses_of(env, "dup-a"))[1], 10,
             "dup-a planned")
    mds = addresses_of(env, "dup-a")[0]
    # A claim from before (say, two leaders of an older version): someone else holds mds's.
    claims = env.admin.get(CONFIG_MAPS, CLAIMS_NAME, NAMESPACE)
    claims["data"][mds] = "dup-b/mds0"
    env.admin.replace(CONFIG_MAPS, CLAIMS_NAME, claims, NAMESPACE)
    wait_for(lambda: (_reconcile(reconciler, "dup-a"), "also claimed by dup-b" in env.condition(
        "dup-a", "Degraded").get("message", ""))[1], 10, "the shared address reported")
    assert env.admin.get(CONFIG_MAPS, CLAIMS_NAME, NAMESPACE)["data"][mds] == "dup-b/mds0"
    env.admin.delete(LUSTRE_FILE_SYSTEMS, "dup-a")
    wait_for(lambda: (_reconcile(reconciler, "dup-a"), env.lfs("dup-a") is None)[1], 20,
             "dup-a deleted")
    claims = env.admin.get(CONFIG_MAPS, CLAIMS_NAME, NAMESPACE)["data"]
    assert claims.get(mds) == "dup-b/mds0"  # not dup-a's to release
    del claims[mds]
    env.admin.replace(CONFIG_MAPS, CLAIMS_NAME, {**env.admin.get(
        CONFIG_MAPS, CLAIMS_NAME, NAMESPACE), "data": claims}, NAMESPACE)


def addresses_of(env: KubeEnv, fs: str) -> list[str]:
    return [s["address"] for s in ((env.lfs(fs) or {}).get("status") or {}).get("servers", [])]


def _reconcile(reconciler: Reconciler, fs: str) -> None:
    with contextlib.suppress(KubeError):
        reconciler.reconcile(fs)
