"""A claim's VolumeAttributesClass through the real sidecars: the external-provisioner passes it
to CreateVolume, the external-resizer's modify path calls ControllerModifyVolume when the
claim's class changes, and a class naming a fixed parameter is refused (Infeasible)."""

from __future__ import annotations

from typing import Any

import pytest

from csi.host.command import SubprocessRunner
from csi.lustre.client import LustreClient
from csi.lustre.layout import LayoutParameters, parse_layout
from provisioner.local import LocalServerSets
from provisioner.local_lustre import LocalLustreCommands
from tests.e2e.conftest import SMALL_CLASS, Stack
from tests.e2e.test_pvc_lifecycle import NS, _bound, _pvc, wait_for
from tests.e2e.test_pvc_lifecycle import (
    test_no_component_was_refused_a_permission as no_permission_refused,
)

pytestmark = pytest.mark.kube
WIDE = {"stripeCount": "-1", "stripeSize": "1Mi"}
PROGRESSIVE = {"progressiveLayout": "64Mi:1,eof:-1", "stripeSize": "4Mi", "inodeLimit": "5000"}
FIXED = {"ostSize": "8Gi"}  # a template parameter: fixed once the volume is made
# A file system of its own, so the other e2e modules' volumes take none of its room.
STORAGE_CLASS = {
    **SMALL_CLASS,
    "metadata": {"name": "lustre-vac"},
    "parameters": {**SMALL_CLASS["parameters"], "fsname": "vac"},  # type: ignore[dict-item]
}


def _class(stack: Stack, name: str, parameters: dict[str, str]) -> None:
    stack.cluster.apply(
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "VolumeAttributesClass",
            "metadata": {"name": name},
            "driverName": "lustre.csi.io",
            "parameters": parameters,
        }
    )


def _layout(stack: Stack, pv: Any) -> LayoutParameters:
    """The volume directory's default layout, read as a client would (`lfs getstripe -d`)."""
    attributes = pv.spec.csi.volume_attributes
    sets = LocalServerSets(stack.standin_dir)
    lustre = LustreClient(LocalLustreCommands(sets, SubprocessRunner(), any_server=True))
    return lustre.default_layout(sets.namespace_root(attributes["fsname"]) / attributes["subdir"])


def _claim(stack: Stack, name: str) -> Any:
    return stack.core.read_namespaced_persistent_volume_claim(name, NS)


def test_a_claims_volume_attributes_class_sets_and_changes_its_layout(stack: Stack) -> None:
    stack.cluster.apply(STORAGE_CLASS)
    _class(stack, "lustre-e2e-wide", WIDE)
    _class(stack, "lustre-e2e-progressive", PROGRESSIVE)
    _class(stack, "lustre-e2e-fixed", FIXED)
    _pvc(stack, "e2e-vac", "lustre-vac", "1Gi", volumeAttributesClassName="lustre-e2e-wide")
    claim, pv = _bound(stack, "e2e-vac")
    # CreateVolume got the class's parameters: the PV's context and the directory say so.
    assert {k: pv.spec.csi.volume_attributes[k] for k in WIDE} == WIDE
    assert _layout(stack, pv) == LayoutParameters(stripe_count=-1, stripe_size=1 << 20)
    assert claim.status.current_volume_attributes_class_name == "lustre-e2e-wide"

    # A new class on the claim: the external-resizer calls ControllerModifyVolume.
    stack.core.patch_namespaced_persistent_volume_claim(
        "e2e-vac", NS, {"spec": {"volumeAttributesClassName": "lustre-e2e-progressive"}}
    )

    def modified() -> bool:
        status = _claim(stack, "e2e-vac").status
        return status.current_volume_attributes_class_name == "lustre-e2e-progressive"

    wait_for(modified, 90, f"PVC modified\n{stack.sidecar_log('csi-resizer')[-3000:]}")
    expected = parse_layout({k: v for k, v in PROGRESSIVE.items() if k != "inodeLimit"})
    assert _layout(stack, pv) == expected
    assert "modified volume" in stack.controller.log_path.read_text(errors="replace")

    # A class that asks for what cannot change is refused by name and changes nothing.
    stack.core.patch_namespaced_persistent_volume_claim(
        "e2e-vac", NS, {"spec": {"volumeAttributesClassName": "lustre-e2e-fixed"}}
    )

    def refused() -> Any:
        status = _claim(stack, "e2e-vac").status.modify_volume_status
        return status if status is not None and status.status == "Infeasible" else None

    wait_for(refused, 90, f"modify refused\n{stack.sidecar_log('csi-resizer')[-3000:]}")
    assert "ostSize cannot change after a volume is made" in stack.sidecar_log("csi-resizer")
    claim = _claim(stack, "e2e-vac")
    assert claim.status.current_volume_attributes_class_name == "lustre-e2e-progressive"
    assert _layout(stack, pv) == expected
    no_permission_refused(stack)
