"""The node plugin's persisted publish records (after csi-driver-host-path ``pkg/state``).

One :class:`VolumeRecord` per published target path, kept in ``<state-dir>/state.json`` so a
restarted plugin re-adopts live mounts instead of breaking them.

Invariants:

* the file is written atomically (temp file in the same directory, fsync, ``os.replace``, fsync
  of the directory), mode 0600, so a crash leaves either the old or the new content;
* records hold no secrets: the pod's token lives in its own 0600 file in the volume's
  directory (:meth:`StateStore.volume_dir`) and is referenced by path only;
* all methods are thread-safe (one lock); deleting an absent record is not an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_VERSION = 1


def target_digest(target: str) -> str:
    """The name a target path (or mount key) goes by on disk: its state directory, its cache
    directory. Fixed length and free of ``/``, whatever the path."""
    return hashlib.sha256(target.encode()).hexdigest()[:24]


def volume_path(state_dir: Path, target: str) -> Path:
    """The private directory of one target path (or mount key) under the state dir, shared
    by the node plugin and the mounter daemon (it is not created here)."""
    return state_dir / "volumes" / target_digest(target)


def write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``text`` so a crash leaves the old or the new content: a temp
    file of its own in the same directory (two writers never share one), fsync,
    ``os.replace``, fsync of the directory. The last writer wins."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass
class VolumeRecord:
    """What was published at one target path, and by which FUSE process."""

    volume_id: str
    target_path: str
    #: ``zonemount mount`` arguments after the executable (no secrets in them, ever).
    args: list[str]
    authentication_source: str
    role_arn: str = ""
    session_name: str = ""
    endpoint_url: str = ""
    pid: int = 0
    #: /proc/PID/stat start time, so a recycled PID is never mistaken for our process.
    pid_start_time: int = 0
    restarts: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    def fingerprint(self) -> tuple[object, ...]:
        """What must match for a repeated publish to count as 'the same' (idempotency)."""
        return (
            self.volume_id,
            tuple(self.args),
            self.authentication_source,
            self.role_arn,
            self.endpoint_url,
        )


class StateStore:
    """Records keyed by target path, persisted as JSON under ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / "state.json"
        self._lock = threading.Lock()
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(state_dir, 0o700)
        self._records: dict[str, VolumeRecord] = self._load()

    def _load(self) -> dict[str, VolumeRecord]:
        try:
            raw: Any = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StateError(
                f"state file {self.path} is unreadable ({exc}); move it aside to start afresh "
                "(live mounts are then re-adopted from /proc/self/mountinfo on unpublish only)"
            ) from None
        if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
            raise StateError(f"state file {self.path} has an unknown format; move it aside")
        records = {}
        for target, data in raw.get("volumes", {}).items():
            records[target] = VolumeRecord(**data)
        return records

    def _save(self) -> None:
        payload = {
            "version": STATE_VERSION,
            "volumes": {t: asdict(r) for t, r in sorted(self._records.items())},
        }
        write_atomically(self.path, json.dumps(payload, indent=1, sort_keys=True))

    def get(self, target: str) -> VolumeRecord | None:
        with self._lock:
            record = self._records.get(target)
            return None if record is None else VolumeRecord(**asdict(record))

    def all(self) -> list[VolumeRecord]:
        with self._lock:
            return [VolumeRecord(**asdict(r)) for r in self._records.values()]

    def put(self, record: VolumeRecord) -> None:
        with self._lock:
            self._records[record.target_path] = VolumeRecord(**asdict(record))
            self._save()

    def delete(self, target: str) -> None:
        with self._lock:
            if self._records.pop(target, None) is not None:
                self._save()

    def volume_dir(self, target: str) -> Path:
        """Private 0700 directory for one target (token file, FUSE client log)."""
        path = volume_path(self.state_dir, target)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
        return path

    def remove_volume_dir(self, target: str) -> None:
        shutil.rmtree(volume_path(self.state_dir, target), ignore_errors=True)


class StateError(RuntimeError):
    """The persisted state cannot be used."""
