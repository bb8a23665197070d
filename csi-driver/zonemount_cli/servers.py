"""Local S3 servers on loopback: test and demo infrastructure, not part of the product.

The demo (``zonemount demo``), the hand-testing path (``zonemount local-s3``), the test
fixtures (tests/conftest.py) and the benchmarks (bench/) start their S3 servers here; nothing
in the FUSE client, the CSI driver or the operator imports it. The servers do not
authenticate (moto unless ``enforce_auth``), so they are for throwaway data only.

Owns starting and stopping two real S3 implementations as child processes:

* :func:`start_moto` - moto in server mode (S3, IAM, STS, EC2). Correct, slow; for semantics.
* :func:`start_seaweedfs` - SeaweedFS ``weed mini`` (a Go S3 server). Fast; for throughput.

Invariants: servers listen on 127.0.0.1 only, on ports picked free at start; a server object
is a context manager whose exit kills the process group and removes its data directory;
:meth:`LocalS3.wait_ready` raises :class:`ServerStartError` naming the log file on failure,
and :class:`StartCancelled` (the server stopped, its data directory removed) once its
``cancelled`` callback says so - a caller that catches SIGTERM/Ctrl-C itself stops a start
without waiting for the server to come up.
Neither server checks signatures, so any access key works (tests use ``test``/``test``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

ACCESS_KEY = "test"
SECRET_KEY = "test"  # noqa: S105 - the local servers accept any credentials


class ServerStartError(RuntimeError):
    """A local S3 server did not come up."""


class StartCancelled(Exception):
    """The caller asked (``cancelled``) to give up starting; the server was stopped."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _bin(name: str) -> str:
    """Find an executable next to the running interpreter (the venv) or on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ServerStartError(f"{name!r} not found: run 'make setup' to install it into .venv")
    return found


@dataclass
class LocalS3:
    """A running local S3 server."""

    name: str
    endpoint: str
    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    region: str = "us-east-1"
    _owns_workdir: bool = field(default=True, repr=False)

    def env(self) -> dict[str, str]:
        """Environment for a client (``zonemount mount``, s5cmd, ...) talking to this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def wait_ready(
        self, timeout: float = 60.0, cancelled: Callable[[], bool] | None = None
    ) -> None:
        """Return once the server answers HTTP; on failure, Ctrl-C or ``cancelled()``, stop it
        and raise (:class:`StartCancelled` for the last)."""
        try:
            self._wait_ready(timeout, cancelled or (lambda: False))
        except ServerStartError:
            self._kill()  # keep the work directory: the error names the log file in it
            raise
        except BaseException:  # Ctrl-C while waiting: leave nothing running behind
            self.stop()
            raise

    def _wait_ready(self, timeout: float, cancelled: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cancelled():
                raise StartCancelled(f"{self.name} start cancelled")
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"{self.name} exited with code {self.process.returncode}; see {self.log_path}"
                )
            try:
                with urllib.request.urlopen(self.endpoint + "/", timeout=2):  # noqa: S310
                    return
            except urllib.error.HTTPError:
                return  # any HTTP answer means the S3 port is serving
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise ServerStartError(f"{self.name} not ready after {timeout:.0f}s; see {self.log_path}")

    def client(self) -> object:
        """A boto3 S3 client bound to this server (typed loosely to keep boto3 optional here)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def stop(self) -> None:
        self._kill()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def __enter__(self) -> LocalS3:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _spawn(
    args: list[str],
    workdir: Path,
    log_name: str,
    env: dict[str, str] | None = None,
    *,
    without_aws_env: bool = False,
) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = workdir / log_name
    log = log_path.open("wb")
    inherited = {
        k: v for k, v in os.environ.items() if not (without_aws_env and k.startswith("AWS_"))
    }
    proc = subprocess.Popen(
        args,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**inherited, **(env or {})},
    )
    log.close()
    return proc, log_path


def start_moto(
    port: int | None = None,
    timeout: float = 60.0,
    *,
    enforce_auth: bool = False,
    cancelled: Callable[[], bool] | None = None,
) -> LocalS3:
    """Start ``moto_server`` (all services: S3, IAM, STS, EC2) on 127.0.0.1.

    With ``enforce_auth`` moto checks signatures and IAM policies (unknown keys get 403).
    ``cancelled``: see :meth:`LocalS3.wait_ready`."""
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="zonemount-moto-"))
    env = {"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if enforce_auth else None
    proc, log_path = _spawn(
        [_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)], workdir, "moto.log", env
    )
    server = LocalS3("moto", f"http://127.0.0.1:{port}", proc, workdir, log_path)
    server.wait_ready(timeout, cancelled)
    return server


def start_seaweedfs(
    port: int | None = None,
    data_dir: Path | None = None,
    timeout: float = 90.0,
    volume_size_mb: int | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> LocalS3:
    """Start SeaweedFS ``weed mini`` with its S3 gateway on 127.0.0.1.

    ``volume_size_mb``: the master's volume size limit (``weed mini`` sizes volumes from the
    free disk space, 256 MiB on a 23 GiB tmpfs). Each bucket is a collection with volumes of
    its own, and while a collection's volumes are grown the master turns assigns away and
    SeaweedFS's assign retry sleeps a full second: a copy that fills a fresh bucket past one
    volume stalls for ~1 s at a moment set by timing. Benchmarks pass a size one run fits in.
    ``cancelled``: see :meth:`LocalS3.wait_ready`.
    """
    workdir = data_dir or Path(tempfile.mkdtemp(prefix="zonemount-weed-"))
    workdir.mkdir(parents=True, exist_ok=True)
    s3_port = port or free_port()
    ports = {name: free_port() for name in ("master", "volume", "filer", "admin", "webdav")}
    args = [
        _bin("weed"),
        "mini",
        f"-dir={workdir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        f"-s3.port={s3_port}",
        f"-admin.port={ports['admin']}",
        f"-webdav.port={ports['webdav']}",
        "-admin.ui=false",
        "-webdav=false",
        # its Iceberg catalog and Lance namespace listen on fixed ports (8181, 9101), checked
        # free before they are bound: two servers starting at once (two test sessions on one
        # machine) raced for them and one exited with "address already in use"
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]
    if volume_size_mb is not None:
        args.append(f"-master.volumeSizeLimitMB={volume_size_mb}")
    # weed mini turns signature checks on when it finds AWS_ACCESS_KEY_ID/SECRET in its
    # environment (its admin identity): a server started from a test whose environment
    # held credentials checked signatures, one started elsewhere did not, so the same test
    # passed or failed by test order (a proxy that rewrites Host breaks the signature). It
    # never inherits them: every SeaweedFS here accepts any signature.
    proc, log_path = _spawn(args, workdir, "weed.log", without_aws_env=True)
    server = LocalS3(
        "seaweedfs",
        f"http://127.0.0.1:{s3_port}",
        proc,
        workdir,
        log_path,
        _owns_workdir=data_dir is None,
    )
    server.wait_ready(timeout, cancelled)
    return server
