"""docs/SEMANTICS.md, the write lifecycle under faults and concurrency, on real mounts.

Like tests/fs/test_semantics.py: each test is named after its rule id and
tests/fs/test_semantics_doc.py keeps the two in step.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from .mounts import Mounter

pytestmark = pytest.mark.integration


def keys(s3: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_r_dir_local_children_keep_parent(mounter: Mounter, s3: Any, bucket: str) -> None:
    """The make-demo race: a directory whose objects were all renamed away (so S3 no longer
    has it) still holds a directory just made in it; a lookup of the parent after its TTL
    must not drop the new child (it gave ENOENT to the next mkdir/create)."""
    ttl = 4.0
    mnt = mounter.mount(bucket, "--allow-delete", "--metadata-ttl", str(ttl))
    (mnt / "t" / "a").mkdir(parents=True)
    (mnt / "t" / "a" / "f").write_bytes(b"x")
    os.rename(mnt / "t" / "a", mnt / "moved")  # "t" has no objects left...
    (mnt / "t" / "b").mkdir()  # ...but is still cached, so this makes t/b in it
    assert keys(s3, bucket) == ["moved/f"]
    time.sleep(ttl + 0.5)
    (mnt / "t" / "b" / "c").mkdir()  # looks "t" up again: S3 has nothing under t/
    (mnt / "t" / "b" / "c" / "part").write_bytes(b"y")
    assert keys(s3, bucket) == ["moved/f", "t/b/c/part"]
    assert sorted(os.listdir(mnt / "t")) == ["b"]


def test_r_write_empty_close_settles(mounter: Mounter, s3: Any, bucket: str) -> None:
    """An empty file is an ordinary closed file right after close(): unlink and rename do
    not fail with EBUSY while its completion waits for release."""
    mnt = mounter.mount(bucket, "--allow-delete", "--allow-overwrite")
    for i in range(20):
        fd = os.open(mnt / f"e{i}", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        os.close(fd)
        if i % 2:
            os.unlink(mnt / f"e{i}")
        else:
            os.rename(mnt / f"e{i}", mnt / f"r{i}")
    assert keys(s3, bucket) == sorted(f"r{i}" for i in range(0, 20, 2))
