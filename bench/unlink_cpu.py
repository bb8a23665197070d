"""CPU per removed file of the FUSE server's own path, without FUSE (issue 14, ``rm -rf``).

Awaits what the kernel sends per file in ``rm -rf`` - the directory's getattr, then the
unlink - on the adapter (:class:`zonemount_fs.fuse_adapter.ZonemountOperations`) over the
core and an :class:`S3Store` of a local SeaweedFS, ``--files`` files listed first as ``rm``
does, and prints the process's CPU (user + system) per file. ``--delete`` replaces the
DeleteObject: ``real`` (the request), ``noop`` (nothing: the Python path, hot) or ``sleep``
(``trio.sleep(0.0003)``: no request, but the thread blocks once per file as it does for the
answer). ``noop`` against ``sleep`` shows what blocking costs the code that runs after it.
A measuring tool, not a test::

    .venv/bin/python -m bench.unlink_cpu --files 1500 --delete real|noop|sleep
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import trio
from zonemount_cli.servers import start_seaweedfs
from zonemount_fs.core import ROOT_INO, Filesystem
from zonemount_fs.fuse_adapter import ZonemountOperations
from zonemount_fs.options import MountOptions
from zonemount_fs.store.s3 import S3Settings, S3Store


class _Ctx:
    """The fields of a ``pyfuse3.RequestContext`` the handlers read (pid 0: no kill watch)."""

    pid = uid = gid = 0
    umask = 0o022


async def _noop(self: S3Store, key: str) -> None:
    await trio.lowlevel.checkpoint()


async def _sleep(self: S3Store, key: str) -> None:
    await trio.sleep(0.0003)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1500)
    parser.add_argument("--delete", choices=["real", "noop", "sleep"], default="real")
    args = parser.parse_args()
    data_dir = Path(f"/dev/shm/zonemount-unlink-cpu-{uuid.uuid4().hex[:6]}")
    server = start_seaweedfs(data_dir=data_dir)
    try:
        os.environ.update(server.env())
        bucket = f"u-{uuid.uuid4().hex[:8]}"
        client: Any = server.client()
        client.create_bucket(Bucket=bucket)
        settings = S3Settings(
            bucket=bucket, endpoint_url=server.endpoint, region="us-east-1", force_path_style=True
        )
        store = S3Store(settings)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: store.put(f"d/f{i:05d}", b"x" * 4096, {}), range(args.files)))
        if args.delete != "real":
            S3Store._delete_native = _noop if args.delete == "noop" else _sleep  # type: ignore[method-assign]
        options = MountOptions(bucket=bucket, mountpoint=Path("/mnt"), allow_delete=True)
        trio.run(_run, store, options)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


async def _run(store: S3Store, options: MountOptions) -> None:
    async with trio.open_nursery() as nursery:
        fs = Filesystem(store, options, nursery)
        ops = ZonemountOperations(fs)
        ctx: Any = _Ctx()
        d = await fs.lookup(ROOT_INO, "d")
        fh = await fs.opendir(d.ino)
        names = [name for name, _ in await fs.readdir(fh, 0)]
        fs.releasedir(fh)
        cpu, start = os.times(), time.perf_counter()
        for name in names:
            await ops.getattr(d.ino, ctx)
            await ops.unlink(d.ino, name.encode(), ctx)
        seconds, end = time.perf_counter() - start, os.times()
        n = len(names)
        user, system = (end.user - cpu.user) / n * 1e6, (end.system - cpu.system) / n * 1e6
        print(
            f"{n} files: {user + system:.0f} us CPU per file (user {user:.0f}, "
            f"system {system:.0f}), {n / seconds:.0f} files/s"
        )
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    main()
