"""The CSI services' keyed locks (zonemount_csi.locks): a second operation on a volume or
target in flight is ABORTED, a multi-key claim is all or nothing, keys are released however
the block exits, and a KeyedLock serializes one key without blocking another."""

from __future__ import annotations

import threading

import grpc
import pytest
from zonemount_csi.errors import CsiError
from zonemount_csi.locks import InFlight, KeyedLock

pytestmark = pytest.mark.unit


def test_a_busy_key_is_aborted_and_a_claim_is_all_or_nothing() -> None:
    in_flight = InFlight()
    with in_flight.exclusive("volume:v1", "target:/k/pods/a"):
        with pytest.raises(CsiError) as err, in_flight.exclusive("volume:v2", "target:/k/pods/a"):
            pass
        assert err.value.code == grpc.StatusCode.ABORTED
        assert "/k/pods/a is already in progress: retry later" in err.value.message
        with in_flight.claim("volume:v2", "volume:v1") as busy:
            assert busy == "volume:v1"
        # the failed claims took nothing: v2 is free
        with in_flight.claim("volume:v2") as busy:
            assert busy is None
    with in_flight.exclusive("volume:v1", "target:/k/pods/a", "volume:v2"):
        pass


def test_keys_are_released_when_the_block_raises() -> None:
    in_flight = InFlight()
    with pytest.raises(RuntimeError), in_flight.exclusive("volume:v1"):
        raise RuntimeError("handler failed")
    with in_flight.claim("volume:v1") as busy:
        assert busy is None


def test_keyed_lock_is_one_lock_per_key() -> None:
    locks = KeyedLock()
    assert locks(("e", "b1")) is locks(("e", "b1"))
    assert locks(("e", "b1")) is not locks(("e", "b2"))
    entered = threading.Event()
    with locks(("e", "b1")):
        other = threading.Thread(target=lambda: (locks(("e", "b2")).acquire(), entered.set()))
        other.start()
        other.join(10)
        assert entered.is_set()  # another bucket is not blocked
        assert not locks(("e", "b1")).acquire(blocking=False)
