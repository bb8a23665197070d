"""The upload journal: which multipart uploads this mount started and has not finished.

S3 cannot say who started an incomplete multipart upload (ListMultipartUploads shows the
key, the upload id and the account, never the metadata given to CreateMultipartUpload), so
ownership is proved locally: every upload id is appended to a journal file *before* its first
part is sent, and marked done after it was completed or aborted. A journal belongs to one
(endpoint, bucket, prefix) on this host and is held with ``flock`` for the life of its FUSE
server. A journal nobody holds belongs to a FUSE server that is gone (killed, crashed): the
uploads left open in it are orphans of this host's mounts of the same prefix, and the next
mount aborts them (:meth:`UploadJournal.orphans`). Uploads of live mounts, of other hosts and
of other tools are never touched.

Records are JSON lines (``{"op": "create"|"done", "key", "upload_id", "host", "pid"}``), written
with one ``write`` each, so a kill -9 loses at most the record being written. Where the files
live: ``$ZONEMOUNT_STATE_DIR``, else ``/var/lib/zonemount`` (root) or
``~/.local/state/zonemount``; a journal that cannot be opened disables the sweep (logged), never
the mount.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
from pathlib import Path

from zonemount_contract.keys import STATE_DIR_ENV

log = logging.getLogger("zonemount.journal")

COMPACT_LINES = 10_000


def state_dir() -> Path:
    explicit = os.environ.get(STATE_DIR_ENV)
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return Path("/var/lib/zonemount")
    return Path.home() / ".local" / "state" / "zonemount"


def _outstanding(path: Path) -> dict[str, str]:
    """upload id -> key, for uploads created and not done in the journal at ``path``."""
    open_uploads: dict[str, str] = {}
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
                if record["op"] == "create":
                    open_uploads[record["upload_id"]] = record["key"]
                elif record["op"] == "done":
                    open_uploads.pop(record["upload_id"], None)
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line after a kill
    return open_uploads


class UploadJournal:
    def __init__(self, endpoint: str | None, bucket: str, prefix: str, directory: Path) -> None:
        ident = f"{endpoint or 'aws'}\0{bucket}\0{prefix}"
        self.stem = hashlib.sha256(ident.encode()).hexdigest()[:24]
        self.directory = directory / "uploads"
        self.host = socket.gethostname()
        self._fd: int | None = None
        self._open: dict[str, str] = {}
        self._lines = 0
        self.path: Path | None = None

    # -- ownership ---------------------------------------------------------------------
    def _try_lock(self, path: Path) -> int | None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def open(self) -> dict[str, str]:
        """Take a journal of this prefix; return the orphans (upload id -> key) of every
        journal of this prefix that no live FUSE server holds, which are then this mount's
        to abort (they are carried into its journal until done)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        orphans: dict[str, str] = {}
        for n in range(64):
            path = self.directory / f"{self.stem}-{n}.journal"
            fd = self._try_lock(path)
            if fd is None:
                continue  # a live mount of the same prefix holds it
            orphans.update(_outstanding(path))
            if self._fd is None:
                self._fd, self.path = fd, path
                os.ftruncate(fd, 0)
            else:
                path.unlink(missing_ok=True)
                os.close(fd)
        if self._fd is None:
            raise OSError(f"no free upload journal in {self.directory}")
        for upload_id, key in orphans.items():
            self.created(key, upload_id)
        return orphans

    def close(self) -> None:
        """Release the journal; an empty one is removed (nothing is left to sweep)."""
        if self._fd is not None:
            if not self._open and self.path is not None:
                self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None

    # -- records -----------------------------------------------------------------------
    def _append(self, record: dict[str, object]) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, (json.dumps(record) + "\n").encode())
        except OSError as exc:
            log.warning("upload journal %s: %s", self.path, exc)
            return
        self._lines += 1
        if self._lines > COMPACT_LINES and len(self._open) < COMPACT_LINES // 2:
            self._compact()

    def _compact(self) -> None:
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        self._lines = 0
        for upload_id, key in list(self._open.items()):
            self._append(self._record("create", key, upload_id))

    def _record(self, op: str, key: str, upload_id: str) -> dict[str, object]:
        return {"op": op, "key": key, "upload_id": upload_id, "host": self.host, "pid": os.getpid()}

    def created(self, key: str, upload_id: str) -> None:
        self._open[upload_id] = key
        self._append(self._record("create", key, upload_id))

    def done(self, key: str, upload_id: str) -> None:
        if self._open.pop(upload_id, None) is not None:
            self._append(self._record("done", key, upload_id))

    @property
    def outstanding(self) -> dict[str, str]:
        return dict(self._open)
