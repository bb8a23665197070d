"""CSI Controller service: one S3 prefix per PersistentVolumeClaim (dynamic provisioning).

After csi-driver-host-path ``controllerserver.go``: handlers validate first, answer with gRPC
codes, and are idempotent.

* **CreateVolume** reads StorageClass parameters (``bucketName``, ``basePrefix``, ``region``,
  ``endpointUrl``, ``deleteData``, ``authenticationSource``, ``roleArn``, ``availabilityZone``).
  The volume is the prefix ``<basePrefix>/<pvc-namespace>/<pvc-name>/`` (from the
  external-provisioner's ``csi.storage.k8s.io/pvc/*`` parameters; ``<basePrefix>/<name>/`` when
  they are absent). Each volume has a small JSON **record** in its bucket,
  ``.zonemount/volumes/<D>.json`` (the prefix, the class's parameters, ``deleteData``, the
  capacity), and the volume id ``zm2:<bucket>:<D>[:<sha256(endpoint)[:8]>]`` commits to it:
  ``D = sha256(record)[:32]`` (:mod:`zonemount_csi.volume_record` says why this, not a MAC).
  Under a per-bucket lock, CreateVolume lists the bucket's records: the same name with the same
  parameters and a compatible capacity returns that volume (also after a controller restart);
  the same name otherwise is ALREADY_EXISTS; a prefix inside, equal to or containing another
  volume's (whatever its StorageClass) is FAILED_PRECONDITION. Same-name conflicts across
  *different* buckets are caught by an in-memory index for the life of the process.
* **DeleteVolume** acts only on what the volume id proves: the record must hash to the id's
  digest and name the id's bucket and endpoint, else FAILED_PRECONDITION and nothing is
  deleted. It deletes every object (and aborts multipart uploads) under the prefix only when
  the class said ``deleteData: "true"``; otherwise it only drops the record. Unknown or
  malformed volume ids, and records already gone, are OK (the spec's idempotent delete).
* **ValidateVolumeCapabilities** confirms mount access with any known access mode (the volume
  is usable by many nodes, MULTI_NODE_MULTI_WRITER / MULTI_NODE_READER_ONLY, and so by one).
* **ControllerGetCapabilities**: CREATE_DELETE_VOLUME.

Request validation is :mod:`.validation` (shared with the node plugin; the controller imports
nothing of the node service), the in-flight and per-bucket locks :mod:`.locks`, S3 clients the
contract's one factory (:mod:`zonemount_contract.s3client`).

Invariants: the controller only talks to the default S3 endpoint of its environment or to one
of its ``--allowed-endpoint-url`` values; it never deletes outside the prefix a volume id proves
(never with an empty prefix, never in another bucket); no two volumes it made on one bucket
overlap. One controller is active at a time (the external-provisioner's leader election).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from botocore.exceptions import BotoCoreError, ClientError
from zonemount_contract import keys as vc
from zonemount_contract.aws_errors import ErrorClass, classify, code_and_status
from zonemount_contract.s3client import create_client

from . import validation
from ._proto import csi_pb2, csi_pb2_grpc
from .errors import CsiError, invalid
from .locks import InFlight, KeyedLock
from .volume_record import (
    RECORD_PREFIX,
    RESERVED_PREFIX,
    RecordError,
    VolumeId,
    VolumeSpec,
    check_volume_prefix,
    endpoint_digest,
    overlaps,
    parse_record,
    verify,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_REQUEST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: A topology.kubernetes.io/zone label value, not an AWS AZ name (zonemount_contract.names
#: AZ_NAME_RE): a StorageClass an admin writes may name any zone label its nodes carry (kind,
#: on-premises); the operator only ever writes AWS AZ names, which this accepts.
_ZONE_RE = re.compile(r"^[a-z0-9-]{2,40}$")


@dataclass(frozen=True)
class _Known:
    """A volume found by listing a bucket's records (see :meth:`ControllerService._scan`)."""

    volume_id: str
    spec: VolumeSpec


def _bool_param(params: Mapping[str, str], key: str) -> bool:
    value = params.get(key, "false").strip().lower()
    if value not in {"true", "false"}:
        raise invalid(f'StorageClass parameter {key} must be "true" or "false"')
    return value == "true"


def _check_create_request(request: csi_pb2.CreateVolumeRequest) -> None:
    """The fields of CreateVolume itself: name, capabilities, no content source, capacity."""
    if not request.name:
        raise invalid("name is required")
    if not request.volume_capabilities:
        raise invalid("volume_capabilities is required")
    for cap in request.volume_capabilities:
        try:
            validation.check_capability(cap)
        except CsiError as err:
            raise invalid(err.message) from None
    if request.HasField("volume_content_source"):
        raise invalid("volume_content_source is not supported: no snapshots or clones")
    rng = request.capacity_range
    if rng.required_bytes < 0 or rng.limit_bytes < 0:
        raise invalid("capacity_range must not be negative")
    if rng.limit_bytes and rng.required_bytes > rng.limit_bytes:
        raise CsiError(grpc.StatusCode.OUT_OF_RANGE, "required_bytes exceeds limit_bytes")


