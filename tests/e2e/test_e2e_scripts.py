"""Static checks of the kind e2e (e2e/), which needs Docker and so cannot run here.

- run.sh and lib.sh parse (bash -n) and pass shellcheck (with a control that shellcheck bites);
  run.sh really runs up to its preflight and fails there with the step named, given a Docker
  client whose engine is unreachable.
- Every manifest parses; built-in kinds validate strictly with kubernetes-validate; the
  zonemount custom resources validate against the CRD schemas in crds/ with unknown fields
  treated as errors (the API server would silently prune them).
- The pieces agree: the moto Service's fixed ClusterIP is inside kind's service subnet and is
  the endpoint in values-e2e.yaml; claims use the StorageClasses the S3MountClasses name;
  every file run.sh refers to exists; the moto image's Dockerfile passes hadolint.
- moto_ctl.py (piped into the moto pod by run.sh) runs against a real moto server.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
E2E = REPO / "e2e"
SCRIPTS = (E2E / "run.sh", E2E / "lib.sh")
MANIFESTS = sorted((E2E / "manifests").glob("*.yaml"))
K8S_VERSION = "1.30"


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def shellcheck() -> str:
    found = shutil.which("shellcheck")
    if found is None:
        pytest.fail("shellcheck is missing: `make setup` installs it (EXTRA_APT_PACKAGES)")
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_parses(script: Path) -> None:
    result = subprocess.run(
        ["bash", "-n", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_shellcheck_clean() -> None:
    result = subprocess.run(
        [shellcheck(), "-x", "--severity=style", *map(str, SCRIPTS)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_control_flags_a_bad_script(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/bash\nfor f in $(ls *.yaml); do kubectl apply -f $f; done\n")
    result = subprocess.run([shellcheck(), str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "SC2045" in result.stdout or "SC2086" in result.stdout


def test_run_sh_is_strict_and_cleans_up() -> None:
    text = (E2E / "run.sh").read_text()
    assert os.access(E2E / "run.sh", os.X_OK)
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -Eeuo pipefail" in text
    assert "trap on_exit EXIT" in text
    assert "kind delete cluster" in text
    # never touches the user's kubeconfig
    assert 'export KUBECONFIG="${ARTIFACTS}/kubeconfig"' in text


def stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_run_sh_stops_at_preflight_without_a_docker_engine(tmp_path: Path) -> None:
    """Run the real script with a Docker client whose engine is unreachable (as here)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub(bin_dir, "docker", 'echo "Cannot connect to the Docker daemon" >&2; exit 1')
    stub(bin_dir, "kind", 'echo "kind v0.27.0"; [ "$1" = version ]')
    stub(bin_dir, "kubectl", "exit 0")
    stub(bin_dir, "helm", 'echo "v4.1.4"')
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HELM": str(bin_dir / "helm"),
        "E2E_ARTIFACTS": str(tmp_path / "artifacts"),
        "HOME": str(tmp_path),
    }
    result = subprocess.run(
        ["bash", str(E2E / "run.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "== step 1: preflight" in result.stderr
    assert "FAILED in step 1 (preflight): the Docker engine is not reachable" in result.stderr
    assert "deleting kind cluster" not in result.stderr, "it created no cluster, so deletes none"


@pytest.mark.parametrize(
    "path", [*MANIFESTS, E2E / "kind-config.yaml", E2E / "values-e2e.yaml"], ids=lambda p: p.name
)
def test_yaml_parses(path: Path) -> None:
    assert load_all(path)


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for path in sorted((REPO / "crds").glob("*.yaml")):
        for crd in load_all(path):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            for version in crd["spec"]["versions"]:
                api = f"{crd['spec']['group']}/{version['name']}"
                schemas[(api, crd["spec"]["names"]["kind"])] = closed(
                    version["schema"]["openAPIV3Schema"]
                )
    return schemas


def closed(schema: Any) -> Any:
    """OpenAPI v3 schema -> JSON Schema where unknown fields are errors (not pruned)."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
        out["properties"] = {**out["properties"], **_meta_fields(out["properties"])}
    return out


def _meta_fields(props: dict[str, Any]) -> dict[str, Any]:
    # the root object of a CR also carries apiVersion/kind/metadata (not always declared)
    if "spec" in props:
        return {k: {} for k in ("apiVersion", "kind", "metadata") if k not in props}
    return {}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_validate(path: Path) -> None:
    schemas = crd_schemas()
    for obj in load_all(path):
        key = (obj["apiVersion"], obj["kind"])
        if obj["apiVersion"].startswith("zonemount.io/"):
            if not schemas:
                pytest.skip("crds/ has no CRD yet")
            assert key in schemas, f"{key} is not defined by crds/"
            try:
                jsonschema.Draft7Validator(schemas[key]).validate(obj)
            except jsonschema.ValidationError as exc:
                pytest.fail(f"{path.name}: {obj['kind']}/{obj['metadata']['name']}: {exc.message}")
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_crd_schema_check_rejects_a_typo() -> None:
    """Control: a misspelt spec field fails the CRD schema check above."""
    schemas = crd_schemas()
    if not schemas:
        pytest.skip("crds/ has no CRD yet")
    bucket = next(
        o
        for o in load_all(E2E / "manifests" / "zonemount-e2e.yaml")
        if o["kind"] == "S3ExpressBucket"
    )
    bucket["spec"]["deletionPolicyy"] = "Delete"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schemas[("zonemount.io/v1alpha1", "S3ExpressBucket")]).validate(
            bucket
        )


def test_moto_endpoint_is_consistent() -> None:
    moto = {o["kind"]: o for o in load_all(E2E / "manifests" / "moto.yaml")}
    cluster_ip = ipaddress.ip_address(moto["Service"]["spec"]["clusterIP"])
    port = moto["Service"]["spec"]["ports"][0]["port"]
    kind_config = load_all(E2E / "kind-config.yaml")[0]
    subnet = ipaddress.ip_network(kind_config["networking"]["serviceSubnet"])
    assert cluster_ip in subnet
    roles = [n["role"] for n in kind_config["nodes"]]
    assert roles.count("control-plane") == 1 and roles.count("worker") >= 2
    values = load_all(E2E / "values-e2e.yaml")[0]
    endpoint = urlparse(values["aws"]["endpointUrl"])
    assert (endpoint.hostname, endpoint.port) == (str(cluster_ip), port)
    assert values["aws"]["endpointUrl"] in values["aws"]["allowedEndpointUrls"]
    container = moto["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["imagePullPolicy"] == "Never", "run.sh loads e2e-moto:e2e into kind"


def test_claims_use_the_storage_classes_the_mount_classes_create() -> None:
    classes = {
        o["spec"]["storageClassName"]: o["spec"]["provisioning"]
        for o in load_all(E2E / "manifests" / "zonemount-e2e.yaml")
        if o["kind"] == "S3MountClass"
    }
    static = next(
        o
        for o in load_all(E2E / "manifests" / "static-writer.yaml")
        if o["kind"] == "PersistentVolumeClaim"
    )
    assert classes[static["spec"]["storageClassName"]] == "Static"
    for pod in load_all(E2E / "manifests" / "per-pod-claims.yaml"):
        template = pod["spec"]["volumes"][0]["ephemeral"]["volumeClaimTemplate"]
        assert classes[template["spec"]["storageClassName"]] == "PerClaimPrefix"


def test_files_run_sh_refers_to_exist() -> None:
    text = (E2E / "run.sh").read_text()
    here = set(re.findall(r"\$HERE/([\w./-]+)", text))
    repo = set(re.findall(r"\$REPO/([\w./-]+)", text)) - {"tools/helm", ".venv/bin/python", "tools"}
    assert {"lib.sh", "kind-config.yaml", "values-e2e.yaml", "moto_ctl.py"} <= here
    for rel in here:
        assert (E2E / rel).exists(), f"run.sh uses e2e/{rel}, which does not exist"
    for rel in repo:
        if "*" in rel or rel == "examples":
            continue
        assert (REPO / rel).exists(), f"run.sh uses {rel}, which does not exist"
    pods = {o["metadata"]["name"] for p in MANIFESTS for o in load_all(p) if o["kind"] == "Pod"}
    for pod in ("static-writer", "static-reader", "static-survivor", "claim-a", "claim-b"):
        assert pod in pods and pod in text


def test_moto_image_dockerfile_lints() -> None:
    hadolint = REPO / ".venv" / "bin" / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "style", str(E2E / "images" / "moto.Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def moto_ctl(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MOTO_ENDPOINT": endpoint}
    return subprocess.run(
        [sys.executable, str(E2E / "moto_ctl.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_moto_ctl_against_a_real_moto_server(moto_server: Any, bucket: str) -> None:
    client = moto_server.client()
    client.put_object(Bucket=bucket, Key="static/run/hello.txt", Body=b"hi")
    client.put_object(Bucket=bucket, Key="claims/a/owner-claim-a", Body=b"a")
    role = "arn:aws:iam::123456789012:role/e2e-moto-ctl"
    first = moto_ctl(moto_server.endpoint, "create-roles", role)
    assert first.returncode == 0 and "created role e2e-moto-ctl" in first.stdout, first.stderr
    again = moto_ctl(moto_server.endpoint, "create-roles", role)
    assert again.returncode == 0 and "role e2e-moto-ctl exists" in again.stdout
    keys = moto_ctl(moto_server.endpoint, "list-keys", bucket, "static/")
    assert keys.stdout.splitlines() == ["static/run/hello.txt"]
    assert moto_ctl(moto_server.endpoint, "bucket-exists", bucket).stdout.strip() == "yes"
    assert moto_ctl(moto_server.endpoint, "bucket-exists", "zm-never-made").stdout.strip() == "no"
    seeded = moto_ctl(moto_server.endpoint, "seed", f"{bucket}-src", "tables/events/")
    assert seeded.returncode == 0, seeded.stderr
    listed = moto_ctl(moto_server.endpoint, "list-keys", f"{bucket}-src", "tables/")
    assert len(listed.stdout.splitlines()) == 3
    directory = "e2e-logs--use1-az4--x-s3"
    made = moto_ctl(moto_server.endpoint, "create-bucket", directory, "us-east-1")
    assert made.returncode == 0, made.stderr
    assert moto_ctl(moto_server.endpoint, "bucket-exists", directory).stdout.strip() == "yes"
    bad = moto_ctl(moto_server.endpoint, "list-keys", "zm-never-made")
    assert bad.returncode == 1
    assert len(bad.stderr.strip().splitlines()) == 1 and "NoSuchBucket" in bad.stderr


def test_e2e_workloads_meet_the_restricted_pod_security_standard() -> None:
    """The e2e namespace enforces `restricted`; its pods must qualify or they never start."""
    namespace = next(
        o for o in load_all(E2E / "manifests" / "zonemount-e2e.yaml") if o["kind"] == "Namespace"
    )
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = [o for p in MANIFESTS for o in load_all(p) if o["kind"] == "Pod"]
    assert len(pods) == 5
    for pod in pods:
        assert pod["metadata"]["namespace"] == "zonemount-e2e"
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not any(k.startswith("host") for k in spec)
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
        for volume in spec["volumes"]:
            assert set(volume) - {"name"} <= {"persistentVolumeClaim", "ephemeral", "emptyDir"}
