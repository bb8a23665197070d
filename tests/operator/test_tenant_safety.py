"""Issue 10's attacks on the operator, each as a regression test (reconcile against moto).

A hostile tenant controls only its own S3ExpressBucket specs (and, at worst, their status).
Each test plays one attack from docs/security.md and checks both halves of the defence:
the attacker's CR gets Ready=False with a reason naming the rule and the fix, and the
victim's bucket, objects, lifecycle and IAM policy are exactly as they were. "No AWS write"
is checked by recording every operation the operator's botocore clients send.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from zonemount_cli.servers import LocalS3
from zonemount_operator import conditions, importjob, names
from zonemount_operator.aws import Boto3BucketAdmin
from zonemount_operator.bucket import delete_bucket_resources, reconcile_bucket, run_import
from zonemount_operator.kube import S3EXPRESSBUCKETS, KubeClient
from zonemount_operator.mountclass import reconcile_mountclass
from zonemount_operator.spec import DEFAULT_ABORT_MPU_DAYS, parse_bucket
from zonemount_operator.tenancy import Adoption, NotAllowedError, Rules, TenancyPolicy

from tests.operator.operator_testlib import KubeApiThread, unique_base
from tests.operator.test_mountclass import run

pytestmark = pytest.mark.integration

READ_PREFIXES = ("Get", "List", "Head", "Describe")


class Recorder:
    """Every AWS operation a Boto3BucketAdmin sends, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def hook(self, client: Any) -> None:
        client.meta.events.register("before-call", self._record)

    def _record(self, model: Any, **_: Any) -> None:
        self.calls.append(model.name)

    def writes(self) -> list[str]:
        return [c for c in self.calls if not c.startswith(READ_PREFIXES)]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def watched(s3_env: dict[str, str], moto_server: LocalS3, recorder: Recorder) -> Boto3BucketAdmin:
    """A second admin on the same moto whose calls are recorded (the attacker's reconciles)."""
    return Boto3BucketAdmin(
        endpoint_url=moto_server.endpoint, max_attempts=2, event_hooks=recorder.hook
    )


@pytest.fixture
def teams() -> tuple[str, str]:
    """Two fresh namespaces (the moto server lives for the whole session)."""
    tag = uuid.uuid4().hex[:6]
    return f"team-a-{tag}", f"team-b-{tag}"


def ready(status: dict[str, Any]) -> dict[str, Any]:
    found = conditions.get(status["conditions"], "Ready")
    assert found is not None
    return dict(found)


def new_uid() -> str:
    return str(uuid.uuid4())


def snapshot(admin: Boto3BucketAdmin, status: dict[str, Any]) -> dict[str, Any]:
    """What the victim cares about: objects, lifecycle, tags, policy document and roles."""
    bucket = status["bucketName"]
    s3 = admin.s3("us-east-1")
    objects = {
        o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    }
    out: dict[str, Any] = {
        "objects": objects,
        "lifecycle": admin.lifecycle("us-east-1", bucket),
        "tags": admin.bucket_tags("us-east-1", bucket),
    }
    if status.get("policyArn"):
        iam = admin.client("iam", "us-east-1")
        policy = iam.get_policy(PolicyArn=status["policyArn"])["Policy"]
        out["policyVersion"] = policy["DefaultVersionId"]
        out["roles"] = admin.attached_roles(status["policyArn"])
    return out


def zonal(*, az_id: bool = False, **fields: Any) -> dict[str, Any]:
    """A us-east-1 bucket spec in us-east-1d, named by the AZ or by its ID (use1-az4 in moto's
    account: the same zone), plus ``fields``."""
    zone = {"availabilityZoneId": "use1-az4"} if az_id else {"availabilityZone": "us-east-1d"}
    return {"region": "us-east-1", **zone, **fields}


