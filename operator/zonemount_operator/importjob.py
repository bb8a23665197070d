"""Large imports as a Kubernetes Indexed Job: render it, run it, aggregate its progress.

An S3ExpressBucket whose ``spec.import.workers`` is above 1 is imported by an Indexed Job
(``completionMode: Indexed``) of that many shards instead of the operator's own thread pool
(the single-pod path stays for small imports). Pod ``i`` runs the same copy engine as
``zonemount sync``: ``zonemount sync SRC s3://BUCKET/PREFIX --shard auto/N --manifest
s3://BUCKET/.zonemount/imports/<CR uid>/`` (``auto``: ``i`` from ``$JOB_COMPLETION_INDEX``),
so shards are disjoint and together complete (:func:`~.transfer.shard_of`) and each keeps its
manifest and ``progress.json`` next to the data (:mod:`.manifest`).

The operator (:func:`run_job_import`, called by the ``bucket-import`` daemon):

* checks that the namespace may import from the source (``bucket.authorize_import``) before it
  creates anything;
* creates the Job once, in the operator's namespace with the import service account (a tenant
  can neither read nor change it), labelled with the owning CR's uid/namespace/name (a
  cross-namespace owner reference is not allowed); an existing Job is used only if its labels
  name this CR's uid;
* every ``poll`` seconds sums the shards' ``progress.json`` into ``status.import`` through the
  one status writer (:class:`~.importstatus.ImportStatusWriter`);
* Kubernetes retries a failed shard pod up to ``backoffLimitPerIndex`` times; if the Job still
  fails, the operator deletes it with ``propagationPolicy: Foreground`` (its pods go before
  it does, so no old worker copies beside the new Job's; the API's default for a Job would
  orphan them) and re-creates it (shards already complete finish at once from their
  manifests) up to ``RECREATE_LIMIT`` times, then reports ``Failed``;
* reports ``Complete`` only when the Job completed and every shard's final ``progress.json``
  says ``complete`` (every listed object recorded in the manifest);
* deletes the Job (``Foreground``) when the S3ExpressBucket is deleted, before its bucket
  (:func:`delete_import_job`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zonemount_operator import conditions
from zonemount_operator.kube import KubeClient, ResourceRef
from zonemount_operator.spec import BucketSpec

JOBS = ResourceRef("batch", "v1", "jobs", namespaced=True)
LABEL_UID = "zonemount.io/owner-uid"
LABEL_NAMESPACE = "zonemount.io/owner-namespace"
LABEL_NAME = "zonemount.io/owner-name"
RECREATE_LIMIT = 3
MANIFEST_ROOT = ".zonemount/imports/"


@dataclass(frozen=True)
class ImportJobSettings:
    """Admin settings (Helm values -> the operator's environment)."""

    image: str = "zonemount:latest"
    namespace: str = "zonemount-system"
    service_account: str = "zonemount-import"
    max_workers: int = 64
    endpoint_url: str | None = None  # the operator's ZONEMOUNT_AWS_ENDPOINT_URL (dev, CI)

    @classmethod
    def from_env(cls, endpoint_url: str | None = None) -> ImportJobSettings:
        env = os.environ
        return cls(
            image=env.get("ZONEMOUNT_IMPORT_IMAGE", cls.image),
            namespace=env.get("ZONEMOUNT_IMPORT_NAMESPACE")
            or env.get("POD_NAMESPACE", cls.namespace),
            service_account=env.get("ZONEMOUNT_IMPORT_SERVICE_ACCOUNT", cls.service_account),
            max_workers=int(env.get("ZONEMOUNT_IMPORT_MAX_WORKERS", cls.max_workers)),
            endpoint_url=endpoint_url,
        )


def job_name(name: str, uid: str) -> str:
    """``zm-import-<name>-<uid8>``, at most 63 characters (a DNS label)."""
    return f"zm-import-{name[:40]}-{uid.replace('-', '')[:8]}".lower()


def manifest_url(bucket: str, uid: str) -> str:
    return f"s3://{bucket}/{MANIFEST_ROOT}{uid}/"


def workers_for(spec: BucketSpec, settings: ImportJobSettings) -> int:
    return max(1, min(spec.import_workers, settings.max_workers))


def render_import_job(
    name: str,
    namespace: str,
    uid: str,
    spec: BucketSpec,
    bucket: str,
    settings: ImportJobSettings,
) -> dict[str, Any]:
    """The Indexed Job that imports ``spec.import_source`` into ``bucket``."""
    from zonemount_operator import names

    assert spec.import_source is not None
    src = names.parse_s3_url(spec.import_source, "spec.import.source")
    workers = workers_for(spec, settings)
    args = [
        "sync",
        spec.import_source,
        f"s3://{bucket}/{src.prefix}",
        "--shard",
        f"auto/{workers}",
        "--manifest",
        manifest_url(bucket, uid),
        "--concurrency",
        str(spec.import_concurrency),
        "--region",
        spec.region,
        "--no-progress",
    ]
    if settings.endpoint_url:
        args += ["--endpoint-url", settings.endpoint_url]
    labels = {
        "app.kubernetes.io/name": "zonemount",
        "app.kubernetes.io/component": "import",
        LABEL_UID: uid,
        LABEL_NAMESPACE: namespace,
        LABEL_NAME: name,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name, uid),
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": {"zonemount.io/import-source": spec.import_source},
        },
        "spec": {
            "completionMode": "Indexed",
            "completions": workers,
            "parallelism": workers,
            "backoffLimitPerIndex": 4,
            "maxFailedIndexes": workers,
            "ttlSecondsAfterFinished": 7 * 24 * 3600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": settings.service_account,
                    "automountServiceAccountToken": True,  # IRSA / Pod Identity need it
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "copy",
                            "image": settings.image,
                            "command": ["zonemount"],
                            "args": args,
                            "env": [{"name": "HOME", "value": "/tmp"}],
                            "resources": {
                                "requests": {"cpu": "1", "memory": "256Mi"},
                                "limits": {"memory": "1Gi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}],
                },
            },
        },
    }


