"""CSI Controller service: one S3 prefix per PersistentVolumeClaim (dynamic provisioning).

After csi-driver-host-path ``controllerserver.go``: handlers validate first, answer with gRPC
codes, and are idempotent.

* **CreateVolume** reads StorageClass parameters (``bucketName``, ``basePrefix``, ``region``,
  ``endpointUrl``, ``deleteData``, ``authenticationSource``, ``roleArn``, ``availabilityZone``).
  The volume is the prefix ``<basePrefix>/<pvc-namespace>/<pvc-name>/`` (from the
  external-provisioner's ``csi.storage.k8s.io/pvc/*`` parameters; ``<basePrefix>/<name>/`` when
  they are absent). The volume id is deterministic - ``zm1:<bucket>:<sha256(name)[:32]>``, plus
  ``:<sha256(endpoint)[:8]>`` for a non-default endpoint - so a retried CreateVolume finds its
  volume again, and it stays under the spec's 128 bytes whatever the PVC name.
* Each volume has a small JSON **record** in its bucket at ``.zonemount/volumes/<digest>.json``
  (the prefix, the class's parameters, ``deleteData``). It makes CreateVolume idempotent across
  controller restarts (same name + same parameters -> same volume; different parameters ->
  ALREADY_EXISTS) and tells DeleteVolume - which only gets the volume id - what to delete.
  Conflicts across *different* buckets are caught by an in-memory index for the life of the
  controller process.
* **DeleteVolume** deletes every object (and aborts multipart uploads) under the prefix only
  when the class said ``deleteData: "true"``; otherwise it only forgets the record. Unknown or
  malformed volume ids are OK (the spec's idempotent delete).
* **ValidateVolumeCapabilities** confirms mount access with any known access mode (the volume
  is usable by many nodes, MULTI_NODE_MULTI_WRITER / MULTI_NODE_READER_ONLY, and so by one).
* **ControllerGetCapabilities**: CREATE_DELETE_VOLUME.

Invariants: the controller only talks to the default S3 endpoint of its environment or to one
of its ``--allowed-endpoint-url`` values; it never deletes outside ``<prefix>`` and never with
an empty prefix.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from . import volume_context as vc
from ._proto import csi_pb2, csi_pb2_grpc
from .credentials import CredentialsError, validate_role_arn
from .errors import CsiError, invalid
from .node import (
    SUPPORTED_MODES,
    check_capability,
    validate_bucket,
    validate_prefix,
    validate_region,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

RECORD_PREFIX = ".zonemount/volumes/"
VOLUME_ID_VERSION = "zm1"
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_REQUEST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ZONE_RE = re.compile(r"^[a-z0-9-]{2,40}$")


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class VolumeId:
    bucket: str
    digest: str
    endpoint_digest: str = ""

    def __str__(self) -> str:
        parts = [VOLUME_ID_VERSION, self.bucket, self.digest]
        if self.endpoint_digest:
            parts.append(self.endpoint_digest)
        return ":".join(parts)

    @classmethod
    def parse(cls, text: str) -> VolumeId | None:
        parts = text.split(":")
        if len(parts) not in (3, 4) or parts[0] != VOLUME_ID_VERSION:
            return None
        if not re.fullmatch(r"[0-9a-f]{32}", parts[2]):
            return None
        if len(parts) == 4 and not re.fullmatch(r"[0-9a-f]{8}", parts[3]):
            return None
        try:
            validate_bucket(parts[1])
        except CsiError:
            return None
        return cls(parts[1], parts[2], parts[3] if len(parts) == 4 else "")

    @property
    def record_key(self) -> str:
        return f"{RECORD_PREFIX}{self.digest}.json"


@dataclass(frozen=True)
class VolumeSpec:
    """What a StorageClass asked for (the idempotency fingerprint is all of it)."""

    name: str
    bucket: str
    prefix: str
    region: str = ""
    endpoint_url: str = ""
    delete_data: bool = False
    authentication_source: str = ""
    role_arn: str = ""
    availability_zone: str = ""

    def volume_context(self) -> dict[str, str]:
        ctx = {vc.BUCKET_NAME: self.bucket, vc.PREFIX: self.prefix}
        for key, value in (
            (vc.REGION, self.region),
            (vc.ENDPOINT_URL, self.endpoint_url),
            (vc.AUTHENTICATION_SOURCE, self.authentication_source),
            (vc.ROLE_ARN, self.role_arn),
        ):
            if value:
                ctx[key] = value
        return ctx

    def to_json(self) -> bytes:
        return json.dumps({"version": 1, **asdict(self)}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> VolumeSpec:
        raw = json.loads(data)
        raw.pop("version", None)
        spec = cls(**raw)
        # never trust a record enough to delete outside a proper prefix
        try:
            valid = bool(spec.prefix) and validate_prefix(spec.prefix) == spec.prefix
        except CsiError:
            valid = False
        if not valid:
            raise ValueError("record has an invalid prefix")
        return spec


def _bool_param(params: Mapping[str, str], key: str) -> bool:
    value = params.get(key, "false").strip().lower()
    if value not in {"true", "false"}:
        raise invalid(f'StorageClass parameter {key} must be "true" or "false"')
    return value == "true"


ClientFactory = Callable[[str, str], "S3Client"]


def boto3_client_factory(endpoint_url: str, region: str) -> S3Client:
    """An S3 client for ``endpoint_url`` ('' = the environment's default endpoint)."""
    import boto3

    config = Config(
        connect_timeout=5, read_timeout=30, retries={"mode": "standard", "max_attempts": 5}
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url or None, region_name=region or None, config=config
    )


@dataclass
class ControllerConfig:
    allowed_endpoint_urls: tuple[str, ...] = ()
    client_factory: ClientFactory = field(default=boto3_client_factory)


class ControllerService:
    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self._allowed = {
            u.rstrip("/"): _digest(u.rstrip("/"), 8) for u in config.allowed_endpoint_urls
        }
        self._mu = threading.Lock()
        self._busy: set[str] = set()
        self._index: dict[str, tuple[str, VolumeSpec]] = {}  # name -> (volume id, spec)

    @contextlib.contextmanager
    def _exclusive(self, key: str) -> Iterator[None]:
        with self._mu:
            if key in self._busy:
                raise CsiError(
                    grpc.StatusCode.ABORTED, f"an operation on {key[:100]} is in progress: retry"
                )
            self._busy.add(key)
        try:
            yield
        finally:
            with self._mu:
                self._busy.discard(key)

    def _client(self, endpoint_url: str, region: str = "") -> S3Client:
        return self.config.client_factory(endpoint_url, region)

    # -- validation ----------------------------------------------------------------------
    def spec_from_request(self, request: csi_pb2.CreateVolumeRequest) -> VolumeSpec:
        if not request.name:
            raise invalid("name is required")
        if not request.volume_capabilities:
            raise invalid("volume_capabilities is required")
        for cap in request.volume_capabilities:
            try:
                check_capability(cap)
            except CsiError as err:
                raise invalid(err.message) from None
        if request.HasField("volume_content_source"):
            raise invalid("volume_content_source is not supported: no snapshots or clones")
        rng = request.capacity_range
        if rng.required_bytes < 0 or rng.limit_bytes < 0:
            raise invalid("capacity_range must not be negative")
        if rng.limit_bytes and rng.required_bytes > rng.limit_bytes:
            raise CsiError(grpc.StatusCode.OUT_OF_RANGE, "required_bytes exceeds limit_bytes")
        params = dict(request.parameters)
        unknown = sorted(
            k
            for k in params
            if k not in vc.STORAGE_CLASS_PARAMS and not k.startswith(vc.KUBERNETES_PREFIXES)
        )
        if unknown:
            raise invalid(
                f"unknown StorageClass parameter {unknown[0][:60]!r}: known are "
                f"{', '.join(sorted(vc.STORAGE_CLASS_PARAMS))}"
            )
        bucket = validate_bucket(
            params.get(vc.PARAM_BUCKET_NAME, ""), "StorageClass parameter bucketName"
        )
        base = validate_prefix(
            params.get(vc.PARAM_BASE_PREFIX, ""), "StorageClass parameter basePrefix"
        )
        region = validate_region(params.get(vc.PARAM_REGION, ""), "StorageClass parameter region")
        endpoint = params.get(vc.PARAM_ENDPOINT_URL, "").rstrip("/")
        if endpoint and endpoint not in self._allowed:
            raise invalid(
                "StorageClass parameter endpointUrl is not in the controller's "
                "--allowed-endpoint-url list"
            )
        namespace, pvc = params.get(vc.PVC_NAMESPACE, ""), params.get(vc.PVC_NAME, "")
        if namespace and pvc:
            if not (_NAME_RE.match(namespace) and _NAME_RE.match(pvc)):
                raise invalid("PVC name or namespace is not a valid Kubernetes name")
            prefix = f"{base}{namespace}/{pvc}/"
        else:
            if not _REQUEST_NAME_RE.match(request.name):
                raise invalid(
                    "name must be 1-128 letters, digits, '.', '_' or '-' when no "
                    "csi.storage.k8s.io/pvc/name parameter is given"
                )
            prefix = f"{base}{request.name}/"
        source = params.get(vc.PARAM_AUTHENTICATION_SOURCE, "")
        if source and source not in vc.AUTH_SOURCES:
            choices = ", ".join(vc.AUTH_SOURCES)
            raise invalid(f"StorageClass parameter authenticationSource must be one of {choices}")
        role_arn = params.get(vc.PARAM_ROLE_ARN, "")
        if role_arn:
            try:
                validate_role_arn(role_arn)
            except CredentialsError as exc:
                raise invalid(str(exc)) from None
        zone = params.get(vc.PARAM_AVAILABILITY_ZONE, "")
        if zone and not _ZONE_RE.match(zone):
            raise invalid("StorageClass parameter availabilityZone is not a zone name")
        return VolumeSpec(
            name=request.name,
            bucket=bucket,
            prefix=prefix,
            region=region,
            endpoint_url=endpoint,
            delete_data=_bool_param(params, vc.PARAM_DELETE_DATA),
            authentication_source=source,
            role_arn=role_arn,
            availability_zone=zone,
        )

    def _volume_id(self, spec: VolumeSpec) -> VolumeId:
        return VolumeId(
            spec.bucket, _digest(spec.name, 32), self._allowed.get(spec.endpoint_url, "")
        )

    def _endpoint_for(self, volume_id: VolumeId) -> str:
        if not volume_id.endpoint_digest:
            return ""
        for url, digest in self._allowed.items():
            if digest == volume_id.endpoint_digest:
                return url
        raise CsiError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "the volume's S3 endpoint is no longer in the controller's --allowed-endpoint-url",
        )

    def _read_record(self, client: S3Client, volume_id: VolumeId) -> VolumeSpec | None:
        try:
            body = client.get_object(Bucket=volume_id.bucket, Key=volume_id.record_key)[
                "Body"
            ].read()
        except ClientError as exc:
            if _error_code(exc) in {"NoSuchKey", "NoSuchBucket", "404"}:
                return None
            raise
        try:
            return VolumeSpec.from_json(body)
        except (ValueError, TypeError) as exc:
            raise CsiError(
                grpc.StatusCode.INTERNAL,
                f"volume record s3://{volume_id.bucket}/{volume_id.record_key} is corrupt ({exc})",
            ) from None

    def _topology(
        self, spec: VolumeSpec, request: csi_pb2.CreateVolumeRequest
    ) -> list[csi_pb2.Topology]:
        if not spec.availability_zone:
            return []
        requisite = list(request.accessibility_requirements.requisite)
        if requisite and not any(
            t.segments.get(vc.TOPOLOGY_ZONE) == spec.availability_zone for t in requisite
        ):
            raise CsiError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the bucket lives in zone {spec.availability_zone}, which the pod's node "
                "topology does not allow",
            )
        return [csi_pb2.Topology(segments={vc.TOPOLOGY_ZONE: spec.availability_zone})]

    # -- RPCs ----------------------------------------------------------------------------
    def create(self, request: csi_pb2.CreateVolumeRequest) -> csi_pb2.CreateVolumeResponse:
        spec = self.spec_from_request(request)
        topology = self._topology(spec, request)
        volume_id = self._volume_id(spec)
        conflict = CsiError(
            grpc.StatusCode.ALREADY_EXISTS,
            f"volume {request.name[:100]} already exists with different parameters",
        )
        with self._exclusive(f"name:{request.name}"), _s3_errors("CreateVolume"):
            known = self._index.get(request.name)
            if known is not None and known[1] != spec:
                raise conflict
            client = self._client(spec.endpoint_url, spec.region)
            try:
                client.head_bucket(Bucket=spec.bucket)
            except ClientError as exc:
                if _error_code(exc) in {"404", "NoSuchBucket"}:
                    raise CsiError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"bucket {spec.bucket} does not exist: create it first",
                    ) from None
                raise
            existing = self._read_record(client, volume_id)
            if existing is None:
                client.put_object(
                    Bucket=spec.bucket,
                    Key=volume_id.record_key,
                    Body=spec.to_json(),
                    ContentType="application/json",
                )
                log.info("created volume %s at s3://%s/%s", volume_id, spec.bucket, spec.prefix)
            elif existing != spec:
                raise conflict
            self._index[request.name] = (str(volume_id), spec)
        return csi_pb2.CreateVolumeResponse(
            volume=csi_pb2.Volume(
                volume_id=str(volume_id),
                capacity_bytes=request.capacity_range.required_bytes,
                volume_context=spec.volume_context(),
                accessible_topology=topology,
            )
        )

    def delete(self, request: csi_pb2.DeleteVolumeRequest) -> None:
        if not request.volume_id:
            raise invalid("volume_id is required")
        volume_id = VolumeId.parse(request.volume_id)
        if volume_id is None:
            log.info("DeleteVolume of a volume id this driver never made: nothing to do")
            return
        with self._exclusive(f"volume:{volume_id}"), _s3_errors("DeleteVolume"):
            client = self._client(self._endpoint_for(volume_id))
            spec = self._read_record(client, volume_id)
            if spec is None:
                return
            if spec.delete_data:
                deleted = _delete_prefix(client, spec.bucket, spec.prefix)
                log.info("deleted %d objects under s3://%s/%s", deleted, spec.bucket, spec.prefix)
            client.delete_object(Bucket=volume_id.bucket, Key=volume_id.record_key)
            self._index.pop(spec.name, None)

    def validate(
        self, request: csi_pb2.ValidateVolumeCapabilitiesRequest
    ) -> csi_pb2.ValidateVolumeCapabilitiesResponse:
        if not request.volume_id:
            raise invalid("volume_id is required")
        if not request.volume_capabilities:
            raise invalid("volume_capabilities is required")
        volume_id = VolumeId.parse(request.volume_id)
        if volume_id is None:
            raise CsiError(grpc.StatusCode.NOT_FOUND, "volume_id is not a zonemount volume")
        with _s3_errors("ValidateVolumeCapabilities"):
            spec = self._read_record(self._client(self._endpoint_for(volume_id)), volume_id)
        if spec is None:
            raise CsiError(grpc.StatusCode.NOT_FOUND, "volume does not exist")
        for cap in request.volume_capabilities:
            if (
                cap.WhichOneof("access_type") != "mount"
                or cap.access_mode.mode not in SUPPORTED_MODES
            ):
                return csi_pb2.ValidateVolumeCapabilitiesResponse(
                    message="only filesystem (mount) access with a known access mode is supported"
                )
        return csi_pb2.ValidateVolumeCapabilitiesResponse(
            confirmed=csi_pb2.ValidateVolumeCapabilitiesResponse.Confirmed(
                volume_context=request.volume_context,
                volume_capabilities=request.volume_capabilities,
                parameters=request.parameters,
            )
        )


