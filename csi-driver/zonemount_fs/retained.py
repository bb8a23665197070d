"""Small objects this mount wrote, kept in memory so that reading them back costs no GET.

Owns :class:`Retained` (R-READ-RETAINED in docs/SEMANTICS.md): the bytes of every object a
writer completed with one PutObject (a file smaller than one part), keyed by key *and* ETag,
least recently used first out, at most ``budget`` bytes in all. A Spark job reads back what it
has just written - Parquet footers by the driver and again by every task, ``.crc`` files, the
committed table - and without this each of those opens is a GET of bytes that were in this
process's memory a moment before.

Invariants:

* An entry is handed out only for the exact ``(key, etag)`` it was kept under, and only to an
  open whose attributes name that ETag: what a reader gets is the object it opened, byte for
  byte (an ETag names one content), never a mix. Another client's replacement has another
  ETag; it is read from S3 as soon as the mount's attributes show it (``--metadata-ttl``),
  exactly as the attributes themselves go stale.
* A rename moves the entries of what it moved (CopyObject and RenameObject keep the bytes),
  after the move succeeded; nothing else needs to drop an entry: a deleted or replaced key's
  entry can no longer match and ages out.
* Used on the trio thread only (no lock); ``bytes`` entries are immutable and shared with the
  readers that hold them, so eviction never touches an open file.
"""

from __future__ import annotations

from collections import OrderedDict

from . import metrics


class Retained:
    """An LRU of whole small objects by key, each with the ETag it was stored under."""

    def __init__(self, budget: int, max_object: int) -> None:
        self.budget = budget
        self.max_object = max_object
        self.size = 0
        self._entries: OrderedDict[str, tuple[str, bytes]] = OrderedDict()

    def keep(self, key: str, etag: str | None, data: bytes) -> None:
        """``data`` is now the object at ``key`` with ``etag`` (a PutObject just succeeded)."""
        self._drop(key)
        if not etag or len(data) > self.max_object or len(data) > self.budget:
            return
        self._entries[key] = (etag, data)
        self.size += len(data)
        while self.size > self.budget:
            _, (_, old) = self._entries.popitem(last=False)
            self.size -= len(old)

    def get(self, key: str, etag: str | None) -> bytes | None:
        """The bytes of ``key`` if they are the object ``etag`` names, else None."""
        entry = self._entries.get(key)
        if entry is None or not etag or entry[0] != etag:
            return None
        self._entries.move_to_end(key)
        metrics.RETAINED_OPENS.inc()
        return entry[1]

    def moved(self, src: str, dst: str) -> None:
        """``src`` was renamed to ``dst`` (its bytes and ETag with it)."""
        self._drop(dst)
        entry = self._entries.pop(src, None)
        if entry is not None:
            self._entries[dst] = entry

    def moved_prefix(self, src_prefix: str, dst_prefix: str) -> None:
        """Every object under ``src_prefix`` was renamed to the same name under ``dst_prefix``."""
        for key in [k for k in self._entries if k.startswith(src_prefix)]:
            self.moved(key, dst_prefix + key[len(src_prefix) :])

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.size -= len(entry[1])


class RetainedReader:
    """Reads of one open file answered from the bytes :class:`Retained` handed out."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]

    def close(self) -> None:
        pass
