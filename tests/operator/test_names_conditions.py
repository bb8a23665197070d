"""Pure modules: bucket names, ARNs, URLs, and the shape of conditions."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st
from zonemount_operator import conditions, names
from zonemount_operator.errors import SpecError

pytestmark = pytest.mark.unit

BASES = st.from_regex(r"[a-z0-9]([a-z0-9]|-(?=[a-z0-9])){1,30}[a-z0-9]", fullmatch=True)
AZ_IDS = st.from_regex(r"(use1|usw2|apne1|euw1)-az[1-6]", fullmatch=True)


@given(BASES, AZ_IDS)
def test_built_names_parse_back(base: str, az_id: str) -> None:
    name = names.directory_bucket_name(base, az_id)
    assert len(name) <= 63 and name.endswith("--x-s3")
    parsed = names.parse_directory_bucket(name)
    assert parsed is not None and (parsed.base, parsed.az_id) == (base, az_id)


@pytest.mark.parametrize(
    ("base", "fragment"),
    [
        ("Data", "is not a valid bucket base name"),
        ("da--ta", "is not a valid bucket base name"),
        ("-data", "is not a valid bucket base name"),
        ("xn--data", "is not a valid bucket base name"),
        ("sthree-data", "reserved by S3"),
        ("a" * 48, "shorten baseName to at most 47 characters"),
    ],
)
def test_bad_base_names(base: str, fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        names.directory_bucket_name(base, "use1-az4")


def test_parse_and_build_helpers() -> None:
    assert names.parse_directory_bucket("plain-bucket") is None
    assert names.parse_directory_bucket("a--b--use1-az4--x-s3") is None
    assert names.directory_bucket_arn("cn-north-1", "1" * 12, "b--cnn1-az1--x-s3") == (
        "arn:aws-cn:s3express:cn-north-1:111111111111:bucket/b--cnn1-az1--x-s3"
    )
    uid = "6f1c2b8e-0d3a-4c1e-9b7a-2f4e5d6c7b8a"
    assert names.policy_arn("us-east-1", "1" * 12, uid) == (
        f"arn:aws:iam::111111111111:policy/zonemount/zonemount-{uid}"
    )
    with pytest.raises(SpecError, match="is not a Kubernetes uid"):
        names.policy_name("../x")
    assert names.parse_role_arn("arn:aws:iam::111122223333:role/a/b/spark") == names.RoleArn(
        "aws", "111122223333", "/a/b/", "spark"
    )
    assert names.default_base_name("team-a", "data") == "team-a-data"
    assert names.default_base_name(None, "data") == "data"
    long = names.default_base_name("analytics-platform-prod", "nightly.events.v2")
    assert long == "analytics-platform-prod-nightly-" + long[-8:] and len(long) <= 40
    assert names.role_name_from_arn("arn:aws:iam::111122223333:role/team/spark") == "spark"
    with pytest.raises(SpecError, match="is not an IAM role ARN"):
        names.role_name_from_arn("spark")
    assert names.parse_s3_url("s3://bucket/a/b/") == names.S3Url("bucket", "a/b/")
    assert str(names.parse_s3_url("s3://bucket")) == "s3://bucket/"
    with pytest.raises(SpecError, match="is not an s3:// URL"):
        names.parse_s3_url("https://bucket/x")
    with pytest.raises(SpecError, match="availabilityZoneId 'us-east-1d' is not an AZ ID"):
        names.validate_az_id("us-east-1d")


T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(hours=1)
ORDER = conditions.BUCKET_TYPES
REQ = ("BucketReady", "AccessReady")


def test_transition_time_moves_only_when_status_changes() -> None:
    first = conditions.with_ready(
        None,
        [
            conditions.make("BucketReady", True, "BucketReady", "ok", 1, now=T0),
            conditions.make("AccessReady", False, "AccessDenied", "no", 1, now=T0),
        ],
        ORDER,
        REQ,
        1,
        now=T0,
    )
    assert [c["type"] for c in first] == ["Ready", "BucketReady", "AccessReady"]
    ready = conditions.get(first, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "AccessDenied")
    second = conditions.with_ready(
        first,
        [
            conditions.make("BucketReady", True, "BucketReady", "ok", 2, now=T1),
            conditions.make("AccessReady", True, "PolicyAttached", "yes", 2, now=T1),
        ],
        ORDER,
        REQ,
        2,
        now=T1,
    )
    by_type = {c["type"]: c for c in second}
    assert by_type["BucketReady"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert by_type["AccessReady"]["lastTransitionTime"] == "2026-01-01T01:00:00Z"
    assert by_type["Ready"]["status"] == "True"
    assert by_type["Ready"]["observedGeneration"] == 2


def test_ready_is_unknown_until_everything_is_known() -> None:
    out = conditions.with_ready(
        None,
        [conditions.make("BucketReady", None, "Waiting", "w", None, now=T0)],
        ORDER,
        REQ,
        None,
        now=T0,
    )
    ready = conditions.get(out, "Ready")
    assert ready is not None and ready["status"] == "Unknown" and "observedGeneration" not in ready


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:5000", "https://s3.us-east-1.amazonaws.com", "http://[::1]:9000/"]
)
def test_endpoint_urls_accepted(url: str) -> None:
    assert names.validate_endpoint_url(url) == url


@pytest.mark.parametrize(
    "url", ["notaurl", "ftp://host", "http://", "http:///x", "http://a b", "", "http://h:99999"]
)
def test_endpoint_urls_refused_with_the_fix(url: str) -> None:
    with pytest.raises(
        SpecError, match=r"is not an? .*URL.*: expected http://HOST:PORT or https://"
    ):
        names.validate_endpoint_url(url, "spec.endpointUrl")


def _steps() -> tuple[conditions.Step[list[str]], ...]:
    def ok(ctx: list[str], out: conditions.StatusBuilder) -> None:
        ctx.append("bucket")
        out.fields["bucketName"] = "b"
        out.set("BucketReady", True, "BucketReady", "there")

    def denied(ctx: list[str], out: conditions.StatusBuilder) -> None:
        ctx.append("access")
        raise SpecError("role r is not allowed", reason="RoleNotAllowed")

    def never(ctx: list[str], out: conditions.StatusBuilder) -> None:
        ctx.append("import")

    return (
        conditions.Step("bucket", "BucketReady", ok),
        conditions.Step(
            "access", "AccessReady", denied, (("ImportComplete", "WaitingForAccess", "w"),)
        ),
        conditions.Step("import", "ImportComplete", never),
    )


def test_a_failed_step_stops_the_run_and_says_why_in_its_condition() -> None:
    calls: list[str] = []
    previous = {"conditions": [conditions.make("BucketReady", True, "BucketReady", "x", 1, now=T0)]}
    out = conditions.StatusBuilder(conditions.BUCKET, {**previous, "keep": 1}, 2, now=T1)
    outcome = conditions.run_steps(_steps(), calls, out)
    assert calls == ["bucket", "access"]  # ordered; nothing after the failed step runs
    assert isinstance(outcome.error, SpecError) and not outcome.ready
    assert outcome.status["keep"] == 1 and outcome.status["bucketName"] == "b"
    assert outcome.status["observedGeneration"] == 2
    by_type = {c["type"]: c for c in outcome.status["conditions"]}
    assert (by_type["AccessReady"]["status"], by_type["AccessReady"]["reason"]) == (
        "False",
        "RoleNotAllowed",
    )
    assert by_type["ImportComplete"]["status"] == "Unknown"
    assert (by_type["Ready"]["status"], by_type["Ready"]["reason"]) == ("False", "RoleNotAllowed")
    # BucketReady stayed True: its transition time is the first one's
    assert by_type["BucketReady"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert by_type["AccessReady"]["lastTransitionTime"] == "2026-01-01T01:00:00Z"


def test_hold_ready_overrides_only_ready() -> None:
    held = conditions.hold_ready(
        conditions.BUCKET,
        [conditions.make("BucketReady", True, "BucketReady", "x", 1, now=T0)],
        "BucketInUse",
        "waits",
        1,
        now=T1,
    )
    assert [(c["type"], c["status"], c["reason"]) for c in held] == [
        ("Ready", "False", "BucketInUse"),
        ("BucketReady", "True", "BucketReady"),
    ]


def test_a_reconcile_writes_camelcase_reasons_only() -> None:
    out = conditions.StatusBuilder(conditions.BUCKET, None, 1, now=T0)
    out.set("BucketReady", True, "BucketReady", "ok")
    with pytest.raises(AssertionError, match="'bucket ready' is not CamelCase"):
        out.set("BucketReady", False, "bucket ready", "no")
