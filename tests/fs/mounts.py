"""Helpers for the FUSE client tests: real ``zonemount mount`` processes on a real S3 server."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from zonemount_cli.servers import LocalS3
from zonemount_contract.keys import STATE_DIR_ENV

ZONEMOUNT = str(Path(sys.executable).parent / "zonemount")


def is_mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return any(line.split()[4] == str(path) for line in f)


def server_pid(mnt: Path) -> int:
    """The pid of the ``zonemount mount`` process serving ``mnt`` (its argv names it)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"mount" in argv and str(mnt).encode() in argv:
                return int(proc.name)
    raise AssertionError(f"no FUSE server for {mnt}")


def unmount(path: Path) -> None:
    if not is_mounted(path):
        return
    subprocess.run(["fusermount3", "-u", str(path)], check=False, capture_output=True)
    deadline = time.monotonic() + 10
    while is_mounted(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    if is_mounted(path):
        subprocess.run(["fusermount3", "-uz", str(path)], check=False, capture_output=True)


class Mounter:
    """Mounts buckets of one S3 server with ``zonemount mount`` and unmounts them at teardown."""

    def __init__(self, server: LocalS3, tmp_path: Path) -> None:
        self.server = server
        self.tmp_path = tmp_path
        self.mounts: list[Path] = []

    def env(self) -> dict[str, str]:
        env = {**os.environ, **self.server.env()}
        env["ZONEMOUNT_DISABLE_S3_EXPRESS_SESSION_AUTH"] = "1"
        # upload journals stay in the test's directory, not the host's /var/lib/zonemount
        env.setdefault(STATE_DIR_ENV, str(self.tmp_path / "zonemount-state"))
        return env

    def run(
        self, bucket: str, *flags: str, mountpoint: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        mnt = mountpoint or self.tmp_path / f"mnt-{uuid.uuid4().hex[:6]}"
        mnt.mkdir(parents=True, exist_ok=True)
        args = [
            ZONEMOUNT,
            "mount",
            bucket,
            str(mnt),
            "--endpoint-url",
            self.server.endpoint,
            "--force-path-style",
            *flags,
        ]
        proc = subprocess.run(args, env=self.env(), capture_output=True, text=True, timeout=60)
        if proc.returncode == 0:
            self.mounts.append(mnt)
        elif check:
            raise AssertionError(f"mount failed ({proc.returncode}): {proc.stderr}")
        proc.mountpoint = mnt  # type: ignore[attr-defined]
        return proc

    def mount(self, bucket: str, *flags: str) -> Path:
        proc = self.run(bucket, *flags)
        mnt: Path = proc.mountpoint  # type: ignore[attr-defined]
        assert is_mounted(mnt)
        return mnt

    def cleanup(self) -> None:
        for mnt in self.mounts:
            unmount(mnt)


def errno_of(fn: Callable[[], object]) -> int:
    try:
        fn()
    except OSError as exc:
        return exc.errno or 0
    return 0


@contextlib.contextmanager
def cwd(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def s3fs_mount(server: LocalS3, bucket: str, tmp_path: Path) -> Iterator[Path]:
    """Mount ``bucket`` with s3fs-fuse (Debian ``s3fs``), the peer whose object layout
    zonemount follows for attributes and symlinks. Credentials go through a 0600 file."""
    exe = shutil.which("s3fs")
    if exe is None:
        raise FileNotFoundError("s3fs not installed (Debian package s3fs)")
    mnt = tmp_path / f"s3fs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    passwd = tmp_path / f"{mnt.name}.passwd"
    env = server.env()
    fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{env['AWS_ACCESS_KEY_ID']}:{env['AWS_SECRET_ACCESS_KEY']}\n")
    opts = f"url={server.endpoint},use_path_request_style,passwd_file={passwd},endpoint=us-east-1"
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen(
        [exe, bucket, str(mnt), "-f", "-o", opts],
        env=clean_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not is_mounted(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("s3fs did not mount")
            time.sleep(0.1)
        yield mnt
    finally:
        unmount(mnt)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
