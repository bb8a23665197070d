"""POSIX edge cases of docs/SEMANTICS.md ("Names and limits", "POSIX details", "Symlinks"),
on real mounts against a real S3 server (moto).

Like tests/fs/test_semantics.py, each test is named after its rule id; the doc checker
(tests/fs/test_semantics_doc.py) reads both files.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from typing import Any

import pytest
from zonemount_cli.servers import LocalS3

from .mounts import Mounter, errno_of, s3fs_mount

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


# -- symlinks --------------------------------------------------------------------------
def test_r_symlink(mounter: Mounter, s3, bucket) -> None:
    mnt = mounter.mount(bucket, "--allow-delete", "--allow-overwrite")
    (mnt / "data").mkdir()
    (mnt / "data/real.txt").write_bytes(b"payload")
    os.symlink("data/real.txt", mnt / "link")
    assert os.readlink(mnt / "link") == "data/real.txt"
    st = os.lstat(mnt / "link")
    assert stat.S_ISLNK(st.st_mode) and st.st_size == len("data/real.txt")
    assert (mnt / "link").read_bytes() == b"payload"  # followed by the kernel
    assert errno_of(lambda: os.symlink("x", mnt / "link")) == errno.EEXIST
    assert [e.name for e in os.scandir(mnt) if e.is_symlink()] == ["link"]
    # s3fs-fuse's layout: the body is the target, x-amz-meta-mode is S_IFLNK|0777
    head = s3.head_object(Bucket=bucket, Key="link")
    assert int(head["Metadata"]["mode"]) == stat.S_IFLNK | 0o777
    assert s3.get_object(Bucket=bucket, Key="link")["Body"].read() == b"data/real.txt"
    os.lchown(mnt / "link", 4321, 8765)
    os.rename(mnt / "link", mnt / "data/moved")
    assert os.readlink(mnt / "data/moved") == "data/real.txt"
    assert errno_of(lambda: os.lstat(mnt / "link")) == errno.ENOENT
    os.symlink("/nowhere", mnt / "dangling")
    # another mount sees symlinks (owner included) when it looks them up by path
    other = mounter.mount(bucket, "--allow-delete")
    assert os.readlink(other / "dangling") == "/nowhere"
    assert errno_of(lambda: (other / "dangling").read_bytes()) == errno.ENOENT
    st = os.lstat(other / "data/moved")
    assert stat.S_ISLNK(st.st_mode) and (st.st_uid, st.st_gid) == (4321, 8765)
    os.unlink(other / "data/moved")
    assert (other / "data/real.txt").read_bytes() == b"payload"  # the target is untouched
    assert sorted(keys(s3, bucket)) == ["dangling", "data/real.txt"]


def test_r_symlink_s3fs_compatible(
    mounter: Mounter, moto_server: LocalS3, s3, bucket: str, tmp_path
) -> None:
    mnt = mounter.mount(bucket, "--allow-delete", "--metadata-ttl", "0")
    (mnt / "file.txt").write_bytes(b"shared")
    os.symlink("file.txt", mnt / "by-zonemount")
    with s3fs_mount(moto_server, bucket, tmp_path) as peer:
        # zonemount -> s3fs
        assert os.readlink(peer / "by-zonemount") == "file.txt"
        assert stat.S_ISLNK(os.lstat(peer / "by-zonemount").st_mode)
        assert (peer / "by-zonemount").read_bytes() == b"shared"
        # s3fs -> zonemount
        os.symlink("file.txt", peer / "by-s3fs")
        deadline = time.monotonic() + 10
        while "by-s3fs" not in keys(s3, bucket):  # s3fs uploads on release
            assert time.monotonic() < deadline, "s3fs never uploaded its symlink"
            time.sleep(0.1)
        assert os.readlink(mnt / "by-s3fs") == "file.txt"
        assert stat.S_ISLNK(os.lstat(mnt / "by-s3fs").st_mode)
        assert (mnt / "by-s3fs").read_bytes() == b"shared"
        os.unlink(mnt / "by-s3fs")
        assert sorted(keys(s3, bucket)) == ["by-zonemount", "file.txt"]
