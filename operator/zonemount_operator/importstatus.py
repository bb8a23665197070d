"""The one place that writes import progress into an S3ExpressBucket's status.

Every write of ``status.import`` (and the ``ImportComplete``/``Ready`` conditions that follow
from it) goes through an :class:`ImportStatusWriter`; nothing else writes ``status.import``
(the reconcile handler leaves the key alone, see ``handlers.apply_status``). An import engine,
in-process (the ``bucket-import`` daemon's thread pool) or elsewhere (an Indexed Job whose
progress the operator aggregates), reports through it:

    writer = ImportStatusWriter(kube, name, namespace)
    writer.report(progress)            # any thread, any rate: the latest value wins
    status = await writer.finish(final, spec, generation)   # last write, then closed

Invariants (issue 13: a fire-and-forget ``Copying`` patch landed after ``Complete``):

* writes are **sequential**: one request in flight at a time, each awaited before the next,
  so the API server receives them in the order they were made; progress is coalesced (the
  newest report replaces an unsent one) and sent at most every ``interval`` seconds;
* :meth:`finish` stops progress first (an unsent report is dropped, an in-flight one is
  awaited), then writes the final ``status.import`` with the conditions recomputed from the
  object as it is now, guarded by its ``resourceVersion`` (a concurrent writer -> 409 ->
  re-read and retry), so a final phase is never overwritten by progress;
* :meth:`sync_conditions` rewrites only the conditions when they disagree with the stored
  ``status.import`` (repairs a reconcile that wrote conditions from an older snapshot).

A failed progress write is logged and skipped (the next one carries newer numbers); a failed
final write raises :class:`~zonemount_operator.errors.KubeError` for the caller to retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from zonemount_operator.errors import KubeError
from zonemount_operator.kube import S3EXPRESSBUCKETS, KubeClient

log = logging.getLogger(__name__)
FINAL_PHASES = frozenset({"Complete", "Failed"})


class ImportStatusWriter:
    """Serialised writer of one bucket's ``status.import`` (see the module docstring)."""

    def __init__(
        self,
        kube: KubeClient,
        name: str,
        namespace: str | None,
        *,
        interval: float = 2.0,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._kube, self._name, self._namespace = kube, name, namespace
        self._interval = interval
        self._loop = loop or asyncio.get_running_loop()
        self._pending: dict[str, Any] | None = None
        self._wakeup = asyncio.Event()
        self._closed = False
        self._last_write = 0.0
        self._pump = self._loop.create_task(self._run(), name=f"import status of {name}")
        self.writes = 0  # progress writes sent (for tests and logs)

    # -- progress ------------------------------------------------------------------------------
    def report(self, imp: Mapping[str, Any]) -> None:
        """Offer a progress ``status.import``; thread-safe, never blocks, newest wins."""
        snapshot = dict(imp)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._offer(snapshot)
        else:
            self._loop.call_soon_threadsafe(self._offer, snapshot)

    def _offer(self, imp: dict[str, Any]) -> None:
        if self._closed:
            return
        self._pending = imp
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            if self._closed:
                return
            delay = self._last_write + self._interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._wakeup.clear()
            imp, self._pending = self._pending, None
            if imp is None or self._closed:
                continue
            self._last_write = time.monotonic()
            try:
                await self._kube.patch(
                    S3EXPRESSBUCKETS,
                    self._name,
                    {"status": {"import": imp}},
                    self._namespace,
                    "status",
                )
                self.writes += 1
            except KubeError as exc:
                log.warning("import progress of %s not written: %s", self._name, exc)

    async def close(self) -> None:
        """Stop progress writes: an unsent report is dropped, one in flight is awaited."""
        self._closed = True
        self._pending = None
        self._wakeup.set()
        if self._pump.done():
            return
        # The pump exits at its next check; a write in flight completes first (not cancelled:
        # a cancelled request may still reach the server later, out of order).
        await asyncio.shield(self._pump)

    # -- final ---------------------------------------------------------------------------------
    async def finish(
        self, final: Mapping[str, Any], spec: Mapping[str, Any], generation: int | None
    ) -> dict[str, Any]:
        """Close progress, then write the final ``status.import`` and its conditions."""
        await self.close()
        return await self._write(dict(final), spec, generation)

    async def sync_conditions(
        self, spec: Mapping[str, Any], generation: int | None
    ) -> dict[str, Any] | None:
        """Rewrite ImportComplete/Ready when they disagree with the stored ``status.import``
        (final phase only); returns the new status, or None when nothing was written."""
        obj = await self._get()
        status = obj.get("status") or {}
        if not conditions_disagree(spec, status, generation, self._name):
            return None
        return await self._write(dict(status["import"]), spec, generation)

    async def _get(self) -> dict[str, Any]:
        obj = await self._kube.get(S3EXPRESSBUCKETS, self._name, self._namespace)
        if obj is None:
            raise KubeError(f"S3ExpressBucket {self._namespace}/{self._name} is gone", 404)
        return obj

    async def _write(
        self, imp: dict[str, Any], spec: Mapping[str, Any], generation: int | None
    ) -> dict[str, Any]:
        from zonemount_operator.bucket import import_conditions

        for _attempt in range(5):
            obj = await self._get()
            status = {**(obj.get("status") or {}), "import": imp}
            conds = import_conditions(spec, status, generation, self._name)
            patch = {
                "metadata": {"resourceVersion": obj["metadata"].get("resourceVersion")},
                "status": {"import": imp, "conditions": conds},
            }
            try:
                await self._kube.patch(
                    S3EXPRESSBUCKETS, self._name, patch, self._namespace, "status"
                )
            except KubeError as exc:
                if exc.status == 409:
                    continue  # someone wrote in between: recompute from the newer object
                raise
            return {**status, "conditions": conds}
        raise KubeError(
            f"S3ExpressBucket {self._namespace}/{self._name}: status kept changing while the "
            "import result was written; retrying later",
            409,
        )


def conditions_disagree(
    spec: Mapping[str, Any], status: Mapping[str, Any], generation: int | None, name: str
) -> bool:
    """True when ``status.import`` holds a final result whose ImportComplete condition is not
    what the conditions say (no I/O: the import daemon checks its live body with this)."""
    from zonemount_operator import conditions
    from zonemount_operator.bucket import import_conditions

    imp = status.get("import") or {}
    if imp.get("phase") not in FINAL_PHASES:
        return False
    have = conditions.get(status.get("conditions"), "ImportComplete")
    want = conditions.get(import_conditions(spec, status, generation, name), "ImportComplete")
    keys = ("status", "reason", "message")
    return have is None or want is None or any(have.get(k) != want.get(k) for k in keys)
