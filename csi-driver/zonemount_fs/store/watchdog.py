"""One thread that calls functions at deadlines: the GET body watchdog of every store.

Why: the body deadline used a ``threading.Timer`` per GET, which starts (and ends) a thread
for every ranged read - more CPU than the fast path's whole request for small reads. Here one
daemon thread sleeps until the earliest deadline; arming and cancelling are a heap push and a
flag.

Invariants: an alarm whose ``cancel()`` returned False never fires (``fired`` is decided under
the same lock); an alarm fires at most once, on the watchdog thread, at or after its deadline.
Cancelled alarms leave the heap at their deadline or when they outnumber the live ones (the
heap stays bounded by the reads in flight, not the reads per deadline).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

COMPACT_AT = 1024


class Alarm:
    __slots__ = ("_lock", "cancelled", "fired", "fn", "when")

    def __init__(self, when: float, fn: Callable[[], None], lock: threading.Condition) -> None:
        self.when = when
        self.fn = fn
        self.cancelled = False
        self.fired = False
        self._lock = lock

    def cancel(self) -> bool:
        """Stop the alarm; True if it had already fired (its function ran or is running)."""
        with self._lock:
            self.cancelled = True
            return self.fired


class Watchdog:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Alarm]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, fn: Callable[[], None]) -> Alarm:
        """Call ``fn`` in ``seconds`` unless the returned alarm is cancelled first."""
        alarm = Alarm(time.monotonic() + seconds, fn, self._cond)
        with self._cond:
            if len(self._heap) >= COMPACT_AT:
                live = [entry for entry in self._heap if not entry[2].cancelled]
                if len(live) * 2 < len(self._heap):
                    heapq.heapify(live)
                    self._heap = live
            earliest = self._heap[0][0] if self._heap else None
            heapq.heappush(self._heap, (alarm.when, next(self._seq), alarm))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="zonemount-watchdog", daemon=True
                )
                self._thread.start()
            elif earliest is None or alarm.when < earliest:
                self._cond.notify()
        return alarm

    def pending(self) -> int:
        """Alarms neither fired nor cancelled (for tests)."""
        with self._cond:
            return sum(1 for _, _, alarm in self._heap if not alarm.cancelled)

    def _run(self) -> None:
        while True:
            due: list[Alarm] = []
            with self._cond:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    alarm = heapq.heappop(self._heap)[2]
                    if not alarm.cancelled:
                        alarm.fired = True
                        due.append(alarm)
                if not due:
                    self._cond.wait(self._heap[0][0] - now)
                    continue
            for alarm in due:
                try:
                    alarm.fn()
                except Exception:  # noqa: S112 - a watchdog action must not end the watchdog
                    continue


#: The process's one watchdog.
WATCHDOG = Watchdog()
