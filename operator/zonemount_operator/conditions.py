"""Conditions and the one reconcile shape: ``status.conditions`` (Kubernetes convention),
the :class:`StatusBuilder` a reconcile writes into, its :class:`Outcome`, and ordered
:class:`Step` lists run by :func:`run_steps` / :func:`arun_steps`.

A condition is ``{type, status: "True"|"False"|"Unknown", reason (CamelCase), message,
observedGeneration, lastTransitionTime}``. Invariants:

* ``lastTransitionTime`` changes only when ``status`` changes (so re-reconciling an unchanged
  object produces an identical list and no status churn);
* the list is ordered by type name's position in the kind's ``types`` (:class:`Kind`);
* every reason a reconcile writes is one CamelCase word (:data:`REASON_RE`, checked by
  :class:`StatusBuilder`);
* ``Ready`` is derived, never set by hand: True iff every other required type is True,
  otherwise it copies the reason and message of the first one that is not (the one
  exception, :func:`hold_ready`, is a deletion that waits: it says why, in one place).

A reconcile (S3ExpressBucket, S3MountClass) is an ordered list of steps over one context
object. Each step either succeeds, setting its condition True and the status fields it
owns, or raises a :class:`~zonemount_operator.errors.ZonemountError`: the runner then sets
the step's condition False with the error's (CamelCase) reason and message, the conditions
it ``blocks`` to Unknown, stops, and returns the :class:`Outcome` (the full new status and
the error). Steps are idempotent, so a later run resumes where this one stopped; the caller
(a kopf handler, or ``zonemount reconcile``) decides retry vs. permanent from the error.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from zonemount_operator.errors import ZonemountError

Condition = dict[str, Any]

# A reason is a CamelCase word (Kubernetes API conventions): tools match on it.
REASON_RE = re.compile(r"[A-Z][A-Za-z0-9]*")


@dataclass(frozen=True)
class Kind:
    """One CR kind's conditions: ``types`` in list order, ``required`` what Ready summarises."""

    types: tuple[str, ...]
    required: tuple[str, ...]


BUCKET = Kind(
    ("Ready", "BucketReady", "AccessReady", "ImportComplete"),
    ("BucketReady", "AccessReady", "ImportComplete"),
)
MOUNTCLASS = Kind(
    ("Ready", "BucketReady", "StorageClassReady"), ("BucketReady", "StorageClassReady")
)
BUCKET_TYPES = BUCKET.types
MOUNTCLASS_TYPES = MOUNTCLASS.types


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


def hold_ready(
    kind: Kind,
    current: Iterable[Mapping[str, Any]] | None,
    reason: str,
    message: str,
    generation: int | None,
    *,
    now: dt.datetime | None = None,
) -> list[Condition]:
    """``current`` with Ready=False ``reason`` whatever the others say: the object is held
    (a deletion waits for its users), which no other condition type describes."""
    ready = make("Ready", False, reason, message, generation, now=now)
    return merge(current, [ready], kind.types)


# -- the reconcile shape -----------------------------------------------------------------------
@dataclass
class Outcome:
    """What a reconcile produced: the status to write, the error that stopped it (None: it
    ran to the end) and the lines of what it did (past tense: ``created StorageClass x``)."""

    status: dict[str, Any]
    error: ZonemountError | None = None
    events: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return is_true(self.status.get("conditions"), "Ready")


class StatusBuilder:
    """One reconcile's new status over the object's current one.

    ``fields`` are the status keys the reconcile owns (``None``: remove), ``set`` records a
    condition, ``events`` what was done; :meth:`outcome` merges the conditions (transition
    times kept, Ready derived) and returns the full status.
    """

    def __init__(
        self,
        kind: Kind,
        status: Mapping[str, Any] | None,
        generation: int | None,
        *,
        now: dt.datetime | None = None,
    ) -> None:
        self.kind = kind
        self.current: dict[str, Any] = dict(status or {})
        self.generation = generation
        self.now = now or dt.datetime.now(dt.UTC)
        self.fields: dict[str, Any] = {"observedGeneration": generation}
        self.events: list[str] = []
        self._updates: list[Condition] = []

    def set(self, type_: str, ok: bool | None, reason: str, message: str) -> None:
        self.put(make(type_, ok, reason, message, self.generation, now=self.now))

    def put(self, condition: Condition) -> None:
        reason = condition["reason"]
        assert REASON_RE.fullmatch(reason), f"condition reason {reason!r} is not CamelCase"
        self._updates.append(condition)

    def failed(self, type_: str, error: ZonemountError) -> None:
        self.set(type_, False, error.reason, str(error))

    def outcome(self, error: ZonemountError | None = None) -> Outcome:
        conds = with_ready(
            self.current.get("conditions"),
            self._updates,
            self.kind.types,
            self.kind.required,
            self.generation,
            now=self.now,
        )
        return Outcome({**self.current, **self.fields, "conditions": conds}, error, self.events)


C = TypeVar("C")


@dataclass(frozen=True)
class Step(Generic[C]):
    """One idempotent step of a reconcile over context ``C``.

    ``run(ctx, status)`` does the work and, on success, sets ``condition`` (and whatever
    fields it owns) on the builder. When it raises a ZonemountError the runner sets
    ``condition`` False with the error's reason and each ``blocks`` entry
    ``(type, reason, message)`` Unknown, and stops.
    """

    name: str
    condition: str
    run: Callable[[C, StatusBuilder], Any]
    blocks: tuple[tuple[str, str, str], ...] = ()

    def fail(self, status: StatusBuilder, error: ZonemountError) -> Outcome:
        status.failed(self.condition, error)
        for type_, reason, message in self.blocks:
            status.set(type_, None, reason, message)
        return status.outcome(error)


def run_steps(steps: Sequence[Step[C]], ctx: C, status: StatusBuilder) -> Outcome:
    """Run blocking steps in order (see the module docstring)."""
    for step in steps:
        try:
            step.run(ctx, status)
        except ZonemountError as exc:
            return step.fail(status, exc)
    return status.outcome()


async def arun_steps(steps: Sequence[Step[C]], ctx: C, status: StatusBuilder) -> Outcome:
    """Run async steps (``run`` returns an awaitable) in order."""
    for step in steps:
        try:
            result: Awaitable[None] = step.run(ctx, status)
            await result
        except ZonemountError as exc:
            return step.fail(status, exc)
    return status.outcome()
