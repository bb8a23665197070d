"""POSIX edge cases of docs/SEMANTICS.md ("Names and limits", "POSIX details", "Symlinks"),
on real mounts against a real S3 server (moto).

Like tests/fs/test_semantics.py, each test is named after its rule id; the doc checker
(tests/fs/test_semantics_doc.py) reads both files.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest

from .mounts import Mounter, errno_of

pytestmark = pytest.mark.integration


def keys(s3: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


# -- names and limits ------------------------------------------------------------------
def test_r_name_too_long(mounter: Mounter, s3, bucket) -> None:
    mnt = mounter.mount(f"{bucket}/pre/", "--allow-delete", "--allow-overwrite")
    deep = mnt
    for i in range(4):  # 4 x 201 bytes + "pre/" = 808 bytes of key before a file name
        deep = deep / (str(i) * 200)
        os.mkdir(deep)
    room = 1024 - 808
    exact = deep / ("f" * room)
    exact.write_bytes(b"fits")  # a key of exactly 1,024 bytes is fine
    created = [k for k in keys(s3, bucket) if k.endswith("f" * room)]
    assert [len(k.encode()) for k in created] == [1024]

    over = deep / ("g" * (room + 1))
    assert errno_of(lambda: over.write_bytes(b"lost")) == errno.ENAMETOOLONG
    # a directory needs its "/" too
    assert errno_of(lambda: os.mkdir(deep / ("d" * room))) == errno.ENAMETOOLONG
    os.mkdir(deep / ("d" * (room - 1)))
    assert errno_of(lambda: os.rename(exact, over)) == errno.ENAMETOOLONG
    # a directory whose deepest key would outgrow the limit at its new name
    assert errno_of(lambda: os.rename(mnt / ("0" * 200), mnt / ("0" * 201))) == errno.ENAMETOOLONG
    # a multi-byte name counts in bytes, and NAME_MAX holds for every name
    assert errno_of(lambda: (deep / ("é" * (room // 2 + 1))).write_bytes(b"")) == errno.ENAMETOOLONG
    assert errno_of(lambda: (mnt / ("n" * 256)).write_bytes(b"")) == errno.ENAMETOOLONG
    assert errno_of(lambda: os.mkdir(mnt / ("n" * 256))) == errno.ENAMETOOLONG
    (mnt / ("n" * 255)).write_bytes(b"ok")
    assert exact.read_bytes() == b"fits"
    # nothing was lost in silence: every acknowledged file is in the bucket
    assert sorted(keys(s3, bucket)) == sorted(["pre/" + "n" * 255, created[0]])