def victim(
    admin: Boto3BucketAdmin, role: Callable[..., str], team_a: str, base: str | None = None
) -> dict[str, Any]:
    """The status of team-a's Ready bucket `data` with a role, a 30-day lifecycle and one
    object."""
    spec = zonal(lifecycle={"expireAfterDays": 30}, access={"roleArns": [role(team_a)]})
    if base:
        spec["baseName"] = base
    out = reconcile_bucket("data", team_a, spec, None, 1, admin=admin, uid=new_uid())
    assert out.ready, out.status
    admin.s3("us-east-1").put_object(
        Bucket=out.status["bucketName"], Key="important/report.csv", Body=b"team-a's data"
    )
    return out.status


# -- bucket takeover -------------------------------------------------------------------------
def test_same_name_in_two_namespaces_gets_two_buckets(
    teams: tuple[str, str], admin: Boto3BucketAdmin, role: Callable[..., str]
) -> None:
    """Both namespaces have `data` (no baseName): two buckets, neither touches the other."""
    team_a, team_b = teams
    a = victim(admin, role, team_a)
    before = snapshot(admin, a)
    spec_b = zonal(lifecycle={"expireAfterDays": 1}, access={"roleArns": [role(team_b)]})
    b = reconcile_bucket("data", team_b, spec_b, None, 1, admin=admin, uid=new_uid())
    assert b.ready, b.status
    assert a["bucketName"] == f"{team_a}-data--use1-az4--x-s3"
    assert b.status["bucketName"] == f"{team_b}-data--use1-az4--x-s3"
    assert b.status["policyArn"] != a["policyArn"]
    assert snapshot(admin, a) == before


def test_explicit_base_name_of_another_tenant_is_refused(
    teams: tuple[str, str],
    admin: Boto3BucketAdmin,
    watched: Boto3BucketAdmin,
    recorder: Recorder,
    role: Callable[..., str],
) -> None:
    """team-b names team-a's bucket: no lifecycle rewrite, no policy re-point, no delete."""
    team_a, team_b = teams
    base = unique_base()
    a = victim(admin, role, team_a, base)
    before = snapshot(admin, a)
    uid_b = new_uid()
    spec_b = zonal(
        baseName=base,
        deletionPolicy="Delete",
        lifecycle={"expireAfterDays": 1},
        access={"roleArns": [role(team_b)]},
    )
    out = reconcile_bucket("data", team_b, spec_b, None, 1, admin=watched, uid=uid_b)
    assert not out.ready
    cond = ready(out.status)
    assert cond["reason"] == "BucketOwnedByAnother"
    assert f"belongs to S3ExpressBucket {team_a}/data" in cond["message"]
    assert "choose another spec.baseName" in cond["message"]
    assert recorder.writes() == []
    # team-b deletes its object (deletionPolicy: Delete) with a status naming the bucket.
    done = delete_bucket_resources(
        "data",
        spec_b,
        {**out.status, "bucketName": a["bucketName"]},
        watched,
        uid=uid_b,
        namespace=team_b,
    )
    assert f"left bucket {a['bucketName']} alone" in done[-1]
    assert recorder.writes() == []
    assert snapshot(admin, a) == before


def test_status_pointing_at_another_bucket_deletes_nothing(
    teams: tuple[str, str], admin: Boto3BucketAdmin, role: Callable[..., str]
) -> None:
    """A tenant that can write its CR's status names team-a's bucket: delete leaves it."""
    team_a, team_b = teams
    a = victim(admin, role, team_a)
    before = snapshot(admin, a)
    spec_b = zonal(deletionPolicy="Delete")
    uid_b = new_uid()
    out = reconcile_bucket("own", team_b, spec_b, None, 1, admin=admin, uid=uid_b)
    assert out.ready
    forged = {**out.status, "bucketName": a["bucketName"], "policyArn": a["policyArn"]}
    done = delete_bucket_resources("own", spec_b, forged, admin, uid=uid_b, namespace=team_b)
    assert done == [
        f"left bucket {a['bucketName']} alone: it belongs to S3ExpressBucket {team_a}/data, "
        f"not S3ExpressBucket {team_b}/own"
    ]
    assert snapshot(admin, a) == before


