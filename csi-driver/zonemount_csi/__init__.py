"""zonemount CSI driver: the node plugin that mounts the FUSE client into pods and the controller
that gives each PersistentVolumeClaim its own prefix.

Module map (one concept per module, after kubernetes-csi/csi-driver-host-path):

* :mod:`.identity`, :mod:`.node`, :mod:`.controller` - one module per CSI service; every handler
  validates its request first and answers with gRPC status codes (:class:`.errors.CsiError`).
* the volume-context / StorageClass keys and the driver name live in :mod:`zonemount_contract.keys`.
* :mod:`.validation` - request validation shared by the controller and the node (the controller
  imports nothing of the node service); :mod:`.confinement` - target paths stay under
  ``<kubelet>/pods/``; :mod:`.locks` - operations in flight (ABORTED) and per-bucket locks.
* :mod:`.mount_options` - PV ``mountOptions`` as a typed value parsed through an allow-list.
* :mod:`.credentials` - driver-level and pod-level (web identity) credentials for a mount.
* :mod:`.mounter` - the ``Mounter`` seam: one supervised ``zonemount mount -f`` process per target.
* :mod:`.mountinfo` - reading ``/proc/self/mountinfo`` and probing mount health (ENOTCONN).
* :mod:`.state` - the node's persisted, atomically written publish records.
* :mod:`.redact` / :mod:`.server` - secret-stripping logging interceptor and the gRPC server.
* :mod:`.metrics` - Prometheus metrics; :mod:`.cli` - ``zonemount csi-node|csi-controller``.
* :mod:`.node_zone` - ``zonemount node-zone``, the node pod's init step (zone labels to files).

Generated CSI v1.9 stubs live in :mod:`._proto` (``make csi-proto``).
"""

from __future__ import annotations

from zonemount_contract.keys import DRIVER_NAME

__all__ = ["DRIVER_NAME", "driver_version"]


def driver_version() -> str:
    """The vendor version reported by GetPluginInfo (the installed distribution's version)."""
    from zonemount_contract.s3client import zonemount_version

    return zonemount_version()
