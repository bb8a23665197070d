"""The inode table keeps the invariants its module docstring states: links, keys from the
parent chain, when an inode may be dropped, and what dropping one costs its directory."""

from __future__ import annotations

import errno
import math
from pathlib import Path
from typing import Any

import pytest
from zonemount_fs.errors import FsError
from zonemount_fs.inodes import ROOT_INO, InodeTable, Kind
from zonemount_fs.options import MountOptions
from zonemount_fs.store.base import ObjectInfo

pytestmark = pytest.mark.unit


def table(**kw: Any) -> InodeTable:
    base: dict[str, Any] = dict(
        bucket="b", mountpoint=Path("/mnt"), metadata_ttl=60.0, negative_metadata_ttl=60.0
    )
    base.update(kw)
    return InodeTable(MountOptions(**base))


def test_keys_follow_the_parent_chain() -> None:
    tree = table(prefix="p/")
    root = tree.inode(ROOT_INO)
    d = tree.install(root, "d", Kind.DIR, None)
    f = tree.install(d, "f", Kind.FILE, ObjectInfo("p/d/f", 3, "e1", 1.0, None))
    assert (tree.key_of(f), tree.dir_prefix(d), tree.dir_prefix(root)) == ("p/d/f", "p/d/", "p/")
    d.name = "e"  # a rename re-keys the subtree at once
    assert tree.key_of(f) == "p/e/f"
    assert root.children == {"d": d.ino} and d.children == {"f": f.ino}


def test_an_inode_is_dropped_only_when_nothing_holds_it() -> None:
    tree = table()
    root = tree.inode(ROOT_INO)
    d = tree.install(root, "d", Kind.DIR, None)
    f = tree.install(d, "f", Kind.FILE, ObjectInfo("d/f", 1, "e", 1.0, None))
    tree.remember(f.ino)
    d.complete_until, d.names = math.inf, frozenset({"f"})
    f.open_handles = 1
    tree.forget(f.ino, 1)
    assert f.ino in tree.inodes  # an open handle holds it
    f.open_handles = 0
    tree.maybe_drop(f)
    assert f.ino not in tree.inodes and "f" not in d.children
    # the directory no longer holds every name this mount knows there
    assert d.complete_until == 0.0 and d.names is None
    with pytest.raises(FsError) as raised:
        tree.inode(f.ino)
    assert raised.value.errno == errno.ENOENT


def test_local_and_emptied_directories_stay() -> None:
    tree = table()
    root = tree.inode(ROOT_INO)
    made = tree.add_local(root, "made", Kind.DIR, 0o755, 0, 0)
    emptied = tree.install(root, "emptied", Kind.DIR, None)
    emptied.emptied = True
    for node in (made, emptied):
        tree.maybe_drop(node)
        assert node.ino in tree.inodes
    tree.detach(root, made)  # detached (rmdir): nothing keeps it any more
    assert made.ino not in tree.inodes and made.detached
    tree.maybe_drop(tree.inode(ROOT_INO))
    assert ROOT_INO in tree.inodes  # the root is never dropped


def test_a_local_entry_wins_over_a_remote_one_of_another_kind() -> None:
    tree = table()
    root = tree.inode(ROOT_INO)
    made = tree.add_local(root, "x", Kind.DIR, 0o755, 0, 0)
    assert tree.install(root, "x", Kind.FILE, ObjectInfo("x", 1, "e", 1.0, None)) is made
    remote = tree.install(root, "y", Kind.FILE, ObjectInfo("y", 1, "e", 1.0, None))
    replaced = tree.install(root, "y", Kind.DIR, None)  # a directory shadows the file now
    assert replaced is not remote and remote.detached and root.children["y"] == replaced.ino


def test_absence_is_remembered_only_with_a_negative_ttl() -> None:
    tree, off = table(), table(negative_metadata_ttl=0.0)
    for t in (tree, off):
        t.note_absent(t.inode(ROOT_INO), "gone")
    assert "gone" in tree.inode(ROOT_INO).negative
    assert off.inode(ROOT_INO).negative == {}