def _volume_prefix(name: str, params: Mapping[str, str], base: str) -> str:
    """``<base><pvc-namespace>/<pvc-name>/`` (from the external-provisioner's parameters), else
    ``<base><name>/``; never under the controller's own records."""
    namespace, pvc = params.get(vc.PVC_NAMESPACE, ""), params.get(vc.PVC_NAME, "")
    if namespace and pvc:
        if not (_NAME_RE.match(namespace) and _NAME_RE.match(pvc)):
            raise invalid("PVC name or namespace is not a valid Kubernetes name")
        prefix = f"{base}{namespace}/{pvc}/"
    else:
        if not _REQUEST_NAME_RE.match(name):
            raise invalid(
                "name must be 1-128 letters, digits, '.', '_' or '-' when no "
                "csi.storage.k8s.io/pvc/name parameter is given"
            )
        prefix = f"{base}{name}/"
    if not check_volume_prefix(prefix):
        raise invalid(
            f"StorageClass parameter basePrefix must not start with {RESERVED_PREFIX} "
            "(the controller's records live there): choose another basePrefix"
        )
    return prefix


ClientFactory = Callable[[str, str], "S3Client"]


def s3_client_factory(endpoint_url: str, region: str) -> S3Client:
    """An S3 client for ``endpoint_url`` ('' = the environment's default endpoint): the
    contract's one factory, with the short timeouts of record writes."""
    client: S3Client = create_client(
        endpoint_url=endpoint_url, region=region, connect_timeout=5, read_timeout=30
    )
    return client


@dataclass
class ControllerConfig:
    allowed_endpoint_urls: tuple[str, ...] = ()
    client_factory: ClientFactory = field(default=s3_client_factory)


