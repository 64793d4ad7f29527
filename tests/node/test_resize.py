"""Growing a PVC while its pod runs: the csi-resizer sidecar calls ControllerExpandVolume and the
volume's Lustre project quota on the local server set grows, with the pod's mount untouched."""

from __future__ import annotations

import json
from typing import Any

from tests.node.node import LOCAL_SERVER_SET_DIR
from tests.node.stack import Stack, busybox_pod, lustre_claim, wait_for

GIB = 1024**3


def quota_hard_bytes(pv: Any) -> int:
    """The hard limit of the volume's project quota in the local server set's own books (one
    file per project id, naming the directory it is set on)."""
    attributes = pv.spec.csi.volume_attributes
    quota_dir = LOCAL_SERVER_SET_DIR / "filesystems" / attributes["fsname"] / "quota"
    subdir = attributes["subdir"].strip("/")
    limits = [
        int(record["hard_kib"]) * 1024
        for record in (json.loads(p.read_text()) for p in quota_dir.glob("*.json"))
        if record.get("path") == subdir
    ]
    assert len(limits) == 1, f"{subdir}: quota records {limits}"
    return limits[0]


def test_online_resize_grows_the_quota(stack: Stack) -> None:
    try:
        stack.cluster.apply(lustre_claim("growing", "1Gi"))
        stack.cluster.apply(busybox_pod("growing", "growing"))
        stack.wait_pod_phase("growing", "Running")
        pv = stack.pv_of("growing")
        assert quota_hard_bytes(pv) == 1 * GIB

        stack.kubectl(
            "patch",
            "pvc",
            "growing",
            "-n",
            "default",
            "--type=merge",
            "-p",
            '{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}',
        )

        def grown() -> bool:
            pvc = stack.core.read_namespaced_persistent_volume_claim("growing", "default")
            return (pvc.status.capacity or {}).get("storage") == "2Gi"

        wait_for("PVC growing to report 2Gi", grown, 180, explain=stack.explain)
        assert quota_hard_bytes(pv) == 2 * GIB
        stack.exec("growing", "echo still-here > /data/after-resize")
        assert (stack.volume_dir(pv) / "after-resize").read_text() == "still-here\n"
    finally:
        stack.delete_workloads(["growing"], ["growing"])
