"""Generated VirtualMachines against KubeVirt's published OpenAPI (v1.9.0 swagger).

Validation is strict: every object definition that lists its properties is closed
(additionalProperties: false), so a misspelt field fails instead of being ignored.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from provisioner.kubevirt import manifests
from provisioner.kubevirt.layout import Layout, extend_layout
from provisioner.kubevirt.spec import parse_spec

SWAGGER = Path(__file__).resolve().parents[3] / "shared" / "testdata" / \
    "kubevirt-v1.9.0-swagger.json"
LFS = {"apiVersion": "lustre.csi.io/v1alpha1", "kind": "LustreFileSystem",
       "metadata": {"name": "scratch", "uid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427"}}
SPEC = {"fsname": "scratch", "mdtSize": "64Gi", "ostSize": "1Ti", "ostsPerOss": 2,
        "ostCount": 3, "server": {"image": "example.org/lustre:2.16", "cpu": "1500m"},
        "targetStorageClass": "fast-block",
        "network": {"attachment": "lustre-storage", "ipPool": "10.20.0.10-10.20.0.60/24",
                    "gateway": "10.20.0.1"}}


def strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        result = {k: strict(v) for k, v in schema.items()}
        if "properties" in result and "additionalProperties" not in result:
            result["additionalProperties"] = False
        return result
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def vm_validator() -> jsonschema.Draft4Validator:
    swagger = json.loads(SWAGGER.read_text())
    document = {"definitions": strict(swagger["definitions"]),
                "$ref": "#/definitions/v1.VirtualMachine"}
    return jsonschema.Draft4Validator(document)


def build(layout_changes: dict[str, Any] | None = None) -> tuple[dict[str, Any], Any, Layout]:
    spec = parse_spec(copy.deepcopy(SPEC), "scratch")
    layout = extend_layout(Layout(), spec, taken=["10.20.0.10"])
    return LFS, spec, layout


def test_every_server_vm_is_valid_kubevirt_v1(vm_validator):
    lfs, spec, layout = build()
    # Grow to 4 OSTs: OST3 is hotplugged onto oss1, which exists already.
    grown = extend_layout(layout, parse_spec({**SPEC, "ostCount": 4}, "scratch"), [])
    for server in grown.servers:
        vm = manifests.virtual_machine(lfs, spec, grown, server, "lustre-csi")
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in vm_validator.iter_errors(vm)]
        assert errors == [], errors


def test_a_negative_control_fails_strict_validation(vm_validator):
    lfs, spec, layout = build()
    vm = manifests.virtual_machine(lfs, spec, layout, layout.servers[1], "lustre-csi")
    vm["spec"]["template"]["spec"]["volumes"][2]["persistentVolumeClaim"]["hotplugable"] = True
    assert not vm_validator.is_valid(vm)


def test_oss_vm_carries_its_targets_addresses_and_owner():
    lfs, spec, layout = build()
    grown = extend_layout(layout, parse_spec({**SPEC, "ostCount": 4}, "scratch"), [])
    oss1 = grown.server("oss1")
    vm = manifests.virtual_machine(lfs, spec, grown, oss1, "lustre-csi")
    template = vm["spec"]["template"]["spec"]
    disks = {d["name"]: d for d in template["domain"]["devices"]["disks"]}
    assert disks["ost0002"] == {"name": "ost0002", "serial": "OST0002", "disk": {"bus": "virtio"}}
    assert disks["ost0003"] == {"name": "ost0003", "serial": "OST0003", "disk": {"bus": "scsi"}}
    claims = {v["name"]: v["persistentVolumeClaim"] for v in template["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims == {"ost0002": {"claimName": "scratch-ost0002"},
                      "ost0003": {"claimName": "scratch-ost0003", "hotpluggable": True}}
    # 10.20.0.10 was taken by another file system: mds0 .11, oss0 .12, oss1 .13.
    assert oss1.address == "10.20.0.13"
    nic = template["domain"]["devices"]["interfaces"][1]
    assert nic == {"name": "storage", "bridge": {}, "macAddress": "02:4c:0a:14:00:0d"}
    assert template["networks"][1] == {"name": "storage",
                                       "multus": {"networkName": "lustre-storage"}}
    assert template["domain"]["cpu"] == {"cores": 2}
    assert vm["metadata"]["ownerReferences"][0]["uid"] == LFS["metadata"]["uid"]
    assert vm["spec"]["runStrategy"] == "Always"


def test_pvcs_are_block_mode_one_per_target():
    lfs, spec, layout = build()
    pvcs = manifests.server_pvcs(lfs, spec, layout, "lustre-csi")
    assert [(p["metadata"]["name"], p["spec"]["resources"]["requests"]["storage"])
            for p in pvcs] == [("scratch-mdt0000", "64Gi"), ("scratch-ost0000", "1Ti"),
                               ("scratch-ost0001", "1Ti"), ("scratch-ost0002", "1Ti")]
    assert all(p["spec"]["volumeMode"] == "Block" for p in pvcs)
    assert all(p["spec"]["storageClassName"] == "fast-block" for p in pvcs)


def test_cloudinit_secret_sets_the_static_address_and_the_mgs_nid():
    lfs, spec, layout = build()
    secret = manifests.cloudinit_secret(lfs, spec, layout, layout.server("oss0"), "lustre-csi")
    network = yaml.safe_load(secret["stringData"]["networkdata"])
    assert network["ethernets"]["storage"] == {
        "match": {"macaddress": "02:4c:0a:14:00:0c"}, "set-name": "eth1",
        "addresses": ["10.20.0.12/24"],
        "routes": [{"to": "default", "via": "10.20.0.1", "metric": 200}]}
    user = secret["stringData"]["userdata"]
    assert user.startswith("#cloud-config\n")
    document = yaml.safe_load(user)
    env = next(f["content"] for f in document["write_files"]
               if f["path"] == "/etc/lustre-csi/server.env")
    assert "MGS_NID='10.20.0.11@tcp'" in env and "ROLE='oss'" in env
    assert "STORAGE_IFACE='eth1'" in env
