"""An admin's `kubectl apply -k` of our manifests (deploy/overlays/local) on a real kubelet:
the pods come up Ready, the real node-driver-registrar registers the driver with kubelet, the
livenessprobe sidecars answer, and the node reports its Lustre client readiness."""

from __future__ import annotations

import json

from tests.node.node import NODE_IP, NODE_NAME
from tests.node.stack import DRIVER, Stack, wait_for


def test_controller_and_node_pods_become_ready_from_the_overlay(stack: Stack) -> None:
    stack.wait_ready()
    for component in ("controller", "node"):
        pods = stack.pods(component)
        assert len(pods) == 1, [p.metadata.name for p in pods]
        statuses = {c.name: c for c in pods[0].status.container_statuses}
        assert all(c.ready for c in statuses.values()), statuses
        images = {c.name: c.image for c in pods[0].spec.containers}
        assert all(i.startswith("localhost/lustre-csi/") for i in images.values()), images
        assert pods[0].spec.node_name == NODE_NAME


def test_csinode_lists_the_driver_registered_by_node_driver_registrar(stack: Stack) -> None:
    def registered() -> list[str]:
        # (kubectl: the Python client refuses a CSINode whose drivers list is still null)
        csinode = json.loads(
            stack.kubectl("get", "csinode", NODE_NAME, "-o", "json", check=False).stdout or "{}"
        )
        drivers = (csinode.get("spec") or {}).get("drivers") or []
        return [d["nodeID"] for d in drivers if d["name"] == DRIVER]

    node_ids = wait_for(f"CSINode {NODE_NAME} to list {DRIVER}", registered, 120)
    assert node_ids == [NODE_NAME]
    registrar_log = stack.logs(stack.node_pod().metadata.name, "node-driver-registrar")
    # kubelet's plugin watcher called back: the registrar we built registered our socket.
    assert 'version="v2.17.0"' in registrar_log, registrar_log[-2000:]
    assert 'status="plugin_registered:true"' in registrar_log, registrar_log[-2000:]


def test_livenessprobe_sidecars_answer_healthz(stack: Stack) -> None:
    # The node pod is on the host network: its probe listens on the node's address.
    assert stack.healthz(f"{NODE_IP}:9810") == (200, "ok")
    controller = stack.pods("controller")[0]
    assert stack.healthz(f"{controller.status.pod_ip}:9808") == (200, "ok")


def test_node_reports_lustre_client_ready_condition(stack: Stack) -> None:
    def condition() -> object:
        node = stack.core.read_node(NODE_NAME)
        found = [c for c in node.status.conditions or [] if c.type == "LustreClientReady"]
        return found[0] if found else None

    reported = wait_for("the LustreClientReady node condition", condition, 120)
    # The local server set's stand-in client answers like a loaded, configured client.
    status, reason = reported.status, reported.reason  # type: ignore[attr-defined]
    assert (status, reason) == ("True", "ClientReady"), reported
