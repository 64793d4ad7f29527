"""CSI Controller service: translates requests into VolumeService calls and back."""

from __future__ import annotations

from google.protobuf import wrappers_pb2

from csi.capabilities import capability_problem, check_capabilities
from csi.controller.parameters import (
    INODE_LIMIT,
    parse_mutable_parameters,
    parse_volume_parameters,
)
from csi.controller.records import VolumeRecord
from csi.controller.sizes import CapacityRange
from csi.controller.volumes import VolumeService
from csi.errors import InvalidArgument, InvalidPageToken, NotFound
from csi.rpc import csi_pb2, csi_pb2_grpc
from csi.server_sets import FileSystemEndpoint
from csi.volume_id import check_volume_id_field, parse_volume_id

Capability = csi_pb2.ControllerServiceCapability.RPC
CONTROLLER_CAPABILITIES = (
    Capability.CREATE_DELETE_VOLUME,
    Capability.LIST_VOLUMES,
    Capability.GET_CAPACITY,
    Capability.EXPAND_VOLUME,
    Capability.GET_VOLUME,
    Capability.VOLUME_CONDITION,
    Capability.MODIFY_VOLUME,
)
MAX_PAGE = 1000


def volume_context(record: VolumeRecord, mgs_nids: tuple[str, ...]) -> dict[str, str]:
    """Everything the node plugin needs to mount the volume, so it can stay stateless, and
    the directory's default layout and inode limit when they are not the file system's."""
    context = {
        "fsname": record.fsname,
        "mgsNids": ":".join(mgs_nids),
        "subdir": record.directory,  # the path below the file-system root
        "kind": record.kind,
        **record.layout,
    }
    if record.inode_limit:
        context[INODE_LIMIT] = str(record.inode_limit)
    return context


