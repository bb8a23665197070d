"""A failure-injecting ObjectStore wrapper (after Mountpoint's failure client).

``FaultyStore(inner).fail("copy", times=1, after=2, error=StoreUnavailable("boom"))`` makes
the third call of ``copy`` fail once; ``fail("delete", error, key="a")`` only the calls whose
first argument is ``"a"`` (several keys: one rule each, their own counts).
``gate = FaultyStore(inner).hold("copy")`` stalls every ``copy`` (in its worker thread)
until ``gate.release()``; ``hold("head", key="a")`` only the calls whose first argument is
``"a"``, ``hold("list_page", args=("p/", "/"))`` only those whose arguments start so.
``gate.entered`` is set once a call is held, so a test can act while it is known to be under
way. Everything else is delegated unchanged. For tests of error paths and races: rename that
crashes mid-way or stalls, throttling, access denied, dead endpoints.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from zonemount_contract.aws_errors import classify

from ..errors import StoreError


@dataclass
class _Rule:
    error: StoreError
    after: int
    times: int
    seen: int = 0
    key: str | None = None  # only calls whose first argument is this key


@dataclass
class Hold:
    """Calls of one method stall until :meth:`release` (at most ``timeout`` seconds)."""

    timeout: float = 30.0
    args: tuple[Any, ...] = ()  # only calls whose positional arguments start with these
    entered: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()

    def stall(self) -> None:
        self.entered.set()
        self.released.wait(self.timeout)


class FaultyStore:
    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._rules: dict[str, list[_Rule]] = {}
        self._holds: dict[str, Hold] = {}
        self._lock = threading.Lock()

    def fail(
        self,
        method: str,
        error: StoreError,
        *,
        after: int = 0,
        times: int = 1_000_000,
        key: str | None = None,
    ) -> None:
        """Calls of ``method`` (of ``key`` only, if given) fail with ``error``: ``times``
        of them, after ``after`` that succeed. A rule without a key replaces the method's
        rules; keyed rules add up."""
        with self._lock:
            rules = self._rules.setdefault(method, []) if key is not None else []
            rules.append(_Rule(error, after, times, key=key))
            self._rules[method] = rules

    def hold(
        self,
        method: str,
        *,
        key: str | None = None,
        args: tuple[Any, ...] = (),
        timeout: float = 30.0,
    ) -> Hold:
        """Stall every call of ``method`` (of ``key`` only, or whose arguments start with
        ``args``, if given) until the returned hold is released."""
        with self._lock:
            self._holds[method] = hold = Hold(timeout, (key,) if key is not None else args)
        return hold

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            holds, self._holds = list(self._holds.values()), {}
        for hold in holds:
            hold.release()

    def delete_many(self, keys: Any) -> None:
        """As S3 answers DeleteObjects: the keys go one at a time, so each is a ``delete``
        here (its faults and holds apply per key: a test can stop a batch half done). A
        transient failure (throttling, 5xx codes) is tried once more, as S3Store tries such a
        key again. Every key is tried; then the first error is raised."""
        first: StoreError | None = None
        for key in keys:
            try:
                self.delete(key)
            except StoreError as exc:
                if not classify(exc.code).retryable:
                    first = first or exc
                    continue
                try:
                    self.delete(key)
                except StoreError as again:
                    first = first or again
        if first is not None:
            raise first

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                rule = next(
                    (r for r in self._rules.get(name, ()) if r.key is None or args[:1] == (r.key,)),
                    None,
                )
                hold = self._holds.get(name)
                trip = False
                if rule is not None:
                    rule.seen += 1
                    if rule.seen > rule.after and rule.times > 0:
                        rule.times -= 1
                        trip = True
            if hold is not None and args[: len(hold.args)] == hold.args:
                hold.stall()
            if trip:
                assert rule is not None
                raise rule.error
            return target(*args, **kwargs)

        return call