def aggregate(
    source: str, shards: int, docs: Sequence[Mapping[str, Any]], started: str, job: str
) -> dict[str, Any]:
    """Sum the shards' ``progress.json`` into a ``status.import`` (phase Copying)."""

    def total(key: str) -> int:
        return sum(int(d.get(key) or 0) for d in docs)

    elapsed = max((float(d.get("elapsedSeconds") or 0) for d in docs), default=0.0)
    copied = total("bytesCopied")
    out: dict[str, Any] = {
        "source": source,
        "phase": "Copying",
        "objectsCopied": total("objectsCopied"),
        "objectsSkipped": total("objectsSkipped"),
        "objectsFailed": total("objectsFailed"),
        "objectsTotal": total("objectsListed"),
        "bytesCopied": copied,
        "bytesTotal": total("bytesListed"),
        "bytesPerSecond": int(copied / elapsed) if elapsed > 0 else 0,
        "startedAt": started,
        "job": job,
        "shardsTotal": shards,
        "shardsComplete": sum(1 for d in docs if d.get("final") and d.get("complete")),
    }
    errors = [str(d["firstError"]) for d in docs if d.get("firstError")]
    if errors:
        out["message"] = f"shard error: {errors[0]}"
    return out


def job_state(job: Mapping[str, Any] | None) -> str:
    """``Missing``, ``Deleting`` (waiting for its pods to go), ``Running``, ``Complete`` or
    ``Failed`` from the Job's metadata and conditions."""
    if job is None:
        return "Missing"
    if (job.get("metadata") or {}).get("deletionTimestamp"):
        return "Deleting"
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in {"Complete", "Failed"}:
            return str(cond["type"])
    return "Running"


