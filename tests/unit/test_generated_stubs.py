"""The generated CSI stubs are fresh, round-trip, and carry the spec's options."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from csi.rpc import csi_pb2, csi_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]


def _load_generator():
    path = REPO_ROOT / "hack" / "generate_stubs.py"
    spec = importlib.util.spec_from_file_location("generate_stubs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("generate_stubs", module)
    spec.loader.exec_module(module)
    return module


def _secret_option(field) -> bool:
    return field.GetOptions().Extensions[csi_pb2.csi_secret]


def test_committed_stubs_are_not_stale():
    pytest.importorskip("grpc_tools")
    # Raises (naming the stale files) if csi/rpc differs from a fresh generation.
    _load_generator().check()


def test_create_volume_request_round_trip():
    req = csi_pb2.CreateVolumeRequest(
        name="pvc-1234",
        capacity_range=csi_pb2.CapacityRange(required_bytes=10 << 30, limit_bytes=20 << 30),
        volume_capabilities=[
            csi_pb2.VolumeCapability(
                mount=csi_pb2.VolumeCapability.MountVolume(fs_type="lustre"),
                access_mode=csi_pb2.VolumeCapability.AccessMode(
                    mode=csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER
                ),
            )
        ],
        parameters={"mgsSize": "1Gi"},
        secrets={"token": "s3cr3t"},
        mutable_parameters={"qos": "gold"},
    )
    data = req.SerializeToString()
    back = csi_pb2.CreateVolumeRequest.FromString(data)
    assert back == req
    assert back.capacity_range.required_bytes == 10 << 30
    assert back.capacity_range.limit_bytes == 20 << 30
    assert dict(back.secrets) == {"token": "s3cr3t"}
    assert back.volume_capabilities[0].WhichOneof("access_type") == "mount"
    # Wire-level spot check of spec field numbers: name is field 1 (tag 0x0a),
    # capacity_range is field 2 (tag 0x12).
    assert csi_pb2.CreateVolumeRequest(name="x").SerializeToString() == b"\x0a\x01x"
    cr = csi_pb2.CreateVolumeRequest(capacity_range=csi_pb2.CapacityRange(required_bytes=1))
    assert cr.SerializeToString() == b"\x12\x02\x08\x01"


def test_node_stage_volume_request_round_trip():
    req = csi_pb2.NodeStageVolumeRequest(
        volume_id="fs1/vol1",
        publish_context={"mgs": "10.0.0.1@tcp"},
        staging_target_path="/var/lib/kubelet/plugins/staging/pv1",
        volume_capability=csi_pb2.VolumeCapability(
            mount=csi_pb2.VolumeCapability.MountVolume(
                fs_type="lustre", mount_flags=["flock", "noatime"]
            ),
            access_mode=csi_pb2.VolumeCapability.AccessMode(
                mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
            ),
        ),
        secrets={"key": "value"},
        volume_context={"fsname": "lfs1"},
    )
    back = csi_pb2.NodeStageVolumeRequest.FromString(req.SerializeToString())
    assert back == req
    assert list(back.volume_capability.mount.mount_flags) == ["flock", "noatime"]
    assert back.volume_capability.HasField("mount")
    assert not back.volume_capability.HasField("block")


def test_get_capacity_response_wrappers_round_trip():
    resp = csi_pb2.GetCapacityResponse(available_capacity=5)
    resp.maximum_volume_size.value = 1 << 40
    resp.minimum_volume_size.value = 1 << 30
    back = csi_pb2.GetCapacityResponse.FromString(resp.SerializeToString())
    assert back.HasField("maximum_volume_size")
    assert back.maximum_volume_size.value == 1 << 40
    assert back.minimum_volume_size.value == 1 << 30


def test_secret_fields_are_marked_csi_secret():
    assert csi_pb2.csi_secret.number == 1059
    assert csi_pb2.alpha_field.number == 1060

    secret_fields = []
    unmarked = []

    def walk(desc):
        for field in desc.fields:
            if field.name == "secrets":
                secret_fields.append(f"{desc.full_name}.{field.name}")
                if not _secret_option(field):
                    unmarked.append(f"{desc.full_name}.{field.name}")
            elif _secret_option(field):
                unmarked.append(f"{desc.full_name}.{field.name} (unexpected csi_secret)")
        for nested in desc.nested_types:
            walk(nested)

    for message in csi_pb2.DESCRIPTOR.message_types_by_name.values():
        walk(message)

    assert unmarked == []
    # Every secrets map of the spec, including snapshot and group/metadata RPCs.
    for name in (
        "CreateVolumeRequest",
        "DeleteVolumeRequest",
        "ControllerPublishVolumeRequest",
        "ControllerUnpublishVolumeRequest",
        "ValidateVolumeCapabilitiesRequest",
        "ControllerModifyVolumeRequest",
        "CreateSnapshotRequest",
        "DeleteSnapshotRequest",
        "ListSnapshotsRequest",
        "GetSnapshotRequest",
        "ControllerExpandVolumeRequest",
        "NodeStageVolumeRequest",
        "NodePublishVolumeRequest",
        "NodeExpandVolumeRequest",
        "CreateVolumeGroupSnapshotRequest",
        "DeleteVolumeGroupSnapshotRequest",
        "GetVolumeGroupSnapshotRequest",
        "GetMetadataAllocatedRequest",
        "GetMetadataDeltaRequest",
    ):
        assert f"csi.v1.{name}.secrets" in secret_fields

    create = csi_pb2.CreateVolumeRequest.DESCRIPTOR
    assert _secret_option(create.fields_by_name["secrets"])
    assert not _secret_option(create.fields_by_name["parameters"])
    node_stage = csi_pb2.NodeStageVolumeRequest.DESCRIPTOR
    assert _secret_option(node_stage.fields_by_name["secrets"])
    # NodeExpandVolume secrets are both secret and alpha in the spec.
    node_expand = csi_pb2.NodeExpandVolumeRequest.DESCRIPTOR.fields_by_name["secrets"]
    assert _secret_option(node_expand)
    assert node_expand.GetOptions().Extensions[csi_pb2.alpha_field]


def test_descriptor_matches_spec_layout():
    fd = csi_pb2.DESCRIPTOR
    assert fd.package == "csi.v1"
    assert fd.GetOptions().go_package == "github.com/container-storage-interface/spec/lib/go/csi"
    assert set(fd.services_by_name) == {
        "Identity",
        "Controller",
        "GroupController",
        "SnapshotMetadata",
        "Node",
    }
    controller = fd.services_by_name["Controller"]
    assert {m.name for m in controller.methods} >= {
        "CreateVolume",
        "ListSnapshots",
        "GetSnapshot",
        "ControllerGetVolume",
        "ControllerModifyVolume",
        "ControllerExpandVolume",
        "GetCapacity",
    }
    rpc_type = csi_pb2.ControllerServiceCapability.RPC
    assert rpc_type.MODIFY_VOLUME == 14
    assert rpc_type.GET_SNAPSHOT == 15
    assert csi_pb2.NodeServiceCapability.RPC.VOLUME_MOUNT_GROUP == 6
    assert csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_MULTI_WRITER == 7
    fields = csi_pb2.GetCapacityResponse.DESCRIPTOR.fields_by_name
    assert fields["maximum_volume_size"].number == 2
    assert fields["minimum_volume_size"].number == 3
    assert csi_pb2.Snapshot.DESCRIPTOR.fields_by_name["group_snapshot_id"].number == 6
    assert hasattr(csi_pb2_grpc, "ControllerServicer")
    assert hasattr(csi_pb2_grpc, "add_NodeServicer_to_server")
