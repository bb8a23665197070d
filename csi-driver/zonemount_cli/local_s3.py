"""``zonemount local-s3``: an S3 server on loopback to try zonemount by hand, without AWS.

Owns the user-facing side of :mod:`zonemount_cli.servers`: start one local server (moto by
default, SeaweedFS on request), create the buckets asked for, print the exact credentials and
``zonemount mount ... --endpoint-url ...`` line that work against it, then serve until Ctrl-C
(SIGINT) or SIGTERM, and stop the server (its data goes with it unless ``--data-dir`` keeps a
SeaweedFS store).

Invariants: the server listens on 127.0.0.1 only; the credentials printed are the fixed
throwaway pair the local servers accept (never the user's own); bad input and a server that
does not start end with one line on stderr (exit 2 and 1), never a traceback; a stop by signal
exits 0 with nothing left running - also one that arrives while it starts: SIGINT and SIGTERM
are caught (:class:`~zonemount_contract.cli.StopSignals`) before the server is spawned, and a
start that is waiting for the server gives up and stops it (its process runs in a session of
its own, so nothing else would).
"""

from __future__ import annotations

import argparse
import shlex
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from zonemount_contract.cli import OneLineParser, StopSignals

from .servers import ACCESS_KEY, SECRET_KEY, LocalS3, ServerStartError, StartCancelled

DEFAULT_BUCKET = "my-bucket"
DEFAULT_MOUNTPOINT = "/tmp/zonemount-mnt"


def _port(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (0-65535; 0 = any)")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="zonemount local-s3",
        description="Serve S3 on 127.0.0.1 for trying zonemount by hand: creates a bucket, "
        "prints the credentials and the exact 'zonemount mount' line to use, and serves until "
        "Ctrl-C. Test and demo infrastructure: no authentication, not for real data.",
    )
    parser.add_argument(
        "--bucket",
        action="append",
        default=[],
        metavar="NAME",
        help=f"bucket to create (repeatable; default {DEFAULT_BUCKET})",
    )
    parser.add_argument(
        "--port", type=_port, default=0, help="port to listen on (default 0: any free port)"
    )
    parser.add_argument(
        "--server",
        choices=["moto", "seaweedfs"],
        default="moto",
        help="moto (default: starts in seconds, keeps data in memory) or seaweedfs (faster "
        "for large files; keeps data in --data-dir)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="SeaweedFS only: keep the data here across restarts (default: a temporary "
        "directory removed at stop)",
    )
    parser.add_argument(
        "--mountpoint",
        default=DEFAULT_MOUNTPOINT,
        metavar="DIR",
        help=f"mount point used in the printed commands (default {DEFAULT_MOUNTPOINT})",
    )
    return parser


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _start(server: str, port: int, data_dir: Path | None, cancelled: Callable[[], bool]) -> LocalS3:
    from .servers import start_moto, start_seaweedfs

    if server == "moto":
        return start_moto(port or None, cancelled=cancelled)
    return start_seaweedfs(port or None, data_dir=data_dir, cancelled=cancelled)


def instructions(
    server: LocalS3, buckets: Sequence[str], mountpoint: str, data_dir: Path | None = None
) -> str:
    """What to type next, against this server (exact, copy-pastable lines)."""
    from zonemount_fs.names import is_directory_bucket
    from zonemount_fs.store.s3 import DISABLE_EXPRESS_ENV

    mnt = shlex.quote(mountpoint)
    copy = shlex.quote(mountpoint.rstrip("/") + "-copy")
    env = (
        f"export AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={SECRET_KEY} "
        f"AWS_REGION={server.region}"
    )
    if any(is_directory_bucket(b) for b in buckets):
        env += f" {DISABLE_EXPRESS_ENV}=1  # local servers do not speak CreateSession"
    lines = [
        f"S3 ({server.name}) is serving on {server.endpoint} (loopback only).",
        f"Bucket(s): {', '.join(buckets)}",
        "",
        "In another shell - credentials (this server accepts any; these are throwaway):",
        f"  {env}",
        "Mount, use, unmount:",
        f"  mkdir -p {mnt}",
        f"  zonemount mount {buckets[0]} {mnt} --endpoint-url {server.endpoint} "
        "--force-path-style --allow-delete --allow-overwrite",
        f"  echo hello > {mnt}/hello.txt && ls -l {mnt}",
        f"  zonemount cp s3://{buckets[0]}/ {copy}/ --endpoint-url {server.endpoint}"
        "   # the bulk copier, S3 -> local",
        f"  fusermount3 -u {mnt}",
        "",
        "Press Ctrl-C to stop the server (unmount first; "
        + (f"the data stays in {data_dir})." if data_dir else "the data goes with it)."),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    signals = StopSignals()  # before the server is spawned: see the module doc
    try:
        return _run(args, signals)
    finally:
        signals.restore()


def _run(args: argparse.Namespace, signals: StopSignals) -> int:
    buckets = list(dict.fromkeys(args.bucket)) or [DEFAULT_BUCKET]
    if args.data_dir is not None and args.server != "seaweedfs":
        print(
            "zonemount local-s3: --data-dir needs --server seaweedfs (moto keeps data in memory)",
            file=sys.stderr,
        )
        return 2
    from zonemount_fs.errors import ConfigError
    from zonemount_fs.names import validate_bucket_name

    for name in buckets:
        try:
            validate_bucket_name(name)
        except ConfigError as exc:
            print(f"zonemount local-s3: {exc}", file=sys.stderr)
            return 2
    if args.port and not _port_free(args.port):
        print(
            f"zonemount local-s3: port {args.port} on 127.0.0.1 is in use: pick another --port "
            "or leave it out (any free port)",
            file=sys.stderr,
        )
        return 2
    try:
        server = _start(
            args.server, args.port, args.data_dir, lambda: signals.received() is not None
        )
    except StartCancelled:  # the server was stopped
        print(f"{signals.wait()} received: stopped {args.server}", file=sys.stderr, flush=True)
        return 0
    except (ServerStartError, OSError) as exc:
        print(f"zonemount local-s3: {args.server} did not start: {exc}", file=sys.stderr)
        return 1
    with server:
        import botocore.exceptions

        client = server.client()
        for name in buckets:
            try:
                client.create_bucket(Bucket=name)  # type: ignore[attr-defined]
            except botocore.exceptions.ClientError as exc:  # kept from an earlier --data-dir run
                if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    print(
                        f"zonemount local-s3: cannot create bucket {name}: {exc}", file=sys.stderr
                    )
                    return 1
        if signals.received() is None:  # not stopped while it started
            print(instructions(server, buckets, args.mountpoint, args.data_dir), flush=True)
        name = signals.wait()
        print(f"{name} received: stopping {server.name}", file=sys.stderr, flush=True)
    return 0
