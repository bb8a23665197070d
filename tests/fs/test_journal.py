"""The upload journal (zonemount_fs.journal): what a dead mount leaves is found, a live
mount's uploads are not, and torn or foreign lines are ignored."""

from __future__ import annotations

from pathlib import Path

import pytest
from zonemount_fs.journal import UploadJournal

pytestmark = pytest.mark.unit


def test_dead_journal_orphans_are_carried_live_ones_are_not(tmp_path: Path) -> None:
    dead = UploadJournal("http://s3", "b", "p/", tmp_path)
    assert dead.open() == {}
    dead.created("p/a", "u1")
    dead.created("p/b", "u2")
    dead.done("p/a", "u1")
    live = UploadJournal("http://s3", "b", "p/", tmp_path)
    assert live.open() == {}, "a journal held by a live server is not swept"
    live.created("p/c", "u3")
    assert dead.path is not None
    with open(dead.path, "a", encoding="utf-8") as f:
        f.write('{"op": "create", "key": "p/torn"')  # a kill -9 mid-write
    dead.close()  # the server dies: its lock goes with it
    other_prefix = UploadJournal("http://s3", "b", "q/", tmp_path)
    assert other_prefix.open() == {}
    nxt = UploadJournal("http://s3", "b", "p/", tmp_path)
    assert nxt.open() == {"u2": "p/b"}
    assert nxt.outstanding == {"u2": "p/b"}, "carried until the sweep marks it done"
    nxt.done("p/b", "u2")
    nxt.close()
    assert nxt.path is not None and not nxt.path.exists(), "an empty journal is removed"
    live.close()
    assert live.path is not None and live.path.exists(), "u3 is still open"
