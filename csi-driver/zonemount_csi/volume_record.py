"""Volume ids and the per-volume records the controller keeps in the bucket.

The trust model (docs/security.md): anyone who can write a bucket - a whole-bucket mount, a pod
role - can write its ``.zonemount/volumes/`` records. So a record is never believed on its own:

* A volume id ``zm2:<bucket>:<D>[:<E>]`` names its record ``.zonemount/volumes/<D>.json`` and
  ``D = sha256(record bytes)[:32]``: the id *commits to* the record (content addressing). The id
  lives in the PV's ``volumeHandle``, which only the external-provisioner (and cluster admins)
  write. A record whose bytes no longer hash to ``D`` - edited, or copied from another volume -
  is refused with FAILED_PRECONDITION, and nothing is deleted.
* The record's bucket must be the id's bucket and its endpoint the id's endpoint (``E`` =
  ``sha256(endpoint)[:8]``), so a record can never point DeleteVolume at another bucket.
* 128 bits of SHA-256 make a second record with the same ``D`` infeasible to find, even by a
  tenant who chooses PVC names (a birthday search costs ~2^64 hashes).

Why not a MAC with a controller-held key: the id already is a value tenants cannot write, so a
content hash gives the same guarantee with no secret to provision, rotate or lose (a lost key
would make every volume undeletable). What a hash cannot stop - someone who can write the bucket
*adding* well-formed records - only makes CreateVolume refuse overlapping prefixes (it fails
closed); such a writer can delete the bucket's objects directly anyway.

Legacy ``zm1:<bucket>:<sha256(name)[:32]>`` ids (before records were content-addressed) name an
unauthenticated record: DeleteVolume removes it but never deletes data for it
(FAILED_PRECONDITION when it asks to; the data is then removed by hand).

Invariants: :func:`verify` returns a spec only for bytes that hash to the id's digest, whose
bucket and endpoint are the id's and whose prefix is a proper, non-empty volume prefix outside
``.zonemount/``; :func:`overlaps` is true exactly when one prefix is inside (or equal to) the
other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import asdict, dataclass

from zonemount_contract import keys as vc
from zonemount_contract.names import NameRuleError, check_bucket_name, check_prefix

RECORD_PREFIX = ".zonemount/volumes/"
#: What no volume prefix may start with: the controller's own records live there.
RESERVED_PREFIX = ".zonemount/"
VOLUME_ID_VERSION = "zm2"
LEGACY_VOLUME_ID_VERSION = "zm1"
RECORD_VERSION = 2
_DIGEST_RE = re.compile(r"[0-9a-f]{32}")
_ENDPOINT_DIGEST_RE = re.compile(r"[0-9a-f]{8}")


class RecordError(Exception):
    """A record does not prove what it claims; ``str()`` says why (no secrets, no content)."""


def digest(text: str | bytes, length: int) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:length]


def endpoint_digest(endpoint_url: str) -> str:
    """The 8-hex tag of a non-default endpoint in a volume id ('' for the default endpoint)."""
    return digest(endpoint_url, 8) if endpoint_url else ""


@dataclass(frozen=True)
class VolumeId:
    """``<version>:<bucket>:<digest>[:<endpoint digest>]`` (at most 110 bytes: CSI allows 128)."""

    bucket: str
    digest: str
    endpoint_digest: str = ""
    version: str = VOLUME_ID_VERSION

    def __str__(self) -> str:
        parts = [self.version, self.bucket, self.digest]
        if self.endpoint_digest:
            parts.append(self.endpoint_digest)
        return ":".join(parts)

    @classmethod
    def parse(cls, text: str) -> VolumeId | None:
        parts = text.split(":")
        if len(parts) not in (3, 4):
            return None
        if parts[0] not in (VOLUME_ID_VERSION, LEGACY_VOLUME_ID_VERSION):
            return None
        if not _DIGEST_RE.fullmatch(parts[2]):
            return None
        if len(parts) == 4 and not _ENDPOINT_DIGEST_RE.fullmatch(parts[3]):
            return None
        try:
            check_bucket_name(parts[1])
        except NameRuleError:
            return None
        return cls(parts[1], parts[2], parts[3] if len(parts) == 4 else "", parts[0])

    @property
    def legacy(self) -> bool:
        return self.version == LEGACY_VOLUME_ID_VERSION

    @property
    def record_key(self) -> str:
        return f"{RECORD_PREFIX}{self.digest}.json"


@dataclass(frozen=True)
class VolumeSpec:
    """What a StorageClass (and the claim) asked for; the record is exactly this, as JSON."""

    name: str
    bucket: str
    prefix: str
    region: str = ""
    endpoint_url: str = ""
    delete_data: bool = False
    authentication_source: str = ""
    role_arn: str = ""
    availability_zone: str = ""
    capacity_bytes: int = 0

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

    def same_parameters(self, other: VolumeSpec) -> bool:
        """Equal in everything but capacity (capacity compatibility is a range check)."""
        return dataclasses.replace(self, capacity_bytes=0) == dataclasses.replace(
            other, capacity_bytes=0
        )

    def capacity_fits(self, required_bytes: int, limit_bytes: int) -> bool:
        if self.capacity_bytes < required_bytes:
            return False
        return not limit_bytes or self.capacity_bytes <= limit_bytes

    def to_record(self) -> bytes:
        """The record's exact bytes (canonical JSON: its hash is the volume id's digest)."""
        return json.dumps({"version": RECORD_VERSION, **asdict(self)}, sort_keys=True).encode()

    def volume_id(self, endpoint_tag: str) -> VolumeId:
        return VolumeId(self.bucket, digest(self.to_record(), 32), endpoint_tag)


def parse_record(body: bytes) -> tuple[int, VolumeSpec]:
    """(record version, spec) of a record's bytes - not yet verified against any id."""
    try:
        raw = json.loads(body)
    except ValueError:
        raise RecordError("volume record is not JSON") from None
    version = raw.pop("version", 1) if isinstance(raw, dict) else None
    if not isinstance(version, int):
        raise RecordError("volume record is not a versioned JSON object")
    try:
        spec = VolumeSpec(**raw)
    except TypeError:
        raise RecordError("volume record has unknown or missing fields") from None
    if not isinstance(spec.prefix, str) or not isinstance(spec.bucket, str):
        raise RecordError("volume record has a non-text bucket or prefix")
    return version, spec


