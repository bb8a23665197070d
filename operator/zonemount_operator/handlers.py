"""Kopf handlers: thin adapters from kopf's causes to the plain reconcile functions.

Rules kept here: every handler has an explicit, stable ``id=`` (renaming a function must not
orphan progress kept in annotations); AWS and Kubernetes clients come from ``memo`` (set up
once by the startup handler, replaceable in tests); status changes go through kopf's
``patch`` (or, for long-running import progress, the KubeClient status subresource);
errors map to kopf's retry semantics in one place, :func:`raise_for`:

    SpecError, BucketNameTakenError, PermanentAwsError  -> kopf.PermanentError (no hot loop)
    AccessDeniedError                                   -> TemporaryError, 120 s
    TransientAwsError, KubeError                        -> TemporaryError, jittered backoff
    DependencyNotReady                                  -> TemporaryError, 10 s

Handlers live in their own registry (:data:`registry`) so that tests and ``zonemount
operator`` run exactly this set. Blocking boto3 work runs in threads (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import kopf

from zonemount_operator import FINALIZER, GROUP, VERSION, tenancy
from zonemount_operator.aws import Boto3BucketAdmin
from zonemount_operator.bucket import (
    delete_bucket_resources,
    detect_drift,
    import_conditions,
    reconcile_bucket,
    run_import,
)
from zonemount_operator.errors import (
    AccessDeniedError,
    BucketNameTakenError,
    DependencyNotReady,
    KubeError,
    PermanentAwsError,
    SpecError,
    TransientAwsError,
    ZonemountError,
)
from zonemount_operator.kube import S3EXPRESSBUCKETS, from_kopf_login
from zonemount_operator.mountclass import delete_mountclass, reconcile_mountclass
from zonemount_operator.spec import parse_bucket

registry = kopf.OperatorRegistry()
BUCKETS = (GROUP, VERSION, "s3expressbuckets")
MOUNTCLASSES = (GROUP, VERSION, "s3mountclasses")
DRIFT_INTERVAL = float(os.environ.get("ZONEMOUNT_DRIFT_INTERVAL", "300"))
RESYNC_INTERVAL = float(os.environ.get("ZONEMOUNT_RESYNC_INTERVAL", "60"))
PROGRESS_INTERVAL = float(os.environ.get("ZONEMOUNT_PROGRESS_INTERVAL", "2"))


@dataclass(frozen=True)
class OperatorConfig:
    """Process-wide settings from the environment (the Helm chart sets them)."""

    endpoint_url: str | None = None  # ZONEMOUNT_AWS_ENDPOINT_URL: local S3/IAM/EC2 (dev, CI)

    @classmethod
    def from_env(cls) -> OperatorConfig:
        return cls(endpoint_url=os.environ.get("ZONEMOUNT_AWS_ENDPOINT_URL") or None)


async def _in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))


async def _reconcile_and_patch(
    name: str, namespace: str | None, spec: Any, status: Any, meta: Any, memo: Any, patch: Any
) -> Any:
    """Run the plain bucket reconcile in a worker thread and patch the status it returns
    (shared by the create/update handler and the drift repair)."""
    outcome = await _in_thread(
        reconcile_bucket,
        name,
        namespace,
        plain(spec),
        plain(status),
        meta.get("generation"),
        admin=memo.admin,
        uid=meta.get("uid"),
        policy=memo.get("tenancy"),
    )
    apply_status(patch, outcome.status)
    return outcome


def plain(value: Any) -> Any:
    """kopf's read-only views -> plain JSON data (reconcile functions take plain data)."""
    return json.loads(json.dumps(value, default=dict)) if value is not None else None


def apply_status(patch: kopf.Patch, status: dict[str, Any]) -> None:
    for key, value in status.items():
        patch.status[key] = value


def backoff(retry: int, base: float = 5.0, cap: float = 300.0) -> float:
    return float(min(cap, base * 2 ** min(retry, 10)) * random.uniform(0.5, 1.0))  # noqa: S311


