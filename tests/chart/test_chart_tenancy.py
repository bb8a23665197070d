"""The chart renders the admin's tenancy policy and the operator's narrowed RBAC (issue 10).

- values ``tenancy`` -> a ConfigMap the operator mounts and reads at start
  (ZONEMOUNT_TENANCY_CONFIG); the operator's own parser reads the rendered file back into the
  policy the values describe, and a changed policy rolls the operator (checksum annotation);
- the operator's ClusterRole has only get/create/patch/delete on StorageClasses and
  PersistentVolumes (no list, watch, update);
- the ValidatingAdmissionPolicy confines those verbs to objects the operator owns: its CEL is
  evaluated here (cel-python) against the admission requests the operator and an attacker
  would send.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from zonemount_operator import tenancy
from zonemount_operator.tenancy import Adoption, Rules, TenancyPolicy

from tests.chart.chartlib import NAMESPACE, Render, by_kind, container, one, pod_spec, run_helm
from tests.chart.chartlib import template_args as args

BUCKET = "team-a-data--use1-az4--x-s3"
CUSTOM: dict[str, Any] = {
    "tenancy": {
        "rolePaths": ["/zonemount/{namespace}/", "/spark/shared/"],
        "importSources": ["s3://landing/public/"],
        "namespaces": {"team-a": {"importSources": ["s3://team-a-raw/"]}},
        "adopt": [{"namespace": "team-a", "name": "data", "bucket": BUCKET}],
    }
}


def tenancy_file(objects: list[dict[str, Any]], tmp_path: Path) -> Path:
    cm = one(objects, "ConfigMap", "-tenancy")
    path = tmp_path / "tenancy.yaml"
    path.write_text(cm["data"]["tenancy.yaml"])
    return path


def test_default_policy_is_rendered_mounted_and_read(render: Render, tmp_path: Path) -> None:
    objects = render()
    policy = tenancy.load(tenancy_file(objects, tmp_path))
    assert policy == TenancyPolicy()  # roles under /zonemount/<namespace>/, nothing else
    operator = one(objects, "Deployment", "-operator")
    main = container(operator, "operator")
    env = {e["name"]: e.get("value") for e in main["env"]}
    mount = next(m for m in main["volumeMounts"] if m["name"] == "tenancy")
    assert env["ZONEMOUNT_TENANCY_CONFIG"] == f"{mount['mountPath']}/tenancy.yaml"
    assert mount["readOnly"] is True
    volume = next(v for v in pod_spec(operator)["volumes"] if v["name"] == "tenancy")
    assert volume["configMap"]["name"] == one(objects, "ConfigMap", "-tenancy")["metadata"]["name"]
    assert one(objects, "ConfigMap", "-tenancy")["metadata"]["namespace"] == NAMESPACE


def test_custom_policy_reaches_the_operator(render: Render, tmp_path: Path) -> None:
    objects = render(CUSTOM)
    policy = tenancy.load(tenancy_file(objects, tmp_path))
    assert policy == TenancyPolicy(
        Rules(("/zonemount/{namespace}/", "/spark/shared/"), ("s3://landing/public/",)),
        {"team-a": Rules((), ("s3://team-a-raw/",))},
        (Adoption("team-a", "data", BUCKET),),
    )
    assert policy.import_sources("team-a") == ("s3://landing/public/", "s3://team-a-raw/")
    assert policy.adoption("team-a", "data") == BUCKET
    before = one(render(), "Deployment", "-operator")["spec"]["template"]["metadata"]
    after = one(objects, "Deployment", "-operator")["spec"]["template"]["metadata"]
    assert before["annotations"]["checksum/tenancy"] != after["annotations"]["checksum/tenancy"]


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"tenancy": {"rolePaths": ["zonemount/"]}}, "/tenancy/rolePaths/0"),
        ({"tenancy": {"importSources": ["https://x/"]}}, "/tenancy/importSources/0"),
        ({"tenancy": {"adopt": [{"namespace": "a", "name": "b"}]}}, "/tenancy/adopt/0"),
        ({"tenancy": {"roles": []}}, "roles"),
    ],
)
def test_schema_rejects_bad_tenancy_values(helm: Path, values: dict[str, Any], key: str) -> None:
    result = run_helm(helm, *args(values, include_crds=False))
    assert result.returncode != 0
    assert key in result.stderr, result.stderr


def test_operator_rbac_on_volumes_and_classes_is_by_name_only(render: Render) -> None:
    role = one(render(), "ClusterRole", "-operator")
    verbs = {
        resource: set(rule["verbs"])
        for rule in role["rules"]
        for resource in rule["resources"]
        if resource in {"persistentvolumes", "storageclasses"}
    }
    assert verbs == {
        "persistentvolumes": {"get", "create", "patch", "delete"},
        "storageclasses": {"get", "create", "patch", "delete"},
    }


# -- the admission policy ------------------------------------------------------------------------
OPERATOR_USER = f"system:serviceaccount:{NAMESPACE}:zm-zonemount-operator"
DRIVER = "s3.csi.zonemount.io"
OWNED = {"app.kubernetes.io/managed-by": "zonemount-operator"}


def pv(labels: dict[str, str] | None, driver: str | None = DRIVER) -> dict[str, Any]:
    spec: dict[str, Any] = {"capacity": {"storage": "1Ti"}}
    if driver:
        spec["csi"] = {"driver": driver, "volumeHandle": "b/p/"}
    else:
        spec["hostPath"] = {"path": "/"}
    meta: dict[str, Any] = {"name": "x"}
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": meta, "spec": spec}


def sc(labels: dict[str, str] | None, provisioner: str = DRIVER) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "x"}
    if labels is not None:
        meta["labels"] = labels
    return {"kind": "StorageClass", "metadata": meta, "provisioner": provisioner}


class Admission:
    """Evaluates the rendered ValidatingAdmissionPolicy the way kube-apiserver does."""

    def __init__(self, policy: dict[str, Any]) -> None:
        env = celpy.Environment()
        spec = policy["spec"]
        self.match = [env.program(env.compile(c["expression"])) for c in spec["matchConditions"]]
        self.variables = [
            (v["name"], env.program(env.compile(v["expression"]))) for v in spec["variables"]
        ]
        self.rules = [env.program(env.compile(v["expression"])) for v in spec["validations"]]
        self.resources = {
            r for rule in spec["matchConstraints"]["resourceRules"] for r in rule["resources"]
        }

    def allowed(
        self, user: str, operation: str, resource: str, new: Any = None, old: Any = None
    ) -> bool:
        if resource not in self.resources:
            return True
        activation: dict[str, Any] = {
            "request": celpy.json_to_cel(
                {
                    "userInfo": {"username": user},
                    "operation": operation,
                    "resource": {"resource": resource},
                }
            ),
            "object": celpy.json_to_cel(new),
            "oldObject": celpy.json_to_cel(old),
        }
        if not all(bool(p.evaluate(activation)) for p in self.match):
            return True  # not the operator: the policy does not apply
        activation["variables"] = celpy.json_to_cel(
            {name: str(p.evaluate(activation)) for name, p in self.variables}
        )
        return all(bool(p.evaluate(activation)) for p in self.rules)


def test_admission_policy_confines_the_operator_to_its_own_objects(render: Render) -> None:
    objects = render()
    policy = one(objects, "ValidatingAdmissionPolicy")
    binding = one(objects, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert policy["spec"]["failurePolicy"] == "Fail"
    gate = Admission(policy)
    op = OPERATOR_USER
    # What the operator does: allowed.
    assert gate.allowed(op, "CREATE", "persistentvolumes", pv(OWNED))
    assert gate.allowed(op, "UPDATE", "persistentvolumes", pv(OWNED), pv(OWNED))
    assert gate.allowed(op, "DELETE", "persistentvolumes", None, pv(OWNED))
    assert gate.allowed(op, "CREATE", "storageclasses", sc(OWNED))
    assert gate.allowed(op, "DELETE", "storageclasses", None, sc(OWNED))
    # What a compromised or confused operator might do: denied.
    assert not gate.allowed(op, "DELETE", "persistentvolumes", None, pv({"app": "db"}))
    assert not gate.allowed(op, "DELETE", "persistentvolumes", None, pv(None))
    assert not gate.allowed(op, "UPDATE", "persistentvolumes", pv(OWNED), pv({"app": "db"}))
    assert not gate.allowed(op, "CREATE", "persistentvolumes", pv(OWNED, driver=None))
    assert not gate.allowed(op, "CREATE", "persistentvolumes", pv(OWNED, "ebs.csi.aws.com"))
    assert not gate.allowed(op, "CREATE", "persistentvolumes", pv(None))
    assert not gate.allowed(op, "CREATE", "storageclasses", sc(OWNED, "ebs.csi.aws.com"))
    assert not gate.allowed(op, "DELETE", "storageclasses", None, sc({"x": "y"}))
    # Everyone else is not matched (the binder, admins).
    assert gate.allowed(
        "system:kube-controller-manager", "DELETE", "persistentvolumes", None, pv(None)
    )


def test_admission_policy_can_be_left_out(render: Render, helm: Path) -> None:
    objects = render({"operator": {"ownedObjectsPolicy": False}})
    assert by_kind(objects, "ValidatingAdmissionPolicy") == []
    assert by_kind(objects, "ValidatingAdmissionPolicyBinding") == []
    # Clusters before 1.30 have no admissionregistration.k8s.io/v1 policies: skipped there.
    old = run_helm(helm, *args(None, include_crds=False), "--kube-version", "1.29.0")
    assert old.returncode == 0, old.stderr
    kinds = {doc["kind"] for doc in yaml.safe_load_all(old.stdout) if doc}
    assert "ValidatingAdmissionPolicy" not in kinds and "Deployment" in kinds


def test_rendered_policy_file_is_plain_yaml(render: Render) -> None:
    """The file is data, not a template: it round-trips and names only known keys."""
    text = one(render(CUSTOM), "ConfigMap", "-tenancy")["data"]["tenancy.yaml"]
    assert set(yaml.safe_load(text)) == {"rolePaths", "importSources", "namespaces", "adopt"}


def test_tenants_get_their_buckets_but_never_status_or_mount_classes(render: Render) -> None:
    role = one(render(), "ClusterRole", "-tenant")
    labels = role["metadata"]["labels"]
    assert labels["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert labels["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    granted = {
        (g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    assert granted == {("zonemount.io", "s3expressbuckets")}
    assert by_kind(render({"tenancy": {"aggregateToEdit": False}}), "ClusterRole") == [
        r for r in by_kind(render(), "ClusterRole") if not r["metadata"]["name"].endswith("-tenant")
    ]
