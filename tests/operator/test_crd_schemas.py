"""The CRDs: structure, printer columns, and every example validated against its schema."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import celpy
import kubernetes_validate
import pytest
import yaml
from zonemount_contract.endpoint import ENDPOINT_URL_RE
from zonemount_operator import conditions, names
from zonemount_operator.errors import SpecError
from zonemount_operator.spec import parse_bucket, parse_mountclass

from tests.operator.crd_validation import CRDS, ROOT, cel_rules, load_crd, schema_of, validate

pytestmark = pytest.mark.unit
EXAMPLES = ROOT / "examples"
VALID = sorted(EXAMPLES.glob("*.yaml"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.yaml"))


def load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


def expectation(path: Path) -> str:
    match = re.search(r"^# expect: (.+)$", path.read_text(), re.MULTILINE)
    assert match, f"{path} needs a '# expect: <error text>' line"
    return match.group(1).strip()


@pytest.mark.parametrize("path", sorted(CRDS.glob("*.yaml")), ids=lambda p: p.name)
def test_crd_is_self_contained_and_valid(path: Path) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) == 1, "one CRD per file (the chart copies them one by one)"
    crd = docs[0]
    kubernetes_validate.validate(crd, "1.30.0", strict=True)
    spec = crd["spec"]
    assert spec["group"] == "zonemount.io"
    assert crd["metadata"]["name"] == f"{spec['names']['plural']}.{spec['group']}"
    assert path.name == f"{spec['names']['plural']}.yaml"
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Bucket"] == ".status.bucketName"
    assert columns["AZ"] == ".status.availabilityZone"
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_scopes() -> None:
    assert load_crd("S3ExpressBucket")["spec"]["scope"] == "Namespaced"
    assert load_crd("S3MountClass")["spec"]["scope"] == "Cluster"


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for key, child in schema.get("properties", {}).items():
        out.extend(_walk(child, f"{path}.{key}"))
    if isinstance(schema.get("items"), dict):
        out.extend(_walk(schema["items"], f"{path}[]"))
    return out


@pytest.mark.parametrize("kind", ["S3ExpressBucket", "S3MountClass"])
def test_schema_is_structural_and_re2_safe(kind: str) -> None:
    for path, node in _walk(schema_of(load_crd(kind))):
        assert "type" in node, f"{kind}{path}: structural schemas need a type everywhere"
        pattern = node.get("pattern")
        if pattern is not None:
            # Kubernetes evaluates patterns with Go's RE2: no lookaround, no backreferences.
            assert not re.search(r"\(\?[=!<]|\\[1-9]", pattern), f"{kind}{path}: {pattern}"
            re.compile(pattern)
        if node.get("type") == "string" and "x-kubernetes-validations" in node:
            # CEL cost estimation needs bounded strings.
            assert "maxLength" in node or "enum" in node, f"{kind}{path} needs maxLength"
    for rule, message in cel_rules(schema_of(load_crd(kind))):
        celpy.Environment().compile(rule)
        assert message, f"CEL rule without a message a person can act on: {rule}"


def test_status_fields_match_design() -> None:
    status = schema_of(load_crd("S3ExpressBucket"))["properties"]["status"]["properties"]
    for field in (
        "bucketName",
        "bucketArn",
        "availabilityZone",
        "availabilityZoneId",
        "endpoint",
        "policyArn",
        "conditions",
        "observedGeneration",
        "import",
    ):
        assert field in status
    types = status["conditions"]["items"]["properties"]["type"]["enum"]
    assert types == ["Ready", "BucketReady", "AccessReady", "ImportComplete"]


@pytest.mark.parametrize(
    ("kind", "conds"),
    [("S3ExpressBucket", conditions.BUCKET), ("S3MountClass", conditions.MOUNTCLASS)],
)
def test_condition_types_are_the_reconcilers_own(kind: str, conds: conditions.Kind) -> None:
    """The CRD admits exactly the condition types its reconcile writes, in the same order."""
    status = schema_of(load_crd(kind))["properties"]["status"]["properties"]
    assert status["conditions"]["items"]["properties"]["type"]["enum"] == list(conds.types)
    assert set(conds.required) < set(conds.types) and conds.types[0] == "Ready"


def test_patterns_agree_with_python_validators() -> None:
    spec = schema_of(load_crd("S3ExpressBucket"))["properties"]["spec"]["properties"]
    assert spec["region"]["pattern"] == names.REGION_RE.pattern
    assert spec["availabilityZone"]["pattern"] == names.AZ_NAME_RE.pattern
    assert spec["availabilityZoneId"]["pattern"] == names.AZ_ID_RE.pattern
    assert spec["baseName"]["pattern"] == names.BASE_NAME_RE.pattern
    for az_id in ("use1-az4", "usw2-az1", "apne1-az4", "euw1-az3", "usw2-lax1-az1"):
        assert re.match(spec["availabilityZoneId"]["pattern"], az_id), az_id
    for bad in ("us-east-1d", "use1", "USE1-AZ4", "use1-az"):
        assert not re.match(spec["availabilityZoneId"]["pattern"], bad), bad
    mountclass = schema_of(load_crd("S3MountClass"))["properties"]["spec"]["properties"]
    assert mountclass["endpointUrl"]["pattern"] == ENDPOINT_URL_RE.pattern


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_examples_pass_schema_and_parse(path: Path) -> None:
    obj = load(path)
    assert validate(obj) == []
    parse = parse_bucket if obj["kind"] == "S3ExpressBucket" else parse_mountclass
    parse(obj["metadata"]["name"], obj["spec"])


def test_there_is_a_minimal_and_a_full_example_of_each_kind() -> None:
    found = {p.name for p in VALID}
    for kind in ("s3expressbucket", "s3mountclass"):
        assert {f"{kind}-minimal.yaml", f"{kind}-full.yaml"} <= found


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_examples_are_rejected_with_a_clear_message(path: Path) -> None:
    errors = validate(load(path))
    assert errors, f"{path.name} was accepted"
    assert any(expectation(path) in e for e in errors), errors


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_reconcile_rejects_what_admission_rejects(path: Path) -> None:
    """``zonemount reconcile`` runs without an API server: its own checks must agree."""
    obj = load(path)
    parse = parse_bucket if obj["kind"] == "S3ExpressBucket" else parse_mountclass
    with pytest.raises(SpecError):
        parse(obj["metadata"]["name"], obj["spec"])


def test_immutable_fields_are_enforced_on_update() -> None:
    old = load(EXAMPLES / "s3expressbucket-minimal.yaml")
    assert validate(old, old=old) == []
    moved = {**old, "spec": {**old["spec"], "availabilityZoneId": "use1-az6"}}
    assert any("availabilityZoneId is immutable" in e for e in validate(moved, old=old))
    renamed = {**old, "spec": {**old["spec"], "baseName": "other"}}
    assert any("baseName is immutable" in e for e in validate(renamed, old=old))
    region = {**old, "spec": {**old["spec"], "region": "us-west-2"}}
    assert any("region is immutable" in e for e in validate(region, old=old))
    mutable = {**old, "spec": {**old["spec"], "deletionPolicy": "Delete"}}
    assert validate(mutable, old=old) == []


def test_defaults_are_applied() -> None:
    from tests.operator.crd_validation import apply_defaults

    obj = apply_defaults(
        schema_of(load_crd("S3MountClass")), load(EXAMPLES / "s3mountclass-minimal.yaml")
    )
    assert obj["spec"]["provisioning"] == "PerClaimPrefix"
    assert obj["spec"]["authenticationSource"] == "driver"
    assert obj["spec"]["reclaimPolicy"] == "Retain"
    assert obj["spec"]["prefix"] == ""


def test_crd_reference_doc_is_up_to_date() -> None:
    from docgen.crds import render

    committed = (ROOT / "docs" / "crds.md").read_text()
    assert render(CRDS) == committed, "docs/crds.md is stale: run 'make crd-docs'"
    for field in ("spec.availabilityZoneId", "spec.mountOptions.allowDelete", "status.policyArn"):
        assert f"`{field}`" in committed


def test_storage_class_name_cannot_be_added_changed_or_removed() -> None:
    """Issue 13: a field-level ``self == oldSelf`` rule runs only when both sides have the
    field, so adding or removing storageClassName slipped through."""
    plain = load(EXAMPLES / "s3mountclass-minimal.yaml")
    named = {**plain, "spec": {**plain["spec"], "storageClassName": "fast"}}
    renamed = {**plain, "spec": {**plain["spec"], "storageClassName": "faster"}}
    message = "storageClassName is immutable"
    assert validate(named, old=named) == [] and validate(plain, old=plain) == []
    for old, new in ((plain, named), (named, plain), (named, renamed)):
        errors = validate(new, old=old)
        assert any(message in e for e in errors), (old["spec"], new["spec"], errors)
        assert all(e.startswith('spec: Invalid value: "object": ') for e in errors), errors
    assert validate(named) == []  # creating with a name is fine


# What kube-apiserver prints for these failures (kubectl output against a real cluster; for CEL,
# newer servers drop the `"object": ` part, so examples expect only the rule's message):
API_SERVER_WORDING = {
    "pattern": 'spec.diet.feedEvery: Invalid value: "whenever": spec.diet.feedEvery in body '
    "should match '^[0-9]+(s|m|h)$'",
    "enum": 'spec.species: Unsupported value: "unicorn": supported values: "cat", "dog"',
    "unknown": 'unknown field "spec.favoriteColor"',
    "cel": 'spec: Invalid value: "object": cacti do not play with toys',
}


def test_local_validator_words_errors_like_the_api_server() -> None:
    import jsonschema

    from tests.operator.crd_validation import api_server_message, run_cel, strict

    schema = strict(
        {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "species": {"type": "string", "enum": ["cat", "dog"]},
                        "diet": {
                            "type": "object",
                            "properties": {
                                "feedEvery": {"type": "string", "pattern": "^[0-9]+(s|m|h)$"}
                            },
                        },
                    },
                }
            },
        }
    )
    bad = {"spec": {"species": "unicorn", "diet": {"feedEvery": "whenever"}, "favoriteColor": "b"}}
    got = {api_server_message(e) for e in jsonschema.Draft4Validator(schema).iter_errors(bad)}
    assert got == {API_SERVER_WORDING[k] for k in ("pattern", "enum", "unknown")}
    rule = {
        "rule": "self.species != 'cactus' || !has(self.toy)",
        "message": "cacti do not play with toys",
    }
    cactus = {"species": "cactus", "toy": "x"}
    cel = run_cel({"x-kubernetes-validations": [rule]}, cactus, None, "spec")
    assert cel == [API_SERVER_WORDING["cel"]]


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_expectations_are_not_local_only_wording(path: Path) -> None:
    """Issue 13: nine ``# expect:`` texts were jsonschema's words, never printed by a cluster."""
    for local_only in ("does not match", "is not one of", "Additional properties", "is a required"):
        assert local_only not in expectation(path), path.name


def test_minimum_kubernetes_version_is_stated_once_and_agrees_with_the_chart() -> None:
    chart = yaml.safe_load((ROOT / "charts" / "zonemount" / "Chart.yaml").read_text())
    doc = (ROOT / "docs" / "operator.md").read_text()
    match = re.search(r"\*\*Minimum Kubernetes version: 1\.(\d+)\*\*", doc)
    assert match, "docs/operator.md must state the minimum Kubernetes version"
    assert chart["kubeVersion"] == f">=1.{match.group(1)}.0-0"
    assert int(match.group(1)) >= 25, "CEL validation rules are on by default from 1.25"
