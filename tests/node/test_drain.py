"""Draining the node: pods using our volumes are evicted and kubelet unpublishes and unstages
their volumes while the node plugin keeps running (DaemonSet pods stay through a drain)."""

from __future__ import annotations

from tests.node.node import NODE_NAME
from tests.node.stack import (
    KUBELET_DIR,
    Stack,
    busybox_pod,
    calls_ok,
    lustre_claim,
    mounts_under,
    wait_for,
)


def test_drain_unmounts_the_pods_volumes_before_the_node_plugin_goes(stack: Stack) -> None:
    try:
        stack.cluster.apply(lustre_claim("drained"))
        stack.cluster.apply(busybox_pod("drained", "drained"))
        pod = stack.wait_pod_phase("drained", "Running")
        target = f"{KUBELET_DIR}/pods/{pod.metadata.uid}/volumes/kubernetes.io~csi/"
        assert any(m.startswith(target) for m in mounts_under(KUBELET_DIR))
        plugin = stack.node_pod()
        log = stack.node_plugin_log()
        unstaged = calls_ok(log, "NodeUnstageVolume")
        unpublished = calls_ok(log, "NodeUnpublishVolume")

        stack.kubectl(
            "drain",
            NODE_NAME,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--force",  # the test pod has no controller
            "--timeout=180s",
            timeout=240,
        )
        stack.wait_gone(lambda: stack.core.read_namespaced_pod("drained", "default"), "pod drained")
        wait_for(
            "kubelet's NodeUnstageVolume after the drain",
            lambda: calls_ok(stack.node_plugin_log(), "NodeUnstageVolume") > unstaged,
            180,
            explain=stack.explain,
        )
        assert calls_ok(stack.node_plugin_log(), "NodeUnpublishVolume") > unpublished
        assert not any(m.startswith(target) for m in mounts_under(KUBELET_DIR))
        # The node plugin served those calls and is still the same, running pod.
        still = stack.node_pod()
        assert still.metadata.uid == plugin.metadata.uid
        assert all(c.ready for c in still.status.container_statuses)
    finally:
        stack.kubectl("uncordon", NODE_NAME, check=False)
        stack.delete_workloads(["drained"], ["drained"])
        stack.wait_ready()  # the evicted controller comes back once the node is schedulable
