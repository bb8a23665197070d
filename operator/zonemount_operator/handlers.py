"""Kopf handlers: thin adapters from kopf's causes to the plain reconcile functions.

Rules kept here: every handler has an explicit, stable ``id=`` (renaming a function must not
orphan progress kept in annotations); AWS and Kubernetes clients come from ``memo`` (set up
once by the startup handler, replaceable in tests); every reconcile handler has one shape,
``outcome = reconcile(...)`` -> :func:`settle` (status through kopf's ``patch``, logs,
Events) -> :func:`raise_for` (deletions: :func:`settle_deletion`), and long-running import
progress goes through the KubeClient status subresource instead. Errors map to kopf's
retry semantics in one place, :func:`raise_for`:

    SpecError, BucketNameTakenError, PermanentAwsError  -> kopf.PermanentError (no hot loop)
    AccessDeniedError                                   -> TemporaryError, 120 s
    TransientAwsError, KubeError                        -> TemporaryError, jittered backoff
    DependencyNotReady                                  -> TemporaryError, 10 s

Handlers live in their own registry (:data:`registry`) so that tests and ``zonemount
operator`` run exactly this set. Blocking boto3 work runs in threads (``asyncio.to_thread``).

Writes are level-triggered and minimal: :func:`apply_status` patches only the status keys
whose value changed (an unchanged object is re-reconciled with zero Kubernetes writes) and
never ``status.import``, which belongs to :mod:`zonemount_operator.importstatus`.

Kubernetes Events (``kubectl describe``) are posted explicitly by :func:`announce`: one
Normal event per thing a reconcile did (each outcome line starts with its past-tense verb,
which becomes the reason: ``created StorageClass x`` -> ``Created``), and one event when
``Ready`` changes (Normal ``Ready``, or a Warning with the failing condition's reason).
Handler log lines stay logs (``settings.posting.loggers`` is off): a retry loop does not
flood the object's Events.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kopf
from zonemount_contract.mount_options import DEFAULT_MAX_MEMORY_TARGET_MIB

from zonemount_operator import FINALIZER, GROUP, VERSION, conditions, tenancy
from zonemount_operator.aws import Boto3BucketAdmin
from zonemount_operator.bucket import (
    delete_bucket_resources,
    detect_drift,
    owner_of,
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
from zonemount_operator.importstatus import (
    FINAL_PHASES,
    ImportStatusWriter,
    conditions_disagree,
)
from zonemount_operator.kube import from_kopf_login
from zonemount_operator.mountclass import bucket_users, delete_mountclass, reconcile_mountclass
from zonemount_operator.spec import parse_bucket

registry = kopf.OperatorRegistry()
BUCKETS = (GROUP, VERSION, "s3expressbuckets")
MOUNTCLASSES = (GROUP, VERSION, "s3mountclasses")
DRIFT_INTERVAL = float(os.environ.get("ZONEMOUNT_DRIFT_INTERVAL", "300"))
RESYNC_INTERVAL = float(os.environ.get("ZONEMOUNT_RESYNC_INTERVAL", "60"))
PROGRESS_INTERVAL = float(os.environ.get("ZONEMOUNT_PROGRESS_INTERVAL", "2"))
IMPORT_POLL = 2.0  # seconds between the import daemon's looks at the (in-memory) live body
IMPORT_RETRY = 60.0  # seconds before a failed import is resumed


@dataclass(frozen=True)
class OperatorConfig:
    """Process-wide settings from the environment (the Helm chart sets them)."""

    endpoint_url: str | None = None  # ZONEMOUNT_AWS_ENDPOINT_URL: local S3/IAM/EC2 (dev, CI)
    #: ZONEMOUNT_MOUNT_MEMORY_TARGET_MIB: the node plugin's --max-memory-target (what the
    #: chart gives both), which a class's part sizes are cut to fit (R-FLAGS-MEMORY-TARGET)
    mount_memory_target_mib: int = DEFAULT_MAX_MEMORY_TARGET_MIB

    @classmethod
    def from_env(cls) -> OperatorConfig:
        target = os.environ.get("ZONEMOUNT_MOUNT_MEMORY_TARGET_MIB", "")
        return cls(
            endpoint_url=os.environ.get("ZONEMOUNT_AWS_ENDPOINT_URL") or None,
            mount_memory_target_mib=int(target)
            if target.isdigit() and int(target) > 0
            else DEFAULT_MAX_MEMORY_TARGET_MIB,
        )


async def _in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))


async def _reconcile_bucket(
    name: str, namespace: str | None, spec: Any, status: Any, meta: Any, memo: Any
) -> conditions.Outcome:
    """The plain bucket reconcile, in a worker thread (boto3 blocks)."""
    outcome: conditions.Outcome = await _in_thread(
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
    return outcome


def settle(
    outcome: conditions.Outcome, status: Any, patch: kopf.Patch, body: Any, logger: Any
) -> None:
    """The one way a reconcile's outcome reaches the cluster: patch the changed status keys,
    log what was done and post its Events (kopf's retry comes from :func:`raise_for`)."""
    current = plain(status)
    apply_status(patch, outcome.status, current)
    for line in outcome.events:
        logger.info(line)
    announce(body, outcome.events, current, outcome.status)


def settle_deletion(done: Sequence[str], body: Any, logger: Any) -> None:
    """What a deletion handler did, logged and posted as Events (like :func:`settle`)."""
    for line in done:
        logger.info(line)
    announce(body, done, None, {})


def plain(value: Any) -> Any:
    """kopf's read-only views -> plain JSON data (reconcile functions take plain data)."""
    return json.loads(json.dumps(value, default=dict)) if value is not None else None


# Ready=False reasons that are progress, not trouble: Normal events, not Warnings.
PROGRESSING = frozenset({"ImportPending", "Reconciling", "BucketNotReady", "WaitingForBucket"})
IMPORT_OWNED = frozenset({"import"})  # written only through importstatus.ImportStatusWriter


def apply_status(
    patch: kopf.Patch, status: Mapping[str, Any], current: Mapping[str, Any] | None
) -> None:
    """Patch the status keys that differ from ``current`` (none: no write at all)."""
    current = current or {}
    for key, value in status.items():
        if key in IMPORT_OWNED:
            continue
        if value is None and current.get(key) is None:
            continue
        if current.get(key) != value:
            patch.status[key] = value


def _ready(status: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return conditions.get((status or {}).get("conditions"), "Ready") or {}


def announce(
    body: Any, lines: Sequence[str], old: Mapping[str, Any] | None, new: Mapping[str, Any]
) -> None:
    """Post the Events of one reconcile (see the module docstring)."""
    with contextlib.suppress(LookupError):  # outside kopf's runtime (unit tests): no poster
        _announce(body, lines, old, new)


def _announce(
    body: Any, lines: Sequence[str], old: Mapping[str, Any] | None, new: Mapping[str, Any]
) -> None:
    for line in lines:
        kopf.info(body, reason=line.split(" ", 1)[0].capitalize(), message=line)
    before, after = _ready(old), _ready(new)
    if (before.get("status"), before.get("reason")) == (after.get("status"), after.get("reason")):
        return
    if after.get("status") == "True":
        kopf.info(body, reason="Ready", message=str(after.get("message", "")))
    elif after.get("reason") in PROGRESSING:
        kopf.info(body, reason=str(after["reason"]), message=str(after.get("message", "")))
    elif after:
        kopf.warn(body, reason=str(after.get("reason")), message=str(after.get("message", "")))


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
    settings.posting.enabled = True  # Events for `kubectl describe` (the chart grants them)
    settings.posting.loggers = False  # explicit events only, see announce()
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
    body: Any,
    **_: Any,
) -> None:
    outcome = await _reconcile_bucket(name, namespace, spec, status, meta, memo)
    settle(outcome, status, patch, body, logger)
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
    body: Any,
    meta: Any,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    """Delete what the bucket owns, but only once nothing uses it: like Kubernetes'
    ``kubernetes.io/pvc-protection``, the finalizer stays (Ready=False ``BucketInUse``
    names the users) while an S3MountClass points at it."""
    current = plain(status) or {}
    users = await bucket_users(memo.kube, namespace, name)
    if users:
        message = (
            f"deletion waits: still used by {', '.join(users)}; delete them or point them at "
            "another bucket, and the deletion continues"
        )
        new = {
            "conditions": conditions.hold_ready(
                conditions.BUCKET,
                current.get("conditions"),
                "BucketInUse",
                message,
                meta.get("generation"),
            )
        }
        apply_status(patch, new, current)
        announce(body, [], current, new)
        raise kopf.TemporaryError(message, delay=10)
    stopped_job: list[str] = []
    if int(((plain(spec) or {}).get("import") or {}).get("workers") or 1) > 1:  # a Job copies
        from zonemount_operator import importjob

        settings = importjob.ImportJobSettings.from_env(memo.config.endpoint_url)
        stopped_job = await importjob.delete_import_job(memo.kube, name, uid, settings)
    try:
        done = stopped_job + await _in_thread(
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
    settle_deletion(done, body, logger)


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
    body: Any,
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
        kopf.warn(body, reason="Drift", message=f"{line}: repairing")
    outcome = await _reconcile_bucket(name, namespace, spec, status, meta, memo)
    settle(outcome, status, patch, body, logger)


def import_wanted(spec: Mapping[str, Any], status: Mapping[str, Any] | None) -> bool:
    """An import is due: a source, the bucket exists, and no final result for that source
    (``Copying`` after a restart means unfinished: resume, copied objects are skipped)."""
    source = (spec.get("import") or {}).get("source")
    if not source:
        return False
    status = status or {}
    if not conditions.is_true(status.get("conditions"), "BucketReady"):
        return False
    imp = status.get("import") or {}
    return not (imp.get("source") == source and imp.get("phase") in FINAL_PHASES)


def _has_import_source(spec: Any, **_: Any) -> bool:
    return bool((spec.get("import") or {}).get("source"))


@kopf.daemon(
    *BUCKETS,
    id="bucket-import",
    registry=registry,
    when=_has_import_source,
    cancellation_backoff=20,
    cancellation_timeout=30,
)
async def bucket_import(
    *,
    name: str,
    namespace: str | None,
    body: Any,
    memo: kopf.Memo,
    logger: Any,
    stopped: Any,
    **_: Any,
) -> None:
    """One long-lived loop per bucket with an import source: it never returns on its own
    (kopf does not restart a daemon that did, so a later spec edit would never import), and
    it reads the live ``body`` each turn, so a restart or a new source is picked up."""
    while not stopped:
        spec = plain(body.get("spec")) or {}
        status = plain(body.get("status")) or {}
        generation = body.get("metadata", {}).get("generation")
        try:
            if import_wanted(spec, status):
                writer = ImportStatusWriter(memo.kube, name, namespace, interval=PROGRESS_INTERVAL)
                try:
                    final = await _import_once(
                        name, namespace, body, spec, status, generation, memo, writer, stopped
                    )
                finally:
                    await writer.close()
                if final is not None:
                    _announce_import(body, final, logger)
                    await _until_seen(body, final, stopped)
                    if final["phase"] == "Failed":
                        await stopped.wait(IMPORT_RETRY)
                        continue
            elif conditions_disagree(spec, status, generation, name):
                writer = ImportStatusWriter(memo.kube, name, namespace)
                try:
                    written = await writer.sync_conditions(spec, generation)
                    if written is not None:
                        logger.info("ImportComplete repaired from status.import")
                        announce(body, [], status, written)
                finally:
                    await writer.close()
        except ZonemountError as exc:
            logger.warning("import: %s (retrying in %ss)", exc, IMPORT_RETRY)
            await stopped.wait(IMPORT_RETRY)
            continue
        await stopped.wait(IMPORT_POLL)


async def _import_once(
    name: str,
    namespace: str | None,
    body: Any,
    spec: dict[str, Any],
    status: dict[str, Any],
    generation: int | None,
    memo: Any,
    writer: ImportStatusWriter,
    stopped: Any,
) -> dict[str, Any] | None:
    """Run the copy in a thread; progress and the result go through ``writer``. Returns
    the final ``status.import``, or None when the daemon was stopped mid-copy."""
    stop = threading.Event()

    async def watch_stop() -> None:
        await stopped.wait()
        stop.set()

    parsed = parse_bucket(name, spec)
    if parsed.import_workers > 1:  # large imports: an Indexed Job (importjob.py)
        from zonemount_operator import importjob

        job_final = await importjob.run_job_import(
            memo.kube,
            memo.admin,
            name,
            namespace or "default",
            str(body.get("metadata", {}).get("uid", "")),
            parsed,
            status,
            writer.report,
            stopped,
            importjob.ImportJobSettings.from_env(memo.config.endpoint_url),
            policy=memo.get("tenancy"),
        )
        if job_final is None:
            return None
        written = await writer.finish(job_final, spec, generation)
        announce(body, [], status, written)
        return job_final
    watcher = asyncio.create_task(watch_stop())
    try:
        final: dict[str, Any] = await asyncio.to_thread(
            functools.partial(
                run_import,
                parse_bucket(name, spec),
                status,
                memo.admin,
                writer.report,
                stop=stop,
                namespace=namespace,
                policy=memo.get("tenancy"),
                owner_uid=owner_of(name, namespace, body.get("metadata", {}).get("uid")).uid,
            )
        )
    finally:
        watcher.cancel()
    if stop.is_set() and final["phase"] not in FINAL_PHASES:
        return None  # stopped: the last progress stands; the next daemon resumes
    written = await writer.finish(final, spec, generation)
    announce(body, [], status, written)  # Ready may have changed with ImportComplete
    return final


async def _until_seen(body: Any, final: Mapping[str, Any], stopped: Any) -> None:
    """Wait (bounded) until the live body shows the result we wrote, so the next turn does
    not mistake a watch event still in flight for an import still to do."""
    for _ in range(60):
        imp = (plain(body.get("status")) or {}).get("import") or {}
        if stopped or (imp.get("source"), imp.get("phase")) == (final["source"], final["phase"]):
            return
        await stopped.wait(0.5)


def _announce_import(body: Any, final: Mapping[str, Any], logger: Any) -> None:
    line = (
        f"import {final['phase']}: {final['objectsCopied']} objects copied, "
        f"{final['objectsSkipped']} skipped, {final['objectsFailed']} failed"
    )
    logger.info(line)
    if final["phase"] == "Failed":
        kopf.warn(body, reason="ImportFailed", message=str(final.get("message", line)))
    else:
        kopf.info(body, reason="ImportComplete", message=line)


# -- S3MountClass ------------------------------------------------------------------------------
async def _reconcile_mountclass(
    name: str, uid: str, spec: Any, status: Any, meta: Any, memo: Any
) -> conditions.Outcome:
    return await reconcile_mountclass(
        name,
        uid,
        plain(spec),
        plain(status),
        meta.get("generation"),
        kube=memo.kube,
        admin=memo.admin,
        endpoint_url=memo.config.endpoint_url,
        memory_target_mib=memo.config.mount_memory_target_mib,
    )


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
    body: Any,
    **_: Any,
) -> None:
    outcome = await _reconcile_mountclass(name, uid, spec, status, meta, memo)
    settle(outcome, status, patch, body, logger)
    raise_for(outcome.error, retry)


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
    body: Any,
    **_: Any,
) -> None:
    """Propagate changes of the referenced bucket (zone, readiness) and repair drift."""
    outcome = await _reconcile_mountclass(name, uid, spec, status, meta, memo)
    settle(outcome, status, patch, body, logger)
    try:
        raise_for(outcome.error, 0)
    except (kopf.TemporaryError, kopf.PermanentError) as exc:
        logger.info("resync: %s", exc)


@kopf.on.delete(*MOUNTCLASSES, id="mountclass-delete", registry=registry)
async def mountclass_delete(
    *,
    name: str,
    spec: Any,
    status: Any,
    memo: kopf.Memo,
    logger: Any,
    retry: int,
    body: Any,
    **_: Any,
) -> None:
    try:
        done = await delete_mountclass(name, plain(status), plain(spec) or {}, memo.kube)
    except ZonemountError as exc:
        raise_for(exc, retry)
        return
    settle_deletion(done, body, logger)
