"""Does this FUSE stack let the kernel send one directory's lookups side by side?

The kernel sends the lookups (and readdirs) of one directory one at a time unless the FUSE
server's INIT reply carries ``FUSE_PARALLEL_DIROPS``. Whether it does depends on two parts:
libfuse (3.14, Debian 12, never sends the flag although it marks it wanted; 3.17.x sends it
only when the file system's init asks for it) and pyfuse3 (3.5.0's init does not ask). This
tool mounts a throwaway pyfuse3 file system whose lookup answers after ``--delay`` seconds,
``stat``s ``--names`` new names of one directory at once from as many threads, and prints
the time: about ``names x delay`` means serialized, about ``delay`` means parallel. It
prints the pyfuse3 version and the libfuse library the process loaded. A measuring tool, not
a test (root or a user allowed to mount FUSE)::

    .venv/bin/python -m bench.parallel_dirops [--names 8] [--delay 0.2]

Measured on 2026-12-04 (kernel 6.18): libfuse 3.14 + pyfuse3 3.5.0: 8 lookups 1.61 s
(serialized); libfuse 3.17.2 (built from Debian's source) + pyfuse3 3.5.0: 1.61 s; libfuse
3.17.2 + pyfuse3 3.5.0 with two lines added to its ``fuse_init`` (``conn.want |=
FUSE_CAP_PARALLEL_DIROPS`` when capable): 0.21 s (parallel). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import errno
import os
import stat
import subprocess
import tempfile
import threading
import time
from typing import Any

import pyfuse3
import trio


class _SlowLookups(pyfuse3.Operations):
    """A root directory in which every name ``n<i>`` is a file, found after ``delay``."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = inode
        root = inode == pyfuse3.ROOT_INODE
        entry.st_mode = (stat.S_IFDIR | 0o755) if root else (stat.S_IFREG | 0o644)
        entry.entry_timeout = entry.attr_timeout = 0
        return entry

    async def lookup(self, parent: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        if not name.startswith(b"n") or not name[1:].isdigit():
            raise pyfuse3.FUSEError(errno.ENOENT)
        await trio.sleep(self.delay)
        return await self.getattr(1000 + int(name[1:]))


def _libfuse() -> str:
    with open("/proc/self/maps", encoding="utf-8") as maps:
        paths = {line.split()[-1] for line in maps if "libfuse3" in line}
    return ", ".join(sorted(os.path.realpath(p) for p in paths)) or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=8)
    parser.add_argument("--delay", type=float, default=0.2)
    args = parser.parse_args()
    mnt = tempfile.mkdtemp(prefix="zm-dirops-")
    took: list[float] = []

    def probe() -> None:
        try:
            deadline = time.monotonic() + 10
            while not os.path.ismount(mnt) and time.monotonic() < deadline:
                time.sleep(0.05)
            start = time.monotonic()
            threads = [
                threading.Thread(target=os.stat, args=(f"{mnt}/n{i}",)) for i in range(args.names)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            took.append(time.monotonic() - start)
        finally:
            subprocess.run(["fusermount3", "-u", "-z", mnt], check=False)

    pyfuse3.init(_SlowLookups(args.delay), mnt, {"fsname=zm-dirops"})
    threading.Thread(target=probe, daemon=True).start()
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)
        os.rmdir(mnt)
    verdict = "parallel" if took and took[0] < args.delay * (args.names + 1) / 2 else "serialized"
    print(f"pyfuse3 {pyfuse3.__version__}, libfuse {_libfuse()}")
    print(f"{args.names} lookups in one directory, {args.delay:g} s each: ", end="")
    print(f"{took[0]:.2f} s ({verdict})" if took else "no result")


if __name__ == "__main__":
    main()
