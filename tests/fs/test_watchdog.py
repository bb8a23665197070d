"""The store's one watchdog thread (store/watchdog.py): alarms fire once, after their
deadline; cancelled ones never; cancelled alarms do not pile up."""

from __future__ import annotations

import threading

import pytest
from zonemount_fs.store import watchdog
from zonemount_fs.store.watchdog import Watchdog

pytestmark = pytest.mark.unit


def test_alarm_fires_once_after_its_deadline() -> None:
    dog = Watchdog()
    rang = threading.Event()
    calls: list[int] = []

    def ring() -> None:
        calls.append(1)
        rang.set()

    alarm = dog.arm(0.05, ring)
    assert rang.wait(10)
    assert alarm.fired and calls == [1]
    assert alarm.cancel() is True  # already fired: the caller must not reuse what it guarded
    assert dog.pending() == 0


def test_cancelled_alarm_never_fires_and_later_ones_still_do() -> None:
    dog = Watchdog()
    fired: list[str] = []
    done = threading.Event()
    first = dog.arm(0.05, lambda: fired.append("cancelled"))
    assert first.cancel() is False
    dog.arm(0.2, lambda: (fired.append("kept"), done.set()))
    assert done.wait(10)
    assert fired == ["kept"]


def test_an_earlier_alarm_wakes_the_sleeping_thread() -> None:
    dog = Watchdog()
    dog.arm(3600, lambda: None)  # the thread now sleeps for an hour
    rang = threading.Event()
    dog.arm(0.05, rang.set)
    assert rang.wait(10)


def test_a_failing_action_does_not_stop_the_watchdog() -> None:
    dog = Watchdog()
    dog.arm(0.01, lambda: 1 / 0)  # type: ignore[func-returns-value]
    rang = threading.Event()
    dog.arm(0.05, rang.set)
    assert rang.wait(10)


def test_cancelled_alarms_are_compacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watchdog, "COMPACT_AT", 10)
    dog = Watchdog()
    for _ in range(100):
        dog.arm(3600, lambda: None).cancel()
    assert len(dog._heap) <= 20
    assert dog.pending() == 0
