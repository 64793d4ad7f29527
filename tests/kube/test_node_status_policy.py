"""deploy/'s admission policy on the real API server: the node plugin may update the status of
its own node only (the node its pod-bound token names), never another node's, and may change
the Node itself only by removing its startup taint."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from csi.node.readiness import ClientReadiness
from csi.node.taint import AGENT_NOT_READY_TAINT, CoreNodeApi, NodeReadinessReporter
from tests.support.kube import REPO_ROOT, LocalKubeCluster

pytestmark = pytest.mark.kube
POLICY = REPO_ROOT / "deploy" / "rbac" / "node-status-policy.yaml"


def _condition_patch(message: str) -> dict[str, Any]:
    return {"status": {"conditions": [{
        "type": "LustreClientReady", "status": "False", "reason": "ToolsMissing",
        "message": message, "lastHeartbeatTime": "2026-01-01T00:00:00Z",
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}


@pytest.fixture
def policy(kube_cluster: LocalKubeCluster) -> Iterator[k8s.CoreV1Api]:
    """deploy/'s node RBAC and policy applied; the policy is removed afterwards (other tests
    of this session patch node status with tokens that are not bound to a pod)."""
    kube_cluster.ensure_namespace("lustre-csi")
    kube_cluster.apply(REPO_ROOT / "deploy" / "rbac" / "node.yaml", POLICY)
    admin = kube_cluster.admin_client()
    core = k8s.CoreV1Api(admin)
    for name in ("policy-node-a", "policy-node-b"):
        core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    # The node plugin's pod on node a, and a token bound to it (what kubelet would mount).
    core.create_namespaced_pod("lustre-csi", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "lustre-csi-node-on-a"},
        "spec": {"serviceAccountName": "lustre-csi-node", "nodeName": "policy-node-a",
                 "automountServiceAccountToken": False,
                 "containers": [{"name": "lustre-csi", "image": "lustre-csi:test"}]}})
    try:
        yield core
    finally:
        admission = k8s.AdmissionregistrationV1Api(admin)
        admission.delete_validating_admission_policy_binding(
            "lustre-csi-node-status-own-node-only")
        admission.delete_validating_admission_policy("lustre-csi-node-status-own-node-only")
        core.delete_namespaced_pod("lustre-csi-node-on-a", "lustre-csi", grace_period_seconds=0)
        for name in ("policy-node-a", "policy-node-b"):
            core.delete_node(name)


def test_the_node_plugin_may_update_its_own_nodes_status_and_no_other(
        kube_cluster: LocalKubeCluster, policy: k8s.CoreV1Api) -> None:
    token = kube_cluster.service_account_token("lustre-csi", "lustre-csi-node",
                                               bound_pod="lustre-csi-node-on-a")
    plugin = k8s.CoreV1Api(kube_cluster.client_for_token(token))
    # The policy takes effect once the API server has loaded it: wait for the first refusal.
    deadline = time.monotonic() + 20
    while True:
        try:
            plugin.patch_node_status("policy-node-b", _condition_patch("probe"))
        except ApiException:
            break
        assert time.monotonic() < deadline, "a patch of another node's status was accepted"
        time.sleep(0.2)
    with pytest.raises(ApiException) as refused:
        plugin.patch_node_status("policy-node-b", _condition_patch("spoofed"))
    refusal = refused.value
    assert refusal.status in (403, 422), refusal
    assert "may change only its own node" in str(refusal.body)
    assert "bound to node policy-node-a, not policy-node-b" in str(refusal.body)
    conditions = policy.read_node_status("policy-node-b").status.conditions or []
    assert not [c for c in conditions if c.message == "spoofed"]

    # Its own node: accepted, and written.
    plugin.patch_node_status("policy-node-a", _condition_patch("modules missing"))
    conditions = policy.read_node_status("policy-node-a").status.conditions or []
    assert [c.message for c in conditions if c.type == "LustreClientReady"] == ["modules missing"]

    # A token not bound to a pod names no node, so it may update no node's status.
    unbound = k8s.CoreV1Api(kube_cluster.service_account_client("lustre-csi", "lustre-csi-node"))
    with pytest.raises(ApiException) as no_node:
        unbound.patch_node_status("policy-node-a", _condition_patch("unbound"))
    assert "bound to node (none)" in str(no_node.value.body)


STARTUP = {"key": AGENT_NOT_READY_TAINT, "effect": "NoExecute"}
OTHER = {"key": "example.com/gpu", "value": "a100", "effect": "NoSchedule"}


def _taints(core: k8s.CoreV1Api, name: str) -> list[dict[str, Any]]:
    taints = core.read_node(name).spec.taints or []
    return [{k: v for k, v in (("key", t.key), ("value", t.value), ("effect", t.effect)) if v}
            for t in taints]


def _wait_for_policy(plugin: k8s.CoreV1Api) -> None:
    """The policy takes effect once the API server has loaded it: wait for the first refusal."""
    deadline = time.monotonic() + 20
    while True:
        try:
            plugin.patch_node_status("policy-node-b", _condition_patch("probe"))
        except ApiException:
            return
        assert time.monotonic() < deadline, "a patch of another node's status was accepted"
        time.sleep(0.2)


def test_the_node_plugin_removes_its_startup_taint_when_ready_and_nothing_else(
        kube_cluster: LocalKubeCluster, policy: k8s.CoreV1Api) -> None:
    # As kubelet registers it, or with the time an admin's `kubectl taint` stamps on it.
    stamped = {**STARTUP, "timeAdded": "2026-12-01T10:00:00Z"}
    policy.patch_node("policy-node-a", {"spec": {"taints": [OTHER, stamped]}})
    policy.patch_node("policy-node-b", {"spec": {"taints": [OTHER, STARTUP]}})
    token = kube_cluster.service_account_token("lustre-csi", "lustre-csi-node",
                                               bound_pod="lustre-csi-node-on-a")
    plugin = k8s.CoreV1Api(kube_cluster.client_for_token(token))
    _wait_for_policy(plugin)
    report = NodeReadinessReporter(CoreNodeApi(plugin), "policy-node-a")

    # Not ready: the condition says why, the taint stays.
    report(ClientReadiness(False, "ModulesNotLoaded", "modprobe lustre"))
    assert _taints(policy, "policy-node-a") == [OTHER, STARTUP]  # (timeAdded not shown)
    conditions = policy.read_node_status("policy-node-a").status.conditions or []
    assert [c.reason for c in conditions if c.type == "LustreClientReady"] == [
        "ModulesNotLoaded"]

    # Ready: the condition first, then the startup taint goes; the admin's taint stays.
    report(ClientReadiness(True, "ClientReady", "lustre: 2.17.0; NIDs 10.0.0.9@tcp"))
    assert _taints(policy, "policy-node-a") == [OTHER]
    conditions = policy.read_node_status("policy-node-a").status.conditions or []
    assert [c.status for c in conditions if c.type == "LustreClientReady"] == ["True"]

    def refused(name: str, operations: list[dict[str, Any]]) -> str:
        with pytest.raises(ApiException) as refusal:
            plugin.patch_node(name, operations, _content_type="application/json-patch+json")
        assert refusal.value.status in (403, 422), refusal.value
        return str(refusal.value.body)

    # Another node's startup taint: refused, and kept.
    body = refused("policy-node-b", [{"op": "remove", "path": "/spec/taints/1"}])
    assert "bound to node policy-node-a, not policy-node-b" in body
    assert _taints(policy, "policy-node-b") == [OTHER, STARTUP]
    # Its own node, but another taint removed, a taint added, a label or cordon: refused.
    for change in ([{"op": "remove", "path": "/spec/taints/0"}],
                   [{"op": "add", "path": "/spec/taints/-", "value": STARTUP}],
                   [{"op": "add", "path": "/metadata/labels", "value": {"lustre": "yes"}}],
                   [{"op": "add", "path": "/spec/unschedulable", "value": True}]):
        body = refused("policy-node-a", change)
        assert "only by removing the lustre.csi.io/agent-not-ready taint" in body
    assert _taints(policy, "policy-node-a") == [OTHER]
    node = policy.read_node("policy-node-a")
    assert not node.spec.unschedulable and "lustre" not in (node.metadata.labels or {})
