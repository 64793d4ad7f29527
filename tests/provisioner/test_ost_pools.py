"""OST pools in the server set: the spec, where their OSTs go, their disks' storage, the MGS's
part of the boot script, and the status that shows them (pure functions, no API server)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from csi.controller.parameters import parse_volume_parameters
from csi.errors import InvalidArgument, NotFound
from provisioner.kubevirt import manifests
from provisioner.kubevirt.layout import Layout, extend_layout, layout_status, read_layout
from provisioner.kubevirt.pool_growth import pool_growth
from provisioner.kubevirt.spec import SpecError, parse_spec, spec_from_template, template_error

LFS = {"apiVersion": "lustre.csi.io/v1alpha1", "kind": "LustreFileSystem",
       "metadata": {"name": "scratch", "uid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427"}}
SPEC: dict[str, Any] = {
    "fsname": "scratch", "mdtSize": "64Gi", "ostSize": "1Ti", "ostsPerOss": 2, "ostCount": 1,
    "server": {"image": "example.org/lustre:2.17"}, "targetStorageClass": "hdd-block",
    "network": {"attachment": "lustre-storage", "ipPool": "10.20.0.10-10.20.0.60/24"},
    "pools": [{"name": "flash", "ostCount": 3, "targetStorageClass": "nvme-block"},
              {"name": "archive", "ostCount": 1}],
}


def _planned(spec_changes: dict[str, Any] | None = None) -> tuple[Any, Layout]:
    spec = parse_spec({**copy.deepcopy(SPEC), **(spec_changes or {})}, "scratch")
    return spec, extend_layout(Layout(), spec, taken=[])


def test_each_pools_osts_sit_on_oss_vms_of_their_own_with_indices_of_their_own_block() -> None:
    _spec, layout = _planned()
    placed = {(o.label, o.oss, o.pool) for o in layout.osts}
    assert placed == {
        ("OST0000", "oss0", ""),
        ("OST0400", "oss1", "flash"), ("OST0401", "oss1", "flash"),
        ("OST0402", "oss2", "flash"),
        ("OST0800", "oss3", "archive"),
    }
    assert {s.name: s.pool for s in layout.servers if s.role == "oss"} == {
        "oss0": "", "oss1": "flash", "oss2": "flash", "oss3": "archive"}
    assert [(p.name, p.first_index, p.next_index) for p in layout.pools] == [
        ("flash", 1024, 1027), ("archive", 2048, 2049)]


def test_a_pools_disks_come_from_its_storage_class() -> None:
    spec, layout = _planned()
    classes = {
        pvc["metadata"]["name"]: pvc["spec"].get("storageClassName")
        for pvc in manifests.server_pvcs(LFS, spec, layout, "lustre-servers")
    }
    assert classes == {
        "scratch-mdt0000": "hdd-block", "scratch-ost0000": "hdd-block",
        "scratch-ost0400": "nvme-block", "scratch-ost0401": "nvme-block",
        "scratch-ost0402": "nvme-block",
        "scratch-ost0800": "hdd-block",  # no class of its own: the file system's
    }


def _environment(spec: Any, layout: Layout, server: str) -> list[str]:
    record = layout.server(server)
    assert record is not None
    secret = manifests.cloudinit_secret(LFS, spec, layout, record, "lustre-servers")
    document = yaml.safe_load(secret["stringData"]["userdata"].removeprefix("#cloud-config\n"))
    env = next(f for f in document["write_files"] if f["path"] == "/etc/lustre-csi/server.env")
    return str(env["content"]).splitlines()


def test_only_the_mds_is_told_the_pools_and_their_blocks() -> None:
    spec, layout = _planned()
    assert "POOLS='flash:1024:2047 archive:2048:3071'" in _environment(spec, layout, "mds0")
    assert "POOLS=''" in _environment(spec, layout, "oss1")


def test_a_pool_grows_in_its_own_block_and_never_reuses_an_index() -> None:
    spec, layout = _planned()
    recorded = read_layout(layout_status(layout, spec))
    assert recorded == layout
    grown_spec, _ = _planned({"pools": [{"name": "flash", "ostCount": 4},
                                        {"name": "archive", "ostCount": 1}], "ostCount": 2})
    grown = extend_layout(recorded, grown_spec, taken=[])
    added = [(o.label, o.oss, o.pool, o.hotplug) for o in grown.osts if o not in layout.osts]
    # The default OST joins the default OSS, the flash one the flash OSS with room.
    assert added == [("OST0001", "oss0", "", True), ("OST0403", "oss2", "flash", True)]


def test_pool_blocks_survive_a_status_that_lost_its_pools_list() -> None:
    spec, layout = _planned()
    status = layout_status(layout, spec)
    del status["pools"]
    assert read_layout(status).pools == layout.pools
    status = layout_status(layout, spec)
    assert status["pools"] == [
        {"name": "flash", "firstOstIndex": 1024, "nextOstIndex": 1027,
         "osts": ["OST0400", "OST0401", "OST0402"]},
        {"name": "archive", "firstOstIndex": 2048, "nextOstIndex": 2049, "osts": ["OST0800"]},
    ]


def test_the_ip_pool_must_hold_the_pools_servers_too() -> None:
    narrow = {**copy.deepcopy(SPEC), "maxOsts": 2,
              "network": {"attachment": "n", "ipPool": "10.20.0.10-10.20.0.12/24"}}
    with pytest.raises(SpecError, match=r"spec.network.ipPool.*may need 5 \(1 MDS \+ 1 OSS "
                       r"for maxOsts 2 at ostsPerOss 2 and 3 for the pools\)"):
        parse_spec(narrow, "scratch")


@pytest.mark.parametrize(
    ("pools", "field", "message"),
    [
        ([{"name": "inherit", "ostCount": 1}], "spec.pools[0].name", "not ignore, inherit"),
        ([{"name": "a.b", "ostCount": 1}], "spec.pools[0].name", "1-15 characters"),
        ([{"name": "x", "ostCount": 1}, {"name": "x", "ostCount": 2}], "spec.pools[1].name",
         "named twice"),
        ([{"name": "x", "ostCount": 0}], "spec.pools[0].ostCount", "from 1 to 1024"),
        ("flash", "spec.pools", "must be a list"),
    ],
)
def test_bad_pools_name_the_field(pools: Any, field: str, message: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec({**copy.deepcopy(SPEC), "pools": pools}, "scratch")
    assert any(path == field and message in text for path, text in raised.value.problems), (
        raised.value.problems)


def test_storage_class_ost_pools_become_the_spec_pools() -> None:
    params = parse_volume_parameters(
        {"ostPools": "flash:3:nvme-block, archive:1", "ipPool": "10.20.0.0/24"},
        volume_name="v", default_fsname="scratch",
    )
    assert params.template.ost_pools == "flash:3:nvme-block,archive:1"
    spec = parse_spec(spec_from_template("scratch", params.template))
    assert [(p.name, p.ost_count, p.target_storage_class) for p in spec.pools] == [
        ("flash", 3, "nvme-block"), ("archive", 1, "")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("flash", r"OST count '' of pool 'flash'"),
        ("flash:0", r"OST count '0'"),
        ("ignore:1", r"not ignore, inherit or none"),
        ("a:1,a:2", r"pool 'a' is named twice"),
        (",".join(f"p{n}:1" for n in range(9)), r"9 pools"),
    ],
)
def test_bad_ost_pools_parameters_say_what_the_parameter_takes(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as raised:
        parse_volume_parameters({"ostPools": text}, volume_name="v", default_fsname="s")
    assert "parameter ostPools" in str(raised.value)
    assert "<pool>:<OST count>[:<target storage class>]" in str(raised.value)


def test_a_spec_problem_in_a_pool_is_named_as_the_storage_class_parameter() -> None:
    params = parse_volume_parameters({"ipPool": "10.20.0.10-10.20.0.11/24", "ostPools": "f:4"},
                                     volume_name="v", default_fsname="scratch")
    with pytest.raises(SpecError) as raised:
        parse_spec(spec_from_template("scratch", params.template))
    assert "parameter ipPool (spec.network.ipPool)" in str(template_error(raised.value))


def _object(spec: Any, layout: Layout, active: bool) -> dict[str, Any]:
    status = layout_status(layout, spec)
    for ost in status["osts"]:
        ost["state"] = "Active" if active else "Pending"
    return {**copy.deepcopy(LFS), "metadata": {**LFS["metadata"], "resourceVersion": "7"},
            "spec": copy.deepcopy(SPEC), "status": status}


def test_a_pool_short_of_room_gets_a_patch_for_that_pool_only() -> None:
    spec, layout = _planned()  # flash: 3 OSTs of 1 TiB; growthThreshold 0.8 by default
    lfs = _object(spec, layout, active=True)
    enough = pool_growth(lfs, "flash", 2 << 40)  # 2 TiB fits in 2.4 TiB
    assert (enough.patch, enough.serving) == (None, True)
    short = pool_growth(lfs, "flash", 3 << 40)  # 3 TiB needs 3.75: a fourth OST
    assert short.patch is not None and not short.serving
    assert short.patch["metadata"] == {"resourceVersion": "7"}
    assert short.patch["spec"]["pools"] == [
        {"name": "flash", "ostCount": 4, "targetStorageClass": "nvme-block"},
        {"name": "archive", "ostCount": 1}]
    # The patched spec plans the OST in flash's block, on flash's storage.
    grown = parse_spec({**SPEC, **short.patch["spec"]}, "scratch")
    added = [o for o in extend_layout(layout, grown, taken=[]).osts if o not in layout.osts]
    assert [(o.label, o.pool) for o in added] == [("OST0403", "flash")]


def test_a_pool_is_serving_only_once_its_osts_are_active() -> None:
    spec, layout = _planned()
    waiting = pool_growth(_object(spec, layout, active=False), "flash", 1 << 40)
    assert (waiting.patch, waiting.serving) == (None, False)
    with pytest.raises(NotFound, match="no OST pool 'nvme'"):
        pool_growth(_object(spec, layout, active=True), "nvme", 1)
