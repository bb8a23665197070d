"""The manifest of one shard of a bulk copy: what was copied, durable, resumable, provable.

Where it lives, and why there: records go to a local SQLite database (the working copy:
indexed lookups in constant memory however large the shard, transactional) and are
published as immutable segments under a *manifest location*, a local directory or an S3
prefix. For the operator's import that is ``s3://<destination bucket>/.zonemount/imports/
<CR uid>/``: as durable as the data it describes, no volume to provision for Job pods (which
are ephemeral and rescheduled anywhere), still readable after the source's credentials
expire, and readable by the operator to aggregate progress and prove completeness. A worker
starting without the local database (a new pod) rebuilds it from the segments.

Layout under the location, per shard ``shard-<i>-of-<N>/``:
``seg-<ns>-<rand>.jsonl`` (records, one JSON object a line: ``k`` key, ``s`` size, ``e``
ETag, ``m`` source modification time, ``t`` when recorded (unix seconds), ``a``
``copied``/``present``) and ``progress.json`` (the shard's counters, rewritten at each flush
and at the end, with ``complete`` true only when every listed object is recorded).

Invariants: an object is recorded only after its copy completed (or the destination was found
up to date), so the manifest never claims an object the destination lacks; segments are
published every ``flush_every`` records or ``flush_seconds``, so a killed worker loses at most
that window, and on resume those objects are checked against the destination, not blindly
copied again. All methods are thread-safe (one lock around the SQLite connection).
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from zonemount_operator.locations import SourceObject


class ManifestStore(Protocol):
    """Where segments are published: a local directory or an S3 prefix."""

    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes: ...

    def names(self, prefix: str) -> list[str]: ...


class DirStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        temp.write_bytes(data)
        os.replace(temp, path)

    def get(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def names(self, prefix: str) -> list[str]:
        top = self.root / prefix
        if not top.is_dir():
            return []
        return sorted(
            f"{prefix}{p.name}" for p in top.iterdir() if p.is_file() and p.name[0] != "."
        )


class S3Store:
    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"

    def put(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data)

    def get(self, name: str) -> bytes:
        obj = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)
        return bytes(obj["Body"].read())

    def names(self, prefix: str) -> list[str]:
        out = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            out += [item["Key"][len(self.prefix) :] for item in page.get("Contents", ())]
        return sorted(out)


def store_for(location: str, client: Any = None) -> ManifestStore:
    """``s3://bucket/prefix/`` (needs ``client``) or a local directory."""
    if location.startswith("s3://"):
        from zonemount_operator.names import parse_s3_url

        url = parse_s3_url(location, "--manifest")
        return S3Store(client, url.bucket, url.prefix)
    return DirStore(Path(location))


def shard_dir(shard: tuple[int, int] | None) -> str:
    index, count = shard or (0, 1)
    return f"shard-{index:05d}-of-{count:05d}/"


class Manifest:
    """One shard's records (see the module docstring)."""

    def __init__(
        self,
        store: ManifestStore,
        shard: tuple[int, int] | None = None,
        *,
        workdir: Path | None = None,
        flush_every: int = 5000,
        flush_seconds: float = 10.0,
    ) -> None:
        self.store = store
        self.shard = shard
        self.dir = shard_dir(shard)
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self._lock = threading.Lock()
        self._pending: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._owned_tmp = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="zm-manifest-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        db = self.workdir / (self.dir.rstrip("/") + ".sqlite")
        self._db = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
        self._db.executescript(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
            "CREATE TABLE IF NOT EXISTS rec (k TEXT PRIMARY KEY, s INTEGER, e TEXT, m REAL,"
            " t REAL, a TEXT);"
            "CREATE TABLE IF NOT EXISTS seg (name TEXT PRIMARY KEY);"
        )
        # Attempted before: anything published for this shard (progress.json is written first).
        self.resumed = bool(self.store.names(self.dir))
        self._load()

    def _load(self) -> int:
        """Import published segments this database has not seen; returns records known."""
        seen = {row[0] for row in self._db.execute("SELECT name FROM seg")}
        for name in self.store.names(self.dir):
            if not name.rsplit("/", 1)[-1].startswith("seg-") or name in seen:
                continue
            rows = [json.loads(line) for line in self.store.get(name).splitlines() if line]
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO rec VALUES (:k, :s, :e, :m, :t, :a)", rows)
            self._db.execute("INSERT INTO seg VALUES (?)", (name,))
            self._db.execute("COMMIT")
        return self.count()

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM rec").fetchone()[0])

    def has(self, obj: SourceObject) -> bool:
        """Is ``obj`` (this size, and this ETag, or this time for ETag-less sources) recorded?"""
        with self._lock:
            row = self._db.execute("SELECT s, e, m FROM rec WHERE k = ?", (obj.key,)).fetchone()
        if row is None or row[0] != obj.size:
            return False
        return bool(row[1] == obj.etag if obj.etag else row[2] == obj.last_modified)

    def record(self, obj: SourceObject, action: str) -> None:
        rec = {
            "k": obj.key,
            "s": obj.size,
            "e": obj.etag,
            "m": obj.last_modified,
            "t": round(time.time(), 3),
            "a": action,
        }
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO rec VALUES (:k, :s, :e, :m, :t, :a)", rec)
            self._pending.append(rec)
            due = len(self._pending) >= self.flush_every or (
                time.monotonic() - self._last_flush >= self.flush_seconds
            )
        if due:
            self.flush()

    def flush(self, progress: dict[str, Any] | None = None) -> None:
        """Publish pending records as one segment (and the shard's progress, if given)."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._last_flush = time.monotonic()
        if batch:
            name = f"{self.dir}seg-{time.time_ns():020d}-{secrets.token_hex(3)}.jsonl"
            data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in batch)
            try:
                self.store.put(name, data.encode())
            except BaseException:
                with self._lock:  # not published: keep them for the next flush
                    self._pending[:0] = batch
                raise
            with self._lock:
                self._db.execute("INSERT OR IGNORE INTO seg VALUES (?)", (name,))
        if progress is not None:
            self.store.put(self.dir + "progress.json", json.dumps(progress, indent=1).encode())

    def close(self) -> None:
        with self._lock:
            self._db.close()
        if self._owned_tmp:
            import shutil

            shutil.rmtree(self.workdir, ignore_errors=True)


def read_progress(store: ManifestStore) -> list[dict[str, Any]]:
    """Every shard's last published ``progress.json`` under a manifest location."""
    out = []
    for name in store.names(""):
        if name.endswith("/progress.json"):
            out.append(json.loads(store.get(name)))
    return out
