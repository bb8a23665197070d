"""A failure-injecting ObjectStore wrapper (after Mountpoint's failure client).

``FaultyStore(inner).fail("copy", times=1, after=2, error=StoreUnavailable("boom"))`` makes
the third call of ``copy`` fail once. Everything else is delegated unchanged. For tests of
error paths: rename that crashes mid-way, throttling, access denied, dead endpoints.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from ..errors import StoreError


@dataclass
class _Rule:
    error: StoreError
    after: int
    times: int
    seen: int = 0


class FaultyStore:
    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._rules: dict[str, _Rule] = {}
        self._lock = threading.Lock()

    def fail(
        self, method: str, error: StoreError, *, after: int = 0, times: int = 1_000_000
    ) -> None:
        with self._lock:
            self._rules[method] = _Rule(error, after, times)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                rule = self._rules.get(name)
                trip = False
                if rule is not None:
                    rule.seen += 1
                    if rule.seen > rule.after and rule.times > 0:
                        rule.times -= 1
                        trip = True
            if trip:
                assert rule is not None
                raise rule.error
            return target(*args, **kwargs)

        return call
