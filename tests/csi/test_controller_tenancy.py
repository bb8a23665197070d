"""Tenant attacks on the CSI controller (issue 10), over its real gRPC unix socket, moto S3.

Anyone who can write a bucket - a whole-bucket mount, a pod role - can write the controller's
records under ``.zonemount/volumes/``. These tests play that tenant: they edit, widen or swap
records, and try to make volumes of different StorageClasses nest on one bucket. What
DeleteVolume deletes must follow from the volume id alone (the record must hash to it), and no
two volumes may overlap. Each attack deleted another tenant's data before the fix.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zonemount_cli.servers import LocalS3
from zonemount_csi._proto import csi_pb2

from tests.csi.conftest import create_request, keys, rpc_error

pytestmark = pytest.mark.integration
RECORDS = ".zonemount/volumes/"
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def claim(bucket: str, name: str, namespace: str, pvc: str, **params: str) -> Any:
    return create_request(
        bucket,
        name=name,
        **{
            "csi.storage.k8s.io/pvc/namespace": namespace,
            "csi.storage.k8s.io/pvc/name": pvc,
            **params,
        },
    )


def put(moto: LocalS3, bucket: str, *names: str) -> None:
    s3: Any = moto.client()
    for key in names:
        s3.put_object(Bucket=bucket, Key=key, Body=b"data")


def new_bucket(moto: LocalS3) -> str:
    name = f"zm-{uuid.uuid4().hex[:12]}"
    s3: Any = moto.client()
    s3.create_bucket(Bucket=name)
    return name


def record_keys(moto: LocalS3, bucket: str) -> list[str]:
    return keys(moto, bucket, RECORDS)


def edit_records(moto: LocalS3, target: str, **changes: object) -> None:
    """What a tenant with write access to the bucket does: rewrite every volume record."""
    s3: Any = moto.client()
    for key in record_keys(moto, target):
        body = json.loads(s3.get_object(Bucket=target, Key=key)["Body"].read())
        body.update(changes)
        s3.put_object(Bucket=target, Key=key, Body=json.dumps(body, sort_keys=True).encode())


def delete(controller: Any, volume_id: str) -> None:
    controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id))


# ------------------------------------------------------------ DeleteVolume trusts no record


def test_attack_edited_record_cannot_point_delete_at_another_bucket(
    controller: Any, bucket: str, moto_server: LocalS3
) -> None:
    victim = new_bucket(moto_server)
    put(moto_server, victim, "important/a", "important/deep/b")
    volume = controller.CreateVolume(
        claim(bucket, "pvc-b1", "team-b", "scratch", deleteData="true")
    ).volume
    put(moto_server, bucket, "claims/team-b/scratch/x")
    edit_records(moto_server, bucket, bucket=victim, prefix="important/")

    err = rpc_error(lambda: delete(controller, volume.volume_id))

    assert err.code() == PRECONDITION, err.details()
    assert "does not match the volume id" in (err.details() or "")
    assert keys(moto_server, victim) == ["important/a", "important/deep/b"]
    assert "claims/team-b/scratch/x" in keys(moto_server, bucket)
    assert len(record_keys(moto_server, bucket)) == 1  # nothing dropped either


def test_attack_edited_record_cannot_widen_the_prefix(
    controller: Any, bucket: str, moto_server: LocalS3
) -> None:
    volume = controller.CreateVolume(
        claim(bucket, "pvc-b1", "team-b", "scratch", deleteData="true")
    ).volume
    put(moto_server, bucket, "claims/team-a/data/part-0", "claims/team-b/scratch/x")
    edit_records(moto_server, bucket, prefix="claims/")

    assert rpc_error(lambda: delete(controller, volume.volume_id)).code() == PRECONDITION
    assert "claims/team-a/data/part-0" in keys(moto_server, bucket)
    assert "claims/team-b/scratch/x" in keys(moto_server, bucket)


def test_attack_edited_record_cannot_turn_on_delete_data(
    controller: Any, bucket: str, moto_server: LocalS3
) -> None:
    """A class with deleteData false (Retain data) keeps its data whatever the record says."""
    volume = controller.CreateVolume(claim(bucket, "pvc-a1", "team-a", "data")).volume
    put(moto_server, bucket, "claims/team-a/data/part-0")
    edit_records(moto_server, bucket, delete_data=True)

    assert rpc_error(lambda: delete(controller, volume.volume_id)).code() == PRECONDITION
    assert keys(moto_server, bucket, "claims/") == ["claims/team-a/data/part-0"]
    err = rpc_error(
        lambda: controller.ValidateVolumeCapabilities(
            csi_pb2.ValidateVolumeCapabilitiesRequest(
                volume_id=volume.volume_id,
                volume_capabilities=list(create_request(bucket).volume_capabilities),
            )
        )
    )
    assert err.code() == PRECONDITION


def test_attack_foreign_record_copied_over_another_volumes_record(
    controller: Any, bucket: str, moto_server: LocalS3
) -> None:
    """Team-a's (Retain) record replaced by team-b's legitimate deleteData record: deleting
    team-a's volume must not delete team-b's data (nor team-a's)."""
    s3: Any = moto_server.client()
    controller.CreateVolume(claim(bucket, "pvc-b1", "team-b", "data", deleteData="true"))
    foreign_key = record_keys(moto_server, bucket)[0]
    mine = controller.CreateVolume(claim(bucket, "pvc-a1", "team-a", "data")).volume
    (my_key,) = set(record_keys(moto_server, bucket)) - {foreign_key}
    put(moto_server, bucket, "claims/team-a/data/a", "claims/team-b/data/b")
    foreign = s3.get_object(Bucket=bucket, Key=foreign_key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=my_key, Body=foreign)

    assert rpc_error(lambda: delete(controller, mine.volume_id)).code() == PRECONDITION
    assert keys(moto_server, bucket, "claims/") == ["claims/team-a/data/a", "claims/team-b/data/b"]


def test_legacy_zm1_records_never_delete_data(
    controller: Any, bucket: str, moto_server: LocalS3
) -> None:
    """Volumes made before records were authenticated (zm1 ids, record keyed by the name's
    digest): their records prove nothing, so data is never deleted on their word."""
    s3: Any = moto_server.client()
    ids = {}
    for name, delete_data in (("pvc-old-wipe", True), ("pvc-old-keep", False)):
        digest = hashlib.sha256(name.encode()).hexdigest()[:32]
        record = {
            "version": 1,
            "name": name,
            "bucket": bucket,
            "prefix": f"claims/team-a/{name}/",
            "delete_data": delete_data,
        }
        s3.put_object(Bucket=bucket, Key=f"{RECORDS}{digest}.json", Body=json.dumps(record))
        put(moto_server, bucket, f"claims/team-a/{name}/x")
        ids[name] = f"zm1:{bucket}:{digest}"

    err = rpc_error(lambda: delete(controller, ids["pvc-old-wipe"]))
    assert err.code() == PRECONDITION
    assert "by hand" in (err.details() or "")
    delete(controller, ids["pvc-old-keep"])  # no data to delete: the record just goes
    assert keys(moto_server, bucket, "claims/") == [
        "claims/team-a/pvc-old-keep/x",
        "claims/team-a/pvc-old-wipe/x",
    ]
    assert len(record_keys(moto_server, bucket)) == 1
    # the legacy volume still occupies its prefix
    err = rpc_error(
        lambda: controller.CreateVolume(claim(bucket, "pvc-new", "team-a", "pvc-old-wipe"))
    )
    assert err.code() == PRECONDITION


# ------------------------------------------------------------ no two volumes overlap


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # (basePrefix, namespace, pvc) of two StorageClasses on one bucket
        (("team-x/", "foo", "data"), ("team-x/foo/data/", "team-b", "logs")),  # nests inside
        (("team-x/foo/data/", "team-b", "logs"), ("team-x/", "foo", "data")),  # contains
        (("a/", "team-a", "data"), ("a/team-a/", "data", "")),  # equal (no pvc: request name)
    ],
    ids=["nested-inside", "contains", "equal"],
)
def test_create_volume_refuses_a_prefix_overlapping_another_volumes(
    controller: Any,
    bucket: str,
    moto_server: LocalS3,
    first: tuple[str, str, str],
    second: tuple[str, str, str],
) -> None:
    def request(spec: tuple[str, str, str], name: str) -> Any:
        base, namespace, pvc = spec
        if not pvc:  # no PVC metadata: the prefix is <basePrefix><request name>/
            return claim(bucket, namespace, "", "", basePrefix=base, deleteData="true")
        return claim(bucket, name, namespace, pvc, basePrefix=base, deleteData="true")

    outer = controller.CreateVolume(request(first, "pvc-first")).volume
    err = rpc_error(lambda: controller.CreateVolume(request(second, "pvc-second")))

    assert err.code() == PRECONDITION, err.details()
    assert "overlaps" in (err.details() or "")
    assert len(record_keys(moto_server, bucket)) == 1
    put(moto_server, bucket, f"{outer.volume_context['prefix']}x")
    # a sibling is fine, and the first volume is unaffected
    sibling = claim(bucket, "pvc-sib", "team-z", "data2", basePrefix="team-y/")
    controller.CreateVolume(sibling)
    controller.CreateVolume(request(first, "pvc-first"))  # still idempotent


