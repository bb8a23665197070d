"""docs/SEMANTICS.md, the write lifecycle under faults and concurrency, on real mounts.

Like tests/fs/test_semantics.py: each test is named after its rule id and
tests/fs/test_semantics_doc.py keeps the two in step.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from zonemount_cli.servers import LocalS3, free_port
from zonemount_csi import mountinfo

from .crashes import contents, kill_mid_rename, reached, tree
from .faultproxy import FaultProxy, Rule
from .mounts import Mounter, server_pid

pytestmark = pytest.mark.integration
MiB = 1024 * 1024


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


def _writer(path: Path, ending: str, size: int = 100) -> subprocess.Popen[bytes]:
    """A Python process that writes ``size`` bytes to ``path`` without closing it, then
    either exits normally (``exit``) or waits to be killed (``wait``)."""
    code = (
        "import os, sys, time\n"
        f"fd = os.open({str(path)!r}, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)\n"
        f"os.write(fd, b'x' * {size})\n"
        "print('written', flush=True)\n"
        + ("os._exit(3)\n" if ending == "exit" else "time.sleep(60)\n")
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    with proc.stdout:  # the one line it prints; closed so no pipe outlives the test
        assert proc.stdout.readline() == b"written\n"
    return proc


def test_r_write_killed_publishes_nothing(mounter: Mounter, s3: Any, bucket: str) -> None:
    """A writer killed by a signal publishes nothing (its upload is aborted: no object, no
    multipart upload left, an overwritten object keeps its old bytes); a writer that exits
    normally without close() commits."""
    mnt = mounter.mount(bucket, "--allow-delete", "--allow-overwrite", "--part-size", str(5 * MiB))
    s3.put_object(Bucket=bucket, Key="old.bin", Body=b"old bytes")
    # dd streaming a multipart upload, SIGKILLed mid-way (the 64 MiB of 200)
    dd = subprocess.Popen(
        ["dd", "if=/dev/zero", f"of={mnt / 'big.bin'}", "bs=1M", "count=400"],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not s3.list_multipart_uploads(Bucket=bucket).get("Uploads"):
        assert time.monotonic() < deadline and dd.poll() is None, "dd never started a part"
        time.sleep(0.05)
    dd.kill()
    dd.wait()
    for name, sig in (("killed.bin", signal.SIGKILL), ("termed.bin", signal.SIGTERM)):
        proc = _writer(mnt / name, "wait")
        assert (mnt / name).stat().st_size == 100  # shown while written (kernel caches it)
        proc.send_signal(sig)
        proc.wait()
        assert not (mnt / name).exists(), "a killed writer's name goes at once"
    proc = _writer(mnt / "old.bin", "wait")  # an overwrite, killed
    proc.kill()
    proc.wait()
    exited = _writer(mnt / "exited.bin", "exit")
    assert exited.wait() == 3
    # the kernel's flush of a dying process is synchronous: nothing is left to settle
    assert keys(s3, bucket) == ["exited.bin", "old.bin"]
    assert s3.get_object(Bucket=bucket, Key="old.bin")["Body"].read() == b"old bytes"
    assert (mnt / "exited.bin").read_bytes() == b"x" * 100
    assert sorted(os.listdir(mnt)) == ["exited.bin", "old.bin"]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_write_killed_multithreaded_publishes_nothing(
    mounter: Mounter, s3: Any, bucket: str
) -> None:
    """A JVM-like writer: a worker thread opened and wrote the file among idle threads; the
    process killed by SIGKILL publishes nothing, one whose worker closes normally (the other
    threads still running) publishes."""
    mnt = mounter.mount(bucket, "--allow-delete", "--allow-overwrite")
    code = (
        "import os, sys, threading, time\n"
        "for _ in range(20): threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "def work(path, close):\n"
        "    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)\n"
        "    os.write(fd, b'x' * 100)\n"
        "    if close: os.close(fd)\n"
        "    print('written', flush=True)\n"
        "    time.sleep(60)\n"
        "threading.Thread(target=work, args=(sys.argv[1], sys.argv[2] == 'close')).start()\n"
    )
    for name, ending in (("killed.bin", "kill"), ("closed.bin", "close")):
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(mnt / name), ending], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        with proc.stdout:
            assert proc.stdout.readline() == b"written\n"
        proc.kill()
        proc.wait()
        assert (mnt / name).exists() == (ending == "close")
    assert keys(s3, bucket) == ["closed.bin"]
    assert sorted(os.listdir(mnt)) == ["closed.bin"]


def _wait_uploads(s3: Any, bucket: str, want: list[str], seconds: float = 90) -> list[str]:
    deadline = time.monotonic() + seconds
    while True:
        got = sorted(u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_r_write_orphans_swept_at_mount(
    mounter: Mounter, s3: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 of the FUSE server mid-upload leaves a multipart upload; the next mount of the
    same prefix on this host aborts it (its journal proves it is this host's), and leaves an
    upload another client started alone."""
    monkeypatch.setenv("ZONEMOUNT_STATE_DIR", str(tmp_path / "state"))
    flags = ("--allow-delete", "--part-size", str(5 * MiB))
    mnt = mounter.mount(bucket, *flags)
    foreign = s3.create_multipart_upload(Bucket=bucket, Key="theirs.bin")["UploadId"]
    dd = subprocess.Popen(
        ["dd", "if=/dev/zero", f"of={mnt / 'big.bin'}", "bs=1M", "count=400"],
        stderr=subprocess.DEVNULL,
    )
    assert _wait_uploads(s3, bucket, ["big.bin", "theirs.bin"], 60) == ["big.bin", "theirs.bin"]
    os.kill(server_pid(mnt), signal.SIGKILL)
    dd.wait(timeout=60)
    time.sleep(1)
    assert _wait_uploads(s3, bucket, [], 0) == ["big.bin", "theirs.bin"]  # the orphan
    mounter.cleanup()  # the dead mount
    mounter.mounts.clear()
    mounter.mount(bucket, *flags)
    assert _wait_uploads(s3, bucket, ["theirs.bin"]) == ["theirs.bin"]
    s3.abort_multipart_upload(Bucket=bucket, Key="theirs.bin", UploadId=foreign)


