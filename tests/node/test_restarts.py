"""A running pod keeps its volume while the node plugin or kubelet restarts: the mounts live in
the host's mount table (Bidirectional propagation from the plugin), not in the plugin."""

from __future__ import annotations

from tests.node.node import LocalNode, NodeKubeCluster
from tests.node.stack import (
    KUBELET_DIR,
    NAMESPACE,
    Stack,
    busybox_pod,
    lustre_claim,
    mounts_under,
    wait_for,
)


def test_node_plugin_rolling_update_and_kubelet_restart_keep_the_pods_mount(
    stack: Stack, node_cluster: tuple[NodeKubeCluster, LocalNode]
) -> None:
    _, node = node_cluster
    try:
        stack.cluster.apply(lustre_claim("steady"))
        stack.cluster.apply(busybox_pod("steady", "steady"))
        pod = stack.wait_pod_phase("steady", "Running")
        volume_dir = stack.volume_dir(stack.pv_of("steady"))
        stack.exec("steady", "echo before > /data/before")
        target = f"{KUBELET_DIR}/pods/{pod.metadata.uid}/volumes/kubernetes.io~csi/"

        old_plugin = stack.node_pod().metadata.name
        stack.kubectl("rollout", "restart", "daemonset/lustre-csi-node", "-n", NAMESPACE)
        wait_for(
            "a new node plugin pod",
            lambda: [
                p
                for p in stack.pods("node")
                if p.metadata.name != old_plugin and p.metadata.deletion_timestamp is None
            ],
            180,
            explain=stack.explain,
        )
        stack.wait_ready()
        assert stack.exec("steady", "cat /data/before").stdout == "before\n"
        stack.exec("steady", "echo after-plugin > /data/after-plugin")
        assert (volume_dir / "after-plugin").read_text() == "after-plugin\n"

        node.restart_kubelet()  # returns once the new kubelet has rebuilt its volume state
        assert stack.exec("steady", "cat /data/before").stdout == "before\n"
        stack.exec("steady", "echo after-kubelet > /data/after-kubelet")
        assert (volume_dir / "after-kubelet").read_text() == "after-kubelet\n"
        assert any(m.startswith(target) for m in mounts_under(KUBELET_DIR))
    finally:
        stack.delete_workloads(["steady"], ["steady"])
