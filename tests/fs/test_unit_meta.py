"""The metadata memo keeps its written contract (bounded, least recently written dropped
first, a read does not refresh), and the s3fs metadata vocabulary reads what it writes."""

from __future__ import annotations

import stat

import pytest
from zonemount_fs.meta import (
    META_GID,
    META_MODE,
    META_MTIME,
    META_UID,
    MetaMemo,
    is_symlink_meta,
    meta_time,
    parse_meta,
)

pytestmark = pytest.mark.unit


def test_memo_drops_the_least_recently_written() -> None:
    memo = MetaMemo(limit=2)
    memo.put("a", "e1", {"mode": "1"})
    memo.put("b", "e2", {})
    assert memo.get("a") == ("e1", {"mode": "1"})  # a read does not refresh "a"
    memo.put("c", None, {})
    assert memo.get("a") is None
    assert memo.get("b") == ("e2", {}) and memo.get("c") == (None, {})
    memo.put("b", "e3", {"uid": "7"})  # a write refreshes: "c" is now the oldest
    memo.put("d", "e4", {})
    assert memo.get("c") is None and memo.get("b") == ("e3", {"uid": "7"})
    assert len(memo) == 2


def test_memo_keeps_a_copy_and_pop_moves_it() -> None:
    memo = MetaMemo()
    given = {META_MODE: "33188"}
    memo.put("k", "e", given)
    given[META_MODE] = "0"  # the caller's dict changing later does not change the memo
    assert memo.pop("k") == ("e", {META_MODE: "33188"})
    assert memo.pop("k") is None and len(memo) == 0


def test_s3fs_metadata_round_trip() -> None:
    meta = {
        META_MODE: str(stat.S_IFREG | 0o640),
        META_UID: "1000",
        META_GID: "100",
        META_MTIME: meta_time(1764776812.5),
    }
    assert parse_meta(meta) == (0o640, 1000, 100, 1764776812.5)
    assert meta_time(1.0) == "1.000000000"  # sec.nsec with 9 digits, as s3fs writes it
    assert parse_meta({META_MODE: "x", META_MTIME: "y"}) == (None, None, None, None)
    assert is_symlink_meta({META_MODE: str(stat.S_IFLNK | 0o777)})
    assert not is_symlink_meta({META_MODE: str(stat.S_IFREG | 0o644)})
    assert not is_symlink_meta(None) and not is_symlink_meta({META_MODE: "bad"})