def test_r_write_abort_retried(
    mounter: Mounter, moto_server: LocalS3, s3: Any, bucket: str
) -> None:
    """An AbortMultipartUpload that fails (after botocore's own retries) is retried in the
    background until it succeeds: nothing is left behind."""
    proxy = FaultProxy(moto_server.endpoint)
    try:
        mnt = mounter.mount(
            bucket, "--allow-delete", "--part-size", str(5 * MiB), "--endpoint-url", proxy.endpoint
        )
        rule = proxy.add(Rule("DELETE", "uploadId=", "status", count=8, status=500))
        proc = _writer(mnt / "big.bin", "wait", size=12 * MiB)
        assert _wait_uploads(s3, bucket, ["big.bin"], 30) == ["big.bin"]
        proc.kill()  # the abort of a killed writer
        proc.wait()
        assert _wait_uploads(s3, bucket, []) == []
        assert rule.hits == 8, "the first abort calls failed: it was retried"
        assert keys(s3, bucket) == []
    finally:
        mounter.cleanup()
        proxy.close()


def test_r_cache_free_space(mounter: Mounter, s3: Any, bucket: str, tmp_path: Path) -> None:
    """The data cache leaves 5% of its file system free whatever --max-cache-size says:
    others writing to that file system never get ENOSPC because of it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], check=True)
    try:
        (disk / "others.bin").write_bytes(b"o" * 40 * MiB)
        blobs = {f"c{i}.bin": os.urandom(10 * MiB) for i in range(4)}
        for key, data in blobs.items():
            s3.put_object(Bucket=bucket, Key=key, Body=data)
        mnt = mounter.mount(
            bucket,
            "--cache",
            str(disk / "cache"),
            "--max-cache-size",
            "1000",
            "--part-size",
            str(5 * MiB),
        )
        for key, data in blobs.items():  # 40 MiB through a cache with 24 MiB of room
            assert (mnt / key).read_bytes() == data
        st = os.statvfs(disk)
        assert st.f_bavail * st.f_frsize >= 0.05 * st.f_blocks * st.f_frsize - MiB
        (disk / "more.bin").write_bytes(b"m" * MiB)  # others still have room
        assert (mnt / "c0.bin").read_bytes() == blobs["c0.bin"]
    finally:
        mounter.cleanup()
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_r_err_deadline(mounter: Mounter, moto_server: LocalS3, s3: Any, bucket: str) -> None:
    """Every S3 call has a total deadline (--request-deadline; data calls four times it): a
    stalled S3 gives EIO, never a hang; a killed caller is reaped; metadata does not queue
    behind stalled data; a body trickling at 10 B/s fails; the root's health xattr says
    "unhealthy" while S3 misses deadlines and "ok" once it answers again."""
    s3.put_object(Bucket=bucket, Key="small", Body=b"s")
    s3.put_object(Bucket=bucket, Key="trickle.bin", Body=b"t" * 4096)
    for i in range(20):
        s3.put_object(Bucket=bucket, Key=f"big{i}.bin", Body=b"b" * 1000)
    proxy = FaultProxy(moto_server.endpoint)
    try:
        mnt = mounter.mount(
            bucket,
            "--request-deadline",
            "2",
            "--endpoint-url",
            proxy.endpoint,
            "--metadata-ttl",
            "0",
        )
        health = "user.zonemount.health"
        assert os.getxattr(mnt, health) == b"ok"
        os.listdir(mnt)  # attributes of every file known: opens need no HEAD
        # 20 readers stuck on stalled GETs (data), then a stat and a listing (metadata)
        proxy.add(Rule("GET", "/big", "stall"))
        results: dict[str, int] = {}

        def read(name: str) -> None:
            try:
                (mnt / name).read_bytes()
                results[name] = 0
            except OSError as exc:
                results[name] = exc.errno or -1

        readers = [threading.Thread(target=read, args=(f"big{i}.bin",)) for i in range(20)]
        for t in readers:
            t.start()
        deadline = time.monotonic() + 30
        while proxy.rules[0].hits < 16 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.stat(mnt / "small").st_size == 1  # not queued behind the stalled reads
        assert "small" in os.listdir(mnt)
        assert any(t.is_alive() for t in readers), "the reads are still stalled"
        for t in readers:
            t.join(timeout=120)
        assert results == {f"big{i}.bin": errno.EIO for i in range(20)}
        assert os.getxattr(mnt, health).startswith(b"unhealthy")
        assert (mountinfo.fs_health_within(str(mnt)) or "").startswith("unhealthy")  # CSI's view
        # a body trickling at 10 B/s
        proxy.add(Rule("GET", "/trickle.bin", "trickle", rate=10))
        with pytest.raises(OSError) as info:
            (mnt / "trickle.bin").read_bytes()
        assert info.value.errno == errno.EIO
        proxy.clear()
        assert (mnt / "big0.bin").read_bytes() == b"b" * 1000
        assert os.getxattr(mnt, health) == b"ok"
    finally:
        mounter.cleanup()
        proxy.close()


def test_a_stalled_read_of_default_parts_fails_within_the_data_deadline_and_frees_memory(
    mounter: Mounter, moto_server: LocalS3, s3: Any, bucket: str
) -> None:
    """R-ERR-DEADLINE with the default read part size (16 MiB): two readers of 40 MiB objects
    whose GETs S3 never answers (the first chunk's 4 lanes and the chunks read ahead) get EIO
    within the data deadline (4 x --request-deadline 2 s, plus the kernel's retry of the
    failed page), not one deadline per lane or chunk; once they closed, the read-ahead
    memory they held is free (``zonemount_read_ahead_bytes`` 0) and the FUSE server's RSS has
    not grown by a chunk; with S3 back, the same files read whole and right."""
    blobs = {f"s{i}.bin": random.Random(i).randbytes(40 * MiB) for i in range(2)}
    for key, data in blobs.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    proxy = FaultProxy(moto_server.endpoint)
    port = free_port()
    try:
        mnt = mounter.mount(
            bucket,
            "--request-deadline", "2",
            "--endpoint-url", proxy.endpoint,
            "--metrics-address", f"127.0.0.1:{port}",
        )  # fmt: skip
        assert sorted(os.listdir(mnt)) == sorted(blobs)  # sizes known: opens need no HEAD
        rss_before = _rss_kib(server_pid(mnt))
        stalled = proxy.add(Rule("GET", "/s", "stall"))
        took: dict[str, tuple[int, float]] = {}

        def read(name: str) -> None:
            started = time.monotonic()
            try:
                (mnt / name).read_bytes()
                took[name] = (0, time.monotonic() - started)
            except OSError as exc:
                took[name] = (exc.errno or -1, time.monotonic() - started)

        readers = [threading.Thread(target=read, args=(name,)) for name in blobs]
        for t in readers:
            t.start()
        deadline = time.monotonic() + 5
        while stalled.hits < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        held = _scrape(port, "zonemount_read_ahead_bytes")
        assert held >= 2 * 16 * MiB, held  # each reader's first chunk (4 lanes) holds a slot
        for t in readers:
            t.join(timeout=60)
        assert {k: e for k, (e, _) in took.items()} == {k: errno.EIO for k in blobs}
        assert all(7 < t < 8 + 4 for _, t in took.values()), took
        assert stalled.hits >= 8  # 4 lanes per reader (and chunks ahead): all of them stalled
        assert _scrape(port, "zonemount_read_ahead_bytes") == 0
        assert _rss_kib(server_pid(mnt)) - rss_before < 16 * 1024
        proxy.clear()
        for key, data in blobs.items():
            assert (mnt / key).read_bytes() == data
        assert _scrape(port, "zonemount_read_ahead_bytes") == 0
    finally:
        mounter.cleanup()
        proxy.close()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _scrape(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    assert match, f"{name} is not exported"
    return float(match.group(1))


def test_unlink_returns_once_its_delete_is_done_within_the_deadline(
    mounter: Mounter, moto_server: LocalS3, s3: Any, bucket: str
) -> None:
    """unlink's DeleteObject (awaited on the FUSE server's event loop over plain HTTP, no
    worker thread) keeps what a completed unlink means: a stalled DELETE is EIO at the
    request deadline and the file is still there; a failed one is retried and unlink
    returns only once the object is gone from S3."""
    for name in ("stalled", "throttled"):
        s3.put_object(Bucket=bucket, Key=name, Body=b"x")
    proxy = FaultProxy(moto_server.endpoint)
    try:
        mnt = mounter.mount(
            bucket, "--allow-delete", "--request-deadline", "2", "--endpoint-url", proxy.endpoint
        )
        assert sorted(os.listdir(mnt)) == ["stalled", "throttled"]
        stall = proxy.add(Rule("DELETE", "/stalled", "stall", count=1, seconds=30))
        start = time.monotonic()
        with pytest.raises(OSError) as info:
            os.unlink(mnt / "stalled")
        assert info.value.errno == errno.EIO and time.monotonic() - start < 20
        assert stall.hits == 1 and "stalled" in keys(s3, bucket)
        assert (mnt / "stalled").exists()
        # a transient error (retried within 50 ms; throttling backs off for up to seconds)
        slow = proxy.add(Rule("DELETE", "/throttled", "status", count=2, status=500))
        os.unlink(mnt / "throttled")
        assert slow.hits == 2 and "throttled" not in keys(s3, bucket)
        os.unlink(mnt / "stalled")  # the proxy forwards it now
        assert keys(s3, bucket) == [] and os.listdir(mnt) == []
    finally:
        mounter.cleanup()
        proxy.close()


def test_a_lookup_waiting_for_a_stalled_head_fetched_ahead_fails_with_it(
    mounter: Mounter, moto_server: LocalS3, s3: Any, bucket: str
) -> None:
    """R-META-LOOKUP-AHEAD under R-ERR-DEADLINE, on a real mount: ``stat`` of a name whose
    HEAD fetched ahead S3 never answers is EIO once that HEAD misses its deadline, without a
    second HEAD (before: it asked again and waited a second deadline); once S3 answers
    again the name is found."""
    for i in range(20):
        s3.put_object(Bucket=bucket, Key=f"big/f{i:03d}", Body=b"x" * i)
    proxy = FaultProxy(moto_server.endpoint)
    try:
        mnt = mounter.mount(
            bucket, "--metadata-ttl", "60", "--request-deadline", "2",
            "--endpoint-url", proxy.endpoint,
        )  # fmt: skip
        stall = proxy.add(Rule("HEAD", "/big/f005", "stall", seconds=30))
        os.stat(mnt / "big" / "f000")
        os.stat(mnt / "big" / "f001")  # a walk: f002... are HEADed ahead
        deadline = time.monotonic() + 30
        while stall.hits < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stall.hits == 1, "the walk sent no HEAD ahead for f005"
        with pytest.raises(OSError) as info:
            os.stat(mnt / "big" / "f005")
        assert info.value.errno == errno.EIO
        assert stall.hits == 1  # the lookup shared the HEAD's failure, it did not ask again
        proxy.clear()
        assert os.stat(mnt / "big" / "f005").st_size == 5
    finally:
        mounter.cleanup()
        proxy.close()


def test_rmdir_of_a_directory_listed_and_emptied_here_sends_no_list(
    mounter: Mounter, moto_server: LocalS3, s3: Any, bucket: str
) -> None:
    """R-DIR-RMDIR: ``rm -rf`` lists each directory, unlinks what it showed, then removes
    it: that rmdir deletes the ``dir/`` marker without a LIST (the listing is complete for
    the negative TTL, as lookup misses trust). Once that knowledge has expired rmdir asks S3
    again, and an object another client wrote meanwhile makes it ENOTEMPTY; within it, that
    object is not lost: the directory shows again at the next listing."""
    for key in ("d/", "d/a", "d/b", "e/x", "f/x"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"" if key.endswith("/") else b"x")
    proxy = FaultProxy(moto_server.endpoint)
    try:
        mnt = mounter.mount(
            bucket,
            "--allow-delete",
            "--negative-metadata-ttl",
            "2",
            "--endpoint-url",
            proxy.endpoint,
        )
        for name in ("d", "e", "f"):
            for entry in os.listdir(mnt / name):
                os.unlink(mnt / name / entry)
        no_list = proxy.add(Rule("GET", "max-keys=2", "status", status=403, code="AccessDenied"))
        os.rmdir(mnt / "d")
        assert no_list.hits == 0 and keys(s3, bucket) == []  # the marker d/ too
        s3.put_object(Bucket=bucket, Key="f/theirs", Body=b"t")  # another client, within the TTL
        os.rmdir(mnt / "f")
        assert no_list.hits == 0
        proxy.clear()
        s3.put_object(Bucket=bucket, Key="e/theirs", Body=b"t")
        time.sleep(2.5)  # the listing's knowledge has expired: rmdir asks S3
        with pytest.raises(OSError) as info:
            os.rmdir(mnt / "e")
        assert info.value.errno == errno.ENOTEMPTY
        assert sorted(keys(s3, bucket)) == ["e/theirs", "f/theirs"]
        assert sorted(os.listdir(mnt)) == ["e", "f"]  # f shows again: S3 has f/theirs
    finally:
        mounter.cleanup()
        proxy.close()


def test_r_err_killed_caller_returns(
    mounter: Mounter, moto_server: LocalS3, s3: Any, bucket: str
) -> None:
    """A caller killed while its lookup waits on a stalled S3 is reaped at once, long before
    the request's deadline (here 300 s): the FUSE server answers EINTR when it sees SIGKILL
    pending for the caller."""
    proxy = FaultProxy(moto_server.endpoint)
    try:
        mnt = mounter.mount(bucket, "--request-deadline", "300", "--endpoint-url", proxy.endpoint)
        proxy.add(Rule("HEAD", "/hung", "stall"))
        proxy.add(Rule("GET", "list-type=2", "stall"))  # a lookup miss may list the parent
        callers = [
            subprocess.Popen(
                [sys.executable, "-c", f"import os; os.stat({str(mnt / f'hung{i}')!r})"]
            )
            for i in range(5)
        ]
        deadline = time.monotonic() + 60
        while sum(r.hits for r in proxy.rules) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # every caller waits on S3
        for proc in callers:
            proc.kill()
        assert [proc.wait(timeout=60) for proc in callers] == [-signal.SIGKILL] * 5
        assert os.stat(mnt).st_mode  # the mount serves on
    finally:
        mounter.cleanup()
        proxy.close()


def test_r_write_release_failure_reported(
    mounter: Mounter, moto_server: LocalS3, s3: Any, bucket: str
) -> None:
    """A file closed before any write is uploaded at release, after close() returned: when
    that upload fails it is reported (an error in the log, a counter in the metrics), and
    the file does not pretend to exist."""
    from zonemount_cli.servers import free_port

    port = free_port()
    proxy = FaultProxy(moto_server.endpoint)
    try:
        mnt = mounter.mount(
            bucket, "--endpoint-url", proxy.endpoint, "--metrics-address", f"127.0.0.1:{port}"
        )
        proxy.add(Rule("PUT", "/touched", "status", status=500))
        fd = os.open(mnt / "touched", os.O_CREAT | os.O_WRONLY, 0o644)
        os.close(fd)  # succeeds: the upload waits for release
        metric = 'zonemount_uploads_aborted_total{reason="failed-at-release"} 1.0'
        deadline = time.monotonic() + 120
        text = ""
        while metric not in text and time.monotonic() < deadline:
            time.sleep(0.5)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as resp:
                text = resp.read().decode()
        assert metric in text
        assert not (mnt / "touched").exists()
        assert keys(s3, bucket) == []
    finally:
        mounter.cleanup()
        proxy.close()


def test_r_dir_emptied_stays(mounter: Mounter, s3: Any, bucket: str) -> None:
    """A directory this mount emptied (its last entries renamed or unlinked here) stays until
    rmdir, as on a local file system, though S3 no longer shows it: the make-demo failure
    in shutil.rmtree(_temporary) (its final rmdir got ENOENT once the TTL expired)."""
    ttl = 1.0
    mnt = mounter.mount(bucket, "--allow-delete", "--metadata-ttl", str(ttl))
    (mnt / "out" / "_temporary" / "0").mkdir(parents=True)
    (mnt / "out" / "_temporary" / "0" / "part").write_bytes(b"p")
    (mnt / "out" / "_temporary" / "x").write_bytes(b"x")
    os.rename(mnt / "out" / "_temporary" / "0" / "part", mnt / "out" / "part")
    os.unlink(mnt / "out" / "_temporary" / "x")
    assert keys(s3, bucket) == ["out/part"]  # S3 has nothing under out/_temporary/
    time.sleep(ttl + 0.5)
    assert sorted(os.listdir(mnt / "out")) == ["_temporary", "part"]
    assert os.listdir(mnt / "out" / "_temporary") == ["0"]
    shutil.rmtree(mnt / "out" / "_temporary")  # every rmdir finds its directory
    assert os.listdir(mnt / "out") == ["part"]


def test_r_rename_dir_holds_writes(
    mounter: Mounter, moto_server: LocalS3, s3: Any, bucket: str
) -> None:
    """``mv src dst`` while a process creates ``src/new.txt``: the kernel does not lock
    ``src`` (renamed within its parent), so the create reaches the mount while the rename's
    copy is stalled (a proxy holds it). The create waits for the rename and the file is
    written as ``dst/new.txt``; it used to be written as ``src/new.txt`` (left under the old
    name in S3 while the mount showed it under the new one)."""
    s3.put_object(Bucket=bucket, Key="src/a.txt", Body=b"a")
    proxy = FaultProxy(moto_server.endpoint)
    try:
        mnt = mounter.mount(
            bucket, "--allow-delete", "--allow-overwrite", "--endpoint-url", proxy.endpoint
        )
        assert os.listdir(mnt / "src") == ["a.txt"]  # the kernel has src's dentry
        stall = proxy.add(Rule("PUT", "/dst/a.txt", "stall", count=1, seconds=3))
        errors: list[OSError] = []

        def rename() -> None:
            try:
                os.rename(mnt / "src", mnt / "dst")
            except OSError as exc:  # reported by the assertion below
                errors.append(exc)

        mover = threading.Thread(target=rename)
        mover.start()
        deadline = time.monotonic() + 30
        while stall.hits == 0:
            assert time.monotonic() < deadline, "the rename never copied"
            time.sleep(0.02)
        (mnt / "src" / "new.txt").write_bytes(b"n")  # waits for the rename
        mover.join(30)
        assert not mover.is_alive() and errors == []
        assert keys(s3, bucket) == ["dst/a.txt", "dst/new.txt"]
        assert sorted(os.listdir(mnt / "dst")) == ["a.txt", "new.txt"]
        assert (mnt / "dst" / "new.txt").read_bytes() == b"n"
        assert not (mnt / "src").exists()
    finally:
        mounter.cleanup()
        proxy.close()


@pytest.mark.parametrize(
    ("fault", "seconds", "status", "code", "want"),
    [
        ("stall", 3600.0, 500, "InternalError", errno.EIO),  # no answer within the deadline
        ("stall-fail", 1.0, 403, "AccessDenied", errno.EACCES),  # an error S3 does not retry
    ],
    ids=["stalled", "failing"],
)
def test_relisting_that_fails_answers_its_waiters_by_name(
    mounter: Mounter,
    moto_server: LocalS3,
    s3: Any,
    bucket: str,
    fault: str,
    seconds: float,
    status: int,
    code: str,
    want: int,
) -> None:
    """R-META-RELIST when the directory's LIST stalls or fails: the lookup that started the
    relisting gets the error (a stalled one after --request-deadline; the kernel, whose
    cached entry could not be revalidated, looks the name up once more, which relists
    again), the lookups that waited for it ask S3 for their own names (HEAD + LIST) and get
    the right answers, and nothing hangs. Once S3 lists again the directory is served."""
    for i in range(20):
        s3.put_object(Bucket=bucket, Key=f"many/{i:03d}.txt", Body=b"x" * i)
    proxy = FaultProxy(moto_server.endpoint)
    try:
        mnt = mounter.mount(
            bucket,
            "--metadata-ttl",
            "1",
            "--request-deadline",
            "3",
            "--endpoint-url",
            proxy.endpoint,
        )
        assert len(os.listdir(mnt / "many")) == 20  # listed in full: relisted when expired
        time.sleep(1.5)  # every entry expires (and the kernel's copies of them)
        relist = proxy.add(
            Rule(
                "GET",
                "prefix=many%2F&",  # the directory's own listing, not a name's LIST
                fault,
                seconds=seconds,
                status=status,
                code=code,
            )
        )
        results: dict[str, int] = {}

        def stat(name: str) -> None:
            try:
                results[name] = os.stat(mnt / "many" / name).st_size
            except OSError as exc:
                results[name] = -(exc.errno or 1)

        trigger = threading.Thread(target=stat, args=("000.txt",))
        trigger.start()
        deadline = time.monotonic() + 30
        while relist.hits == 0:
            assert time.monotonic() < deadline, "no relisting was sent"
            time.sleep(0.01)
        waiters = [threading.Thread(target=stat, args=(f"{i:03d}.txt",)) for i in range(1, 6)]
        for thread in waiters:
            thread.start()
        for thread in [trigger, *waiters]:
            thread.join(60)
            assert not thread.is_alive(), "a lookup hangs"
        assert results == {"000.txt": -want, **{f"{i:03d}.txt": i for i in range(1, 6)}}
        proxy.clear()  # S3 lists again: the directory is served
        assert sorted(os.listdir(mnt / "many")) == [f"{i:03d}.txt" for i in range(20)]
    finally:
        mounter.cleanup()
        proxy.close()


def test_rename_dir_miss_seen_mid_move_is_forgotten(
    mounter: Mounter, moto_server: LocalS3, s3: Any, bucket: str
) -> None:
    """R-RENAME-DIR-HOLDS-WRITES, lookups: ``stat src/a`` while ``mv src dst`` is deleting
    its sources (``src/a`` gone, the answer to the DeleteObjects request held back by a
    proxy) misses - renames are not atomic - but once the rename ended ``dst/a`` is found:
    the miss is not remembered for the moved directory (it was, for
    --negative-metadata-ttl). ``ls src`` meanwhile waits for the rename and shows both files
    (it showed ``b`` only)."""
    s3.put_object(Bucket=bucket, Key="src/a", Body=b"1")
    s3.put_object(Bucket=bucket, Key="src/b", Body=b"2")
    proxy = FaultProxy(moto_server.endpoint)
    try:
        mnt = mounter.mount(
            bucket,
            "--allow-delete",
            "--negative-metadata-ttl",
            "60",
            "--endpoint-url",
            proxy.endpoint,
        )
        assert (mnt / "src").is_dir()  # "a" itself never looked up: a miss asks S3
        # the sources go in one DeleteObjects request: S3 deletes them, its answer trickles
        stall = proxy.add(Rule("POST", "?delete", "trickle", count=1, rate=50))
        mover = threading.Thread(target=os.rename, args=(mnt / "src", mnt / "dst"))
        mover.start()
        deadline = time.monotonic() + 30
        while stall.hits == 0 or "src/a" in keys(s3, bucket):
            assert time.monotonic() < deadline, "the rename never deleted its sources"
            time.sleep(0.02)
        mid_move = os.path.exists(mnt / "src" / "a")  # src/a is deleted by now
        listed = sorted(os.listdir(mnt / "src"))  # waits for the rename: not half of it
        mover.join(30)
        assert not mover.is_alive()
        assert keys(s3, bucket) == ["dst/a", "dst/b"]
        assert not mid_move
        assert listed == ["a", "b"]
        assert (mnt / "dst" / "a").read_bytes() == b"1"
        assert sorted(os.listdir(mnt / "dst")) == ["a", "b"]
    finally:
        mounter.cleanup()
        proxy.close()


def test_rename_dir_where_delete_objects_is_not_implemented(
    mounter: Mounter, moto_server: LocalS3, s3: Any, bucket: str
) -> None:
    """R-RENAME-DIR: an endpoint that answers DeleteObjects with 501 NotImplemented (some
    S3-compatible servers have no multi-object delete) still gets a directory moved whole:
    its sources are deleted one DELETE each, and the 501 is asked for once per mount."""
    for key in ("a/1", "a/2", "b/1", "b/2"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    proxy = FaultProxy(moto_server.endpoint)
    try:
        mnt = mounter.mount(bucket, "--allow-delete", "--endpoint-url", proxy.endpoint)
        refused = proxy.add(Rule("POST", "?delete", "status", status=501, code="NotImplemented"))
        os.rename(mnt / "a", mnt / "c")
        os.rename(mnt / "b", mnt / "d")
        assert keys(s3, bucket) == ["c/1", "c/2", "d/1", "d/2"]
        assert refused.hits == 1
        assert sorted(os.listdir(mnt)) == ["c", "d"]
    finally:
        mounter.cleanup()
        proxy.close()


HELD = "f07"  # the file whose copy (or delete) a proxy holds when the FUSE server is killed


@pytest.mark.parametrize("server", ["moto_server", "seaweed_server"])
@pytest.mark.parametrize("stage", ["copies", "deletes", "deletes-one-by-one"])
def test_rename_dir_killed_mid_way_loses_nothing(
    request: pytest.FixtureRequest, tmp_path: Path, server: str, stage: str
) -> None:
    """R-RENAME-DIR, a FUSE server killed mid-way on a general-purpose bucket: ``src`` (20
    files) renamed to ``dst`` by another process, the ``zonemount mount`` process SIGKILLed
    while a proxy holds one request (the rename then fails with ECONNABORTED):

    * ``copies``: the copy of ``f07``, the other 19 copied - ``src`` is whole, ``dst`` holds
      the 19 copies (the sources are deleted only once every copy succeeded);
    * ``deletes``: the DeleteObjects request of the sources, every copy made - both whole;
    * ``deletes-one-by-one``: an endpoint without DeleteObjects (501), the DELETE of
      ``src/f07``, the others (sent 8 at a time) done - ``dst`` is whole, ``src`` holds
      ``f07``.

    Nothing is lost: every file is under one name or both, byte for byte, in S3 and in a
    fresh mount. On moto and on SeaweedFS (which keeps emptied folders)."""
    local: LocalS3 = request.getfixturevalue(server)
    s3: Any = local.client()
    bucket = f"zm-{os.urandom(6).hex()}"
    s3.create_bucket(Bucket=bucket)
    files = tree(20)
    for name, body in files.items():
        s3.put_object(Bucket=bucket, Key=f"src/{name}", Body=body)
    if stage == "copies":
        want_src, want_dst = files, {k: v for k, v in files.items() if k != HELD}
    elif stage == "deletes":
        want_src, want_dst = files, files
    else:
        want_src, want_dst = {HELD: files[HELD]}, files
    proxy = FaultProxy(local.endpoint)
    mounter = Mounter(local, tmp_path)
    try:
        mnt = mounter.mount(bucket, "--allow-delete", "--endpoint-url", proxy.endpoint)
        if stage == "copies":
            held = proxy.add(Rule("PUT", f"/dst/{HELD}", "stall"))
        elif stage == "deletes":
            held = proxy.add(Rule("POST", "?delete", "stall"))
        else:
            proxy.add(Rule("POST", "?delete", "status", status=501, code="NotImplemented"))
            held = proxy.add(Rule("DELETE", f"/src/{HELD}", "stall"))

        def ready() -> bool:
            return held.hits > 0 and reached(s3, bucket, set(want_src), set(want_dst))

        kill_mid_rename(mounter, mnt, "src", "dst", ready)
        old, new = contents(s3, bucket, "src/"), contents(s3, bucket, "dst/")
        assert {**old, **new} == files, "a file was lost or changed"
        assert old == want_src
        assert new == want_dst
        assert keys(s3, bucket) == sorted([*(f"src/{k}" for k in old), *(f"dst/{k}" for k in new)])
        again = mounter.mount(bucket)
        for name, want in (("src", want_src), ("dst", want_dst)):
            assert {f: (again / name / f).read_bytes() for f in os.listdir(again / name)} == want
    finally:
        mounter.cleanup()
        proxy.close()


def _proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _stalled_reads(mnt: Path, files: dict[str, bytes], pid: int) -> tuple[dict[str, object], int]:
    """Read every file of ``files`` at once, each from its own thread, while a proxy holds
    the GETs: the reads that did not return the file's bytes (errno or wrong bytes), and the
    most threads server ``pid`` ran meanwhile."""
    got: dict[str, bytes | int] = {}

    def read(name: str) -> None:
        # O_DIRECT: each read is the caller's own FUSE request, not read-ahead (which the
        # kernel limits to a dozen requests at a time)
        try:
            fd = os.open(mnt / name, os.O_RDONLY | os.O_DIRECT)
            try:
                got[name] = os.read(fd, 4096)
            finally:
                os.close(fd)
        except OSError as exc:
            got[name] = exc.errno or -1

    readers = [threading.Thread(target=read, args=(name,)) for name in files]
    for reader in readers:
        reader.start()
    most = 0
    while any(r.is_alive() for r in readers):
        with contextlib.suppress(OSError, AssertionError):  # a server that died has no status
            most = max(most, _proc_status(pid, "Threads"))
        time.sleep(0.05)
    return {n: v for n, v in got.items() if v != files[n]}, most


def test_a_full_thread_pool_fits_an_address_space_limit(
    mounter: Mounter,
    moto_server: LocalS3,
    s3: Any,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CSI mounter bounds a FUSE server's memory with RLIMIT_AS where it cannot use a
    cgroup (docs/csi.md, with MALLOC_ARENA_MAX=2). Every S3 call waiting for an answer holds a
    worker thread (up to ``--max-threads``, 256 for a volume that asks, and read-ahead GETs
    behind the FUSE requests), and at Linux's default 8 MiB of stack each, the ~90 threads of
    64 stalled reads (pyfuse3 serves 64 requests at once) did not fit 384 MiB more address
    space: threads failed to start, and the reads failed with EIO or the FUSE server died
    (ENOTCONN). Its threads take 2 MiB stacks now: every read waits for S3 and then succeeds."""
    files = {f"f{i:03d}": f"{i}".encode() * 100 for i in range(130)}
    for name, body in files.items():
        s3.put_object(Bucket=bucket, Key=name, Body=body)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")  # as the mounter runs its servers
    proxy = FaultProxy(moto_server.endpoint)
    try:
        mnt = mounter.mount(
            bucket, "--max-threads", "256", "--metadata-ttl", "60",
            "--endpoint-url", proxy.endpoint,
        )  # fmt: skip
        assert sorted(os.listdir(mnt)) == sorted(files)  # attributes cached: opens go in parallel
        pid = server_pid(mnt)
        limit = (_proc_status(pid, "VmSize") << 10) + (384 << 20)
        resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))
        proxy.add(Rule("GET", "/f", "stall", seconds=4))
        failed, most = _stalled_reads(mnt, files, pid)
        assert not failed, f"{len(failed)} reads failed, e.g. {list(failed.items())[:3]}"
        assert most >= 60, f"the reads never ran on {most} threads at once"
        assert os.stat(mnt).st_mode  # the mount serves on
    finally:
        mounter.cleanup()
        proxy.close()


