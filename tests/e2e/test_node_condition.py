"""A node without the Lustre client says so on its Node object, with deploy/'s node RBAC."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.driver import REPO, DriverProcess

pytestmark = pytest.mark.kube


def test_missing_client_sets_lustre_client_ready_false(kube_cluster: Any, tmp_path: Path) -> None:
    from kubernetes import client as k8s

    kube_cluster.ensure_namespace("lustre-csi")
    kube_cluster.apply(REPO / "deploy" / "rbac" / "node.yaml")
    core = k8s.CoreV1Api(kube_cluster.admin_client())
    core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "worker-7"}})
    kubeconfig = kube_cluster.kubeconfig_for(
        kube_cluster.service_account_client("lustre-csi", "lustre-csi-node"), tmp_path / "kc"
    )
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