async def run_job_import(
    kube: KubeClient,
    admin: Any,
    name: str,
    namespace: str,
    uid: str,
    spec: BucketSpec,
    status: Mapping[str, Any],
    report: Any,
    stopped: Any,
    settings: ImportJobSettings,
    *,
    policy: Any = None,
    poll: float = 5.0,
) -> dict[str, Any] | None:
    """Drive one Job import to a final ``status.import`` (None: the daemon was stopped)."""
    from zonemount_operator.bucket import authorize_destination, authorize_import, owner_of
    from zonemount_operator.errors import KubeError
    from zonemount_operator.manifest import read_progress, store_for
    from zonemount_operator.tenancy import TenancyPolicy

    assert spec.import_source is not None
    await asyncio.to_thread(
        authorize_import, admin, spec, namespace, policy if policy is not None else TenancyPolicy()
    )
    bucket = str(status["bucketName"])
    owner_uid = owner_of(name, namespace, uid or None).uid  # status is no proof: tags are
    await asyncio.to_thread(authorize_destination, admin, spec.region, bucket, owner_uid)
    body = render_import_job(name, namespace, uid, spec, bucket, settings)
    jname = body["metadata"]["name"]
    workers = body["spec"]["completions"]
    started = (status.get("import") or {}).get("startedAt") or conditions.now_iso()
    store = store_for(manifest_url(bucket, uid), admin.s3(spec.region))
    recreated = 0
    while True:
        job = await kube.get(JOBS, jname, settings.namespace)
        if job is not None and (job["metadata"].get("labels") or {}).get(LABEL_UID) != uid:
            raise KubeError(
                f"Job {settings.namespace}/{jname} exists but is not owned by this "
                f"S3ExpressBucket (label {LABEL_UID}): delete it or rename the bucket",
                409,
            )
        state = job_state(job)
        if state == "Missing":
            await kube.create(JOBS, body, settings.namespace)
            state = "Running"
        docs = await asyncio.to_thread(read_progress, store)
        imp = aggregate(spec.import_source, workers, docs, started, jname)
        if state == "Complete":
            if imp["shardsComplete"] == workers and imp["objectsFailed"] == 0:
                return {**imp, "phase": "Complete", "completedAt": conditions.now_iso()}
            state = "Failed"  # the pods exited 0 but a shard is not provably complete
        if state == "Failed":
            if recreated >= RECREATE_LIMIT:
                message = imp.get("message") or f"Job {jname} failed"
                return {
                    **imp,
                    "phase": "Failed",
                    "completedAt": conditions.now_iso(),
                    "message": f"{message}; re-created {recreated} times",
                }
            recreated += 1
            # Foreground: the Job goes only after its pods (the API's default for a Job
            # orphans them: old workers would keep copying beside the new Job's).
            await kube.delete(JOBS, jname, settings.namespace, propagation="Foreground")
            await _until_gone(kube, jname, settings.namespace, stopped)
            continue
        report(imp)
        if await _wait(stopped, poll):
            return None


async def delete_import_job(
    kube: KubeClient, name: str, uid: str, settings: ImportJobSettings
) -> list[str]:
    """Delete this CR's import Job, if any (``Foreground``: its pods go first), so a deleted
    S3ExpressBucket stops copying into its bucket. A Job not labelled with ``uid`` is left."""
    jname = job_name(name, uid)
    job = await kube.get(JOBS, jname, settings.namespace)
    if job is None or (job["metadata"].get("labels") or {}).get(LABEL_UID) != uid:
        return []
    if not await kube.delete(JOBS, jname, settings.namespace, propagation="Foreground"):
        return []
    return [f"deleted import Job {settings.namespace}/{jname}"]


async def _until_gone(kube: KubeClient, name: str, namespace: str, stopped: Any) -> None:
    for _ in range(120):
        if await kube.get(JOBS, name, namespace) is None or stopped:
            return
        await asyncio.sleep(0.5)


async def _wait(stopped: Any, seconds: float) -> bool:
    """Sleep; True when the daemon was stopped meanwhile."""
    if hasattr(stopped, "wait"):
        await stopped.wait(seconds)
    else:
        await asyncio.sleep(seconds)
    return bool(stopped)