def test_a_volumes_max_threads_fit_the_mounters_address_space_bound(
    moto_server: LocalS3,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CSI mounter's RLIMIT_AS bound (``zonemount csi-mounter``, no writable cgroup) on a
    volume that asks for ``maxThreads: 256``, through the real path: a kernel mount handed to
    the mounter, which starts and bounds the server. The bound leaves 128 MiB beyond what the
    mounted server maps - room for these reads' data, a few KiB each - and 130 reads stalled
    at a proxy need ~90 worker threads, each reserving a 2 MiB stack it barely touches. Before
    the bound counted the stacks a mount's ``--max-threads`` lets it start, threads failed to
    start: the reads failed with EIO or the server died. Now every read waits for S3, then
    succeeds."""
    from zonemount_csi.mounter import MountSpec, RemoteMounter
    from zonemount_csi.mounter_server import MemoryLimiter, MounterDaemon

    files = {f"f{i:03d}": f"{i}".encode() * 100 for i in range(130)}
    for name, body in files.items():
        s3.put_object(Bucket=bucket, Key=name, Body=body)
    for key, value in moto_server.env().items():  # the mounter's servers inherit its env
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ZONEMOUNT_DISABLE_S3_EXPRESS_SESSION_AUTH", "1")
    proxy = FaultProxy(moto_server.endpoint)
    daemon = MounterDaemon(tmp_path / "state", limiter=MemoryLimiter(0))
    sock = Path(f"/tmp/zm-mounter-{os.getpid()}-{time.monotonic_ns()}.sock")
    stop = threading.Event()
    loop = threading.Thread(target=daemon.serve_forever, args=(sock, stop), daemon=True)
    loop.start()
    mounter = RemoteMounter(sock)
    targets: list[str] = []

    def mount(name: str) -> tuple[Path, int]:
        target = tmp_path / name
        target.mkdir()
        targets.append(str(target))
        args = [
            "mount", bucket, str(target), "-f", "--force-path-style", "--max-threads=256",
            "--metadata-ttl=60", f"--endpoint-url={proxy.endpoint}",
        ]  # fmt: skip
        handle = mounter.mount(MountSpec(str(target), args, {}, tmp_path / f"{name}.log"), 30)
        return target, handle.pid

    try:
        while not sock.exists():
            time.sleep(0.01)
        # what a mounted server of these options maps, unbounded
        unbounded, pid = mount("measure")
        mapped = _proc_status(pid, "VmSize") << 10
        mounter.unmount(str(unbounded), None, 10)
        daemon.limiter = MemoryLimiter((mapped >> 20) + 128, "rlimit")
        mnt, pid = mount("bounded")
        assert sorted(os.listdir(mnt)) == sorted(files)  # attributes cached: opens go in parallel
        proxy.add(Rule("GET", "/f", "stall", seconds=4))
        failed, most = _stalled_reads(mnt, files, pid)
        assert not failed, f"{len(failed)} reads failed, e.g. {list(failed.items())[:3]}"
        assert most >= 60, f"the reads never ran on {most} threads at once"
        assert os.stat(mnt).st_mode  # the mount serves on
    finally:
        for target in targets:
            with contextlib.suppress(Exception):
                mounter.unmount(target, None, 10)
        daemon.shutdown(2)
        stop.set()
        loop.join(5)
        proxy.close()


def test_read_ahead_window_opens_on_a_real_mount(
    mounter: Mounter, moto_server: LocalS3, s3: Any, bucket: str
) -> None:
    """R-READ-SEQ on a real mount: a reader that goes through an object one 1 MiB request
    after another (O_DIRECT: no kernel read-ahead in between) makes the mount fetch further
    ahead at each new 4 MiB chunk. Every GET is held 1 s at a proxy, so the GETs that reached
    it by the time the reader is through four chunks are the window: 2 lanes of the first
    chunk and chunks 1-11 (windows 1, 2, 4, 8). Before 2026-12-04 the window never grew for
    such a reader: 2 lanes and chunks 1-4."""
    MiB = 1024 * 1024
    data = random.Random(10).randbytes(64 * MiB)
    s3.put_object(Bucket=bucket, Key="big", Body=data)
    proxy = FaultProxy(moto_server.endpoint)
    try:
        mnt = mounter.mount(
            bucket, "--read-part-size", str(4 * MiB), "--endpoint-url", proxy.endpoint
        )
        held = proxy.add(Rule("GET", "/big", "stall", seconds=1))
        fd = os.open(mnt / "big", os.O_RDONLY | os.O_DIRECT)
        try:
            for off in range(0, 16 * MiB, MiB):
                assert os.pread(fd, MiB, off) == data[off : off + MiB]
        finally:
            os.close(fd)
        deadline = time.monotonic() + 10  # the GETs started last are on their way
        while held.hits < 2 + 11 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert held.hits >= 2 + 11, f"{held.hits} GETs: the window did not open"
    finally:
        mounter.cleanup()
        proxy.close()


def test_rmdir_whose_folder_probe_stalls_deletes_as_before(
    mounter: Mounter, moto_server: LocalS3, s3: Any, bucket: str
) -> None:
    """R-DIR-RMDIR under R-ERR-DEADLINE: the mount's first rmdir of a directory it listed and
    emptied asks S3 (one HEAD of ``dir/``) whether the server keeps emptied directories as
    folders. When that HEAD gets no answer, the rmdir waits one request deadline, then
    deletes the ``dir/`` key as it did before the probe existed and succeeds; the next such
    rmdir asks again."""
    for key in ("a/f", "b/g"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    proxy = FaultProxy(moto_server.endpoint)
    try:
        mnt = mounter.mount(
            bucket, "--allow-delete", "--negative-metadata-ttl", "60",
            "--request-deadline", "2", "--endpoint-url", proxy.endpoint,
        )  # fmt: skip
        stalled = proxy.add(Rule("HEAD", "/a/", "stall", seconds=30))
        deletes = proxy.add(Rule("DELETE", "/a/", "stall", seconds=0))  # counted, forwarded
        started = time.monotonic()
        shutil.rmtree(mnt / "a")  # lists a, unlinks a/f, rmdir a
        assert stalled.hits >= 1 and deletes.hits == 2  # a/f, then the a/ key as before
        assert 1.5 < time.monotonic() - started < 15, "not one deadline"
        asked = proxy.add(Rule("HEAD", "/b/", "status", status=404, code="NoSuchKey", count=1))
        deletes = proxy.add(Rule("DELETE", "/b/", "stall", seconds=0))
        shutil.rmtree(mnt / "b")
        assert asked.hits == 1 and deletes.hits == 1  # asked again; AWS-like: b/g only
        assert keys(s3, bucket) == [] and os.listdir(mnt) == []
    finally:
        mounter.cleanup()
        proxy.close()
