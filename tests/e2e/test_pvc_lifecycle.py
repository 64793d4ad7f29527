"""A PVC's life through the real sidecars and kube-controller-manager (see conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from csi.cli.client import CsiClient, mount_capability
from csi.node.paths import kubelet_staging_path, kubelet_target_path
from provisioner.kubevirt.kube import LUSTRE_FILE_SYSTEMS
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.kube
GiB = 1 << 30
T = TypeVar("T")
NS = "default"


def wait_for(predicate: Callable[[], T], timeout: float = 90, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _pvc(stack: Stack, name: str, storage_class: str, size: str, **spec: Any) -> None:
    stack.core.create_namespaced_persistent_volume_claim(
        NS,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {
                "storageClassName": storage_class,
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": size}},
                **spec,
            },
        },
    )


def _bound(stack: Stack, name: str, timeout: float = 90) -> Any:
    def bound() -> Any:
        claim = stack.core.read_namespaced_persistent_volume_claim(name, NS)
        return claim if claim.status.phase == "Bound" else None

    claim = wait_for(
        bound, timeout, f"PVC {name} Bound\n{stack.sidecar_log('csi-provisioner')[-3000:]}"
    )
    return claim, stack.core.read_persistent_volume(claim.spec.volume_name)


def _events(stack: Stack, name: str) -> list[tuple[str, str]]:
    events = stack.core.list_namespaced_event(
        NS, field_selector=f"involvedObject.name={name},involvedObject.kind=PersistentVolumeClaim"
    ).items
    return [(event.reason, event.message or "") for event in events]


def _delete_pvc_and_wait(stack: Stack, name: str, pv_name: str) -> None:
    stack.core.delete_namespaced_persistent_volume_claim(name, NS)

    def pv_gone() -> bool:
        return not any(
            pv.metadata.name == pv_name for pv in stack.core.list_persistent_volume().items
        )

    wait_for(pv_gone, 90, f"PV {pv_name} deleted")


def test_pvc_binds_mounts_and_is_cleaned_up(stack: Stack) -> None:
    _pvc(stack, "e2e-basic", "lustre", "1Gi")
    _claim, pv = _bound(stack, "e2e-basic")
    csi = pv.spec.csi
    assert csi.driver == "lustre.csi.io"
    assert csi.volume_handle.startswith("v1:shared:lustre:pvc-")
    attributes = csi.volume_attributes
    assert attributes["fsname"] == "lustre" and attributes["mgsNids"].endswith("@tcp")
    assert pv.spec.capacity["storage"] == "1Gi"
    assert pv.spec.mount_options == ["flock"]
    lfs = stack.admin.get(LUSTRE_FILE_SYSTEMS, "lustre")
    assert lfs["status"]["phase"] == "Ready"

    # The node side, driven over the node plugin's socket exactly as kubelet would.
    # (the paths kubelet uses: the node plugin accepts only those layouts)
    kubelet = str(stack.node.kubelet_dir)
    staging = Path(kubelet_staging_path(kubelet, csi.volume_handle))
    target = Path(kubelet_target_path(kubelet, pv.metadata.name, "uid-1"))
    staging.mkdir(parents=True)
    target.parent.mkdir(parents=True)
    capability = mount_capability(mount_flags=list(pv.spec.mount_options))
    with CsiClient(str(stack.node.socket)) as node:
        node.stage(csi.volume_handle, str(staging), attributes, capability)
        node.publish(
            csi.volume_handle, str(staging), str(target), attributes, capability=capability
        )
        (target / "result.txt").write_text("written by a pod")
        volume_dir = stack.standin_dir / "filesystems" / "lustre" / "root" / attributes["subdir"]
        assert (volume_dir / "result.txt").read_text() == "written by a pod"
        node.unpublish(csi.volume_handle, str(target))
        node.unstage(csi.volume_handle, str(staging))

    _delete_pvc_and_wait(stack, "e2e-basic", pv.metadata.name)
    assert not volume_dir.exists(), "DeleteVolume must remove the volume's directory"
    quota_files = list((stack.standin_dir / "filesystems" / "lustre" / "quota").glob("*.json"))
    hard_limits = [f.read_text() for f in quota_files]
    assert all('"hard_kib":0' in text for text in hard_limits), hard_limits


def test_pvc_past_free_capacity_grows_the_file_system_then_binds(stack: Stack) -> None:
    _pvc(stack, "e2e-first", "lustre-small", "1Gi")
    _bound(stack, "e2e-first")
    before = stack.admin.get(LUSTRE_FILE_SYSTEMS, "small")["spec"].get("ostCount", 1)
    # 1 GiB + 4 GiB reserved needs 10 GiB of OSTs at a 0.5 threshold: more OSTs first.
    _pvc(stack, "e2e-big", "lustre-small", "4Gi")
    _claim, pv = _bound(stack, "e2e-big", timeout=120)
    after = stack.admin.get(LUSTRE_FILE_SYSTEMS, "small")
    assert after["spec"]["ostCount"] > before
    assert after["status"]["readyOsts"] * 2 >= 10
    assert pv.spec.capacity["storage"] == "4Gi"

    # Resize: the external-resizer calls ControllerExpandVolume; no node step is needed.
    stack.core.patch_namespaced_persistent_volume_claim(
        "e2e-big", NS, {"spec": {"resources": {"requests": {"storage": "5Gi"}}}}
    )

    def resized() -> bool:
        claim = stack.core.read_namespaced_persistent_volume_claim("e2e-big", NS)
        volume = stack.core.read_persistent_volume(claim.spec.volume_name)
        return (
            volume.spec.capacity["storage"] == "5Gi"
            and (claim.status.capacity or {}).get("storage") == "5Gi"
        )

    wait_for(resized, 90, f"PVC resized\n{stack.sidecar_log('csi-resizer')[-3000:]}")


def test_static_pv_binds_without_any_controller_call(stack: Stack) -> None:
    creates_before = stack.controller.log_path.read_text().count("CreateVolume ->")
    stack.core.create_persistent_volume(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": "e2e-static"},
            "spec": {
                "capacity": {"storage": "10Ti"},
                "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "csi": {
                    "driver": "lustre.csi.io",
                    "volumeHandle": "static-e2e",
                    "volumeAttributes": {
                        "fsname": "legacy",
                        "mgsNids": "192.168.7.1@tcp",
                        "subdir": "projects/alpha",
                    },
                },
            },
        }
    )
    _pvc(stack, "e2e-static", "", "1Ti", volumeName="e2e-static")
    _, pv = _bound(stack, "e2e-static")
    assert pv.metadata.name == "e2e-static"
    assert stack.controller.log_path.read_text().count("CreateVolume ->") == creates_before

    # The existing file system's data, as its (external) servers would hold it.
    alpha = stack.standin_dir / "filesystems" / "legacy" / "root" / "projects" / "alpha"
    alpha.mkdir(parents=True)
    (alpha / "README").write_text("alpha")
    staging = Path(kubelet_staging_path(str(stack.node.kubelet_dir), "static-e2e"))
    staging.mkdir(parents=True)
    attributes = pv.spec.csi.volume_attributes
    with CsiClient(str(stack.node.socket)) as node:
        node.stage("static-e2e", str(staging), attributes)
        assert (staging / "README").read_text() == "alpha"
        node.unstage("static-e2e", str(staging))


def test_bad_storage_class_parameter_leaves_the_pvc_pending_with_an_event(stack: Stack) -> None:
    _pvc(stack, "e2e-typo", "lustre-typo", "1Gi")

    def failed_event() -> list[str]:
        return [m for reason, m in _events(stack, "e2e-typo") if reason == "ProvisioningFailed"]

    messages = wait_for(failed_event, 60, "a ProvisioningFailed event")
    assert any("ostSzie" in message and "InvalidArgument" in message for message in messages), (
        messages
    )
    claim = stack.core.read_namespaced_persistent_volume_claim("e2e-typo", NS)
    assert claim.status.phase == "Pending"


def test_no_component_was_refused_a_permission(stack: Stack) -> None:
    """Runs last in this module: everything above ran with the RBAC in deploy/ and nothing
    the sidecars or the controller asked for was forbidden."""
    logs = {name: stack.sidecar_log(name) for name in stack.sidecar_logs}
    logs["lustre-csi controller"] = stack.controller.log_path.read_text(errors="replace")
    refused = {
        name: [line for line in text.splitlines() if "forbidden" in line.lower()][:3]
        for name, text in logs.items()
    }
    assert not any(refused.values()), refused
