"""The generated CSI stubs are fresh and carry the spec's field numbers and options."""

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
    create = csi_pb2.CreateVolumeRequest.DESCRIPTOR.fields_by_name
    assert (create["name"].number, create["capacity_range"].number) == (1, 2)
    fields = csi_pb2.GetCapacityResponse.DESCRIPTOR.fields_by_name
    assert fields["maximum_volume_size"].number == 2
    assert fields["minimum_volume_size"].number == 3
    assert csi_pb2.Snapshot.DESCRIPTOR.fields_by_name["group_snapshot_id"].number == 6
    assert hasattr(csi_pb2_grpc, "ControllerServicer")
    assert hasattr(csi_pb2_grpc, "add_NodeServicer_to_server")