def _error_code(exc: ClientError) -> str:
    code: str = exc.response.get("Error", {}).get("Code", "") or ""
    return code


@contextlib.contextmanager
def _s3_errors(method: str) -> Iterator[None]:
    """Map S3 failures to gRPC codes (the message carries the S3 error code, never a secret)."""
    try:
        yield
    except ClientError as exc:
        code = _error_code(exc)
        if code in {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
            raise CsiError(
                grpc.StatusCode.PERMISSION_DENIED, f"S3 denied {method}: {code}"
            ) from None
        if code in {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "503"}:
            raise CsiError(
                grpc.StatusCode.UNAVAILABLE, f"S3 is throttling: {code}; retry"
            ) from None
        raise CsiError(grpc.StatusCode.INTERNAL, f"S3 error in {method}: {code}") from None
    except BotoCoreError as exc:
        raise CsiError(
            grpc.StatusCode.UNAVAILABLE, f"S3 is unreachable ({type(exc).__name__}); retry"
        ) from None


def _delete_prefix(client: S3Client, bucket: str, prefix: str) -> int:
    """Delete every object and abort every multipart upload under ``prefix``."""
    if not prefix or not prefix.endswith("/"):
        raise ValueError("refusing to delete without a proper prefix")
    deleted = 0
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys: list[Any] = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            deleted += len(batch)
    with contextlib.suppress(ClientError):
        uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
        for upload in uploads:
            client.abort_multipart_upload(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
    return deleted


class ControllerServicer(csi_pb2_grpc.ControllerServicer):  # type: ignore[misc]
    def __init__(self, service: ControllerService) -> None:
        self.service = service

    def CreateVolume(
        self, request: csi_pb2.CreateVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.CreateVolumeResponse:
        return self.service.create(request)

    def DeleteVolume(
        self, request: csi_pb2.DeleteVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.DeleteVolumeResponse:
        self.service.delete(request)
        return csi_pb2.DeleteVolumeResponse()

    def ValidateVolumeCapabilities(
        self, request: csi_pb2.ValidateVolumeCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ValidateVolumeCapabilitiesResponse:
        return self.service.validate(request)

    def ControllerGetCapabilities(
        self, request: csi_pb2.ControllerGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerGetCapabilitiesResponse:
        rpc = csi_pb2.ControllerServiceCapability.RPC
        return csi_pb2.ControllerGetCapabilitiesResponse(
            capabilities=[
                csi_pb2.ControllerServiceCapability(rpc=rpc(type=rpc.CREATE_DELETE_VOLUME))
            ]
        )