def check_volume_prefix(prefix: str) -> bool:
    """A proper volume prefix: non-empty, canonical ('a/b/'), outside the records area."""
    try:
        valid = bool(prefix) and check_prefix(prefix) == prefix
    except NameRuleError:
        return False
    return valid and not prefix.startswith(RESERVED_PREFIX)


def verify(volume_id: VolumeId, body: bytes, endpoint_tag_of: dict[str, str]) -> VolumeSpec:
    """The spec a ``zm2`` record proves for ``volume_id``, or :class:`RecordError`.

    ``endpoint_tag_of`` maps allowed endpoint URLs to their id tags.
    """
    if volume_id.legacy:
        raise RecordError("a zm1 volume record is not authenticated")
    if digest(body, 32) != volume_id.digest:
        raise RecordError(
            "the volume record does not match the volume id (it was changed or replaced after "
            "CreateVolume)"
        )
    version, spec = parse_record(body)
    if version != RECORD_VERSION:
        raise RecordError(f"volume record version {version} is not {RECORD_VERSION}")
    if spec.bucket != volume_id.bucket:
        raise RecordError("the volume record names another bucket than the volume id")
    if endpoint_tag_of.get(spec.endpoint_url, "") != volume_id.endpoint_digest:
        raise RecordError("the volume record names another S3 endpoint than the volume id")
    if not check_volume_prefix(spec.prefix):
        raise RecordError("the volume record has no proper volume prefix")
    return spec


def overlaps(a: str, b: str) -> bool:
    """True when prefix ``a`` is inside ``b``, ``b`` inside ``a``, or they are equal."""
    return a.startswith(b) or b.startswith(a)
