"""docs/SEMANTICS.md, one test per rule, on real mounts against a real S3 server (moto).

Each test name starts with the rule id from docs/SEMANTICS.md (``test_r_read_seq`` for
R-READ-SEQ); tests/fs/test_semantics_doc.py keeps the two in step.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import random
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from zonemount_cli.servers import free_port

from .mounts import Mounter, errno_of, is_mounted, server_pid

MiB = 1024 * 1024
pytestmark = pytest.mark.integration


def put(s3: Any, bucket: str, key: str, data: bytes = b"x") -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=data)


def keys(s3: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


# -- reads -----------------------------------------------------------------------------
def test_r_read_seq(mount_rw, s3, bucket) -> None:
    data = random.Random(1).randbytes(37 * MiB + 123)
    put(s3, bucket, "big.bin", data)
    mnt = mount_rw("--part-size", str(5 * MiB))
    with open(mnt / "big.bin", "rb") as f:
        got = hashlib.sha256()
        while chunk := f.read(1 * MiB):
            got.update(chunk)
    assert got.hexdigest() == hashlib.sha256(data).hexdigest()
    assert os.stat(mnt / "big.bin").st_size == len(data)


@pytest.mark.parametrize(("flags", "gets"), [((), 6), (("--part-size", str(8 * MiB)), 8)])
def test_sequential_read_parts_follow_the_read_part_size(
    mounter: Mounter, s3, bucket, flags: tuple[str, ...], gets: int
) -> None:
    """R-READ-SEQ on a real mount: a 40 MiB object read from start to end takes, by default
    (16 MiB read parts), the first chunk's 4 lanes and 2 more GETs; with ``--part-size``
    8 MiB (reads and uploads), 4 lanes and 4 more. Counted by the mount's own metrics."""
    data = random.Random(5).randbytes(40 * MiB)
    put(s3, bucket, "forty.bin", data)
    port = free_port()
    mnt = mounter.mount(bucket, *flags, "--metrics-address", f"127.0.0.1:{port}")
    before = _metric(port, "zonemount_s3_requests_total", "GetObject")
    assert (mnt / "forty.bin").read_bytes() == data
    assert _metric(port, "zonemount_s3_requests_total", "GetObject") - before == gets


def test_r_read_random(mount_rw, s3, bucket) -> None:
    data = random.Random(2).randbytes(12 * MiB)
    put(s3, bucket, "r.bin", data)
    mnt = mount_rw()
    rng = random.Random(3)
    fd = os.open(mnt / "r.bin", os.O_RDONLY)
    try:
        for _ in range(60):
            off = rng.randrange(0, len(data))
            n = rng.choice([1, 100, 4096, 65536, 300_000])
            assert os.pread(fd, n, off) == data[off : off + n]
        os.lseek(fd, 5 * MiB, os.SEEK_SET)
        assert os.read(fd, 1000) == data[5 * MiB : 5 * MiB + 1000]
        assert os.pread(fd, 10, len(data) + 5) == b""
    finally:
        os.close(fd)


