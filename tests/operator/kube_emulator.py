"""kmock's Kubernetes emulator taught the API-server behaviour our bugs hid behind.

kmock stores what it is sent (a merge of dicts). A real kube-apiserver does more, and the
operator met each difference in production (issue 13). This subclass adds, for writes:

* **metadata the server owns**: ``uid``, ``creationTimestamp``, a cluster-wide increasing
  ``resourceVersion``; ``generateName`` makes a name (kopf's Events use it). Client-sent
  ``uid``/``generation``/``resourceVersion`` are not stored (a ``resourceVersion`` in a patch
  is a precondition: a stale one is ``409 Conflict``).
* **generation**: 1 on create, +1 only when something outside ``metadata`` and ``status``
  changes (the spec); status writes never bump it.
* **the status subresource** (our CRs, PersistentVolumes): the main endpoint ignores
  ``status`` changes, ``/status`` ignores everything but ``status``.
* **no-op writes are no-ops**: a patch that changes nothing stores no new version and sends
  no watch event (``versions()`` counts real changes; :attr:`writes` counts requests).
* **canonical quantities**: ``spec.capacity.storage`` of a PersistentVolume is stored the way
  the server stores it (``1024Gi`` -> ``1Ti``), see :mod:`zonemount_operator.quantity`.
* **strict validation of our CRs** against ``crds/*.yaml`` (defaults, schema, CEL incl.
  transition rules, see :mod:`tests.operator.crd_validation`): ``422 Invalid`` with the API
  server's wording, ``400`` for unknown fields (``fieldValidation=Strict``; a real server in
  the default Warn mode would prune them silently, which hides the same bug).
* **requests may be held back** (:meth:`hold`), so concurrent patches can land out of order.
* **Events** are stored like any object; :meth:`events` lists them for assertions.
* **garbage collection on delete**: dependents (``ownerReferences`` naming the deleted uid)
  go unless the propagation policy is ``Orphan``, which is the default for batch/v1 Jobs
  (:attr:`deletes` records each DELETE with its policy).
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import secrets
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp.web
import jsonpatch
import jsonpointer
import kmock
from kmock._internal import dicts as kmock_dicts
from kmock._internal import enums
from kmock._internal.k8s import KubernetesError
from zonemount_operator import quantity

from tests.operator import crd_validation

STATUS_SUBRESOURCE = {"s3expressbuckets", "s3mountclasses", "persistentvolumes"}
CRD_KINDS = {"s3expressbuckets": "S3ExpressBucket", "s3mountclasses": "S3MountClass"}
SERVER_OWNED = ("uid", "creationTimestamp", "resourceVersion", "generation", "deletionTimestamp")


class RealisticKubernetes(kmock.KubernetesEmulator):  # type: ignore[misc]
    """See the module docstring. Extra state for tests: :attr:`writes`, :meth:`hold`."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.writes: list[tuple[str, str, str | None, str | None, str | None]] = []
        self.deletes: list[tuple[str, str | None, str | None, str]] = []  # + propagation
        self._holds: list[tuple[Callable[[Any], bool], float]] = []
        self._rv = 100
        self._log: list[tuple[int, Any, dict[str, Any]]] = []  # (rv, resource, watch event)
        self._changed = asyncio.Condition()

    # -- test controls ------------------------------------------------------------------------
    def hold(self, predicate: Callable[[Any], bool], seconds: float) -> None:
        """Delay matching write requests (``predicate(request)``) before they are applied."""
        self._holds.append((predicate, seconds))

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for (resource, _, _), obj in list(self._objects.items()):
            if resource.plural == "events" and not obj.deleted:
                ev = dict(obj.raw)
                if name is None or ev.get("involvedObject", {}).get("name") == name:
                    out.append(ev)
        return sorted(out, key=lambda e: int(e["metadata"]["resourceVersion"]))

    # -- the API server -------------------------------------------------------------------------
    def _emit(self, resource: Any, type_: str, obj: dict[str, Any]) -> None:
        """Record a watch event (under ``self._lock``); watchers wake up and stream it."""
        self._log.append((self._rv, resource, {"type": type_, "object": copy.deepcopy(obj)}))

        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        asyncio.get_running_loop().create_task(notify())

    @staticmethod
    def _wanted(request: Any, resource: Any, namespace: str | None, name: str | None) -> bool:
        return bool(
            resource == request.resource
            and (request.namespace is None or namespace == request.namespace)
            and (request.name is None or name == request.name)
        )

    async def _serve_list(self, request: Any) -> dict[str, Any]:
        async with self._lock:
            items = [
                copy.deepcopy(dict(obj.raw))
                for (res, ns, name), obj in self._objects.items()
                if not obj.deleted and self._wanted(request, res, ns, name)
            ]
            return {"metadata": {"resourceVersion": str(self._rv)}, "items": items}

    async def _serve_watch(self, request: Any) -> Any:
        """Stream changes after ``?resourceVersion=`` (or the current objects, then changes),
        in resourceVersion order, as a real watch does: never a stale replay."""
        yield b""
        since_param = request.params.get("resourceVersion")
        async with self._lock:
            if since_param and since_param.isdigit():
                since = int(since_param)
                initial = []
            else:
                since = self._rv
                initial = [
                    {"type": "ADDED", "object": copy.deepcopy(dict(obj.raw))}
                    for (res, ns, name), obj in self._objects.items()
                    if not obj.deleted and self._wanted(request, res, ns, name)
                ]
        for event in initial:
            yield event
        while True:
            async with self._lock:
                batch = [
                    (rv, event)
                    for rv, res, event in self._log
                    if rv > since
                    and self._wanted(
                        request,
                        res,
                        event["object"]["metadata"].get("namespace"),
                        event["object"]["metadata"].get("name"),
                    )
                ]
                newest = self._rv
            for _, event in batch:
                yield event
            since = max(since, newest)
            async with self._changed:
                if self._rv == since:
                    await self._changed.wait()

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        action = request.action
        if request.resource is None or action not in {
            enums.action.CREATE,
            enums.action.UPDATE,
            enums.action.DELETE,
        }:
            return await super()._handle(request)
        plural = request.resource.plural
        self.writes.append(
            (action.value, plural, request.namespace, request.name, request.subresource)
        )
        for predicate, seconds in list(self._holds):
            if predicate(request):
                await asyncio.sleep(seconds)
        try:
            if action == enums.action.CREATE:
                return await self._create(request)
            if action == enums.action.DELETE:
                return await self._delete(request)
            return await self._update(request)
        except KubernetesError as exc:
            return await self._render_error(exc)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    async def _create(self, request: Any) -> aiohttp.web.StreamResponse:
        obj = copy.deepcopy(request.data or {})
        meta = obj.setdefault("metadata", {})
        for key in SERVER_OWNED:
            meta.pop(key, None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        namespace = request.namespace or meta.get("namespace")
        if namespace:
            meta["namespace"] = namespace
        plural = request.resource.plural
        if plural in STATUS_SUBRESOURCE and plural in CRD_KINDS:
            obj.pop("status", None)  # a create through the main endpoint drops status
        obj = self._admit(plural, obj, None, request)
        key = (request.resource, namespace, meta["name"])
        async with self._lock:
            if key in self._objects and not self._objects[key].deleted:
                raise KubernetesError(
                    409, "AlreadyExists", f'{plural} "{meta["name"]}" already exists'
                )
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta["resourceVersion"] = self._next_rv()
            if "spec" in obj or plural in CRD_KINDS:
                meta["generation"] = 1
            if key in self._objects:
                self._objects[key].create(obj)
            else:
                self._objects[key] = obj
            self._emit(request.resource, "ADDED", obj)
        return aiohttp.web.json_response(obj, status=201)

    async def _update(self, request: Any) -> aiohttp.web.StreamResponse:
        plural = request.resource.plural
        key = (request.resource, request.namespace, request.name)
        patch = copy.deepcopy(request.data)
        async with self._lock:
            stored = self._objects[key] if key in self._objects else None  # noqa: SIM401
            if stored is None or stored.deleted:
                raise KubernetesError(404, "NotFound", f'{plural} "{request.name}" not found')
            old = copy.deepcopy(dict(stored.raw))
            if isinstance(patch, list):  # JSON patch (kopf's finalizers: a "test" op on RV)
                try:
                    new = dict(kmock_dicts.json_patch_dict(copy.deepcopy(old), patch))
                except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
                    raise KubernetesError(
                        422,
                        "Invalid",
                        "the server rejected our request due to an error in our request",
                        {"causes": [{"message": str(exc)}]},
                    ) from exc
                wanted_rv = None
            else:
                wanted_rv = (patch.get("metadata") or {}).get("resourceVersion")
                for k in SERVER_OWNED:
                    (patch.get("metadata") or {}).pop(k, None)
                new = dict(kmock_dicts.merge_patch_dict(copy.deepcopy(old), patch))
            if wanted_rv is not None and str(wanted_rv) != old["metadata"]["resourceVersion"]:
                raise KubernetesError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {plural} "{request.name}": the object '
                    "has been modified; please apply your changes to the latest version and "
                    "try again",
                )
            if plural in STATUS_SUBRESOURCE:
                if request.subresource == "status":
                    status = new.get("status")
                    new = copy.deepcopy(old)
                    if status is None:
                        new.pop("status", None)
                    else:
                        new["status"] = status
                elif "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            new = self._admit(plural, new, old, request)
            if new == old:
                return aiohttp.web.json_response(old)  # a no-op: no new version, no event
            outside = lambda o: {k: v for k, v in o.items() if k not in {"metadata", "status"}}  # noqa: E731
            if outside(new) != outside(old) and "generation" in old["metadata"]:
                new["metadata"]["generation"] = old["metadata"]["generation"] + 1
            new["metadata"]["resourceVersion"] = self._next_rv()
            meta = new["metadata"]
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                stored.create(new)
                stored.delete()
                self._emit(request.resource, "DELETED", new)
            else:
                stored.create(new)
                self._emit(request.resource, "MODIFIED", new)
        return aiohttp.web.json_response(new)

    async def _delete(self, request: Any) -> aiohttp.web.StreamResponse:
        plural = request.resource.plural
        key = (request.resource, request.namespace, request.name)
        body = request.data if isinstance(request.data, dict) else {}
        policy = request.params.get("propagationPolicy") or body.get("propagationPolicy")
        # batch/v1 Jobs orphan their pods unless told otherwise (the API's legacy default)
        policy = policy or ("Orphan" if plural == "jobs" else "Background")
        self.deletes.append((plural, request.namespace, request.name, policy))
        async with self._lock:
            stored = self._objects[key] if key in self._objects else None  # noqa: SIM401
            if stored is None or stored.deleted:
                raise KubernetesError(404, "NotFound", f'{plural} "{request.name}" not found')
            obj = copy.deepcopy(dict(stored.raw))
            meta = obj["metadata"]
            if meta.get("deletionTimestamp"):
                return aiohttp.web.json_response(obj)
            if meta.get("finalizers"):
                meta["deletionTimestamp"] = _now()
                meta["resourceVersion"] = self._next_rv()
                stored.create(obj)
                self._emit(request.resource, "MODIFIED", obj)
            else:
                if policy != "Orphan":
                    self._collect_dependents(meta["uid"])
                stored.delete()
                self._emit(request.resource, "DELETED", obj)
        return aiohttp.web.json_response(obj)

    def _collect_dependents(self, owner_uid: str) -> None:
        """The garbage collector, at once: objects whose ownerReferences name ``owner_uid``
        go (Background and Foreground alike; Foreground's waiting is not modelled)."""
        for (resource, _, _), stored in list(self._objects.items()):
            if stored.deleted:
                continue
            meta = dict(stored.raw).get("metadata") or {}
            if any(ref.get("uid") == owner_uid for ref in meta.get("ownerReferences") or ()):
                obj = copy.deepcopy(dict(stored.raw))
                self._collect_dependents(meta.get("uid", ""))
                stored.delete()
                self._emit(resource, "DELETED", obj)

    def _admit(
        self, plural: str, obj: dict[str, Any], old: dict[str, Any] | None, request: Any
    ) -> dict[str, Any]:
        """Canonicalise and validate like the API server; raise KubernetesError to refuse."""
        if plural == "persistentvolumes":
            storage = ((obj.get("spec") or {}).get("capacity") or {}).get("storage")
            if isinstance(storage, str):
                obj["spec"]["capacity"]["storage"] = quantity.canonical(storage)
        kind = CRD_KINDS.get(plural)
        if kind is None:
            return obj
        obj.setdefault("kind", kind)
        schema = crd_validation.schema_of(crd_validation.load_crd(kind))
        obj = crd_validation.apply_defaults(schema, obj)
        errors = crd_validation.validate(obj, old=old)
        if not errors:
            return obj
        name = f'{kind}.zonemount.io "{obj["metadata"].get("name")}"'
        unknown = [e for e in errors if e.startswith("unknown field")]
        if unknown:
            raise KubernetesError(
                400,
                "BadRequest",
                f'{kind} in version "v1alpha1" cannot be handled as a {kind}: strict decoding '
                f"error: {', '.join(unknown)}",
            )
        listed = errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]"
        raise KubernetesError(422, "Invalid", f"{name} is invalid: {listed}")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