def raise_for(error: ZonemountError | None, retry: int) -> None:
    """The one mapping from operator errors to kopf's retry semantics."""
    if error is None:
        return
    if isinstance(error, SpecError | BucketNameTakenError | PermanentAwsError):
        raise kopf.PermanentError(str(error))
    if isinstance(error, AccessDeniedError):
        raise kopf.TemporaryError(str(error), delay=120)
    if isinstance(error, DependencyNotReady):
        raise kopf.TemporaryError(str(error), delay=10)
    if isinstance(error, TransientAwsError | KubeError):
        raise kopf.TemporaryError(str(error), delay=backoff(retry))
    raise kopf.TemporaryError(str(error), delay=backoff(retry))


@kopf.on.login(id="zonemount-login", registry=registry)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account, else kubeconfig (evaluated at start, not at import)."""
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
    return info or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup(id="zonemount-startup", registry=registry)
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    config = OperatorConfig.from_env()
    if "config" not in memo:
        memo.config = config
    if "admin" not in memo:
        memo.admin = Boto3BucketAdmin(endpoint_url=memo.config.endpoint_url)
    if "tenancy" not in memo:  # the admin's policy; a bad file stops the operator here
        memo.tenancy = tenancy.load()
    if "kube" not in memo:
        memo.kube = await from_kopf_login()
    logger.info(
        "zonemount operator ready (AWS endpoint: %s)", memo.config.endpoint_url or "AWS default"
    )


@kopf.on.cleanup(id="zonemount-cleanup", registry=registry)
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    kube = memo.get("kube")
    if kube is not None:
        await kube.close()


# -- S3ExpressBucket ---------------------------------------------------------------------------
@kopf.on.resume(*BUCKETS, id="bucket-reconcile", registry=registry)
@kopf.on.create(*BUCKETS, id="bucket-reconcile", registry=registry)
@kopf.on.update(*BUCKETS, id="bucket-reconcile", registry=registry, field="spec")
async def bucket_reconcile(
    *,
    name: str,
    namespace: str | None,
    spec: Any,
    status: Any,
    meta: Any,
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: Any,
    retry: int,
    **_: Any,
) -> None:
    outcome = await _reconcile_and_patch(name, namespace, spec, status, meta, memo, patch)
    for line in outcome.events:
        logger.info(line)
    raise_for(outcome.error, retry)


@kopf.on.delete(*BUCKETS, id="bucket-delete", registry=registry)
async def bucket_delete(
    *,
    name: str,
    namespace: str | None,
    uid: str,
    spec: Any,
    status: Any,
    memo: kopf.Memo,
    logger: Any,
    retry: int,
    **_: Any,
) -> None:
    try:
        done = await _in_thread(
            delete_bucket_resources,
            name,
            plain(spec),
            plain(status),
            memo.admin,
            uid=uid,
            namespace=namespace,
        )
    except ZonemountError as exc:
        raise_for(exc, retry)
        return
    for line in done:
        logger.info(line)


@kopf.timer(
    *BUCKETS,
    id="bucket-drift",
    registry=registry,
    interval=DRIFT_INTERVAL,
    initial_delay=min(DRIFT_INTERVAL, 30.0),
)
async def bucket_drift(
    *,
    name: str,
    namespace: str | None,
    spec: Any,
    status: Any,
    meta: Any,
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: Any,
    **_: Any,
) -> None:
    try:
        drift = await asyncio.to_thread(detect_drift, plain(status) or {}, memo.admin)
    except ZonemountError as exc:
        logger.warning("drift check failed: %s", exc)
        return
    if not drift:
        return
    for line in drift:
        logger.warning("%s: repairing", line)
    await _reconcile_and_patch(name, namespace, spec, status, meta, memo, patch)


def _import_wanted(spec: Any, status: Any, **_: Any) -> bool:
    source = (spec.get("import") or {}).get("source")
    if not source:
        return False
    conds = (status or {}).get("conditions") or []
    bucket_ready = any(c.get("type") == "BucketReady" and c.get("status") == "True" for c in conds)
    imp = (status or {}).get("import") or {}
    return bucket_ready and not (imp.get("source") == source and imp.get("phase") == "Complete")


@kopf.daemon(
    *BUCKETS, id="bucket-import", registry=registry, when=_import_wanted, cancellation_timeout=30
)
async def bucket_import(
    *,
    name: str,
    namespace: str | None,
    spec: Any,
    status: Any,
    meta: Any,
    memo: kopf.Memo,
    logger: Any,
    stopped: Any,
    **_: Any,
) -> None:
    spec_d, status_d = plain(spec), plain(status) or {}
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    last = [0.0]

    def report(imp: dict[str, Any]) -> None:  # called from the copy engine's thread
        if time.monotonic() - last[0] < PROGRESS_INTERVAL:
            return
        last[0] = time.monotonic()
        future = asyncio.run_coroutine_threadsafe(
            memo.kube.patch(
                S3EXPRESSBUCKETS, name, {"status": {"import": imp}}, namespace, "status"
            ),
            loop,
        )
        future.add_done_callback(log_failure)

    def log_failure(future: Any) -> None:
        if not future.cancelled() and future.exception() is not None:
            logger.warning("import progress not written: %s", future.exception())

    async def watch_stop() -> None:
        await stopped.wait()
        stop.set()

    watcher = asyncio.create_task(watch_stop())
    try:
        final = await asyncio.to_thread(
            functools.partial(
                run_import,
                parse_bucket(name, spec_d),
                status_d,
                memo.admin,
                report,
                stop=stop,
                namespace=namespace,
                policy=memo.get("tenancy"),
            )
        )
    except ZonemountError as exc:
        raise kopf.TemporaryError(f"import: {exc}", delay=60) from exc
    finally:
        watcher.cancel()
    status_d["import"] = final
    conds = import_conditions(spec_d, status_d, meta.get("generation"), name)
    await memo.kube.patch(
        S3EXPRESSBUCKETS,
        name,
        {"status": {"import": final, "conditions": conds}},
        namespace,
        "status",
    )
    logger.info(
        "import %s: %s objects copied, %s skipped, %s failed",
        final["phase"],
        final["objectsCopied"],
        final["objectsSkipped"],
        final["objectsFailed"],
    )
    if final["phase"] == "Failed":
        raise kopf.TemporaryError(final.get("message", "import failed"), delay=60)


# -- S3MountClass ------------------------------------------------------------------------------
async def _mountclass(
    *,
    name: str,
    uid: str,
    spec: Any,
    status: Any,
    meta: Any,
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: Any,
    retry: int,
) -> None:
    outcome = await reconcile_mountclass(
        name,
        uid,
        plain(spec),
        plain(status),
        meta.get("generation"),
        kube=memo.kube,
        admin=memo.admin,
        endpoint_url=memo.config.endpoint_url,
    )
    apply_status(patch, outcome.status)
    for line in outcome.events:
        logger.info(line)
    raise_for(outcome.error, retry)


@kopf.on.resume(*MOUNTCLASSES, id="mountclass-reconcile", registry=registry)
@kopf.on.create(*MOUNTCLASSES, id="mountclass-reconcile", registry=registry)
@kopf.on.update(*MOUNTCLASSES, id="mountclass-reconcile", registry=registry, field="spec")
async def mountclass_reconcile(
    *,
    name: str,
    uid: str,
    spec: Any,
    status: Any,
    meta: Any,
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: Any,
    retry: int,
    **_: Any,
) -> None:
    await _mountclass(
        name=name,
        uid=uid,
        spec=spec,
        status=status,
        meta=meta,
        patch=patch,
        memo=memo,
        logger=logger,
        retry=retry,
    )


@kopf.timer(
    *MOUNTCLASSES,
    id="mountclass-resync",
    registry=registry,
    interval=RESYNC_INTERVAL,
    initial_delay=RESYNC_INTERVAL,
)
async def mountclass_resync(
    *,
    name: str,
    uid: str,
    spec: Any,
    status: Any,
    meta: Any,
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: Any,
    **_: Any,
) -> None:
    """Propagate changes of the referenced bucket (zone, readiness) and repair drift."""
    try:
        await _mountclass(
            name=name,
            uid=uid,
            spec=spec,
            status=status,
            meta=meta,
            patch=patch,
            memo=memo,
            logger=logger,
            retry=0,
        )
    except (kopf.TemporaryError, kopf.PermanentError) as exc:
        logger.info("resync: %s", exc)


@kopf.on.delete(*MOUNTCLASSES, id="mountclass-delete", registry=registry)
async def mountclass_delete(
    *, name: str, spec: Any, status: Any, memo: kopf.Memo, logger: Any, retry: int, **_: Any
) -> None:
    try:
        done = await delete_mountclass(name, plain(status), plain(spec) or {}, memo.kube)
    except ZonemountError as exc:
        raise_for(exc, retry)
        return
    for line in done:
        logger.info(line)
