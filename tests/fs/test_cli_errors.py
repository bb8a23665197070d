"""Bad input to ``zonemount mount``: one clear line, a non-zero exit, nothing mounted."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from zonemount_cli.servers import LocalS3, free_port, start_moto

from .mounts import ZONEMOUNT, Mounter, is_mounted

pytestmark = pytest.mark.integration


def _assert_clean_failure(proc: subprocess.CompletedProcess[str], mnt: Path, *words: str) -> None:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {proc.stderr!r}"
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("zonemount mount: error: ")
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert not is_mounted(mnt)


def test_nonexistent_bucket(mounter: Mounter) -> None:
    proc = mounter.run("no-such-bucket-here", check=False)
    _assert_clean_failure(proc, proc.mountpoint, "no-such-bucket-here", "does not exist")


def test_wrong_credentials(tmp_path: Path) -> None:
    with start_moto(enforce_auth=True) as server:
        mounter = Mounter(server, tmp_path)
        proc = mounter.run("some-bucket", check=False)
        _assert_clean_failure(proc, proc.mountpoint, "access denied", "credentials")
        assert "test" not in proc.stderr.split("error: ", 1)[1].split(), "no key in the message"


def test_missing_credentials_say_so_and_how_to_provide_them(
    moto_server: LocalS3, bucket: str, tmp_path: Path
) -> None:
    """Regression: no credentials at all read as 'access denied (NoCredentials)'."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    nowhere = str(tmp_path / "no-aws-config")
    proc = subprocess.run(
        [ZONEMOUNT, "mount", bucket, str(mnt), "--endpoint-url", moto_server.endpoint],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "AWS_CONFIG_FILE": nowhere,
            "AWS_SHARED_CREDENTIALS_FILE": nowhere,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_REGION": "us-east-1",
        },
    )
    _assert_clean_failure(proc, mnt, "no AWS credentials found", "AWS_ACCESS_KEY_ID", "--profile")
    assert "access denied" not in proc.stderr


def test_unreachable_endpoint(bucket: str, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    start = time.monotonic()
    proc = subprocess.run(
        [ZONEMOUNT, "mount", bucket, str(mnt), "--endpoint-url", f"http://127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "PATH": "/usr/bin:/bin"},
    )
    _assert_clean_failure(proc, mnt, "cannot use bucket", "--endpoint-url")
    assert time.monotonic() - start < 60


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--no-sign-request", "--profile", "x"], ["--no-sign-request", "--profile"]),
        (["--allow-other", "--allow-root"], ["--allow-other", "--allow-root"]),
        (["--incremental-upload"], ["directory bucket"]),
        (["--part-size", "1000"], ["--part-size"]),
        (["--read-part-size", "1000"], ["--read-part-size"]),
        (["--write-part-size", str(6 * 1024**3)], ["--write-part-size", "S3's part limits"]),
        (["--sse-kms-key-id", "arn:aws:kms:x"], ["--sse aws:kms"]),
        (["--max-cache-size", "10"], ["--cache"]),
        (["--metadata-ttl", "soon"], ["soon"]),
        (["--dir-mode", "999"], ["octal"]),
        (["--no-such-flag"], ["--no-such-flag"]),
        (["--endpoint-url", "ftp://x"], ["http://"]),
    ],
)
def test_conflicting_or_bad_flags(
    bucket: str, tmp_path: Path, flags: list[str], words: list[str]
) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(
        [ZONEMOUNT, "mount", bucket, str(mnt), *flags], capture_output=True, text=True, timeout=30
    )
    _assert_clean_failure(proc, mnt, *words)
    assert proc.returncode == 2


@pytest.mark.parametrize(
    "name", ["My_Bucket", "ab", "bad..name", "xn--bucket", "data--x-s3", "Data--usw2-az1--x-s3"]
)
def test_invalid_bucket_name(tmp_path: Path, name: str) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run([ZONEMOUNT, "mount", name, str(mnt)], capture_output=True, text=True)
    _assert_clean_failure(proc, mnt, "bucket name")


def test_mountpoint_missing_or_not_empty(bucket: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    proc = subprocess.run(
        [ZONEMOUNT, "mount", bucket, str(missing)], capture_output=True, text=True
    )
    _assert_clean_failure(proc, missing, "does not exist", "mkdir")
    full = tmp_path / "full"
    full.mkdir()
    (full / "file").write_text("x")
    proc = subprocess.run([ZONEMOUNT, "mount", bucket, str(full)], capture_output=True, text=True)
    _assert_clean_failure(proc, full, "not empty")


def test_already_mounted(mounter: Mounter, bucket: str) -> None:
    mnt = mounter.mount(bucket)
    proc = mounter.run(bucket, mountpoint=mnt, check=False)
    assert proc.returncode != 0
    assert "already a mount point" in proc.stderr or "not empty" in proc.stderr
    assert is_mounted(mnt)  # the first mount is untouched


def test_foreground_mode(moto_server, bucket: str, tmp_path: Path) -> None:
    import os
    import signal

    mnt = tmp_path / "fg"
    mnt.mkdir()
    env = {**os.environ, **moto_server.env()}
    proc = subprocess.Popen(
        [
            ZONEMOUNT,
            "mount",
            bucket,
            str(mnt),
            "-f",
            "--endpoint-url",
            moto_server.endpoint,
            "--force-path-style",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not is_mounted(mnt) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert is_mounted(mnt) and proc.poll() is None
        (mnt / "f.txt").write_text("fg")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert not is_mounted(mnt)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=20)  # reaps it, drains and closes the stderr pipe