def test_untagged_bucket_is_not_adopted_without_admin_opt_in(
    teams: tuple[str, str], admin: Boto3BucketAdmin, watched: Boto3BucketAdmin, recorder: Recorder
) -> None:
    """A pre-existing bucket (migration) needs an adopt entry; with it, it becomes owned."""
    team_a, team_b = teams
    base = unique_base()
    bucket = f"{base}--use1-az4--x-s3"
    admin.create_directory_bucket("us-east-1", bucket, "use1-az4")  # no owner tags
    admin.s3("us-east-1").put_object(Bucket=bucket, Key="old", Body=b"legacy")
    spec = zonal(az_id=True, baseName=base)
    uid = new_uid()
    out = reconcile_bucket("data", team_a, spec, None, 1, admin=watched, uid=uid)
    assert ready(out.status)["reason"] == "BucketNotManaged"
    assert f"namespace: {team_a}, name: data, bucket: {bucket}" in ready(out.status)["message"]
    assert recorder.writes() == []
    assert admin.lifecycle("us-east-1", bucket) == []

    wrong = TenancyPolicy(adoptions=(Adoption(team_b, "data", bucket),))
    out = reconcile_bucket("data", team_a, spec, None, 1, admin=watched, uid=uid, policy=wrong)
    assert ready(out.status)["reason"] == "BucketNotManaged"

    opt_in = TenancyPolicy(adoptions=(Adoption(team_a, "data", bucket),))
    out = reconcile_bucket("data", team_a, spec, None, 1, admin=watched, uid=uid, policy=opt_in)
    assert out.ready, out.status
    assert out.events == [f"adopted directory bucket {bucket}: tenancy adopt entry"]
    owner = names.owner_from_tags(admin.bucket_tags("us-east-1", bucket))
    assert owner == names.Owner(uid, team_a, "data")
    # Owned now: later reconciles need no adopt entry.
    again = reconcile_bucket("data", team_a, spec, out.status, 1, admin=admin, uid=uid)
    assert again.ready and again.events == []


def test_bucket_recorded_by_an_earlier_release_needs_adoption(
    teams: tuple[str, str], admin: Boto3BucketAdmin
) -> None:
    """status.bucketName from a release whose default name was metadata.name: no new bucket."""
    team_a, _team_b = teams
    legacy = f"{unique_base()}--use1-az4--x-s3"
    spec = zonal(az_id=True)
    out = reconcile_bucket(
        "data", team_a, spec, {"bucketName": legacy}, 1, admin=admin, uid=new_uid()
    )
    assert ready(out.status)["reason"] == "AdoptionRequired"
    assert f"bucket: {legacy}" in ready(out.status)["message"]
    buckets = {b["Name"] for b in admin.s3("us-east-1").list_directory_buckets()["Buckets"]}
    assert f"{team_a}-data--use1-az4--x-s3" not in buckets


# -- role ARNs ---------------------------------------------------------------------------------
def test_foreign_account_role_is_never_mapped_to_a_local_role(
    teams: tuple[str, str],
    admin: Boto3BucketAdmin,
    watched: Boto3BucketAdmin,
    recorder: Recorder,
    role: Callable[..., str],
) -> None:
    _team_a, team_b = teams
    local = role(team_b)
    name = local.rsplit("/", 1)[1]
    foreign = f"arn:aws:iam::999999999999:role/zonemount/{team_b}/{name}"
    spec = zonal(az_id=True, baseName=unique_base(), access={"roleArns": [foreign]})
    out = reconcile_bucket("data", team_b, spec, None, 1, admin=watched, uid=new_uid())
    cond = ready(out.status)
    assert cond["reason"] == "ForeignAccountRole"
    assert "999999999999" in cond["message"] and "123456789012" in cond["message"]
    assert recorder.writes() == []
    iam = admin.client("iam", "us-east-1")
    assert iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"] == []
    # Not even an admin path grant makes a foreign account local.
    generous = TenancyPolicy(Rules(role_paths=("/",)))
    out = reconcile_bucket(
        "data", team_b, spec, None, 1, admin=watched, uid=new_uid(), policy=generous
    )
    assert ready(out.status)["reason"] == "ForeignAccountRole"
    assert recorder.writes() == []