class ControllerServicer(csi_pb2_grpc.ControllerServicer):
    def __init__(self, volumes: VolumeService, *, default_fsname: str) -> None:
        self._volumes = volumes
        self._default_fsname = default_fsname

    @staticmethod
    def _volume(record: VolumeRecord, endpoint: FileSystemEndpoint) -> csi_pb2.Volume:
        return csi_pb2.Volume(
            volume_id=record.volume_id,
            capacity_bytes=record.capacity_bytes,
            volume_context=volume_context(record, endpoint.mgs_nids),
        )

    def CreateVolume(self, request, context):
        if not request.name:
            raise InvalidArgument("name is required")
        check_capabilities(request.volume_capabilities)
        if request.HasField("volume_content_source"):
            raise InvalidArgument(
                "volume_content_source: snapshots and clones are not supported by lustre-csi"
            )
        params = parse_volume_parameters(
            request.parameters, volume_name=request.name, default_fsname=self._default_fsname,
            mutable_parameters=request.mutable_parameters,
        )
        volume = self._volumes.create(request.name, _capacity_range(request), params)
        return csi_pb2.CreateVolumeResponse(volume=self._volume(volume.record, volume.endpoint))

    def DeleteVolume(self, request, context):
        check_volume_id_field(request.volume_id)
        self._volumes.delete(request.volume_id)
        return csi_pb2.DeleteVolumeResponse()

    def ValidateVolumeCapabilities(self, request, context):
        check_volume_id_field(request.volume_id)
        if not request.volume_capabilities:
            raise InvalidArgument("volume_capabilities is required")
        self._volumes.get(request.volume_id)  # NotFound for an unknown volume, per the spec
        problems = [p for c in request.volume_capabilities if (p := capability_problem(c))]
        if problems:
            return csi_pb2.ValidateVolumeCapabilitiesResponse(message="; ".join(problems))
        confirmed = csi_pb2.ValidateVolumeCapabilitiesResponse.Confirmed(
            volume_context=request.volume_context,
            volume_capabilities=request.volume_capabilities,
            parameters=request.parameters,
        )
        return csi_pb2.ValidateVolumeCapabilitiesResponse(confirmed=confirmed)

    def ListVolumes(self, request, context):
        if request.max_entries < 0:
            raise InvalidArgument("max_entries must not be negative")
        token = request.starting_token
        if token:
            try:
                parse_volume_id(token)
            except (NotFound, InvalidArgument) as exc:
                raise InvalidPageToken(
                    f"starting_token {token!r} was not issued by this driver"
                ) from exc
        limit = min(request.max_entries or MAX_PAGE, MAX_PAGE)
        records, next_token = self._volumes.list_page(token, limit)
        # One provider lookup per file system on the page, not one per volume.
        endpoints: dict[str, FileSystemEndpoint] = {}
        for record in records:
            if record.fsname not in endpoints:
                endpoints[record.fsname] = self._volumes.endpoint(record)
        entries = [
            csi_pb2.ListVolumesResponse.Entry(
                volume=self._volume(record, endpoints[record.fsname]),
                status=csi_pb2.ListVolumesResponse.VolumeStatus(
                    volume_condition=csi_pb2.VolumeCondition(abnormal=False, message="ok")
                ),
            )
            for record in records
        ]
        return csi_pb2.ListVolumesResponse(entries=entries, next_token=next_token)

    def ControllerGetVolume(self, request, context):
        check_volume_id_field(request.volume_id)
        volume = self._volumes.get(request.volume_id)
        record, present = volume.record, self._volumes.directory_present(volume)
        condition = csi_pb2.VolumeCondition(
            abnormal=not present,
            message="ok"
            if present
            else f"directory {record.directory} is missing on {record.fsname}",
        )
        return csi_pb2.ControllerGetVolumeResponse(
            volume=self._volume(record, volume.endpoint),
            status=csi_pb2.ControllerGetVolumeResponse.VolumeStatus(volume_condition=condition),
        )

    def GetCapacity(self, request, context):
        for position, capability in enumerate(request.volume_capabilities):
            if problem := capability_problem(capability):
                raise InvalidArgument(f"volume_capabilities[{position}]: {problem}")
        params = parse_volume_parameters(
            request.parameters, volume_name="capacity-probe", default_fsname=self._default_fsname
        )
        capacity = self._volumes.capacity(params)
        return csi_pb2.GetCapacityResponse(
            available_capacity=capacity.available_bytes,
            maximum_volume_size=_int64(capacity.maximum_volume_bytes),
            minimum_volume_size=_int64(capacity.minimum_volume_bytes),
        )

    def ControllerExpandVolume(self, request, context):
        check_volume_id_field(request.volume_id)
        if not request.HasField("capacity_range"):
            raise InvalidArgument("capacity_range is required")
        if request.HasField("volume_capability"):
            check_capabilities([request.volume_capability])
        record = self._volumes.expand(request.volume_id, _capacity_range(request)).record
        # A quota change needs nothing on the node: the mount sees the new limit at once.
        return csi_pb2.ControllerExpandVolumeResponse(
            capacity_bytes=record.capacity_bytes, node_expansion_required=False
        )

    def ControllerModifyVolume(self, request, context):
        check_volume_id_field(request.volume_id)
        changes = parse_mutable_parameters(request.mutable_parameters)
        # A layout is a directory default: files written before keep theirs (the log and
        # ControllerGetVolume's volume_context say what the directory gives new files now).
        self._volumes.modify(request.volume_id, changes)
        return csi_pb2.ControllerModifyVolumeResponse()

    def ControllerGetCapabilities(self, request, context):
        return csi_pb2.ControllerGetCapabilitiesResponse(
            capabilities=[
                csi_pb2.ControllerServiceCapability(
                    rpc=csi_pb2.ControllerServiceCapability.RPC(type=capability)
                )
                for capability in CONTROLLER_CAPABILITIES
            ]
        )


def _capacity_range(request) -> CapacityRange:
    if not request.HasField("capacity_range"):
        return CapacityRange()
    return CapacityRange(
        required_bytes=request.capacity_range.required_bytes,
        limit_bytes=request.capacity_range.limit_bytes,
    )


def _int64(value: int) -> wrappers_pb2.Int64Value:
    return wrappers_pb2.Int64Value(value=value)
