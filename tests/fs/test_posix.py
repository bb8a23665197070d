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
from pathlib import Path
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
    assert errno_of(lambda: os.symlink("target", over)) == errno.ENAMETOOLONG
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


# -- POSIX details ---------------------------------------------------------------------
def _later(path: Path, before: os.stat_result, *, follow: bool = True) -> bool:
    """Did ``path``'s mtime and ctime both move forward since ``before``?"""
    st = os.stat(path, follow_symlinks=follow)
    return st.st_mtime_ns > before.st_mtime_ns and st.st_ctime_ns > before.st_ctime_ns


def _ctime_later(path: Path, before: os.stat_result, *, follow: bool = True) -> bool:
    return os.stat(path, follow_symlinks=follow).st_ctime_ns > before.st_ctime_ns


def test_r_dir_times(mounter: Mounter, s3, bucket) -> None:
    s3.put_object(Bucket=bucket, Key="remote/old.txt", Body=b"x")
    mnt = mounter.mount(bucket, "--allow-delete", "--allow-overwrite")
    d, remote = mnt / "d", mnt / "remote"
    os.mkdir(d)
    steps = [
        (d, lambda: (d / "f").write_bytes(b"1")),
        (d, lambda: os.mkdir(d / "sub")),
        (d, lambda: os.symlink("f", d / "ln")),
        (d, lambda: os.unlink(d / "ln")),
        (d, lambda: os.rmdir(d / "sub")),
        (d, lambda: os.rename(d / "f", d / "g")),
        (remote, lambda: os.rename(d / "g", remote / "g")),  # both directories change
        (d, lambda: os.rename(remote / "g", d / "g")),
        (remote, lambda: os.unlink(remote / "old.txt")),
        (mnt, lambda: os.mkdir(mnt / "top")),
    ]
    for directory, step in steps:
        before = os.stat(directory)
        time.sleep(0.01)
        step()
        assert _later(directory, before), step
    # renaming between directories touches the source too
    before = os.stat(d)
    time.sleep(0.01)
    os.rename(d / "g", mnt / "top/g")
    assert _later(d, before) and _later(mnt / "top", before)
    # chmod and chown change ctime (files, directories, symlinks), not mtime
    os.symlink("g", mnt / "top/ln")
    s3.put_object(Bucket=bucket, Key="top/tagged", Body=b"t", Metadata={"tag": "keep"})
    assert "tagged" in os.listdir(mnt / "top")  # known from a listing only
    for path, change in [
        (mnt / "top/g", lambda p: os.chmod(p, 0o600)),
        (mnt / "top/g", lambda p: os.chown(p, 11, 12)),
        (mnt / "top", lambda p: os.chmod(p, 0o700)),
        (mnt / "top", lambda p: os.chown(p, 11, 12)),
        (mnt / "top/ln", lambda p: os.lchown(p, 11, 12)),
        (mnt / "top/tagged", lambda p: os.chmod(p, 0o604)),
    ]:
        before = os.stat(path, follow_symlinks=False)
        time.sleep(0.01)
        change(path)
        assert _ctime_later(path, before, follow=False), path
        after = os.stat(path, follow_symlinks=False)
        assert after.st_mtime_ns == before.st_mtime_ns, path
    # revalidating an unchanged object (a HEAD: LastModified has whole seconds) keeps the
    # mtime this mount reported; a truncation is a change
    fresh = mounter.mount(bucket, "--allow-overwrite", "--metadata-ttl", "1")
    (fresh / "t.txt").write_bytes(b"abc")
    before = os.stat(fresh / "t.txt")
    time.sleep(1.2)  # past the TTL: the next stat revalidates
    assert os.stat(fresh / "t.txt").st_mtime_ns == before.st_mtime_ns
    os.chmod(fresh / "t.txt", 0o600)
    assert os.stat(fresh / "t.txt").st_mtime_ns == before.st_mtime_ns
    time.sleep(0.01)
    os.truncate(fresh / "t.txt", 0)
    assert _later(fresh / "t.txt", before)
    # persisting chmod (a copy onto itself) keeps the object's other metadata
    meta = s3.head_object(Bucket=bucket, Key="top/tagged")["Metadata"]
    assert meta["tag"] == "keep" and int(meta["mode"]) & 0o777 == 0o604


