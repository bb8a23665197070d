"""Helpers shared by the operator tests: fault injection, a threaded kmock API, names, and the
file-tree and bucket digests the copy tests compare."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from botocore.awsrequest import AWSResponse


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def aws_error(status: int, code: str, message: str = "injected") -> Callable[..., AWSResponse]:
    """A ``before-send`` handler answering with an S3/IAM-style XML error."""
    body = (
        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
        f"<Message>{message}</Message><RequestId>x</RequestId></Error>"
    ).encode()

    def handler(request: Any, **_: Any) -> AWSResponse:
        return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, _Raw(body))

    return handler


def unique_base() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def express_bucket_cr(
    name: str, base: str, spec: Mapping[str, Any] | None = None, namespace: str = "spark"
) -> dict[str, Any]:
    """An S3ExpressBucket CR: region us-east-1, zone use1-az4, base name ``base``, its bucket
    deleted with it (``deletionPolicy: Delete``); ``spec`` adds to (or overrides) that."""
    return {
        "apiVersion": "zonemount.io/v1alpha1",
        "kind": "S3ExpressBucket",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "region": "us-east-1",
            "availabilityZoneId": "use1-az4",
            "baseName": base,
            "deletionPolicy": "Delete",
            **(spec or {}),
        },
    }


def write_tree(
    root: Path, sizes: Mapping[str, int], randbytes: Callable[[int], bytes]
) -> dict[str, str]:
    """Files of ``sizes`` (relative path -> bytes) under ``root``; their sha256 by that path."""
    digests = {}
    for rel, size in sizes.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = randbytes(size)
        path.write_bytes(data)
        digests[rel] = hashlib.sha256(data).hexdigest()
    return digests


def tree_digests(root: Path) -> dict[str, str]:
    """The sha256 of every file under ``root`` by its relative POSIX path."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def s3_digests(s3: Any, bucket: str, prefix: str) -> dict[str, str]:
    """The sha256 of every object under ``prefix`` (all pages) by its key less the prefix."""
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            out[item["Key"][len(prefix) :]] = hashlib.sha256(body).hexdigest()
    return out


class KubeApiThread:
    """A kmock Kubernetes API (:class:`~tests.operator.kube_emulator.RealisticKubernetes`:
    generations, status subresource, canonical quantities, strict CRD validation, Events)
    served over real HTTP on loopback from its own thread.

    Its own thread and event loop, so a test (or kopf's KopfRunner thread) can block freely
    while the API keeps serving. ``emulator.objects`` holds the stored objects.
    """

    def __init__(self) -> None:
        import asyncio
        import threading

        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: Any = None
        self.url = ""
        self.emulator: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="kmock")
        self._error: BaseException | None = None

    def _run(self) -> None:
        import asyncio

        import kmock

        from tests.operator.kube_emulator import RealisticKubernetes

        async def main() -> None:
            self._stop = asyncio.Event()
            async with RealisticKubernetes() as emulator, kmock.Server(emulator) as server:
                for plural in ("s3expressbuckets", "s3mountclasses"):
                    emulator.resources[f"zonemount.io/v1alpha1/{plural}"] = {
                        "kind": "S3ExpressBucket" if "bucket" in plural else "S3MountClass",
                        "namespaced": "bucket" in plural,
                        "verbs": {"get", "list", "watch", "create", "patch", "update", "delete"},
                        "subresources": {"status"},
                    }
                verbs = {"get", "list", "watch", "create", "patch", "update", "delete"}
                for key, kind, namespaced in (
                    ("v1/namespaces", "Namespace", False),
                    ("v1/events", "Event", True),
                    ("v1/persistentvolumes", "PersistentVolume", False),
                    ("storage.k8s.io/v1/storageclasses", "StorageClass", False),
                    (
                        "apiextensions.k8s.io/v1/customresourcedefinitions",
                        "CustomResourceDefinition",
                        False,
                    ),
                ):
                    emulator.resources[key] = {
                        "kind": kind,
                        "namespaced": namespaced,
                        "verbs": verbs,
                    }
                emulator.resources["v1/pods"] = {  # a Job's pods (garbage collection)
                    "kind": "Pod",
                    "namespaced": True,
                    "verbs": verbs,
                }
                emulator.resources["batch/v1/jobs"] = {  # import Jobs (importjob.py)
                    "kind": "Job",
                    "namespaced": True,
                    "verbs": verbs,
                    "subresources": {"status"},
                }
                self.emulator = emulator
                self.url = str(server.url).rstrip("/")
                self._ready.set()
                await self._stop.wait()

        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(main())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    def start(self) -> KubeApiThread:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def object(self, plural: str, name: str, namespace: str | None = None) -> Any:
        """The current stored object (a dict) or None."""
        for (resource, ns, obj_name), obj in list(self.emulator.objects.items()):
            if resource.plural == plural and obj_name == name and ns == namespace:
                return None if obj.deleted else dict(obj.raw)
        return None

    def writes(self) -> list[tuple[str, str, str | None, str | None, str | None]]:
        """Every write request received so far: (action, plural, namespace, name, subresource)."""
        return list(self.emulator.writes)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Kubernetes Events stored so far (oldest first), optionally for one object name."""
        return list(self.emulator.events(name))

    def hold(self, predicate: Callable[[Any], bool], seconds: float) -> None:
        """Hold matching write requests back for ``seconds`` (thread-safe)."""
        self._loop.call_soon_threadsafe(self.emulator.hold, predicate, seconds)

    def versions(self, plural: str, name: str, namespace: str | None = None) -> int:
        """How many versions the API server has stored for an object (writes so far)."""
        for (resource, ns, obj_name), obj in list(self.emulator.objects.items()):
            if resource.plural == plural and obj_name == name and ns == namespace:
                return len(obj.history)
        return 0