def test_r_read_concurrent(mount_rw, s3, bucket) -> None:
    blobs = {f"c/{i}.bin": random.Random(i).randbytes(3 * MiB + i) for i in range(6)}
    for key, data in blobs.items():
        put(s3, bucket, key, data)
    mnt = mount_rw()
    errors: list[str] = []

    def reader(key: str, data: bytes) -> None:
        for _ in range(2):
            if (mnt / key).read_bytes() != data:
                errors.append(key)

    threads = [threading.Thread(target=reader, args=kv) for kv in blobs.items() for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_r_read_direct(mounter: Mounter, s3, bucket) -> None:
    put(s3, bucket, "d.txt", b"old")
    mnt = mounter.mount(bucket, "--metadata-ttl", "indefinite")
    assert (mnt / "d.txt").stat().st_size == 3  # attributes cached, no bytes read
    put(s3, bucket, "d.txt", b"newer content")
    # Cached metadata still names the old object: the read never mixes old and new bytes,
    # it fails with ESTALE (documented).
    assert errno_of(lambda: (mnt / "d.txt").read_bytes()) == errno.ESTALE
    fd = os.open(mnt / "d.txt", os.O_RDONLY | os.O_DIRECT)
    try:
        assert os.read(fd, 4096) == b"newer content"
    finally:
        os.close(fd)


def test_r_read_page_cache(mounter: Mounter, s3, bucket) -> None:
    put(s3, bucket, "p.txt", b"version one")
    mnt = mounter.mount(bucket, "--metadata-ttl", "indefinite")
    assert (mnt / "p.txt").read_bytes() == b"version one"
    put(s3, bucket, "p.txt", b"version two")  # another client, same size
    # The attributes still name version one and the kernel kept its pages: the second open
    # reads them without a request (a GET would carry If-Match version one: ESTALE).
    assert (mnt / "p.txt").read_bytes() == b"version one"
    fd = os.open(mnt / "p.txt", os.O_RDONLY | os.O_DIRECT)  # revalidates, drops the pages
    try:
        assert os.read(fd, 4096) == b"version two"
    finally:
        os.close(fd)
    assert (mnt / "p.txt").read_bytes() == b"version two"


def test_r_read_retained(mounter: Mounter, s3, bucket) -> None:
    mnt = mounter.mount(
        bucket, "--allow-delete", "--allow-overwrite", "--metadata-ttl", "indefinite"
    )
    (mnt / "w.txt").write_bytes(b"written here")
    (mnt / "r.txt").write_bytes(b"renamed here")
    os.rename(mnt / "r.txt", mnt / "moved.txt")
    # Another client replaces both (same sizes). The mount's attributes still name the ETags
    # it wrote, so it answers with the bytes it wrote: no GET was sent (one would carry
    # If-Match with the old ETag and fail with ESTALE, R-READ-DIRECT).
    put(s3, bucket, "w.txt", b"other client")
    put(s3, bucket, "moved.txt", b"other writer")
    assert (mnt / "w.txt").read_bytes() == b"written here"
    assert (mnt / "moved.txt").read_bytes() == b"renamed here"
    fd = os.open(mnt / "w.txt", os.O_RDONLY | os.O_DIRECT)  # revalidates: the new object
    try:
        assert os.read(fd, 4096) == b"other client"
    finally:
        os.close(fd)
    assert (mnt / "w.txt").read_bytes() == b"other client"


# -- writes ----------------------------------------------------------------------------
def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_r_write_stream(mount_rw, s3, bucket) -> None:
    mnt = mount_rw("--part-size", str(5 * MiB))
    pid = server_pid(mnt)
    block = random.Random(4).randbytes(1 * MiB)
    digest = hashlib.sha256()
    peak = 0.0
    saw_parts = False
    with open(mnt / "stream.bin", "wb") as f:
        for i in range(160):  # 160 MiB through a 5 MiB part size
            f.write(block)
            digest.update(block)
            if i % 16 == 15:
                peak = max(peak, _rss_mib(pid))
                uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
                saw_parts = saw_parts or any(u["Key"] == "stream.bin" for u in uploads)
    assert saw_parts, "parts must be uploaded while the file is being written"
    assert peak < 160, f"mount RSS {peak:.0f} MiB: writes must not be buffered whole"
    body = s3.get_object(Bucket=bucket, Key="stream.bin")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest.hexdigest()


def test_r_write_visible_on_close(mount_rw, s3, bucket) -> None:
    mnt = mount_rw()
    f = open(mnt / "v.txt", "wb")  # noqa: SIM115
    f.write(b"hello")
    f.flush()
    assert "v.txt" not in keys(s3, bucket)
    f.close()
    assert s3.get_object(Bucket=bucket, Key="v.txt")["Body"].read() == b"hello"
    # An empty file closed before anything was written is readable right away (its upload,
    # left for release, is completed by the open; found by the reference-model test).
    for i in range(10):
        (mnt / f"empty{i}").write_bytes(b"")
        assert (mnt / f"empty{i}").read_bytes() == b""


def _inheritor(fd: int, then: str) -> subprocess.Popen[bytes]:
    """A process that inherited ``fd`` (a copy of this process' descriptor): once its stdin
    closes it runs ``then`` on it (``os.write(fd, ...)``) and exits with that write's errno."""
    code = (
        "import os, sys\n"
        "sys.stdin.read()\n"
        "try:\n"
        f"    {then}\n"
        "except OSError as exc:\n"
        "    os._exit(exc.errno)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code.replace("FD", str(fd))], pass_fds=(fd,), stdin=subprocess.PIPE
    )


def test_r_write_forked_close(mounter: Mounter, s3, bucket) -> None:
    mnt = mounter.mount(bucket, "--allow-delete", "--allow-overwrite", "--part-size", str(5 * MiB))
    head = random.Random(7).randbytes(6 * MiB + 17)  # more than one part: re-read in parts

    def stored(key: str) -> bytes | None:
        try:
            body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None
        return body

    # A child inherits the descriptor; its exit closes it and the kernel flushes the file,
    # but the opener still holds it: nothing is completed until the opener's close().
    fd = os.open(mnt / "forked.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, head)
        subprocess.run(["true"], pass_fds=(fd,), check=True)
        assert "forked.bin" not in keys(s3, bucket), "a child's close() completed the file"
        os.write(fd, b"tail")
    finally:
        os.close(fd)
    assert (
        hashlib.sha256(stored("forked.bin") or b"").digest()
        == hashlib.sha256(head + b"tail").digest()
    )
    # ... so a writer killed after such a child's close publishes nothing either.
    code = (
        "import os, subprocess, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)\n"
        "os.write(fd, b'x' * 100)\n"
        "subprocess.run(['true'], pass_fds=(fd,), check=True)\n"
        "print('written', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(mnt / "killed.bin")], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    with proc.stdout:
        assert proc.stdout.readline() == b"written\n"
    proc.kill()
    proc.wait()
    assert "killed.bin" not in keys(s3, bucket)
    # The opener closes first while a child still writes: the child's write resumes the
    # completed file (a new upload that starts with the stored bytes) and its close
    # completes the whole file.
    fd = os.open(mnt / "resumed.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, head)
    child = _inheritor(fd, "os.write(FD, b'tail')")
    os.close(fd)
    assert stored("resumed.bin") == head
    child.communicate(b"")
    assert child.returncode == 0
    assert (
        hashlib.sha256(stored("resumed.bin") or b"").digest()
        == hashlib.sha256(head + b"tail").digest()
    )
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    # A file replaced by another client in between is not resumed onto the new object.
    fd = os.open(mnt / "gone.txt", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"first")
    child = _inheritor(fd, "os.write(FD, b'more')")
    os.close(fd)
    put(s3, bucket, "gone.txt", b"someone else's")
    time.sleep(1.2)  # past the metadata TTL
    os.stat(mnt / "gone.txt")
    child.communicate(b"")
    assert child.returncode in (errno.EBADF, errno.ESTALE)
    assert stored("gone.txt") == b"someone else's"


def test_r_write_fsync(mount_rw, s3, bucket) -> None:
    mnt = mount_rw()
    fd = os.open(mnt / "s.txt", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"synced")
    os.fsync(fd)
    assert s3.get_object(Bucket=bucket, Key="s.txt")["Body"].read() == b"synced"
    assert errno_of(lambda: os.write(fd, b"more")) in (errno.EBADF, errno.EINVAL, errno.EPERM)
    os.close(fd)


def test_r_write_out_of_order(mount_rw, s3, bucket) -> None:
    mnt = mount_rw()
    fd = os.open(mnt / "ooo.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"a" * 100)
    assert errno_of(lambda: os.pwrite(fd, b"b", 10)) == errno.EINVAL
    assert errno_of(lambda: os.pwrite(fd, b"b", 5000)) == errno.EINVAL
    os.close(fd)
    # The sequential part is committed on close; nothing else is left behind.
    assert s3.get_object(Bucket=bucket, Key="ooo.bin")["Body"].read() == b"a" * 100
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_r_write_uncached(mounter: Mounter, s3, bucket) -> None:
    """A write-only handle writes past the page cache: 64 write() calls of 20,000 bytes make
    64 FUSE writes and no getxattr (through the page cache the kernel asked for
    ``security.capability`` before each write - 64 more requests, measured before the
    change - and cut each unaligned write at a page boundary). O_RDWR writers and setuid
    files still write through the page cache."""
    put(s3, bucket, "old.bin", b"old")
    port = free_port()
    mnt = mounter.mount(bucket, "--allow-overwrite", "--metrics-address", f"127.0.0.1:{port}")

    def getxattrs() -> float:
        return _metric(port, "zonemount_fuse_op_seconds_count", "getxattr")

    def writes() -> float:
        return _metric(port, "zonemount_fuse_op_seconds_count", "write")

    # the count is live: an application's getxattr is one
    assert errno_of(lambda: os.getxattr(mnt / "old.bin", "user.x")) == errno.ENODATA
    assert getxattrs() >= 1
    block = random.Random(7).randbytes(20_000)
    for name, flags, asked in (
        ("new.bin", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0),  # a new file (FUSE create)
        ("old.bin", os.O_WRONLY | os.O_TRUNC, 1),  # an overwrite: the truncation asks once
    ):
        before, writes_before = getxattrs(), writes()
        fd = os.open(mnt / name, flags, 0o644)
        for _ in range(64):
            assert os.write(fd, block) == len(block)
        os.close(fd)
        assert getxattrs() - before <= asked, name
        assert writes() - writes_before == 64, name
        assert s3.get_object(Bucket=bucket, Key=name)["Body"].read() == block * 64
    for name, flags, mode in (
        ("rdwr.bin", os.O_RDWR | os.O_CREAT, 0o644),
        ("suid.bin", os.O_WRONLY | os.O_CREAT, 0o4755),
    ):
        before = getxattrs()
        fd = os.open(mnt / name, flags, mode)
        for _ in range(8):
            os.write(fd, block)
        os.close(fd)
        assert getxattrs() - before >= 1, name  # the page cache's per-write question
        assert s3.get_object(Bucket=bucket, Key=name)["Body"].read() == block * 8


def test_write_only_handles_leave_earlier_readers_their_version(
    mounter: Mounter, s3, bucket, tmp_path: Path
) -> None:
    """R-WRITE-UNCACHED: a reader opened before a write-only overwrite reads the version it
    opened while the new one is written - the writer's bytes fill no pages, so the reader's
    own requests (of its version) answer; through the page cache it read the writer's bytes
    of the pages written so far (review: the change made this, and nothing said so). Bytes
    spliced in (``sendfile``) reach the uncached writer whole, and a write-only descriptor
    still cannot be mapped (EACCES, the kernel's answer before any FUSE request)."""
    put(s3, bucket, "v.bin", b"A" * 50_000)
    mnt = mounter.mount(bucket, "--allow-overwrite")
    reader = os.open(mnt / "v.bin", os.O_RDONLY)
    try:
        assert os.pread(reader, 10, 0) == b"A" * 10
        writer = os.open(mnt / "v.bin", os.O_WRONLY | os.O_TRUNC)
        os.write(writer, b"B" * 30_000)
        assert os.pread(reader, 10, 0) == b"A" * 10  # was b"B" * 10 through the page cache
        os.write(writer, b"B" * 20_000)
        os.close(writer)
    finally:
        os.close(reader)
    with open(mnt / "v.bin", "rb") as f:
        assert f.read() == b"B" * 50_000
    source = tmp_path / "source.bin"
    source.write_bytes(random.Random(3).randbytes(300_001))
    fd = os.open(mnt / "spliced.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with open(source, "rb") as f:
            sent = 0
            while sent < 300_001:
                sent += os.sendfile(fd, f.fileno(), sent, 65_537)
        assert errno_of(lambda: mmap.mmap(fd, 4096, prot=mmap.PROT_WRITE)) == errno.EACCES
    finally:
        os.close(fd)
    spliced = s3.get_object(Bucket=bucket, Key="spliced.bin")["Body"].read()
    assert spliced == source.read_bytes()


def test_r_overwrite(mounter: Mounter, s3, bucket) -> None:
    put(s3, bucket, "o.txt", b"original")
    ro = mounter.mount(bucket)
    assert errno_of(lambda: (ro / "o.txt").write_bytes(b"x")) == errno.EPERM
    rw = mounter.mount(bucket, "--allow-overwrite")
    assert errno_of(lambda: os.open(rw / "o.txt", os.O_WRONLY)) == errno.EPERM  # no O_TRUNC
    assert errno_of(lambda: os.open(rw / "o.txt", os.O_WRONLY | os.O_APPEND)) == errno.EPERM
    fd = os.open(rw / "o.txt", os.O_RDWR)  # read-write without O_TRUNC: reads work
    try:
        assert os.read(fd, 100) == b"original"
        assert errno_of(lambda: os.pwrite(fd, b"x", 0)) == errno.EBADF
    finally:
        os.close(fd)
    (rw / "o.txt").write_bytes(b"replaced")
    assert s3.get_object(Bucket=bucket, Key="o.txt")["Body"].read() == b"replaced"


def test_r_delete(mounter: Mounter, s3, bucket) -> None:
    put(s3, bucket, "del.txt")
    plain = mounter.mount(bucket)
    assert errno_of(lambda: os.unlink(plain / "del.txt")) == errno.EPERM
    allowed = mounter.mount(bucket, "--allow-delete")
    os.unlink(allowed / "del.txt")
    assert keys(s3, bucket) == []
    assert errno_of(lambda: os.stat(allowed / "del.txt")) == errno.ENOENT


def test_r_read_only(mounter: Mounter, s3, bucket) -> None:
    put(s3, bucket, "a/f.txt", b"data")
    mnt = mounter.mount(bucket, "--read-only", "--allow-delete", "--allow-overwrite")
    assert (mnt / "a/f.txt").read_bytes() == b"data"
    for op in (
        lambda: (mnt / "new.txt").write_bytes(b"x"),
        lambda: (mnt / "a/f.txt").write_bytes(b"x"),
        lambda: os.unlink(mnt / "a/f.txt"),
        lambda: os.mkdir(mnt / "d"),
        lambda: os.rename(mnt / "a/f.txt", mnt / "a/g.txt"),
        lambda: os.chmod(mnt / "a/f.txt", 0o600),
        lambda: os.rmdir(mnt / "a"),
    ):
        assert errno_of(op) == errno.EROFS
    assert keys(s3, bucket) == ["a/f.txt"]


# -- directories -----------------------------------------------------------------------
def test_r_dir_implicit(mount_rw, s3, bucket) -> None:
    put(s3, bucket, "x/y/z.txt")
    put(s3, bucket, "marker/", b"")
    put(s3, bucket, "weird//name")  # empty path component: not shown
    mnt = mount_rw()
    assert sorted(os.listdir(mnt)) == ["marker", "weird", "x"]
    assert stat.S_ISDIR(os.stat(mnt / "x/y").st_mode)
    assert os.listdir(mnt / "marker") == []
    assert os.listdir(mnt / "weird") == []
    assert os.listdir(mnt / "x/y") == ["z.txt"]


def test_r_dir_shadows_file(mount_rw, s3, bucket) -> None:
    put(s3, bucket, "same", b"file")
    put(s3, bucket, "same/inner.txt", b"inner")
    mnt = mount_rw()
    assert os.listdir(mnt) == ["same"]
    assert stat.S_ISDIR(os.stat(mnt / "same").st_mode)
    assert (mnt / "same/inner.txt").read_bytes() == b"inner"


def test_r_dir_mkdir_local(mounter: Mounter, s3, bucket) -> None:
    mnt = mounter.mount(bucket)
    other = mounter.mount(bucket)
    os.mkdir(mnt / "local")
    assert os.listdir(mnt) == ["local"]
    assert keys(s3, bucket) == []
    assert "local" not in os.listdir(other)
    (mnt / "local/f.txt").write_bytes(b"1")
    assert keys(s3, bucket) == ["local/f.txt"]
    assert os.listdir(other) == ["local"]


def test_r_dir_rmdir(mounter: Mounter, s3, bucket) -> None:
    put(s3, bucket, "full/f.txt")
    put(s3, bucket, "marked/", b"")
    mnt = mounter.mount(bucket, "--allow-delete")
    os.mkdir(mnt / "empty")
    os.rmdir(mnt / "empty")
    assert "empty" not in os.listdir(mnt)
    assert errno_of(lambda: os.rmdir(mnt / "full")) == errno.ENOTEMPTY
    assert errno_of(lambda: os.rmdir(mnt / "full/f.txt")) == errno.ENOTDIR
    os.rmdir(mnt / "marked")
    assert keys(s3, bucket) == ["full/f.txt"]


def test_r_dir_readdir_offsets(mount_rw, s3, bucket) -> None:
    names = [f"f{i:04d}" for i in range(1500)]
    for name in names:
        put(s3, bucket, f"big/{name}", b"")
    mnt = mount_rw()
    seen: list[str] = []
    with os.scandir(mnt / "big") as it:
        for n, entry in enumerate(it):
            seen.append(entry.name)
            if n == 100:  # change the directory while it is being read
                for i in range(0, 1500, 7):
                    s3.delete_object(Bucket=bucket, Key=f"big/{names[i]}")
                for i in range(50):
                    put(s3, bucket, f"big/new{i:03d}", b"")
    assert len(seen) == len(set(seen)), "no entry twice"
    assert set(names) <= set(seen), "every entry present when the listing began is returned"


# -- rename ----------------------------------------------------------------------------
def test_r_rename_file(mount_rw, s3, bucket) -> None:
    put(s3, bucket, "a.txt", b"A")
    s3.copy_object(
        Bucket=bucket,
        Key="a.txt",
        CopySource={"Bucket": bucket, "Key": "a.txt"},
        Metadata={"mode": str(stat.S_IFREG | 0o600)},
        MetadataDirective="REPLACE",
    )
    mnt = mount_rw()
    os.rename(mnt / "a.txt", mnt / "b.txt")
    assert keys(s3, bucket) == ["b.txt"]
    assert (mnt / "b.txt").read_bytes() == b"A"
    assert stat.S_IMODE(os.stat(mnt / "b.txt").st_mode) == 0o600  # metadata travels
    os.mkdir(mnt / "sub")
    os.rename(mnt / "b.txt", mnt / "sub/c.txt")
    assert keys(s3, bucket) == ["sub/c.txt"]


def test_r_dir_readdir_relists(mounter: Mounter, s3, bucket) -> None:
    """readdir is never served from what an earlier listing showed, even with a long TTL: a
    warm ``ls -l`` of 1,050 keys is 2 LIST pages, and its lstats reach no FUSE handler."""
    for i in range(1050):
        put(s3, bucket, f"big/{i:04d}", b"x" * (i % 7))
    port = free_port()
    mnt = mounter.mount(bucket, "--metadata-ttl", "60", "--metrics-address", f"127.0.0.1:{port}")

    def ls_l() -> dict[str, int]:
        return {e.name: e.stat(follow_symlinks=False).st_size for e in os.scandir(mnt / "big")}

    assert len(ls_l()) == 1050
    put(s3, bucket, "big/new-from-another-client", b"12345")
    s3.delete_object(Bucket=bucket, Key="big/0003")
    counts = (
        ("zonemount_s3_requests_total", "ListObjectsV2"),
        ("zonemount_s3_requests_total", "HeadObject"),
    )
    fuse = [("zonemount_fuse_op_seconds_count", op) for op in ("lookup", "getattr")]
    before = [_metric(port, name, label) for name, label in (*counts, *fuse)]
    sizes = ls_l()  # within the TTL of everything the first listing showed
    lists, heads, lookups, getattrs = (
        _metric(port, name, label) - b
        for (name, label), b in zip((*counts, *fuse), before, strict=True)
    )
    assert sizes["new-from-another-client"] == 5 and "0003" not in sizes
    assert sizes["0006"] == 6 and len(sizes) == 1050
    assert (lists, heads) == (2, 0), f"{lists:.0f} LIST, {heads:.0f} HEAD for one ls -l"
    assert lookups + getattrs <= 2, (
        f"lstat reached FUSE: {lookups:.0f} lookups, {getattrs:.0f} getattrs"
    )


def test_r_rename_dir(mount_rw, s3, bucket) -> None:
    for key in (
        "job/_temporary/0/task_1/part-0",
        "job/_temporary/0/task_1/sub/part-1",
        "job/_temporary/0/task_1/sub/",
    ):
        put(s3, bucket, key, key.encode())
    mnt = mount_rw()
    os.mkdir(mnt / "job/_temporary/0/task_1/emptylocal")
    os.rename(mnt / "job/_temporary/0/task_1", mnt / "job/out")
    assert keys(s3, bucket) == ["job/out/part-0", "job/out/sub/", "job/out/sub/part-1"]
    assert (mnt / "job/out/sub/part-1").read_bytes() == b"job/_temporary/0/task_1/sub/part-1"
    assert os.path.isdir(mnt / "job/out/emptylocal")
    assert not os.path.exists(mnt / "job/_temporary/0/task_1")


def test_rmdir_of_a_directory_known_to_hold_entries_asks_nothing(
    mounter: Mounter, s3, bucket
) -> None:
    """rmdir of a directory holding a file this mount knows (within the TTL) is ENOTEMPTY
    without a LIST: Hadoop's fullyDelete tries rmdir on every directory before emptying it
    (27 such LISTs in one Spark pipeline run)."""
    port = free_port()
    mnt = mounter.mount(
        bucket, "--allow-delete", "--metadata-ttl", "60", "--metrics-address", f"127.0.0.1:{port}"
    )
    (mnt / "d/e").mkdir(parents=True)
    (mnt / "d/e/f").write_bytes(b"f")
    put(s3, bucket, "d/g", b"g")
    assert sorted(os.listdir(mnt / "d")) == ["e", "g"]
    before = _metric(port, "zonemount_s3_requests_total", "ListObjectsV2")
    assert errno_of(lambda: os.rmdir(mnt / "d")) == errno.ENOTEMPTY
    assert errno_of(lambda: os.rmdir(mnt / "d/e")) == errno.ENOTEMPTY
    assert _metric(port, "zonemount_s3_requests_total", "ListObjectsV2") == before
    os.unlink(mnt / "d/e/f")
    os.rmdir(mnt / "d/e")
    os.unlink(mnt / "d/g")
    os.rmdir(mnt / "d")
    assert keys(s3, bucket) == []


def test_rmtree_after_a_job_commit_removes_every_directory(mount_rw) -> None:
    """``make demo``'s job: tasks write under attempt directories, each attempt is renamed to
    a task directory, the job commit moves every file out, ``shutil.rmtree`` removes
    ``_temporary``. The emptied ``_temporary/0`` is kept as a local directory; its task
    directories (known within the TTL, gone from S3) were left in the tree though its
    listing no longer showed them, so rmtree's last ``rmdir`` was ENOTEMPTY."""
    mnt = mount_rw("--allow-delete", "--allow-overwrite", "--metadata-ttl", "60")
    out = mnt / "w/t"
    temp = out / "_temporary/0"
    temp.mkdir(parents=True)
    for task in range(3):
        attempt = temp / f"_temporary/attempt_{task}"
        for day in range(2):
            part = attempt / f"day={day}/part-{task}"
            part.parent.mkdir(parents=True, exist_ok=True)
            part.write_bytes(b"x")
        os.rename(attempt, temp / f"task_{task}")
    for task_dir in sorted(temp.glob("task_*")):
        for part_dir in task_dir.iterdir():
            (out / part_dir.name).mkdir(exist_ok=True)
            for f in part_dir.iterdir():
                os.rename(f, out / part_dir.name / f.name)
    shutil.rmtree(out / "_temporary")
    assert sorted(os.listdir(out)) == ["day=0", "day=1"]
    assert sorted(os.listdir(out / "day=0")) == ["part-0", "part-1", "part-2"]


@pytest.mark.parametrize("kind", ["general-purpose", "directory"])
def test_rename_dir_leaves_no_folder_behind(seaweed_server, tmp_path, kind: str) -> None:
    """SeaweedFS keeps a directory whose objects were deleted as a folder that listings show:
    a directory renamed by copy + delete showed under both names (old code: ``ls`` listed
    ``attempt`` beside ``task``, and Spark's cleanup then listed and rmdir'ed every such
    folder of every task attempt). The rename deletes those folders; an AWS-like server
    (moto, below) gets no extra DELETE. On a directory bucket too, where a server without
    RenameObject moves each object by copy + delete (they were left there: once rmdir
    trusted a directory listed in full, Spark's cleanup of ``_temporary`` left it showing)."""
    import boto3
    from botocore.config import Config
    from zonemount_cli.servers import ACCESS_KEY, SECRET_KEY

    name = f"zm-{os.urandom(6).hex()}" + ("--use1-az4--x-s3" if kind == "directory" else "")
    seaweed: Any = boto3.client(  # directory-bucket names without CreateSession
        "s3",
        endpoint_url=seaweed_server.endpoint,
        region_name=seaweed_server.region,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path", "disable_s3_express_session_auth": True}),
    )
    seaweed.create_bucket(Bucket=name)
    mounter = Mounter(seaweed_server, tmp_path)
    try:
        mnt = mounter.mount(name, "--allow-delete")
        job = mnt / "job/_temporary/0"
        for rel in ("attempt/p=1/f", "attempt/p=2/g", "attempt/h"):
            (job / rel).parent.mkdir(parents=True, exist_ok=True)
            (job / rel).write_bytes(rel.encode())
        os.rename(job / "attempt", job / "task")
        assert sorted(os.listdir(job)) == ["task"]
        listed = seaweed.list_objects_v2(Bucket=name, Prefix="job/_temporary/0/", Delimiter="/")
        assert [p["Prefix"] for p in listed.get("CommonPrefixes", [])] == ["job/_temporary/0/task/"]
        assert (job / "task/p=2/g").read_bytes() == b"attempt/p=2/g"
    finally:
        mounter.cleanup()


def test_rename_dir_on_aws_like_server_deletes_only_objects(mounter: Mounter, bucket) -> None:
    port = free_port()
    mnt = mounter.mount(bucket, "--allow-delete", "--metrics-address", f"127.0.0.1:{port}")
    for d in ("a", "c"):
        (mnt / d / "sub").mkdir(parents=True)
        (mnt / d / "sub/f").write_bytes(b"f")
        (mnt / d / "g").write_bytes(b"g")
    for src, dst in (("a", "b"), ("c", "d")):
        before = [_metric(port, "zonemount_s3_requests_total", op) for op in DELETES]
        os.rename(mnt / src, mnt / dst)
        after = [_metric(port, "zonemount_s3_requests_total", op) for op in DELETES]
        single, batches = (a - b for a, b in zip(after, before, strict=True))
        assert (single, batches) == (0, 1), f"{single:.0f} DeleteObject + {batches:.0f} batches"
    assert sorted(os.listdir(mnt)) == ["b", "d"]
    assert sorted(os.listdir(mnt / "d")) == ["g", "sub"]


DELETES = ("DeleteObject", "DeleteObjects")


def _emptied_tree(mnt: Path) -> None:
    """Spark's cleanup of ``_temporary`` in small: directories made here, a file published
    in each, then removed by ``shutil.rmtree`` (which lists each directory, unlinks what it
    showed, then removes it)."""
    for rel in ("t/a/f", "t/a/b/g", "t/c/h"):
        (mnt / rel).parent.mkdir(parents=True, exist_ok=True)
        (mnt / rel).write_bytes(rel.encode())


def test_rmdir_of_an_emptied_directory_on_an_aws_like_server_sends_no_request(
    mounter: Mounter, s3, bucket
) -> None:
    """R-DIR-RMDIR: on a server that keeps nothing for an emptied directory (AWS S3; moto
    here) removing a directory this mount listed in full, saw no ``dir/`` marker in and
    emptied costs no request: one HEAD at the mount's first such rmdir tells the server kind.
    A directory whose listing showed a marker still deletes it. Before, every such rmdir
    sent a DeleteObject of a key that was not there (125 per Spark pipeline run)."""
    for key in ("m/", "m/x"):
        put(s3, bucket, key, b"" if key.endswith("/") else b"x")
    port = free_port()
    mnt = mounter.mount(
        bucket, "--allow-delete", "--negative-metadata-ttl", "60",
        "--metrics-address", f"127.0.0.1:{port}",
    )  # fmt: skip
    _emptied_tree(mnt)

    def count(op: str) -> float:
        return _metric(port, "zonemount_s3_requests_total", op)

    deletes, heads = count("DeleteObject"), count("HeadObject")
    shutil.rmtree(mnt / "t")  # 4 directories, 3 files
    assert (count("DeleteObject") - deletes, count("HeadObject") - heads) == (3, 1)
    deletes = count("DeleteObject")
    shutil.rmtree(mnt / "m")  # a marker: its file and the marker
    assert count("DeleteObject") - deletes == 2
    assert keys(s3, bucket) == [] and os.listdir(mnt) == []


def test_rmdir_of_an_emptied_directory_removes_the_folder_seaweedfs_keeps(
    seaweed_server, tmp_path
) -> None:
    """R-DIR-RMDIR on SeaweedFS, which keeps a directory whose objects are gone as a folder
    that listings show: rmdir deletes it (the one HEAD finds it), so the tree does not show
    again in this mount or another."""
    name = f"zm-{os.urandom(6).hex()}"
    seaweed: Any = seaweed_server.client()
    seaweed.create_bucket(Bucket=name)
    mounter = Mounter(seaweed_server, tmp_path)
    try:
        mnt = mounter.mount(name, "--allow-delete", "--negative-metadata-ttl", "60")
        _emptied_tree(mnt)
        shutil.rmtree(mnt / "t")
        listed = seaweed.list_objects_v2(Bucket=name, Delimiter="/")
        assert listed.get("CommonPrefixes", []) == [] and listed.get("Contents", []) == []
        assert os.listdir(mnt) == [] and os.listdir(mounter.mount(name)) == []
    finally:
        mounter.cleanup()


def test_rename_dir_deletes_sources_and_folders_in_batches(seaweed_server, tmp_path) -> None:
    """A Spark task commit renames its attempt directory (here 16 partition directories of
    2 files each). The 32 sources go in one DeleteObjects request, and the 16 emptied folders
    SeaweedFS keeps (one level) in one more; the attempt's own folder is one DeleteObject.
    Each used to be a DeleteObject of its own (48 requests per task commit, costing the
    server about as much CPU as the copies)."""
    name = f"zm-{os.urandom(6).hex()}"
    seaweed: Any = seaweed_server.client()
    seaweed.create_bucket(Bucket=name)
    port = free_port()
    mounter = Mounter(seaweed_server, tmp_path)
    try:
        mnt = mounter.mount(name, "--allow-delete", "--metrics-address", f"127.0.0.1:{port}")
        job = mnt / "job/_temporary/0"
        for n in range(16):
            for f in ("part", ".part.crc"):
                (job / f"attempt/p={n}").mkdir(parents=True, exist_ok=True)
                (job / f"attempt/p={n}/{f}").write_bytes(f"{n}/{f}".encode())
        (job / "warmup/x").mkdir(parents=True)  # the mount learns the server kind (one HEAD)
        (job / "warmup/x/f").write_bytes(b"w")
        os.rename(job / "warmup", job / "warm")
        before = [_metric(port, "zonemount_s3_requests_total", op) for op in DELETES]
        os.rename(job / "attempt", job / "task")
        after = [_metric(port, "zonemount_s3_requests_total", op) for op in DELETES]
        single, batches = (a - b for a, b in zip(after, before, strict=True))
        assert (single, batches) == (1, 2), f"{single:.0f} DeleteObject + {batches:.0f} batches"
        assert sorted(os.listdir(job)) == ["task", "warm"]
        listed = seaweed.list_objects_v2(Bucket=name, Prefix="job/_temporary/0/", Delimiter="/")
        assert [p["Prefix"] for p in listed.get("CommonPrefixes", [])] == [
            "job/_temporary/0/task/",
            "job/_temporary/0/warm/",
        ]
        moved = seaweed.list_objects_v2(Bucket=name, Prefix="job/_temporary/0/task/")
        assert len(moved["Contents"]) == 32
        assert (job / "task/p=7/.part.crc").read_bytes() == b"7/.part.crc"
    finally:
        mounter.cleanup()


def test_r_rename_overwrite(mounter: Mounter, s3, bucket) -> None:
    put(s3, bucket, "src.txt", b"S")
    put(s3, bucket, "dst.txt", b"D")
    plain = mounter.mount(bucket)
    assert errno_of(lambda: os.rename(plain / "src.txt", plain / "dst.txt")) == errno.EPERM
    mnt = mounter.mount(bucket, "--allow-overwrite")
    os.rename(mnt / "src.txt", mnt / "dst.txt")
    assert keys(s3, bucket) == ["dst.txt"]
    assert s3.get_object(Bucket=bucket, Key="dst.txt")["Body"].read() == b"S"


def test_r_rename_errors(mount_rw, s3, bucket) -> None:
    put(s3, bucket, "d1/f", b"1")
    put(s3, bucket, "d2/g", b"2")
    put(s3, bucket, "file", b"3")
    mnt = mount_rw()
    assert errno_of(lambda: os.rename(mnt / "d1", mnt / "d2")) == errno.ENOTEMPTY
    assert errno_of(lambda: os.rename(mnt / "file", mnt / "d1")) == errno.EISDIR
    assert errno_of(lambda: os.rename(mnt / "d1", mnt / "file")) == errno.ENOTDIR
    assert errno_of(lambda: os.rename(mnt / "d1", mnt / "d1/inner")) == errno.EINVAL
    assert errno_of(lambda: os.rename(mnt / "nope", mnt / "x")) == errno.ENOENT
    os.mkdir(mnt / "emptydir")
    os.rename(mnt / "d1", mnt / "emptydir")  # replacing an empty directory is allowed
    assert keys(s3, bucket) == ["d2/g", "emptydir/f", "file"]


# -- setattr ---------------------------------------------------------------------------
def test_r_setattr_chmod_chown_utime(mounter: Mounter, s3, bucket) -> None:
    mnt = mounter.mount(bucket)
    path = mnt / "attr.txt"
    path.write_bytes(b"abc")
    os.chmod(path, 0o640)
    os.chown(path, 1234, 5678)
    os.utime(path, (1_600_000_000, 1_600_000_000.5))
    st = os.stat(path)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1234, 5678)
    assert st.st_mtime == pytest.approx(1_600_000_000.5)
    meta = s3.head_object(Bucket=bucket, Key="attr.txt")["Metadata"]
    assert int(meta["mode"]) & 0o7777 == 0o640 and meta["uid"] == "1234"
    fresh = mounter.mount(bucket)  # persisted: another mount reports the same
    st2 = os.stat(fresh / "attr.txt")
    assert (stat.S_IMODE(st2.st_mode), st2.st_uid, st2.st_gid) == (0o640, 1234, 5678)
    assert st2.st_mtime == pytest.approx(1_600_000_000.5)
    assert (fresh / "attr.txt").read_bytes() == b"abc"


def test_r_setattr_local_dir(mounter: Mounter, bucket) -> None:
    mnt = mounter.mount(bucket)
    os.mkdir(mnt / "d")
    os.chmod(mnt / "d", 0o700)
    os.utime(mnt / "d", (1_500_000_000, 1_500_000_000))
    st = os.stat(mnt / "d")
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_mtime == 1_500_000_000


def test_r_truncate(mounter: Mounter, s3, bucket) -> None:
    put(s3, bucket, "t.txt", b"content")
    plain = mounter.mount(bucket)
    assert errno_of(lambda: os.truncate(plain / "t.txt", 0)) == errno.EPERM
    assert errno_of(lambda: os.truncate(plain / "t.txt", 3)) == errno.EINVAL
    mnt = mounter.mount(bucket, "--allow-overwrite")
    os.truncate(mnt / "t.txt", 0)
    assert s3.get_object(Bucket=bucket, Key="t.txt")["Body"].read() == b""


# -- metadata cache --------------------------------------------------------------------
def _metric(port: int, name: str, label: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    match = re.search(rf'^{name}\{{op="{label}"\}} ([0-9.e+]+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_r_meta_cache_ls(mounter: Mounter, s3, bucket) -> None:
    for i in range(200):
        put(s3, bucket, f"many/{i:03d}.txt", b"x" * i)
    port = free_port()
    mnt = mounter.mount(bucket, "--metadata-ttl", "60", "--metrics-address", f"127.0.0.1:{port}")
    heads_before = _metric(port, "zonemount_s3_requests_total", "HeadObject")
    sizes = {e.name: e.stat().st_size for e in os.scandir(mnt / "many")}  # ls -l
    assert sizes["123.txt"] == 123 and len(sizes) == 200
    heads = _metric(port, "zonemount_s3_requests_total", "HeadObject") - heads_before
    assert heads <= 2, f"ls -l must not issue a HEAD per file ({heads:.0f} HEADs)"


def test_r_meta_relist(mounter: Mounter, s3, bucket) -> None:
    """A walk of a listed directory that outlasts the TTL (``ls -l`` of 10,000 entries at the
    default 1 s) revalidates its expired entries by listing again, not one HEAD + LIST per
    entry: measured before, 5,832 HEADs for one ``ls -l`` of 10,000 files."""
    for i in range(200):
        put(s3, bucket, f"many/{i:03d}.txt", b"x" * i)
    port = free_port()
    mnt = mounter.mount(bucket, "--metadata-ttl", "1", "--metrics-address", f"127.0.0.1:{port}")
    names = sorted(os.listdir(mnt / "many"))  # readdir: the directory listed in full
    time.sleep(1.2)  # every entry's attributes expire
    put(s3, bucket, "many/050.txt", b"replaced")  # someone else changes one meanwhile
    heads_before = _metric(port, "zonemount_s3_requests_total", "HeadObject")
    sizes = {name: os.stat(mnt / "many" / name).st_size for name in names}  # path lookups
    heads = _metric(port, "zonemount_s3_requests_total", "HeadObject") - heads_before
    assert sizes["123.txt"] == 123 and sizes["050.txt"] == len(b"replaced")
    assert heads <= 40, f"expired entries must be revalidated by relisting ({heads:.0f} HEADs)"


def test_r_meta_lookup_ahead(mounter: Mounter, s3, bucket) -> None:
    """Readers opening a large directory's files one after another (the kernel sends one
    directory's lookups one at a time) find them HEADed ahead: one LIST per few names instead
    of a HEAD and a LIST per name in a directory too large for one page of names (before:
    100 files cost 101 LISTs), every file still HEADed for its metadata, so another client's
    symlink among them is one."""
    for i in range(100):
        put(s3, bucket, f"walk/f{i:03d}", b"x" * i)
    s3.put_object(
        Bucket=bucket, Key="walk/f030", Body=b"f001", Metadata={"mode": str(stat.S_IFLNK | 0o777)}
    )
    port = free_port()
    mnt = mounter.mount(bucket, "--metadata-ttl", "60", "--metrics-address", f"127.0.0.1:{port}")
    lists = _metric(port, "zonemount_s3_requests_total", "ListObjectsV2")
    modes = {i: os.lstat(mnt / f"walk/f{i:03d}").st_mode for i in range(100)}
    lists = _metric(port, "zonemount_s3_requests_total", "ListObjectsV2") - lists
    assert stat.S_ISLNK(modes[30]) and os.readlink(mnt / "walk/f030") == "f001"
    assert all(stat.S_ISREG(m) for i, m in modes.items() if i != 30)
    assert (mnt / "walk/f099").read_bytes() == b"x" * 99
    assert lists <= 30, f"{lists:.0f} LISTs for 100 lookups in one directory"


def test_meta_misses_in_a_large_directory_relist_it(mounter: Mounter, s3, bucket) -> None:
    """Lookups of names a large listed directory does not hold, once its negative knowledge
    expired, are asked name by name only until listing it again is cheaper (as
    R-META-RELIST counts expired entries); the listing renews the knowledge. Before: every
    new name of an untar or a Spark job into a directory of thousands of files cost a HEAD
    and a LIST once the directory outlived the negative TTL (5,000 files: 4,895 + 4,999)."""
    for i in range(100):
        put(s3, bucket, f"big/{i:03d}", b"x")
    port = free_port()
    mnt = mounter.mount(
        bucket,
        *("--metadata-ttl", "60", "--negative-metadata-ttl", "1"),
        *("--metrics-address", f"127.0.0.1:{port}"),
    )

    def asked() -> float:
        return sum(
            _metric(port, "zonemount_s3_requests_total", op)
            for op in ("HeadObject", "ListObjectsV2")
        )

    assert len(os.listdir(mnt / "big")) == 100  # listed in full: known whole for 1 s
    time.sleep(1.2)  # the negative knowledge expires
    put(s3, bucket, "big/other", b"o")  # another client adds a name meanwhile
    before = asked()
    missing = [name for i in range(60) if not (mnt / "big" / (name := f"new-{i}")).exists()]
    requests = asked() - before
    assert len(missing) == 60
    assert requests <= 2 * 16 + 4, f"{requests:.0f} requests for 60 missing names"
    assert (mnt / "big/other").read_bytes() == b"o"  # the listing showed it
    put(s3, bucket, "big/later", b"l")
    time.sleep(1.2)
    assert (mnt / "big/later").read_bytes() == b"l"  # seen once the knowledge expired


def test_r_meta_published_parents(mounter: Mounter, s3, bucket) -> None:
    """A file this mount publishes proves that every directory above it exists: a job that
    keeps writing under ``run/table/_temporary/...`` walks those paths without S3 revalidating
    them once per TTL (measured before: each expired ancestor listed its parent again, about
    180 LISTs in one Spark pipeline run)."""
    port = free_port()
    mnt = mounter.mount(
        bucket, "--allow-overwrite", "--metadata-ttl", "1", "--metrics-address", f"127.0.0.1:{port}"
    )

    def asked() -> float:
        return sum(
            _metric(port, "zonemount_s3_requests_total", op)
            for op in ("HeadObject", "ListObjectsV2")
        )

    (mnt / "a/b/c").mkdir(parents=True)
    (mnt / "a/b/c/f").write_bytes(b"0")
    before = asked()
    end = time.monotonic() + 2.5  # well past the 1 s TTL of a, a/b and a/b/c
    i = 0
    while time.monotonic() < end:
        i += 1
        (mnt / "a/b/c/f").write_bytes(str(i).encode())  # path walk + publish
        time.sleep(0.05)
    assert asked() == before, f"{asked() - before:.0f} lookups of directories just written in"
    assert (mnt / "a/b/c/f").read_bytes() == str(i).encode()
    # another client's change to a directory's listing still shows after the TTL
    put(s3, bucket, "a/b/other", b"o")
    time.sleep(1.2)
    assert sorted(os.listdir(mnt / "a/b")) == ["c", "other"]


def test_r_meta_ttl(mounter: Mounter, s3, bucket) -> None:
    cached = mounter.mount(bucket, "--metadata-ttl", "60", "--negative-metadata-ttl", "60")
    fresh = mounter.mount(bucket, "--metadata-ttl", "0", "--negative-metadata-ttl", "0")
    assert not (cached / "late.txt").exists()
    assert not (fresh / "late.txt").exists()
    put(s3, bucket, "late.txt", b"now here")
    assert not (cached / "late.txt").exists(), "negative entry cached for 60 s"
    assert (fresh / "late.txt").read_bytes() == b"now here"


def test_r_meta_negative_dir(mounter: Mounter, s3, bucket) -> None:
    port = free_port()
    mnt = mounter.mount(
        bucket,
        "--metadata-ttl",
        "60",
        "--negative-metadata-ttl",
        "60",
        "--metrics-address",
        f"127.0.0.1:{port}",
    )

    def lookups() -> float:
        return sum(
            _metric(port, "zonemount_s3_requests_total", op)
            for op in ("HeadObject", "ListObjectsV2")
        )

    (mnt / "job").mkdir()
    (mnt / "job/part-0").write_bytes(b"done")  # uploaded: the directory exists remotely now
    assert keys(s3, bucket) == ["job/part-0"]
    before = lookups()
    for i in range(1, 21):  # a create storm looks every new name up first
        assert not (mnt / f"job/part-{i}").exists()
    assert lookups() == before, "names in a directory this mount made need no request"
    # another client's object is not seen by a lookup within the negative TTL ...
    put(s3, bucket, "job/remote.txt", b"r")
    assert not (mnt / "job/remote.txt").exists()
    # ... and a listing shows it and makes the directory's names known again
    assert sorted(os.listdir(mnt / "job")) == ["part-0", "remote.txt"]
    assert (mnt / "job/remote.txt").read_bytes() == b"r"
    before = lookups()
    assert not (mnt / "job/other").exists()
    assert lookups() == before
    # without a negative TTL every lookup asks S3
    fresh = mounter.mount(bucket, "--metadata-ttl", "0", "--negative-metadata-ttl", "0")
    (fresh / "new").mkdir()
    (fresh / "new/a").write_bytes(b"a")
    put(s3, bucket, "new/b", b"b")
    assert (fresh / "new/b").read_bytes() == b"b"


def test_r_meta_negative_kernel(mounter: Mounter, s3, bucket) -> None:
    port = free_port()
    mnt = mounter.mount(
        bucket,
        "--metadata-ttl",
        "60",
        "--negative-metadata-ttl",
        "3",
        "--metrics-address",
        f"127.0.0.1:{port}",
    )

    def fuse_lookups() -> float:
        return _metric(port, "zonemount_fuse_op_seconds_count", "lookup")

    (mnt / "job").mkdir()
    assert not (mnt / "job/part-0").exists()
    before = fuse_lookups()
    for _ in range(20):  # Hadoop: exists(), then open(O_CREAT) looks the name up again
        assert not (mnt / "job/part-0").exists()
    assert fuse_lookups() == before, "the kernel answers a cached miss without a request"
    # names this mount makes replace the kernel's negative entries at once
    for name in ("f", "d", "s", "moved"):
        assert not (mnt / "job" / name).exists()
    (mnt / "job/f").write_bytes(b"f")
    (mnt / "job/d").mkdir()
    os.symlink("f", mnt / "job/s")
    (mnt / "job/part-0").write_bytes(b"0")
    os.rename(mnt / "job/part-0", mnt / "job/moved")
    assert (mnt / "job/f").read_bytes() == b"f" and (mnt / "job/d").is_dir()
    assert os.readlink(mnt / "job/s") == "f" and (mnt / "job/moved").read_bytes() == b"0"
    assert not (mnt / "job/part-0").exists()
    # another client's object shows once the negative TTL ends, as without the cache
    assert not (mnt / "job/remote.txt").exists()
    put(s3, bucket, "job/remote.txt", b"r")
    assert not (mnt / "job/remote.txt").exists()
    deadline = time.monotonic() + 10
    while not (mnt / "job/remote.txt").exists():
        assert time.monotonic() < deadline, "a miss outlived --negative-metadata-ttl"
        time.sleep(0.2)
    assert (mnt / "job/remote.txt").read_bytes() == b"r"
    # a miss S3 confirmed is cached as long as the mount remembers it (the negative TTL)
    assert not (mnt / "elsewhere").exists()
    put(s3, bucket, "elsewhere", b"e")
    started = time.monotonic()
    while not (mnt / "elsewhere").exists():
        assert time.monotonic() - started < 10
        time.sleep(0.2)
    assert (mnt / "elsewhere").read_bytes() == b"e"


# -- flags -----------------------------------------------------------------------------
def test_r_flags_ownership_modes(mounter: Mounter, s3, bucket) -> None:
    put(s3, bucket, "d/f.txt")
    mnt = mounter.mount(
        bucket,
        "--uid",
        "1000",
        "--gid",
        "1001",
        "--dir-mode",
        "0750",
        "--file-mode",
        "0640",
        "--allow-other",
    )
    st_d, st_f = os.stat(mnt / "d"), os.stat(mnt / "d/f.txt")
    assert (st_d.st_uid, st_d.st_gid, stat.S_IMODE(st_d.st_mode)) == (1000, 1001, 0o750)
    assert (st_f.st_uid, st_f.st_gid, stat.S_IMODE(st_f.st_mode)) == (1000, 1001, 0o640)
    mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
    line = next(ln for ln in mountinfo if str(mnt) in ln)
    assert "allow_other" in line and "fuse.zonemount" in line


def test_r_flags_prefix(mounter: Mounter, s3, bucket) -> None:
    put(s3, bucket, "outside.txt")
    put(s3, bucket, "team/a/inside.txt", b"in")
    mnt = mounter.mount(f"{bucket}/team/a/")
    assert os.listdir(mnt) == ["inside.txt"]
    (mnt / "new.txt").write_bytes(b"n")
    other = mounter.mount(bucket, "--prefix", "team/a/")
    assert sorted(os.listdir(other)) == ["inside.txt", "new.txt"]
    assert "team/a/new.txt" in keys(s3, bucket)


def test_r_flags_storage_class_sse(mounter: Mounter, s3, bucket) -> None:
    mnt = mounter.mount(bucket, "--storage-class", "STANDARD_IA", "--sse", "AES256")
    (mnt / "small.txt").write_bytes(b"s")
    with open(mnt / "large.bin", "wb") as f:
        f.write(b"L" * (9 * MiB))  # multipart
    for key in ("small.txt", "large.bin"):
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head.get("StorageClass") == "STANDARD_IA"
        assert head.get("ServerSideEncryption") == "AES256"


def test_r_flags_memory_target(mounter: Mounter, s3, bucket) -> None:
    """A tenant's oversized part sizes on a real mount with a 64 MiB memory target: 256 MiB
    read parts are cut to 16 MiB (a 40 MiB object read whole takes the first chunk's 4 lanes
    and 2 more GETs, not one 256 MiB chunk's 4 lanes), 64 MiB write parts to 16 MiB with one
    part in flight (a 40 MiB file is 3 UploadParts, not one 40 MiB PutObject buffered whole);
    the mount command says so, one line per change, and the bytes are intact."""
    data = random.Random(6).randbytes(40 * MiB)
    put(s3, bucket, "forty.bin", data)
    port = free_port()
    proc = mounter.run(
        bucket,
        "--read-part-size", str(256 * MiB),
        "--write-part-size", str(64 * MiB),
        "--max-memory-target", "64",
        "--metrics-address", f"127.0.0.1:{port}",
    )  # fmt: skip
    mnt: Path = proc.mountpoint  # type: ignore[attr-defined]
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 3, proc.stderr
    assert "reads use 16777216-byte (16 MiB) parts" in warnings[0]
    assert "uploads use 16777216-byte (16 MiB) parts" in warnings[1]
    assert "sends 1 part(s) at once" in warnings[2]
    gets = _metric(port, "zonemount_s3_requests_total", "GetObject")
    assert (mnt / "forty.bin").read_bytes() == data
    assert _metric(port, "zonemount_s3_requests_total", "GetObject") - gets == 6
    parts = _metric(port, "zonemount_s3_requests_total", "UploadPart")
    (mnt / "copy.bin").write_bytes(data)
    assert _metric(port, "zonemount_s3_requests_total", "UploadPart") - parts == 3
    assert s3.get_object(Bucket=bucket, Key="copy.bin")["Body"].read() == data


# -- errors ----------------------------------------------------------------------------
def test_r_err_enoent_and_eio(mounter: Mounter, tmp_path: Path) -> None:
    from zonemount_cli.servers import start_moto

    server = start_moto()
    try:
        client = server.client()
        client.create_bucket(Bucket="dying")
        client.put_object(Bucket="dying", Key="f.txt", Body=b"x")
        m = Mounter(server, tmp_path)
        mnt = m.mount("dying", "--metadata-ttl", "0")
        assert errno_of(lambda: os.stat(mnt / "missing")) == errno.ENOENT
        server.stop()
        start = time.monotonic()
        assert errno_of(lambda: os.stat(mnt / "other")) == errno.EIO
        assert errno_of(lambda: (mnt / "f.txt").read_bytes()) == errno.EIO
        assert time.monotonic() - start < 60, "a dead endpoint must not hang the mount"
        m.cleanup()
        assert not is_mounted(mnt)
    finally:
        server.stop()


# -- lifecycle -------------------------------------------------------------------------
def test_r_lifecycle_sigterm_and_umount(mounter: Mounter, bucket) -> None:
    import signal
    import subprocess

    mnt = mounter.mount(bucket)
    pid = server_pid(mnt)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while is_mounted(mnt) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_mounted(mnt)
    mnt2 = mounter.mount(bucket)
    pid2 = server_pid(mnt2)
    subprocess.run(["fusermount3", "-u", str(mnt2)], check=True)
    for _ in range(200):
        if not Path(f"/proc/{pid2}").exists():
            break
        time.sleep(0.05)
    assert not Path(f"/proc/{pid2}").exists(), "the mount process ends after umount"


def test_meta_relist_small_directory(mounter: Mounter, s3, bucket) -> None:
    """In a directory one small LIST page holds, an expired entry is revalidated by listing
    the directory (one request) rather than HEAD + LIST, and that listing answers its
    siblings too - the Spark commit's lookups of part files written a second earlier."""
    for name in ("a", "b", "c"):
        put(s3, bucket, f"small/{name}", name.encode())
    port = free_port()
    mnt = mounter.mount(bucket, "--metadata-ttl", "1", "--metrics-address", f"127.0.0.1:{port}")
    (mnt / "made").mkdir()
    (mnt / "made/part-0").write_bytes(b"0")
    assert sorted(os.listdir(mnt / "small")) == ["a", "b", "c"]
    time.sleep(1.2)  # every entry's attributes expire
    put(s3, bucket, "small/b", b"bigger")  # someone else replaces one meanwhile

    def requests(op: str) -> float:
        return _metric(port, "zonemount_s3_requests_total", op)

    heads0, lists0 = requests("HeadObject"), requests("ListObjectsV2")
    sizes = {name: os.stat(mnt / "small" / name).st_size for name in ("a", "b", "c")}
    assert os.stat(mnt / "made/part-0").st_size == 1
    heads, lists = requests("HeadObject") - heads0, requests("ListObjectsV2") - lists0
    assert sizes == {"a": 1, "b": len(b"bigger"), "c": 1}
    assert heads == 0, f"revalidated by listing, not HEAD ({heads:.0f} HEADs)"
    assert lists <= 3, f"one listing per directory walked: /, small, made ({lists:.0f} LISTs)"


def test_meta_local_state_cached_by_kernel(mounter: Mounter, s3, bucket) -> None:
    """A directory this mount made is cached by the kernel like a remote entry (it changes
    only through this mount): a path walk through it costs no FUSE request each time (it
    did: untar spent ~2 FUSE lookups per file on it). A file being written is not cached
    (its upload may be abandoned behind the kernel's back), yet shows every write."""
    port = free_port()
    mnt = mounter.mount(bucket, "--metadata-ttl", "60", "--metrics-address", f"127.0.0.1:{port}")

    def asked() -> float:
        return sum(
            _metric(port, "zonemount_fuse_op_seconds_count", op) for op in ("lookup", "getattr")
        )

    (mnt / "new").mkdir()
    with open(mnt / "new/f", "wb") as handle:
        handle.write(b"abc")
        handle.flush()
        before = asked()
        for _ in range(20):
            assert os.path.isdir(mnt / "new")
            assert os.path.isdir(mnt / "new/")
        assert asked() - before <= 2, "the kernel must cache the new directory"
        assert os.stat(mnt / "new/f").st_size == 3
        handle.write(b"de")
        handle.flush()
        assert os.stat(mnt / "new/f").st_size == 5  # a write through the kernel shows at once
    assert os.stat(mnt / "new/f").st_size == 5
    assert s3.get_object(Bucket=bucket, Key="new/f")["Body"].read() == b"abcde"


def test_meta_written_file_attributes_cached(mounter: Mounter, s3, bucket) -> None:
    """The attributes of a file being written are cached by the kernel (its name is not):
    with attribute timeout 0 every open(O_CREAT) cost a FUSE getattr of the new inode (the
    kernel's permission check on open), one request in eight of an untar. What remains is
    the directory's getattr: the kernel drops a directory's attributes after each create."""
    port = free_port()
    mnt = mounter.mount(bucket, "--metadata-ttl", "60", "--metrics-address", f"127.0.0.1:{port}")
    (mnt / "many").mkdir()
    files = 10
    before = _metric(port, "zonemount_fuse_op_seconds_count", "getattr")
    for i in range(files):  # what tar -x does per file
        with open(mnt / f"many/f{i}", "xb", buffering=0) as handle:
            handle.write(b"x" * i)
            os.utime(handle.fileno(), ns=(0, 10**18))
    getattrs = _metric(port, "zonemount_fuse_op_seconds_count", "getattr") - before
    assert getattrs <= files + 1, f"{getattrs:.0f} getattrs for {files} created files"
    with open(mnt / "many/g", "xb", buffering=0) as handle:
        handle.write(b"abc")
        assert os.fstat(handle.fileno()).st_size == 3  # what the kernel wrote shows at once
        handle.write(b"de")
        assert os.fstat(handle.fileno()).st_size == 5
        assert os.stat(mnt / "many/g").st_size == 5
    assert [os.stat(mnt / f"many/f{i}").st_size for i in range(files)] == list(range(files))
    assert os.stat(mnt / "many/f3").st_mtime_ns == 10**18
    assert s3.get_object(Bucket=bucket, Key="many/f9")["Body"].read() == b"x" * 9
