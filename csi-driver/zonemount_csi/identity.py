"""CSI Identity service (after csi-driver-host-path ``identityserver.go``).

Both plugins (node and controller) serve it and, as the spec requires of every instance of one
plugin version, report the same capabilities: CONTROLLER_SERVICE and
VOLUME_ACCESSIBILITY_CONSTRAINTS (volumes of directory buckets live in one AZ).
Probe answers ready=true, or FAILED_PRECONDITION naming what is missing (e.g. /dev/fuse).
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from google.protobuf import wrappers_pb2

from . import DRIVER_NAME, driver_version
from ._proto import csi_pb2, csi_pb2_grpc
from .errors import CsiError

_Service = csi_pb2.PluginCapability.Service


class IdentityServicer(csi_pb2_grpc.IdentityServicer):  # type: ignore[misc]
    def __init__(self, probe: Callable[[], str | None] = lambda: None) -> None:
        self._probe = probe

    def GetPluginInfo(
        self, request: csi_pb2.GetPluginInfoRequest, context: grpc.ServicerContext
    ) -> csi_pb2.GetPluginInfoResponse:
        return csi_pb2.GetPluginInfoResponse(name=DRIVER_NAME, vendor_version=driver_version())

    def GetPluginCapabilities(
        self, request: csi_pb2.GetPluginCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.GetPluginCapabilitiesResponse:
        return csi_pb2.GetPluginCapabilitiesResponse(
            capabilities=[
                csi_pb2.PluginCapability(service=_Service(type=_Service.CONTROLLER_SERVICE)),
                csi_pb2.PluginCapability(
                    service=_Service(type=_Service.VOLUME_ACCESSIBILITY_CONSTRAINTS)
                ),
            ]
        )

    def Probe(
        self, request: csi_pb2.ProbeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ProbeResponse:
        problem = self._probe()
        if problem is not None:
            raise CsiError(grpc.StatusCode.FAILED_PRECONDITION, problem)
        return csi_pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=True))