def test_role_outside_the_namespace_path_is_refused(
    teams: tuple[str, str],
    admin: Boto3BucketAdmin,
    watched: Boto3BucketAdmin,
    recorder: Recorder,
    role: Callable[..., str],
) -> None:
    """team-b names team-a's role (or any role at /): refused, until the admin allows it."""
    team_a, team_b = teams
    for target in (role(team_a), role(path="/")):
        spec = zonal(az_id=True, baseName=unique_base(), access={"roleArns": [target]})
        out = reconcile_bucket("data", team_b, spec, None, 1, admin=watched, uid=new_uid())
        cond = ready(out.status)
        assert cond["reason"] == "RoleNotAllowed", cond
        assert f"allowed: /zonemount/{team_b}/" in cond["message"]
        assert recorder.writes() == []
    shared = role(path="/spark/shared/")
    policy = TenancyPolicy(namespaces={team_b: Rules(role_paths=("/spark/shared/",))})
    spec["access"] = {"roleArns": [shared]}
    out = reconcile_bucket(
        "data", team_b, spec, None, 1, admin=watched, uid=new_uid(), policy=policy
    )
    assert out.ready, out.status
    assert admin.attached_roles(out.status["policyArn"]) == {shared.rsplit("/", 1)[1]}


def test_role_path_in_the_arn_must_be_the_real_one(
    teams: tuple[str, str],
    admin: Boto3BucketAdmin,
    watched: Boto3BucketAdmin,
    recorder: Recorder,
    role: Callable[..., str],
) -> None:
    """IAM role names ignore the path: role/zonemount/team-b/X would reach the real X at /."""
    _team_a, team_b = teams
    real = role(path="/")
    name = real.rsplit("/", 1)[1]
    spoofed = f"arn:aws:iam::123456789012:role/zonemount/{team_b}/{name}"
    spec = zonal(az_id=True, baseName=unique_base(), access={"roleArns": [spoofed]})
    out = reconcile_bucket("data", team_b, spec, None, 1, admin=watched, uid=new_uid())
    cond = ready(out.status)
    assert cond["reason"] == "RoleArnMismatch"
    assert real in cond["message"]
    assert recorder.writes() == []


def test_policies_are_keyed_by_owner_and_never_shared(
    teams: tuple[str, str], admin: Boto3BucketAdmin, role: Callable[..., str]
) -> None:
    """Removing team-b's roles deletes team-b's policy only; team-a's role stays attached."""
    team_a, team_b = teams
    a = victim(admin, role, team_a)
    before = snapshot(admin, a)
    uid_b = new_uid()
    spec_b = zonal(access={"roleArns": [role(team_b)]})
    b = reconcile_bucket("data", team_b, spec_b, None, 1, admin=admin, uid=uid_b)
    assert b.status["policyArn"].endswith(f"/zonemount/zonemount-{uid_b}")
    tags = admin.policy_tags(b.status["policyArn"])
    assert tags is not None and names.owner_from_tags(tags) == names.Owner(uid_b, team_b, "data")
    spec_b["access"] = {}
    b = reconcile_bucket("data", team_b, spec_b, b.status, 2, admin=admin, uid=uid_b)
    assert b.ready
    delete_bucket_resources("data", spec_b, b.status, admin, uid=uid_b, namespace=team_b)
    assert snapshot(admin, a) == before


# -- import: confused deputy -------------------------------------------------------------------
def test_import_from_another_tenants_bucket_is_refused(
    teams: tuple[str, str],
    admin: Boto3BucketAdmin,
    watched: Boto3BucketAdmin,
    recorder: Recorder,
    role: Callable[..., str],
) -> None:
    team_a, team_b = teams
    a = victim(admin, role, team_a)
    source = f"s3://{a['bucketName']}/important/"
    spec_b = zonal(az_id=True, baseName=unique_base(), **{"import": {"source": source}})
    out = reconcile_bucket("steal", team_b, spec_b, None, 1, admin=watched, uid=new_uid())
    cond = ready(out.status)
    assert cond["reason"] == "ImportSourceNotAllowed"
    assert f"it belongs to S3ExpressBucket {team_a}/data" in cond["message"]
    assert recorder.writes() == []
    # The copy entry point checks too, before copying anything (e.g. a status forged Ready).
    dst = f"{spec_b['baseName']}--use1-az4--x-s3"
    with pytest.raises(NotAllowedError, match="not a bucket namespace"):
        run_import(
            parse_bucket("steal", spec_b),
            {"bucketName": dst},
            watched,
            lambda _: None,
            namespace=team_b,
            owner_uid=new_uid(),
        )
    assert recorder.writes() == []


