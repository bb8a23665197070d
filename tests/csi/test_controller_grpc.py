"""The controller through a real gRPC unix socket against the real moto S3 server.

CreateVolume/DeleteVolume idempotency (the csi-sanity rules), ALREADY_EXISTS on conflicting
parameters (also after a controller restart: the record lives in the bucket), deleteData, and
ValidateVolumeCapabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from zonemount_cli.servers import LocalS3
from zonemount_csi._proto import csi_pb2

from tests.csi.conftest import create_request, keys, mount_capability, rpc_error

pytestmark = pytest.mark.integration
Mode = csi_pb2.VolumeCapability.AccessMode
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def test_controller_capabilities(controller: Any) -> None:
    caps = controller.ControllerGetCapabilities(csi_pb2.ControllerGetCapabilitiesRequest())
    rpc = csi_pb2.ControllerServiceCapability.RPC
    assert [c.rpc.type for c in caps.capabilities] == [rpc.CREATE_DELETE_VOLUME]
    err = rpc_error(lambda: controller.ListVolumes(csi_pb2.ListVolumesRequest()))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED


def test_create_volume_is_a_prefix_per_claim_and_idempotent(
    controller: Any, bucket: str, moto_server: LocalS3
) -> None:
    first = controller.CreateVolume(create_request(bucket)).volume
    assert first.volume_id.startswith(f"zm2:{bucket}:")
    assert len(first.volume_id) <= 128
    assert dict(first.volume_context) == {"bucketName": bucket, "prefix": "claims/team-a/data/"}
    assert first.capacity_bytes == 1 << 30
    again = controller.CreateVolume(create_request(bucket)).volume
    assert again == first
    assert len(keys(moto_server, bucket, ".zonemount/volumes/")) == 1


def test_create_volume_falls_back_to_request_name(controller: Any, bucket: str) -> None:
    request = create_request(
        bucket,
        name="pvc-0b9a",
        **{"csi.storage.k8s.io/pvc/name": "", "csi.storage.k8s.io/pvc/namespace": ""},
    )
    volume = controller.CreateVolume(request).volume
    assert volume.volume_context["prefix"] == "claims/pvc-0b9a/"


def test_conflicting_parameters_are_already_exists_even_after_restart(
    controller_factory: Callable[[], Any], bucket: str
) -> None:
    controller = controller_factory()
    controller.CreateVolume(create_request(bucket))
    err = rpc_error(lambda: controller.CreateVolume(create_request(bucket, deleteData="true")))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    restarted = controller_factory()  # no in-memory index: the record in the bucket decides
    err = rpc_error(lambda: restarted.CreateVolume(create_request(bucket, basePrefix="other/")))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    restarted.CreateVolume(create_request(bucket))  # the original parameters still work


def test_existing_name_with_another_capacity_is_already_exists(
    controller_factory: Callable[[], Any], bucket: str
) -> None:
    """csi-sanity: the same name with a capacity the volume does not satisfy is ALREADY_EXISTS
    (also after a restart); a range the existing volume satisfies returns it unchanged."""
    gib = 1 << 30

    def sized(required: int, limit: int = 0) -> csi_pb2.CreateVolumeRequest:
        request = create_request(bucket)
        request.capacity_range.CopyFrom(
            csi_pb2.CapacityRange(required_bytes=required, limit_bytes=limit)
        )
        return request

    controller = controller_factory()
    first = controller.CreateVolume(sized(gib)).volume
    assert first.capacity_bytes == gib
    for restarted in (controller, controller_factory()):
        err = rpc_error(lambda: restarted.CreateVolume(sized(2 * gib, 2 * gib)))  # noqa: B023
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS, err.details()
        assert rpc_error(
            lambda: restarted.CreateVolume(sized(gib // 2, gib // 2))  # noqa: B023
        ).code() == (grpc.StatusCode.ALREADY_EXISTS)
        assert restarted.CreateVolume(sized(gib // 2)).volume == first
        assert restarted.CreateVolume(sized(gib, 4 * gib)).volume == first


def test_delete_volume_removes_data_only_when_the_class_says_so(
    controller: Any, bucket: str, moto_server: LocalS3
) -> None:
    s3: Any = moto_server.client()
    keep = controller.CreateVolume(
        create_request(bucket, name="pvc-keep", **{"csi.storage.k8s.io/pvc/name": "keep"})
    ).volume
    wipe = controller.CreateVolume(
        create_request(
            bucket, name="pvc-wipe", deleteData="true", **{"csi.storage.k8s.io/pvc/name": "wipe"}
        )
    ).volume
    for key in (
        "claims/team-a/keep/a",
        "claims/team-a/wipe/a",
        "claims/team-a/wipe/deep/b",
        "claims/team-a/wipe-sibling/c",
        "outside.txt",
    ):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    s3.create_multipart_upload(Bucket=bucket, Key="claims/team-a/wipe/partial")
    controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=wipe.volume_id))
    controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=wipe.volume_id))  # idempotent
    controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=keep.volume_id))
    assert keys(moto_server, bucket) == [
        "claims/team-a/keep/a",
        "claims/team-a/wipe-sibling/c",
        "outside.txt",
    ]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_delete_volume_of_unknown_or_malformed_id_is_ok(controller: Any, bucket: str) -> None:
    controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=f"zm1:{bucket}:{'0' * 32}"))
    controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="not-ours"))
    controller.DeleteVolume(
        csi_pb2.DeleteVolumeRequest(volume_id=f"zm1:no-such-bucket-x1:{'0' * 32}")
    )
    err = rpc_error(lambda: controller.DeleteVolume(csi_pb2.DeleteVolumeRequest()))
    assert err.code() == INVALID


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"bucketName": ""}, INVALID),
        ({"bucketName": "Bad_Bucket"}, INVALID),
        ({"bucketName": "xn--reserved"}, INVALID),  # reserved by S3 (was FAILED_PRECONDITION)
        ({"basePrefix": "../x/"}, INVALID),
        ({"deleteData": "yes"}, INVALID),
        ({"endpointUrl": "https://evil.example"}, INVALID),
        ({"unknownParam": "1"}, INVALID),
        ({"authenticationSource": "node"}, INVALID),
        ({"roleArn": "not-an-arn"}, INVALID),
        ({"csi.storage.k8s.io/pvc/name": "Bad Name"}, INVALID),
    ],
)
def test_create_volume_parameter_validation(
    controller: Any, bucket: str, params: dict[str, str], code: grpc.StatusCode
) -> None:
    err = rpc_error(lambda: controller.CreateVolume(create_request(bucket, **params)))
    assert err.code() == code, err.details()


def test_create_volume_request_validation(controller: Any, bucket: str) -> None:
    def mutated(mutate: Callable[[csi_pb2.CreateVolumeRequest], object]) -> grpc.StatusCode:
        request = create_request(bucket)
        mutate(request)
        code: grpc.StatusCode = rpc_error(lambda: controller.CreateVolume(request)).code()
        return code

    assert mutated(lambda r: r.ClearField("name")) == INVALID
    assert mutated(lambda r: r.ClearField("volume_capabilities")) == INVALID
    assert (
        mutated(
            lambda r: r.volume_capabilities[0].CopyFrom(
                csi_pb2.VolumeCapability(
                    block=csi_pb2.VolumeCapability.BlockVolume(),
                    access_mode=Mode(mode=Mode.MULTI_NODE_MULTI_WRITER),
                )
            )
        )
        == INVALID
    )
    assert (
        mutated(
            lambda r: r.volume_content_source.volume.CopyFrom(
                csi_pb2.VolumeContentSource.VolumeSource(volume_id="v")
            )
        )
        == INVALID
    )
    assert (
        mutated(
            lambda r: r.capacity_range.CopyFrom(
                csi_pb2.CapacityRange(required_bytes=10, limit_bytes=5)
            )
        )
        == grpc.StatusCode.OUT_OF_RANGE
    )


def test_create_volume_on_missing_bucket_is_failed_precondition(controller: Any) -> None:
    err = rpc_error(lambda: controller.CreateVolume(create_request("zm-no-such-bucket-42")))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "does not exist" in (err.details() or "")


def test_create_volume_with_zone_reports_topology_and_honours_requisite(
    controller: Any, bucket: str, moto_server: LocalS3
) -> None:
    request = create_request(
        bucket, availabilityZone="us-east-1a", endpointUrl=moto_server.endpoint
    )
    request.accessibility_requirements.requisite.add().segments["topology.kubernetes.io/zone"] = (
        "us-east-1a"
    )
    volume = controller.CreateVolume(request).volume
    assert [dict(t.segments) for t in volume.accessible_topology] == [
        {"topology.kubernetes.io/zone": "us-east-1a"}
    ]
    assert volume.volume_context["endpointUrl"] == moto_server.endpoint
    assert volume.volume_id.count(":") == 3  # the endpoint is encoded for DeleteVolume
    controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id))
    elsewhere = create_request(bucket, name="pvc-other", availabilityZone="us-east-1a")
    elsewhere.accessibility_requirements.requisite.add().segments["topology.kubernetes.io/zone"] = (
        "us-east-1b"
    )
    err = rpc_error(lambda: controller.CreateVolume(elsewhere))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_validate_volume_capabilities(controller: Any, bucket: str) -> None:
    volume = controller.CreateVolume(create_request(bucket)).volume
    for mode in (Mode.MULTI_NODE_MULTI_WRITER, Mode.MULTI_NODE_READER_ONLY):
        response = controller.ValidateVolumeCapabilities(
            csi_pb2.ValidateVolumeCapabilitiesRequest(
                volume_id=volume.volume_id,
                volume_capabilities=[mount_capability(mode=mode)],
                volume_context=volume.volume_context,
            )
        )
        assert response.HasField("confirmed")
        assert list(response.confirmed.volume_capabilities) == [mount_capability(mode=mode)]
    block = csi_pb2.VolumeCapability(
        block=csi_pb2.VolumeCapability.BlockVolume(),
        access_mode=Mode(mode=Mode.MULTI_NODE_MULTI_WRITER),
    )
    response = controller.ValidateVolumeCapabilities(
        csi_pb2.ValidateVolumeCapabilitiesRequest(
            volume_id=volume.volume_id, volume_capabilities=[block]
        )
    )
    assert not response.HasField("confirmed") and response.message
    err = rpc_error(
        lambda: controller.ValidateVolumeCapabilities(
            csi_pb2.ValidateVolumeCapabilitiesRequest(
                volume_id=f"zm1:{bucket}:{'f' * 32}", volume_capabilities=[mount_capability()]
            )
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = rpc_error(
        lambda: controller.ValidateVolumeCapabilities(
            csi_pb2.ValidateVolumeCapabilitiesRequest(volume_id=volume.volume_id)
        )
    )
    assert err.code() == INVALID


def test_cache_xz_parameter_goes_into_the_volume_context_not_the_record(
    controller: Any, bucket: str
) -> None:
    plain = controller.CreateVolume(create_request(bucket)).volume
    cached = controller.CreateVolume(create_request(bucket, cacheXz="blk--use1-az4--x-s3")).volume
    assert cached.volume_context["cacheXz"] == "blk--use1-az4--x-s3"
    assert "cacheXz" not in plain.volume_context
    # how the volume is mounted, not what it is: the same volume (same id, same record)
    assert cached.volume_id == plain.volume_id
    for bad in ("Bad_Name", bucket):
        request = create_request(bucket, cacheXz=bad)
        err = rpc_error(lambda r=request: controller.CreateVolume(r))
        assert err.code() == INVALID and "cacheXz" in err.details()
