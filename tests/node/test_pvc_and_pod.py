"""deploy/examples/pvc-and-pod.yaml on the real node: kubelet itself stages and publishes the
volume through our node plugin, the pod's writes land in the volume's directory on the local
server set, and deleting the pod makes kubelet unpublish and unstage, leaving no mount."""

from __future__ import annotations

from pathlib import Path

from tests.node.stack import (
    KUBELET_DIR,
    Stack,
    calls_ok,
    mounts_under,
    published_at,
    staged_at,
    wait_for,
)
from tests.support.kube import REPO_ROOT

EXAMPLE = REPO_ROOT / "deploy" / "examples" / "pvc-and-pod.yaml"
BLOB_BYTES = 1024 * 1024 * 1024  # the example's dd: bs=1M count=1024


def test_example_pod_writes_through_the_pvc_then_leaves_no_mount(stack: Stack) -> None:
    stack.kubectl("apply", "-n", "default", "-f", str(EXAMPLE))
    try:
        wait_for(
            "PVC scratch to bind",
            lambda: (
                stack.core.read_namespaced_persistent_volume_claim(
                    "scratch", "default"
                ).status.phase
                == "Bound"
            ),
            240,
            explain=stack.explain,
        )
        pv = stack.pv_of("scratch")
        volume_id = pv.spec.csi.volume_handle
        pod = stack.wait_pod_phase("scratch-writer", "Running")

        # The writer's file is in the volume's own directory on the local server set.
        blob = stack.volume_dir(pv) / "blob"
        wait_for(
            f"{blob} to hold the pod's 1 GiB",
            lambda: blob.exists() and blob.stat().st_size == BLOB_BYTES,
            300,
            explain=stack.explain,
        )

        # kubelet made the calls, with its own paths for this volume and this pod.
        log = stack.node_plugin_log()
        stagings, targets = staged_at(log, volume_id), published_at(log, volume_id)
        assert stagings and targets, log[-3000:]
        staging, target = stagings[-1], targets[-1]
        assert staging.startswith(f"{KUBELET_DIR}/plugins/kubernetes.io/csi/lustre.csi.io/")
        assert staging.endswith("/globalmount"), staging
        assert target == (
            f"{KUBELET_DIR}/pods/{pod.metadata.uid}/volumes/kubernetes.io~csi/"
            f"{pv.metadata.name}/mount"
        ), target
        assert staging in mounts_under(KUBELET_DIR) and target in mounts_under(KUBELET_DIR)
        unstaged, unpublished = (
            calls_ok(log, "NodeUnstageVolume"),
            calls_ok(log, "NodeUnpublishVolume"),
        )

        # Deleting the pod: kubelet unpublishes and unstages; nothing of ours stays mounted.
        stack.kubectl(
            "delete",
            "pod",
            "-n",
            "default",
            "scratch-writer",
            "--wait=true",
            "--timeout=180s",
            timeout=240,
        )
        wait_for(
            "kubelet's NodeUnstageVolume",
            lambda: calls_ok(stack.node_plugin_log(), "NodeUnstageVolume") > unstaged,
            180,
            explain=stack.explain,
        )
        assert calls_ok(stack.node_plugin_log(), "NodeUnpublishVolume") > unpublished
        left = [
            m
            for m in mounts_under(KUBELET_DIR)
            if m in (staging, target) or "/kubernetes.io~csi/" in m or "/kubernetes.io/csi/" in m
        ]
        assert left == [], left
        assert blob.stat().st_size == BLOB_BYTES  # unmounting keeps the data
    finally:
        stack.kubectl(
            "delete",
            "-n",
            "default",
            "-f",
            str(EXAMPLE),
            "--ignore-not-found",
            "--wait=true",
            "--timeout=180s",
            check=False,
            timeout=240,
        )


def test_deleting_the_pvc_removes_the_volume_directory(stack: Stack) -> None:
    stack.kubectl("apply", "-n", "default", "-f", str(EXAMPLE))
    stack.kubectl("delete", "pod", "-n", "default", "scratch-writer", "--wait=false")
    wait_for(
        "PVC scratch to bind",
        lambda: (
            stack.core.read_namespaced_persistent_volume_claim("scratch", "default").status.phase
            == "Bound"
        ),
        240,
        explain=stack.explain,
    )
    pv = stack.pv_of("scratch")
    directory: Path = stack.volume_dir(pv)
    assert directory.is_dir()
    stack.kubectl(
        "delete", "pvc", "-n", "default", "scratch", "--wait=true", "--timeout=180s", timeout=240
    )
    stack.wait_gone(
        lambda: stack.core.read_persistent_volume(pv.metadata.name), f"PV {pv.metadata.name}"
    )
    assert not directory.exists()
