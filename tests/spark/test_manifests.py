"""The Kubernetes examples of docs/spark/ are valid and wired together.

storage.yaml's custom resources pass the CRD schemas (with CEL) and the operator's parser, its
PVC passes Kubernetes' own schema; the two SparkApplications mount the claims and
StorageClasses storage.yaml defines, with the settings docs/spark.md recommends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from zonemount_operator.spec import parse_bucket, parse_mountclass

from tests.operator.crd_validation import validate

pytestmark = pytest.mark.unit
DOCS = Path(__file__).resolve().parents[2] / "docs" / "spark"
PREFIX = "spark.kubernetes.executor.volumes.persistentVolumeClaim."


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DOCS / name).read_text()) if d]


def storage() -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs("storage.yaml")}


def test_storage_resources_are_valid() -> None:
    objs = storage()
    for key, obj in objs.items():
        if obj["kind"] in ("S3ExpressBucket", "S3MountClass"):
            assert validate(obj) == [], key
            parse = parse_bucket if obj["kind"] == "S3ExpressBucket" else parse_mountclass
            parse(obj["metadata"]["name"], obj["spec"])
        else:
            kubernetes_validate.validate(obj, "1.30.0", strict=True)
    classes = {k: v for k, v in objs.items() if k.startswith("S3MountClass/")}
    modes = {v["spec"]["provisioning"] for v in classes.values()}
    assert modes == {"Static", "PerClaimPrefix"}
    for mc in classes.values():
        opts = mc["spec"]["mountOptions"]
        assert opts["allowDelete"] and opts["allowOverwrite"], "the committer needs both"


@pytest.mark.parametrize(
    "name", ["sparkapplication-static-pvc.yaml", "sparkapplication-ondemand.yaml"]
)
def test_spark_applications_use_the_storage(name: str) -> None:
    (app,) = docs(name)
    assert app["apiVersion"] == "sparkoperator.k8s.io/v1beta2"
    assert app["kind"] == "SparkApplication"
    conf = app["spec"]["sparkConf"]
    assert all(isinstance(v, str) for v in conf.values()), "sparkConf values must be strings"
    objs = storage()
    pvc = objs["PersistentVolumeClaim/spark-data"]
    for role in ("driver", "executor"):
        key = f"spark.kubernetes.{role}.volumes.persistentVolumeClaim.data.options.claimName"
        assert conf[key] == pvc["metadata"]["name"]
    assert conf["spark.speculation"] == "false"
    assert "spark.jars.packages" not in conf and "spark.local.dir" not in conf
    for arg in app["spec"]["arguments"]:
        assert arg.startswith("file:///data/")


def test_on_demand_claims_come_from_the_per_claim_class() -> None:
    (app,) = docs("sparkapplication-ondemand.yaml")
    conf = app["spec"]["sparkConf"]
    per_claim = next(
        v
        for k, v in storage().items()
        if k.startswith("S3MountClass/") and v["spec"]["provisioning"] == "PerClaimPrefix"
    )
    assert conf[PREFIX + "scratch.options.claimName"] == "OnDemand"
    assert conf[PREFIX + "scratch.options.storageClass"] == per_claim["spec"]["storageClassName"]
    assert conf[PREFIX + "scratch.options.sizeLimit"].endswith("Gi")
    assert conf[PREFIX + "scratch.mount.path"] == "/scratch"
