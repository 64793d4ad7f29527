"""OST pools on the real API server: a file system with pools gets each pool's OSS VMs, OST
PVCs on the pool's storage class and the pools in its status (the CRD keeps every field), and
its MDS's cloud-init tells the boot script the pools' index blocks."""

from __future__ import annotations

import base64

import pytest

from provisioner.kubevirt.addresses import CLAIMS_NAME
from provisioner.kubevirt.kube import (
    CONFIG_MAPS,
    LUSTRE_FILE_SYSTEMS,
    PVCS,
    SECRETS,
    VIRTUAL_MACHINES,
)
from provisioner.kubevirt.manifests import fs_selector
from tests.provisioner.conftest import NAMESPACE, SERVER_NAMESPACE, template, wait_for

pytestmark = pytest.mark.kube


def test_a_file_system_with_pools_builds_them_and_shows_them_in_status(env) -> None:
    env.runner()
    try:
        _check_pools_are_built(env)
    finally:
        # Later tests expect the shared address pool and the namespace to be free again.
        env.admin.delete(LUSTRE_FILE_SYSTEMS, "pooled")
        wait_for(lambda: env.lfs("pooled") is None, 30, "pooled gone")
    claims = (env.admin.get(CONFIG_MAPS, CLAIMS_NAME, NAMESPACE) or {}).get("data") or {}
    assert not [a for a, owner in claims.items() if owner.startswith("pooled/")], claims


def _check_pools_are_built(env) -> None:
    provider = env.provider()
    pools = template(min_osts=1, ost_pools="flash:2:nvme-block,disk:1")
    wait_for(lambda: provider.ensure_file_system("pooled", pools), 20, "pooled serving")
    wait_for(lambda: env.lfs("pooled")["status"].get("phase") == "Ready", 20, "phase Ready")
    status = env.lfs("pooled")["status"]
    assert status["pools"] == [
        {"name": "flash", "firstOstIndex": 1024, "nextOstIndex": 1026,
         "osts": ["OST0400", "OST0401"]},
        {"name": "disk", "firstOstIndex": 2048, "nextOstIndex": 2049, "osts": ["OST0800"]},
    ]
    assert {(o["label"], o.get("pool", ""), o["state"]) for o in status["osts"]} == {
        ("OST0000", "", "Active"), ("OST0400", "flash", "Active"),
        ("OST0401", "flash", "Active"), ("OST0800", "disk", "Active")}
    assert {s["name"]: s.get("pool", "") for s in status["servers"]} == {
        "mds0": "", "oss0": "", "oss1": "flash", "oss2": "disk"}
    assert env.lfs("pooled")["spec"]["pools"] == [
        {"name": "flash", "ostCount": 2, "targetStorageClass": "nvme-block"},
        {"name": "disk", "ostCount": 1}]

    claims = env.admin.list(PVCS, SERVER_NAMESPACE, fs_selector("pooled"))[0]
    classes = {c["metadata"]["name"]: c["spec"].get("storageClassName") for c in claims}
    assert classes["pooled-ost0400"] == classes["pooled-ost0401"] == "nvme-block"
    assert classes["pooled-ost0800"] == classes["pooled-ost0000"]  # the file system's own
    vms = env.admin.list(VIRTUAL_MACHINES, SERVER_NAMESPACE, fs_selector("pooled"))[0]
    assert sorted(v["metadata"]["name"] for v in vms) == [
        "pooled-mds0", "pooled-oss0", "pooled-oss1", "pooled-oss2"]
    secret = env.admin.get(SECRETS, "pooled-mds0-cloudinit", SERVER_NAMESPACE)
    user_data = secret.get("stringData", {}).get("userdata") or base64.b64decode(
        secret["data"]["userdata"]).decode()
    assert "flash:1024:2047 disk:2048:3071" in user_data
