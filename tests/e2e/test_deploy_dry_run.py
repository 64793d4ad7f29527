"""`kubectl apply --dry-run=server -k deploy/` against the real API server: schemas, RBAC
objects and admission all accept what an admin would apply."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.driver import REPO

pytestmark = pytest.mark.kube


def test_deploy_base_passes_server_side_dry_run(kube_cluster: Any) -> None:
    # A dry run creates nothing, so objects in the new namespace would find no namespace, and
    # objects of the new CRD no kind: those two exist for real first, as after a first apply.
    kube_cluster.apply(REPO / "deploy" / "crds" / "lustrefilesystems.yaml")
    kube_cluster.ensure_namespace("lustre-csi")
    kube_cluster.ensure_namespace("lustre-servers")
    result = kube_cluster.kubectl(
        "apply", "--dry-run=server", "-k", str(REPO / "deploy"), check=False
    )
    assert result.returncode == 0, result.stderr
    for kind in (
        "deployment.apps/lustre-csi-controller",
        "daemonset.apps/lustre-csi-node",
        "csidriver.storage.k8s.io/lustre.csi.io",
        "storageclass.storage.k8s.io/lustre",
        "validatingadmissionpolicy.admissionregistration.k8s.io/"
        "lustre-csi-node-status-own-node-only",
        "role.rbac.authorization.k8s.io/lustre-csi-provisioner",
    ):
        assert kind in result.stdout


def test_examples_pass_server_side_dry_run(kube_cluster: Any) -> None:
    kube_cluster.apply(REPO / "deploy" / "crds" / "lustrefilesystems.yaml")
    # Without kube-controller-manager nobody makes the namespace's default ServiceAccount.
    kube_cluster.ensure_service_account("default", "default")
    for example in sorted((REPO / "deploy" / "examples").glob("*.yaml")):
        result = kube_cluster.kubectl(
            "apply", "--dry-run=server", "-n", "default", "-f", str(example), check=False
        )
        assert result.returncode == 0, f"{example.name}: {result.stderr}"