def test_siblings_sharing_a_name_prefix_do_not_overlap(
    controller: Any, bucket: str, moto_server: LocalS3
) -> None:
    wipe = controller.CreateVolume(claim(bucket, "pvc-1", "ns", "data", deleteData="true")).volume
    controller.CreateVolume(claim(bucket, "pvc-2", "ns", "data2", deleteData="true"))
    put(moto_server, bucket, "claims/ns/data/x", "claims/ns/data2/y")
    delete(controller, wipe.volume_id)
    assert keys(moto_server, bucket, "claims/") == ["claims/ns/data2/y"]


_BASES = st.sampled_from(["", "a/", "a/b/", "a/b/c/", "t/", "t/ns1/"])
_NAMES = st.sampled_from(["ns1", "ns2", "b", "c", "data"])


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    claims=st.lists(
        st.tuples(_BASES, _NAMES, _NAMES, st.booleans()), min_size=2, max_size=6, unique=True
    ),
    victim=st.integers(min_value=0, max_value=5),
)
def test_random_tenants_never_share_or_delete_each_others_data(
    controller: Any,
    moto_server: LocalS3,
    claims: list[tuple[str, str, str, bool]],
    victim: int,
) -> None:
    """Random classes (basePrefix), namespaces and claims on one bucket: the volumes that get
    made never overlap, and deleting any one of them removes exactly its own objects."""
    bucket = new_bucket(moto_server)
    made: dict[str, tuple[str, bool]] = {}  # volume id -> (prefix, deleteData)
    for i, (base, namespace, pvc, wipe) in enumerate(claims):
        request = claim(
            bucket,
            f"pvc-{bucket}-{i}",  # one controller serves every example: names stay unique
            namespace,
            pvc,
            basePrefix=base,
            deleteData="true" if wipe else "false",
        )
        try:
            volume = controller.CreateVolume(request).volume
        except grpc.RpcError as err:
            assert err.code() == PRECONDITION, err.details()
            continue
        made[volume.volume_id] = (volume.volume_context["prefix"], wipe)
    prefixes = [p for p, _ in made.values()]
    for i, a in enumerate(prefixes):
        for b in prefixes[i + 1 :]:
            assert not (a.startswith(b) or b.startswith(a)), (a, b)
    for prefix in prefixes:
        put(moto_server, bucket, f"{prefix}obj")
    put(moto_server, bucket, "outside/obj")
    before = set(keys(moto_server, bucket)) - set(record_keys(moto_server, bucket))
    volume_id = sorted(made)[victim % len(made)]
    prefix, wipe = made[volume_id]
    delete(controller, volume_id)
    after = set(keys(moto_server, bucket)) - set(record_keys(moto_server, bucket))
    assert after == ({k for k in before if not k.startswith(prefix)} if wipe else before)