def test_import_from_own_or_admin_listed_sources_works(
    teams: tuple[str, str], admin: Boto3BucketAdmin, role: Callable[..., str], bucket: str
) -> None:
    team_a, team_b = teams
    a = victim(admin, role, team_a)
    source = f"s3://{a['bucketName']}/important/"
    own = zonal(az_id=True, baseName=unique_base(), **{"import": {"source": source}})
    uid = new_uid()
    out = reconcile_bucket("copy", team_a, own, None, 1, admin=admin, uid=uid)
    assert conditions.get(out.status["conditions"], "BucketReady")["status"] == "True"  # type: ignore[index]
    final = run_import(
        parse_bucket("copy", own),
        out.status,
        admin,
        lambda _: None,
        namespace=team_a,
        owner_uid=uid,
    )
    assert final["phase"] == "Complete" and final["objectsCopied"] == 1

    admin.s3("us-east-1").put_object(Bucket=bucket, Key="public/x", Body=b"x")
    listed = {**own, "baseName": unique_base(), "import": {"source": f"s3://{bucket}/public/"}}
    refused = reconcile_bucket("pub", team_b, listed, None, 1, admin=admin, uid=new_uid())
    assert ready(refused.status)["reason"] == "ImportSourceNotAllowed"
    policy = TenancyPolicy(Rules(role_paths=(), import_sources=(f"s3://{bucket}/public/",)))
    out = reconcile_bucket(
        "pub", team_b, listed, None, 1, admin=admin, uid=new_uid(), policy=policy
    )
    assert ready(out.status)["reason"] == "ImportPending"
    # A listed prefix covers whole path segments only.
    sibling = {**listed, "import": {"source": f"s3://{bucket}/public-secret/"}}
    out = reconcile_bucket(
        "pub2", team_b, sibling, None, 1, admin=admin, uid=new_uid(), policy=policy
    )
    assert ready(out.status)["reason"] == "ImportSourceNotAllowed"


def test_import_into_a_bucket_named_by_a_forged_status_copies_nothing(
    teams: tuple[str, str],
    admin: Boto3BucketAdmin,
    watched: Boto3BucketAdmin,
    recorder: Recorder,
    role: Callable[..., str],
) -> None:
    """team-b forges status.bucketName = team-a's bucket and imports its own data into it."""
    team_a, team_b = teams
    a = victim(admin, role, team_a)
    before = snapshot(admin, a)
    uid_b = new_uid()
    spec_b = zonal()
    own = reconcile_bucket("junk", team_b, spec_b, None, 1, admin=admin, uid=uid_b)
    admin.s3("us-east-1").put_object(
        Bucket=own.status["bucketName"], Key="important/report.csv", Body=b"junk"
    )
    spec_b["import"] = {"source": f"s3://{own.status['bucketName']}/important/"}  # its own: allowed
    with pytest.raises(NotAllowedError, match=f"import destination {a['bucketName']} is not this"):
        run_import(
            parse_bucket("junk", spec_b),
            {**own.status, "bucketName": a["bucketName"]},
            watched,
            lambda _: None,
            namespace=team_b,
            owner_uid=uid_b,
        )
    assert recorder.writes() == []
    assert snapshot(admin, a) == before


class Stopped:
    """A daemon's ``stopped`` flag that is already set (kopf's DaemonStopped stand-in)."""

    def __bool__(self) -> bool:
        return True

    async def wait(self, seconds: float | None = None) -> None:
        return None


