"""Conditions: the one module that shapes ``status.conditions`` (Kubernetes convention).

A condition is ``{type, status: "True"|"False"|"Unknown", reason (CamelCase), message,
observedGeneration, lastTransitionTime}``. Invariants:

* ``lastTransitionTime`` changes only when ``status`` changes (so re-reconciling an unchanged
  object produces an identical list and no status churn);
* the list is ordered by type name's position in the kind's ``TYPES`` tuple;
* ``Ready`` is derived, never set by hand: True iff every other required type is True,
  otherwise it copies the reason and message of the first one that is not.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Condition = dict[str, Any]

BUCKET_TYPES = ("Ready", "BucketReady", "AccessReady", "ImportComplete")
MOUNTCLASS_TYPES = ("Ready", "BucketReady", "StorageClassReady")


def now_iso(now: dt.datetime | None = None) -> str:
    moment = now or dt.datetime.now(dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(value: bool | None) -> str:
    return "Unknown" if value is None else ("True" if value else "False")


def make(
    type_: str,
    ok: bool | None,
    reason: str,
    message: str,
    generation: int | None,
    *,
    now: dt.datetime | None = None,
) -> Condition:
    cond: Condition = {
        "type": type_,
        "status": _status(ok),
        "reason": reason,
        "message": message,
        "lastTransitionTime": now_iso(now),
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def merge(
    current: Iterable[Mapping[str, Any]] | None,
    updates: Iterable[Condition],
    order: Sequence[str],
) -> list[Condition]:
    """Apply ``updates`` over ``current`` keeping transition times of unchanged statuses."""
    by_type: dict[str, Condition] = {str(c["type"]): dict(c) for c in current or ()}
    for new in updates:
        old = by_type.get(new["type"])
        merged = dict(new)
        if old is not None and old.get("status") == new["status"]:
            merged["lastTransitionTime"] = old.get("lastTransitionTime", new["lastTransitionTime"])
        by_type[new["type"]] = merged
    rank = {t: i for i, t in enumerate(order)}
    return sorted(by_type.values(), key=lambda c: (rank.get(c["type"], len(rank)), c["type"]))


def derive_ready(
    conditions: Sequence[Mapping[str, Any]],
    required: Sequence[str],
    generation: int | None,
    *,
    now: dt.datetime | None = None,
    ready_message: str = "all conditions are True",
) -> Condition:
    """The ``Ready`` condition summarising ``required`` condition types."""
    by_type = {c["type"]: c for c in conditions}
    for type_ in required:
        cond = by_type.get(type_)
        if cond is None:
            return make("Ready", None, "Reconciling", f"{type_} not yet known", generation, now=now)
        if cond["status"] != "True":
            ok = None if cond["status"] == "Unknown" else False
            return make(
                "Ready", ok, cond.get("reason", type_), cond.get("message", ""), generation, now=now
            )
    return make("Ready", True, "Ready", ready_message, generation, now=now)


def with_ready(
    current: Iterable[Mapping[str, Any]] | None,
    updates: Iterable[Condition],
    order: Sequence[str],
    required: Sequence[str],
    generation: int | None,
    *,
    now: dt.datetime | None = None,
) -> list[Condition]:
    """``merge`` then recompute ``Ready`` from ``required``."""
    merged = merge(current, updates, order)
    ready = derive_ready(merged, required, generation, now=now)
    return merge(merged, [ready], order)


def get(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    for cond in conditions or ():
        if cond.get("type") == type_:
            return cond
    return None


def is_true(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> bool:
    cond = get(conditions, type_)
    return cond is not None and cond.get("status") == "True"
