"""A small CSI client over any endpoint: used by the CLI, the demo, the tests and benchmarks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc

from csi.rpc import csi_pb2, csi_pb2_grpc

AccessMode = csi_pb2.VolumeCapability.AccessMode


def mount_capability(
    mode: csi_pb2.VolumeCapability.AccessMode.Mode = AccessMode.MULTI_NODE_MULTI_WRITER,
    mount_flags: Sequence[str] = (),
) -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(mount_flags=list(mount_flags)),
        access_mode=AccessMode(mode=mode),
    )


class NodeCalls:
    """The node service's calls, made as kubelet makes them, through `node`: a NodeStub over a
    channel, or anything with its methods (the tests call a servicer in process this way).
    `timeout` is each call's deadline in seconds."""

    def __init__(self, node: csi_pb2_grpc.NodeStub, timeout: float) -> None:
        self.node = node
        self.timeout = timeout

    def stage(
        self,
        volume_id: str,
        staging_path: str,
        volume_context: Mapping[str, str],
        capability: csi_pb2.VolumeCapability | None = None,
    ) -> None:
        self.node.NodeStageVolume(
            csi_pb2.NodeStageVolumeRequest(
                volume_id=volume_id,
                staging_target_path=staging_path,
                volume_capability=capability or mount_capability(),
                volume_context=dict(volume_context),
            ),
            timeout=self.timeout,
        )

    def publish(
        self,
        volume_id: str,
        staging_path: str,
        target_path: str,
        volume_context: Mapping[str, str],
        *,
        readonly: bool = False,
        capability: csi_pb2.VolumeCapability | None = None,
    ) -> None:
        self.node.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id=volume_id,
                staging_target_path=staging_path,
                target_path=target_path,
                volume_capability=capability or mount_capability(),
                volume_context=dict(volume_context),
                readonly=readonly,
            ),
            timeout=self.timeout,
        )

    def unpublish(self, volume_id: str, target_path: str) -> None:
        self.node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=target_path),
            timeout=self.timeout,
        )

    def unstage(self, volume_id: str, staging_path: str) -> None:
        self.node.NodeUnstageVolume(
            csi_pb2.NodeUnstageVolumeRequest(volume_id=volume_id, staging_target_path=staging_path),
            timeout=self.timeout,
        )

    def volume_stats(self, volume_id: str, path: str) -> csi_pb2.NodeGetVolumeStatsResponse:
        return self.node.NodeGetVolumeStats(
            csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=path),
            timeout=self.timeout,
        )

    def expand(self, volume_id: str, path: str) -> csi_pb2.NodeExpandVolumeResponse:
        return self.node.NodeExpandVolume(
            csi_pb2.NodeExpandVolumeRequest(volume_id=volume_id, volume_path=path),
            timeout=self.timeout,
        )


class CsiClient(NodeCalls):
    def __init__(self, endpoint: str, timeout: float = 30.0) -> None:
        target = endpoint if endpoint.startswith("unix:") else f"unix://{endpoint}"
        self.channel = grpc.insecure_channel(target)
        self.identity = csi_pb2_grpc.IdentityStub(self.channel)
        self.controller = csi_pb2_grpc.ControllerStub(self.channel)
        super().__init__(csi_pb2_grpc.NodeStub(self.channel), timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> CsiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def probe(self) -> bool:
        return self.identity.Probe(csi_pb2.ProbeRequest(), timeout=self.timeout).ready.value

    def create_volume(
        self,
        name: str,
        size_bytes: int = 0,
        parameters: Mapping[str, str] | None = None,
        capability: csi_pb2.VolumeCapability | None = None,
    ) -> csi_pb2.Volume:
        request = csi_pb2.CreateVolumeRequest(
            name=name,
            capacity_range=csi_pb2.CapacityRange(required_bytes=size_bytes),
            volume_capabilities=[capability or mount_capability()],
            parameters=dict(parameters or {}),
        )
        return self.controller.CreateVolume(request, timeout=self.timeout).volume

    def delete_volume(self, volume_id: str) -> None:
        self.controller.DeleteVolume(
            csi_pb2.DeleteVolumeRequest(volume_id=volume_id), timeout=self.timeout
        )

    def expand_volume(self, volume_id: str, size_bytes: int) -> int:
        response = self.controller.ControllerExpandVolume(
            csi_pb2.ControllerExpandVolumeRequest(
                volume_id=volume_id,
                capacity_range=csi_pb2.CapacityRange(required_bytes=size_bytes),
            ),
            timeout=self.timeout,
        )
        return response.capacity_bytes

    def list_volumes(
        self, max_entries: int = 0, starting_token: str = ""
    ) -> csi_pb2.ListVolumesResponse:
        return self.controller.ListVolumes(
            csi_pb2.ListVolumesRequest(max_entries=max_entries, starting_token=starting_token),
            timeout=self.timeout,
        )