def test_r_link_count(mounter: Mounter, s3, bucket) -> None:
    for key in ("x/1/f", "x/2/f", "x/file"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    mnt = mounter.mount(bucket, "--allow-delete")
    assert sorted(os.listdir(mnt / "x")) == ["1", "2", "file"]
    assert os.stat(mnt / "x").st_nlink == 4  # 2 + two subdirectories
    os.mkdir(mnt / "x/3")
    assert os.stat(mnt / "x").st_nlink == 5
    os.rmdir(mnt / "x/3")
    assert os.stat(mnt / "x").st_nlink == 4
    assert os.stat(mnt / "x/1").st_nlink == 2 and os.stat(mnt / "x/file").st_nlink == 1
    # an open file keeps its attributes after unlink, with no link left
    fd = os.open(mnt / "x/file", os.O_RDONLY)
    try:
        os.unlink(mnt / "x/file")
        st = os.fstat(fd)
        assert (st.st_nlink, st.st_size, stat.S_ISREG(st.st_mode)) == (0, 1, True)
    finally:
        os.close(fd)
    assert errno_of(lambda: os.stat(mnt / "x/file")) == errno.ENOENT


def test_r_errno_refusals(mounter: Mounter, s3, bucket) -> None:
    s3.put_object(Bucket=bucket, Key="full.txt", Body=b"content")
    s3.put_object(Bucket=bucket, Key="empty.txt", Body=b"")
    plain = mounter.mount(bucket)
    # replacing, even an empty file, needs --allow-overwrite
    assert errno_of(lambda: os.open(plain / "empty.txt", os.O_WRONLY)) == errno.EPERM
    mnt = mounter.mount(bucket, "--allow-overwrite", "--allow-delete")
    # ftruncate with a negative length: EINVAL, whatever the open mode
    (mnt / "new.txt").write_bytes(b"")
    for flags in (os.O_RDWR, os.O_WRONLY):
        fd = os.open(mnt / "new.txt", flags)
        try:
            assert errno_of(lambda fd=fd: os.ftruncate(fd, -1)) == errno.EINVAL
        finally:
            os.close(fd)
    # an existing empty file opened for writing without O_TRUNC: nothing to keep, so it is
    # written from offset 0 as with O_TRUNC (also with O_APPEND)
    fd = os.open(mnt / "empty.txt", os.O_WRONLY)
    os.write(fd, b"filled")
    os.close(fd)
    assert s3.get_object(Bucket=bucket, Key="empty.txt")["Body"].read() == b"filled"
    with open(mnt / "new.txt", "ab") as f:
        f.write(b"appended")
    assert s3.get_object(Bucket=bucket, Key="new.txt")["Body"].read() == b"appended"
    # Mountpoint's refusals, each with the errno Linux/POSIX name for the case
    full = mnt / "full.txt"
    assert errno_of(lambda: os.open(full, os.O_WRONLY)) == errno.EPERM  # like an immutable file
    assert errno_of(lambda: os.open(full, os.O_WRONLY | os.O_APPEND)) == errno.EPERM
    assert errno_of(lambda: os.truncate(full, 100)) == errno.EPERM  # cannot extend
    assert errno_of(lambda: os.truncate(full, 3)) == errno.EINVAL  # not possible on this file
    fd = os.open(mnt / "stream.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"abc")
        assert errno_of(lambda: os.pwrite(fd, b"x", 10)) == errno.EINVAL  # past the end
        assert errno_of(lambda: os.pwrite(fd, b"x", 1)) == errno.EINVAL  # before it
    finally:
        os.close(fd)
    assert s3.get_object(Bucket=bucket, Key="full.txt")["Body"].read() == b"content"
    assert s3.get_object(Bucket=bucket, Key="stream.bin")["Body"].read() == b"abc"
