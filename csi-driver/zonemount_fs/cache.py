"""Local disk cache of object data (``--cache DIR --max-cache-size MiB``).

Contract:
* Blocks are whole aligned read chunks (``--read-part-size`` bytes, the last one shorter) of one
  object version, named by a hash of (key, ETag, index): a replaced object can never be served
  from stale blocks.
* The cache lives in a fresh sub-directory of DIR created at mount and removed at unmount
  (mount-s3 also wipes its cache at mount): nothing survives a restart, so nothing stale does.
* Size is bounded by ``max_bytes`` and by the free space of the cache's file system: a block
  is only written while at least :data:`MIN_FREE_FRACTION` of it stays free for everyone else
  (as Mountpoint does); least-recently-used blocks are evicted first, for either bound.
* Best effort: any I/O error (full disk, permissions) means "not cached" - a read never fails
  because of the cache. Thread safe (blocks are written and read from worker threads).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger("zonemount.cache")
#: Share of the cache's file system always left free (other users never see ENOSPC because
#: of the cache).
MIN_FREE_FRACTION = 0.05


class DataCache:
    def __init__(self, parent: Path, max_bytes: int) -> None:
        parent.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="zonemount-cache-", dir=parent))
        self.max_bytes = max_bytes
        self._lru: OrderedDict[str, int] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        # Held while a block file is written and by close(), so that close() never races a
        # writer re-populating the directory it removes.
        self._io_lock = threading.Lock()
        self._closed = False
        self._pending: set[str] = set()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _name(key: str, etag: str, index: int) -> str:
        digest = hashlib.sha256(f"{key}\0{etag}".encode()).hexdigest()[:40]
        return f"{digest}-{index}"

    def get(self, key: str, etag: str, index: int) -> bytes | None:
        name = self._name(key, etag, index)
        with self._lock:
            if name not in self._lru or name in self._pending:
                self.misses += 1
                return None
            self._lru.move_to_end(name)
        try:
            data = (self.root / name).read_bytes()
        except OSError:
            self._forget(name)
            return None
        with self._lock:
            self.hits += 1
        return data

    def put(self, key: str, etag: str, index: int, data: bytes | bytearray) -> None:
        if len(data) > self.max_bytes:
            return
        name = self._name(key, etag, index)
        with self._lock:  # reserve the space first: concurrent writers never overshoot
            if name in self._lru:
                return
            while self._bytes + len(data) > self.max_bytes and self._lru:
                self._evict_locked()
            while self._short_of_space(len(data)):
                if not self._lru:
                    return  # the disk is (nearly) full without us: do not cache
                self._evict_locked()
            self._lru[name] = len(data)
            self._bytes += len(data)
            self._pending.add(name)
        tmp = self.root / f".{name}.tmp"
        ok = False
        with self._io_lock:
            if not self._closed:
                try:
                    with open(tmp, "wb") as f:
                        f.write(data)
                    os.replace(tmp, self.root / name)
                    ok = True
                except OSError as exc:
                    log.warning("cache write failed (%s); continuing uncached", exc)
                    tmp.unlink(missing_ok=True)
        with self._lock:
            self._pending.discard(name)
            evicted_meanwhile = name not in self._lru
        if not ok:
            self._forget(name)
        elif evicted_meanwhile:
            (self.root / name).unlink(missing_ok=True)

    def _short_of_space(self, size: int) -> bool:
        """Would writing ``size`` bytes (plus blocks still being written) leave less than
        MIN_FREE_FRACTION of the file system free?"""
        try:
            st = os.statvfs(self.root)
        except OSError:
            return True
        pending = sum(self._lru[name] for name in self._pending if name in self._lru)
        free = st.f_bavail * st.f_frsize - pending - size
        return free < MIN_FREE_FRACTION * st.f_blocks * st.f_frsize

    def _evict_locked(self) -> None:
        name, size = self._lru.popitem(last=False)
        self._bytes -= size
        if name not in self._pending:  # a pending block is dropped by its writer's failure path
            (self.root / name).unlink(missing_ok=True)

    def _forget(self, name: str) -> None:
        with self._lock:
            size = self._lru.pop(name, None)
            if size is not None:
                self._bytes -= size

    @property
    def writing(self) -> int:
        """Blocks reserved but not yet on disk (a get() of one of them is a miss)."""
        with self._lock:
            return len(self._pending)

    @property
    def size(self) -> int:
        with self._lock:
            return self._bytes

    def close(self) -> None:
        with self._io_lock:
            self._closed = True
            shutil.rmtree(self.root, ignore_errors=True)
