"""CSI Identity service: who we are, what we offer, and whether we are ready."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from google.protobuf import wrappers_pb2

from csi.rpc import csi_pb2, csi_pb2_grpc

DRIVER_NAME = "lustre.csi.io"
DRIVER_VERSION = "0.1.0"
Service = csi_pb2.PluginCapability.Service
Expansion = csi_pb2.PluginCapability.VolumeExpansion


class IdentityServicer(csi_pb2_grpc.IdentityServicer):
    def __init__(self, *, controller: bool, ready: Callable[[], bool]) -> None:
        self._controller = controller
        self._ready = ready

    def GetPluginInfo(self, request, context):
        return csi_pb2.GetPluginInfoResponse(name=DRIVER_NAME, vendor_version=DRIVER_VERSION)

    def GetPluginCapabilities(self, request, context):
        capabilities = [csi_pb2.PluginCapability(volume_expansion=Expansion(type=Expansion.ONLINE))]
        if self._controller:
            capabilities.insert(
                0, csi_pb2.PluginCapability(service=Service(type=Service.CONTROLLER_SERVICE))
            )
        return csi_pb2.GetPluginCapabilitiesResponse(capabilities=capabilities)

    def Probe(self, request, context: grpc.ServicerContext):
        return csi_pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=self._ready()))
