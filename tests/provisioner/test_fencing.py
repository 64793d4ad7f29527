"""Fencing: a launcher pod is force-deleted only on evidence that its node is down.

The evidence is the `node.kubernetes.io/out-of-service` taint (an admin's word), or the
provisioner's own continuous observation of the node NotReady/Unknown/missing for the fence
timeout, on its own monotonic clock. A Node's `lastTransitionTime` is not evidence: whoever
may patch node status can write it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from csi.errors import InProgress
from csi.metrics import ProvisionerMetrics
from provisioner.kubevirt.events import EventRecorder
from provisioner.kubevirt.fencing import OUT_OF_SERVICE_TAINT, NodeDownClock
from provisioner.kubevirt.kube import LUSTRE_FILE_SYSTEMS, NODES, PODS, KubeError
from provisioner.kubevirt.reconciler import Reconciler, ReconcilerConfig
from tests.provisioner.conftest import SERVER_NAMESPACE, KubeEnv, template, wait_for

POOL = "10.48.0.0/24"  # apart from other tests' pools: their address expectations hold
NOT_READY = {"metadata": {"name": "n"}, "status": {"conditions": [
    {"type": "Ready", "status": "Unknown", "lastTransitionTime": "2000-01-01T00:00:00Z"}]}}
READY = {"metadata": {"name": "n"}, "status": {"conditions": [
    {"type": "Ready", "status": "True"}]}}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_down_time_counts_only_the_provisioners_own_observations() -> None:
    clock = FakeClock()
    down = NodeDownClock(max_gap_seconds=60, monotonic=clock)
    # The node says it has been NotReady since 2000: that counts for nothing.
    assert down.observe("n", NOT_READY) == 0
    clock.now += 50
    assert down.observe("n", NOT_READY) == 50
    clock.now += 50
    assert down.observe("n", NOT_READY) == 100
    # Seen Ready once: the count starts again.
    clock.now += 10
    assert down.observe("n", READY) is None
    clock.now += 10
    assert down.observe("n", NOT_READY) == 0
    # A missing Node object is down too, counted the same way.
    assert down.observe("gone", None) == 0
    clock.now += 30
    assert down.observe("gone", None) == 30


def test_a_gap_in_observations_restarts_the_down_clock() -> None:
    clock = FakeClock()
    down = NodeDownClock(max_gap_seconds=60, monotonic=clock)
    down.observe("n", NOT_READY)
    clock.now += 61  # not looked at for longer than the gap: it may have been Ready meanwhile
    assert down.observe("n", NOT_READY) == 0
    clock.now += 40
    assert down.observe("n", NOT_READY) == 40
    down.forget()  # e.g. leadership lost and regained
    assert down.observe("n", NOT_READY) == 0


# -- against the real API server ----------------------------------------------------------------

def _launcher_pods(env: KubeEnv, fs: str) -> list[str]:
    pods = env.admin.list(PODS, SERVER_NAMESPACE, f"vm.kubevirt.io/name={fs}-oss0")[0]
    return [p["metadata"]["name"] for p in pods]


def _ready_file_system(env: KubeEnv, reconciler: Reconciler, fs: str) -> tuple[str, str]:
    """Create `fs`, reconcile it until Ready; (its oss0 launcher pod, that pod's node)."""
    provider = env.provider()

    def ready() -> Any:
        with contextlib.suppress(KubeError):
            reconciler.reconcile(fs)
        try:
            return provider.ensure_file_system(fs, template(ip_pool=POOL))
        except InProgress:
            return None

    wait_for(ready, 20, f"{fs} Ready")
    pods = env.admin.list(PODS, SERVER_NAMESPACE, f"vm.kubevirt.io/name={fs}-oss0")[0]
    (pod,) = pods
    return pod["metadata"]["name"], pod["spec"]["nodeName"]


def _reconciler(env: KubeEnv, clock: FakeClock, fence_after: float,
                metrics: ProvisionerMetrics | None = None) -> Reconciler:
    config = ReconcilerConfig(namespace=SERVER_NAMESPACE, fence_after_seconds=fence_after)
    return Reconciler(env.sa, config, EventRecorder(env.sa), monotonic=clock, metrics=metrics)


def _reconcile(reconciler: Reconciler, fs: str) -> None:
    with contextlib.suppress(KubeError):  # a status write may race the stand-in: look again
        reconciler.reconcile(fs)


def _delete(env: KubeEnv, reconciler: Reconciler, fs: str) -> None:
    """Remove the test's file system, so later tests do not see its servers."""
    for node in env.standin.node_names:
        env.standin.revive_node(node)
    env.admin.delete(LUSTRE_FILE_SYSTEMS, fs)
    wait_for(lambda: (_reconcile(reconciler, fs), env.lfs(fs) is None)[1], 20, f"{fs} gone")


@pytest.mark.kube
def test_a_node_claiming_to_be_down_for_hours_is_fenced_only_after_the_provisioner_saw_it_down(
        env: KubeEnv) -> None:
    clock = FakeClock()
    reconciler = _reconciler(env, clock, fence_after=300)
    pod, node = _ready_file_system(env, reconciler, "fclock")
    env.standin.kill_node(node, ago=7200)  # Ready=Unknown, lastTransitionTime two hours ago
    _reconcile(reconciler, "fclock")
    assert pod in _launcher_pods(env, "fclock"), "fenced on the node's own timestamp"
    assert "fencing in 300s" in env.condition("fclock", "Degraded")["message"]
    for _ in range(4):  # looked at every 75 s, as the requeue asks
        clock.now += 74
        _reconcile(reconciler, "fclock")
        assert pod in _launcher_pods(env, "fclock")
    clock.now += 5  # 301 s of our own observations without a break
    _reconcile(reconciler, "fclock")
    assert pod not in _launcher_pods(env, "fclock")
    (fenced,) = [m for m in env.events("fclock", "Fenced") if pod in m]
    assert "seen NotReady by the provisioner for 301s" in fenced
    _delete(env, reconciler, "fclock")


@pytest.mark.kube
def test_a_node_object_that_disappears_is_not_fenced_at_once(env: KubeEnv) -> None:
    clock = FakeClock()
    reconciler = _reconciler(env, clock, fence_after=300)
    pod, node = _ready_file_system(env, reconciler, "fgone")
    env.standin.kill_node(node)
    env.admin.delete(NODES, node)
    _reconcile(reconciler, "fgone")
    assert pod in _launcher_pods(env, "fgone"), "fenced at once because the Node was missing"
    assert "on missing node" in env.condition("fgone", "Degraded")["message"]
    clock.now += 150
    _reconcile(reconciler, "fgone")
    clock.now += 151
    _reconcile(reconciler, "fgone")
    assert pod not in _launcher_pods(env, "fgone")
    assert any("seen missing by the provisioner" in m for m in env.events("fgone", "Fenced"))
    _delete(env, reconciler, "fgone")


@pytest.mark.kube
def test_the_out_of_service_taint_fences_at_once(env: KubeEnv) -> None:
    clock = FakeClock()
    metrics = ProvisionerMetrics()
    reconciler = _reconciler(env, clock, fence_after=300, metrics=metrics)
    pod, node = _ready_file_system(env, reconciler, "ftaint")
    env.standin.kill_node(node)
    env.admin.patch(NODES, node, {"spec": {"taints": [
        {"key": OUT_OF_SERVICE_TAINT, "value": "nodeshutdown", "effect": "NoExecute"}]}})
    _reconcile(reconciler, "ftaint")
    assert pod not in _launcher_pods(env, "ftaint")
    assert any(OUT_OF_SERVICE_TAINT in m for m in env.events("ftaint", "Fenced"))
    fenced = len(env.events("ftaint", "Fenced"))  # one per launcher pod on the node
    assert f'lustre_csi_fencing_total{{fsname="ftaint"}} {fenced}' in metrics.lines()
    # The VM comes back elsewhere with the same address.
    wait_for(lambda: (_reconcile(reconciler, "ftaint"), env.provider().file_system(
        "ftaint"))[1], 20, "ftaint Ready again")
    _delete(env, reconciler, "ftaint")
