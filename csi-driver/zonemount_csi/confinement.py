"""Target-path confinement: a NodePublishVolume target is a new directory under
``<kubelet-dir>/pods/``, never anywhere else on the host.

After Mountpoint's CSI driver and csi-driver-host-path, which refuse targets outside the
kubelet's pods directory: the node plugin runs privileged and mounts (and later removes) the
directory it is given, so a forged ``target_path`` (``..`` parts, a symlink planted by a pod)
must never reach ``mkdir``, ``mount`` or ``rmdir``.

Invariants: :func:`confine` returns only a real path strictly below the real pods directory
whose parent has no symlink in it and which is not itself a symlink; everything else is
INVALID_ARGUMENT with a one-line reason (tests/csi/test_unit_parts.py checks the property).
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath

from .errors import invalid


def pods_root(kubelet_dir: str | os.PathLike[str]) -> str:
    """The real ``<kubelet-dir>/pods`` every target must stay under."""
    return os.path.join(os.path.realpath(kubelet_dir), "pods")


def confine(target_path: str, root: str) -> str:
    """The real path of ``target_path`` if it is a safe target under ``root`` (from
    :func:`pods_root`), else INVALID_ARGUMENT."""
    if not target_path:
        raise invalid("target_path is required")
    if "\x00" in target_path or not target_path.startswith("/"):
        raise invalid("target_path must be an absolute path")
    parts = PurePosixPath(target_path).parts
    if ".." in parts or "." in target_path.split("/"):
        raise invalid("target_path must not contain '.' or '..' components")
    normalized = os.path.normpath(target_path)
    parent = os.path.realpath(os.path.dirname(normalized))
    real = os.path.join(parent, os.path.basename(normalized))
    if os.path.commonpath([real, root]) != root or real == root:
        raise invalid(
            f"target_path resolves outside the kubelet pods directory {root}: refused "
            "(check --kubelet-dir)"
        )
    if os.path.islink(real):
        raise invalid("target_path is a symbolic link: refused")
    return real