def test_job_import_into_a_bucket_named_by_a_forged_status_starts_no_job(
    teams: tuple[str, str],
    admin: Boto3BucketAdmin,
    role: Callable[..., str],
    kube_api: KubeApiThread,
) -> None:
    """The Indexed-Job import path checks the destination before it creates the Job."""
    team_a, team_b = teams
    a = victim(admin, role, team_a)
    uid_b = new_uid()
    spec_b = zonal()
    own = reconcile_bucket("big", team_b, spec_b, None, 1, admin=admin, uid=uid_b)
    spec_b["import"] = {"source": f"s3://{own.status['bucketName']}/x/", "workers": 4}
    settings = importjob.ImportJobSettings(image="zm:1", namespace="zm", service_account="imp")
    with pytest.raises(NotAllowedError, match=f"import destination {a['bucketName']} is not this"):
        run(
            kube_api,
            lambda k: importjob.run_job_import(
                k,
                admin,
                "big",
                team_b,
                uid_b,
                parse_bucket("big", spec_b),
                {**own.status, "bucketName": a["bucketName"]},
                lambda _: None,
                Stopped(),  # without the check: one pass (creates the Job), then stop
                settings,
                poll=0,
            ),
        )
    assert [w for w in kube_api.writes() if w[1] == "jobs"] == []


# -- issue 11: abort incomplete multipart uploads by default -----------------------------------
def test_abort_incomplete_uploads_rule_is_on_by_default(admin: Boto3BucketAdmin) -> None:
    spec = zonal(az_id=True, baseName=unique_base())
    uid = new_uid()
    out = reconcile_bucket("b", "ns", spec, None, 1, admin=admin, uid=uid)
    rules = admin.lifecycle("us-east-1", out.status["bucketName"])
    assert rules == [
        {
            "ID": "zonemount-abort-mpu",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": DEFAULT_ABORT_MPU_DAYS},
        }
    ]
    spec["lifecycle"] = {"abortIncompleteMultipartUploadAfterDays": 0}  # explicit opt-out
    out = reconcile_bucket("b", "ns", spec, out.status, 2, admin=admin, uid=uid)
    assert out.ready and admin.lifecycle("us-east-1", out.status["bucketName"]) == []


# -- a forged status cannot aim a StorageClass at another tenant's bucket -----------------------
def test_mount_class_refuses_a_bucket_the_referenced_object_does_not_own(
    teams: tuple[str, str],
    admin: Boto3BucketAdmin,
    role: Callable[..., str],
    kube_api: KubeApiThread,
) -> None:
    """team-b writes its S3ExpressBucket's status (Ready, team-a's bucket); an admin's
    S3MountClass referencing team-b's object must not get a StorageClass for team-a's data."""
    team_a, team_b = teams
    a = victim(admin, role, team_a)
    spec_b = zonal()

    async def create(k: KubeClient) -> Any:
        body = {
            "apiVersion": "zonemount.io/v1alpha1",
            "kind": "S3ExpressBucket",
            "metadata": {"name": "data", "namespace": team_b},
            "spec": spec_b,
        }
        return (await k.create(S3EXPRESSBUCKETS, body, team_b))["metadata"]["uid"]

    uid_b = run(kube_api, create)  # assigned by the API server
    own = reconcile_bucket("data", team_b, spec_b, None, 1, admin=admin, uid=uid_b)
    assert own.ready

    def put(status: dict[str, Any]) -> None:
        run(
            kube_api,
            lambda k: k.patch(S3EXPRESSBUCKETS, "data", {"status": status}, team_b, "status"),
        )

    def reconcile() -> Any:
        return run(
            kube_api,
            lambda k: reconcile_mountclass(
                "b-class",
                "u",
                {"bucketRef": {"name": "data", "namespace": team_b}},
                None,
                1,
                kube=k,
                admin=admin,
            ),
        )

    put({**own.status, "bucketName": a["bucketName"]})  # forged by team-b
    out = reconcile()
    assert ready(out.status)["reason"] == "BucketNotOwned"
    assert f"owner tags name S3ExpressBucket {team_a}/data" in ready(out.status)["message"]
    assert kube_api.object("storageclasses", "b-class") is None

    put(own.status)  # what the operator wrote
    out = reconcile()
    assert out.ready, out.status
    sc = kube_api.object("storageclasses", "b-class")
    assert sc["parameters"]["bucketName"] == own.status["bucketName"]
