"""A node without the Lustre client says so on its Node object, with deploy/'s node RBAC."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.driver import REPO, DriverProcess

pytestmark = pytest.mark.kube
POLICY = REPO / "deploy" / "rbac" / "node-status-policy.yaml"
POLICY_NAME = "lustre-csi-node-status-own-node-only"


def test_missing_client_sets_lustre_client_ready_false(kube_cluster: Any, tmp_path: Path) -> None:
    from kubernetes import client as k8s

    kube_cluster.ensure_namespace("lustre-csi")
    # deploy/'s node RBAC and its policy (own node's status only), and a token bound to the
    # plugin's pod on worker-7, as kubelet would mount it: the patch must pass the policy.
    kube_cluster.apply(REPO / "deploy" / "rbac" / "node.yaml", POLICY)
    admin = kube_cluster.admin_client()
    core = k8s.CoreV1Api(admin)
    core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "worker-7"}})
    core.create_namespaced_pod("lustre-csi", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lustre-csi-node-worker-7"},
        "spec": {"serviceAccountName": "lustre-csi-node", "nodeName": "worker-7",
                 "automountServiceAccountToken": False,
                 "containers": [{"name": "lustre-csi", "image": "lustre-csi:test"}]}})
    token = kube_cluster.service_account_token("lustre-csi", "lustre-csi-node",
                                               bound_pod="lustre-csi-node-worker-7")
    kubeconfig = kube_cluster.kubeconfig_for(token, tmp_path / "kc")
    node = DriverProcess(
        tmp_path / "node",
        mode="node",
        extra_args=[
            "--lustre-tools",
            "kernel",
            "--report-node-condition",
            "--kubeconfig",
            str(kubeconfig),
        ],
    )
    node.argv[node.argv.index("--node-id") + 1] = "worker-7"
    with pytest.raises(RuntimeError, match="did not become ready"):
        node.start(timeout=3)
    try:
        deadline = time.monotonic() + 15
        condition = None
        while time.monotonic() < deadline and condition is None:
            conditions = core.read_node_status("worker-7").status.conditions or []
            condition = next((c for c in conditions if c.type == "LustreClientReady"), None)
            time.sleep(0.2)
        assert condition is not None, node.log_path.read_text()[-3000:]
        assert condition.status == "False"
        assert condition.reason == "ToolsMissing"
        assert "lustre" in condition.message.lower()
        assert "forbidden" not in node.log_path.read_text().lower()
    finally:
        node.stop()
        admission = k8s.AdmissionregistrationV1Api(admin)
        admission.delete_validating_admission_policy_binding(POLICY_NAME)
        admission.delete_validating_admission_policy(POLICY_NAME)
        core.delete_namespaced_pod("lustre-csi-node-worker-7", "lustre-csi",
                                   grace_period_seconds=0)
