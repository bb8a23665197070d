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
        fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix=".state.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(payload, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.state_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

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
        digest = hashlib.sha256(target.encode()).hexdigest()[:24]
        path = self.state_dir / "volumes" / digest
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
        return path

    def remove_volume_dir(self, target: str) -> None:
        digest = hashlib.sha256(target.encode()).hexdigest()[:24]
        shutil.rmtree(self.state_dir / "volumes" / digest, ignore_errors=True)


class StateError(RuntimeError):
    """The persisted state cannot be used."""