class ControllerService:
    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self._allowed = {
            u.rstrip("/"): endpoint_digest(u.rstrip("/")) for u in config.allowed_endpoint_urls
        }
        self._in_flight = InFlight()
        self._index: dict[str, tuple[str, VolumeSpec]] = {}  # name -> (volume id, spec)
        #: one lock per (endpoint, bucket): the overlap check and the record write are atomic
        self._bucket_lock = KeyedLock()
        #: verified zm2 records by (endpoint, bucket, key): content-addressed, so immutable
        self._records: dict[tuple[str, str, str], VolumeSpec] = {}

    def _client(self, endpoint_url: str, region: str = "") -> S3Client:
        return self.config.client_factory(endpoint_url, region)

    # -- validation ----------------------------------------------------------------------
    def spec_from_request(self, request: csi_pb2.CreateVolumeRequest) -> VolumeSpec:
        """The volume a CreateVolume request asks for, validated whole (INVALID_ARGUMENT or
        OUT_OF_RANGE naming the field) before anything is looked up or written."""
        _check_create_request(request)
        params = dict(request.parameters)
        validation.check_known_keys(params, vc.STORAGE_CLASS_PARAMS, "StorageClass parameter")
        bucket = validation.validate_bucket(
            params.get(vc.PARAM_BUCKET_NAME, ""), "StorageClass parameter bucketName"
        )
        base = validation.validate_prefix(
            params.get(vc.PARAM_BASE_PREFIX, ""), "StorageClass parameter basePrefix"
        )
        region = validation.validate_region(
            params.get(vc.PARAM_REGION, ""), "StorageClass parameter region"
        )
        endpoint = params.get(vc.PARAM_ENDPOINT_URL, "").rstrip("/")
        if endpoint and endpoint not in self._allowed:
            raise invalid(
                "StorageClass parameter endpointUrl is not in the controller's "
                "--allowed-endpoint-url list"
            )
        prefix = _volume_prefix(request.name, params, base)
        source = params.get(vc.PARAM_AUTHENTICATION_SOURCE, "")
        if source:
            validation.validate_choice(
                source, vc.AUTH_SOURCES, "StorageClass parameter authenticationSource"
            )
        role_arn = params.get(vc.PARAM_ROLE_ARN, "")
        if role_arn:
            validation.validate_role_arn(role_arn, "StorageClass parameter roleArn")
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
            capacity_bytes=request.capacity_range.required_bytes,
        )

    def _endpoint_for(self, volume_id: VolumeId) -> str:
        if not volume_id.endpoint_digest:
            return ""
        for url, tag in self._allowed.items():
            if tag == volume_id.endpoint_digest:
                return url
        raise CsiError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "the volume's S3 endpoint is no longer in the controller's --allowed-endpoint-url",
        )

    def _get(self, client: S3Client, bucket: str, key: str) -> bytes | None:
        try:
            body: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _error_class(exc) in {ErrorClass.NOT_FOUND, ErrorClass.NO_SUCH_BUCKET}:
                return None
            raise
        return body

    def _read_verified(self, client: S3Client, volume_id: VolumeId) -> VolumeSpec | None:
        """The spec the id's record proves; None when there is no record (deleted already).

        A record that does not prove itself is FAILED_PRECONDITION: never act on it.
        """
        body = self._get(client, volume_id.bucket, volume_id.record_key)
        if body is None:
            return None
        try:
            return verify(volume_id, body, self._allowed)
        except RecordError as exc:
            raise CsiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"volume {volume_id}: {exc}; nothing was deleted - restore the record "
                f"s3://{volume_id.bucket}/{volume_id.record_key} or remove the volume's data "
                "by hand",
            ) from None

    def _scan(self, client: S3Client, spec: VolumeSpec) -> list[_Known]:
        """Every volume recorded in ``spec``'s bucket (same endpoint).

        Fails closed: a record that is readable but not provably ours still counts (its
        prefix blocks overlapping volumes); only unreadable ones are skipped.
        """
        tag = self._allowed.get(spec.endpoint_url, "")
        known: list[_Known] = []
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=spec.bucket, Prefix=RECORD_PREFIX):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                stem = key[len(RECORD_PREFIX) :].removesuffix(".json")
                cache_key = (spec.endpoint_url, spec.bucket, key)
                cached = self._records.get(cache_key)
                if cached is not None:
                    known.append(_Known(str(cached.volume_id(tag)), cached))
                    continue
                body = self._get(client, spec.bucket, key)
                if body is None:
                    continue
                try:
                    version, found = parse_record(body)
                except RecordError:
                    log.warning("skipping unreadable volume record s3://%s/%s", spec.bucket, key)
                    continue
                volume_id = VolumeId(spec.bucket, stem, tag)
                try:
                    verify(volume_id, body, self._allowed)
                    self._records[cache_key] = found
                except RecordError:
                    if version == 1:  # a zm1 record: named by the name's digest
                        volume_id = dataclasses.replace(volume_id, version="zm1")
                    else:
                        log.warning(
                            "volume record s3://%s/%s is not authentic: its prefix still blocks "
                            "overlapping volumes",
                            spec.bucket,
                            key,
                        )
                known.append(_Known(str(volume_id), found))
        return known

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
        cache_xz = validation.validate_cache_xz(
            request.parameters.get(vc.PARAM_CACHE_XZ, ""),
            spec.bucket,
            f"StorageClass parameter {vc.PARAM_CACHE_XZ}",
        )
        topology = self._topology(spec, request)
        rng = request.capacity_range
        conflict = CsiError(
            grpc.StatusCode.ALREADY_EXISTS,
            f"volume {request.name[:100]} already exists with different parameters or capacity",
        )
        with (
            self._in_flight.exclusive(f"name:{request.name}"),
            self._bucket_lock((spec.endpoint_url, spec.bucket)),
            _s3_errors("CreateVolume"),
        ):
            known = self._index.get(request.name)
            if known is not None and not known[1].same_parameters(spec):
                raise conflict
            client = self._client(spec.endpoint_url, spec.region)
            try:
                client.head_bucket(Bucket=spec.bucket)
            except ClientError as exc:
                if _error_class(exc) in {ErrorClass.NOT_FOUND, ErrorClass.NO_SUCH_BUCKET}:
                    raise CsiError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"bucket {spec.bucket} does not exist: create it first",
                    ) from None
                raise
            volume_id, volume = self._find_or_check(client, spec, rng)
            if volume is None:
                new_id = spec.volume_id(self._allowed.get(spec.endpoint_url, ""))
                client.put_object(
                    Bucket=spec.bucket,
                    Key=new_id.record_key,
                    Body=spec.to_record(),
                    ContentType="application/json",
                )
                volume, volume_id = spec, str(new_id)
                log.info("created volume %s at s3://%s/%s", volume_id, spec.bucket, spec.prefix)
            self._index[request.name] = (volume_id, volume)
        return csi_pb2.CreateVolumeResponse(
            volume=csi_pb2.Volume(
                volume_id=volume_id,
                capacity_bytes=volume.capacity_bytes,
                volume_context={
                    **volume.volume_context(),
                    **({vc.CACHE_XZ: cache_xz} if cache_xz else {}),
                },
                accessible_topology=topology,
            )
        )

    def _find_or_check(
        self, client: S3Client, spec: VolumeSpec, rng: csi_pb2.CapacityRange
    ) -> tuple[str, VolumeSpec | None]:
        """The existing volume of ``spec.name`` (idempotent retry), or ('', None) when a new
        one may be made. ALREADY_EXISTS when the name exists with other parameters or an
        incompatible capacity; FAILED_PRECONDITION when the prefix overlaps another volume's."""
        others = self._scan(client, spec)
        for other in others:
            if other.spec.name != spec.name:
                continue
            if other.spec.same_parameters(spec) and other.spec.capacity_fits(
                rng.required_bytes, rng.limit_bytes
            ):
                return other.volume_id, other.spec
            raise CsiError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"volume {spec.name[:100]} already exists with different parameters or "
                f"capacity ({other.spec.capacity_bytes} bytes)",
            )
        for other in others:
            if overlaps(other.spec.prefix, spec.prefix):
                raise CsiError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"prefix {spec.prefix[:200]} of bucket {spec.bucket} overlaps the prefix of "
                    f"volume {other.spec.name[:100]}: volumes must not nest (deleting one would "
                    "delete the other's data); give this StorageClass a basePrefix of its own",
                )
        return "", None

    def delete(self, request: csi_pb2.DeleteVolumeRequest) -> None:
        if not request.volume_id:
            raise invalid("volume_id is required")
        volume_id = VolumeId.parse(request.volume_id)
        if volume_id is None:
            log.info("DeleteVolume of a volume id this driver never made: nothing to do")
            return
        with self._in_flight.exclusive(f"volume:{volume_id}"), _s3_errors("DeleteVolume"):
            endpoint = self._endpoint_for(volume_id)
            client = self._client(endpoint)
            with self._bucket_lock((endpoint, volume_id.bucket)):
                if volume_id.legacy:
                    self._delete_legacy(client, volume_id)
                    return
                spec = self._read_verified(client, volume_id)
                if spec is None:
                    return
                if spec.delete_data:
                    deleted = _delete_prefix(client, volume_id.bucket, spec.prefix)
                    log.info(
                        "deleted %d objects under s3://%s/%s",
                        deleted,
                        volume_id.bucket,
                        spec.prefix,
                    )
                client.delete_object(Bucket=volume_id.bucket, Key=volume_id.record_key)
                self._records.pop((endpoint, volume_id.bucket, volume_id.record_key), None)
                self._index.pop(spec.name, None)

    def _delete_legacy(self, client: S3Client, volume_id: VolumeId) -> None:
        """A zm1 record proves nothing: drop it, but never delete data on its word."""
        body = self._get(client, volume_id.bucket, volume_id.record_key)
        if body is None:
            return
        try:
            _, spec = parse_record(body)
            wants_data_deleted = spec.delete_data is not False
        except RecordError:
            wants_data_deleted = True
        if wants_data_deleted:
            raise CsiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"volume {volume_id} was made before volume records were authenticated; its "
                "data is not deleted automatically: delete the claim's prefix by hand, then "
                f"the record s3://{volume_id.bucket}/{volume_id.record_key}",
            )
        client.delete_object(Bucket=volume_id.bucket, Key=volume_id.record_key)

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
            client = self._client(self._endpoint_for(volume_id))
            if volume_id.legacy:  # exists or not: nothing is acted on here
                body = self._get(client, volume_id.bucket, volume_id.record_key)
                spec = None if body is None else VolumeSpec("", volume_id.bucket, "legacy/")
            else:
                spec = self._read_verified(client, volume_id)
        if spec is None:
            raise CsiError(grpc.StatusCode.NOT_FOUND, "volume does not exist")
        for cap in request.volume_capabilities:
            if (
                cap.WhichOneof("access_type") != "mount"
                or cap.access_mode.mode not in validation.SUPPORTED_MODES
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


def _error_class(exc: ClientError) -> ErrorClass:
    return classify(*code_and_status(exc))


@contextlib.contextmanager
def _s3_errors(method: str) -> Iterator[None]:
    """Map S3 failures to gRPC codes (the message carries the S3 error code, never a secret)."""
    try:
        yield
    except ClientError as exc:
        code, status = code_and_status(exc)
        kind = classify(code, status)
        shown = code or str(status)
        if kind is ErrorClass.ACCESS_DENIED:
            raise CsiError(
                grpc.StatusCode.PERMISSION_DENIED, f"S3 denied {method}: {shown}"
            ) from None
        if kind is ErrorClass.THROTTLED:
            raise CsiError(
                grpc.StatusCode.UNAVAILABLE, f"S3 is throttling: {shown}; retry"
            ) from None
        if kind is ErrorClass.TRANSIENT:
            raise CsiError(
                grpc.StatusCode.UNAVAILABLE, f"S3 is unavailable: {shown}; retry"
            ) from None
        raise CsiError(grpc.StatusCode.INTERNAL, f"S3 error in {method}: {shown}") from None
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
