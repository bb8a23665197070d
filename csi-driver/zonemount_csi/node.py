"""CSI Node service: publish a bucket prefix into a pod by running one FUSE process per target.

After csi-driver-host-path ``nodeserver.go``: every handler validates its whole request first,
then acts, and answers with gRPC status codes (:class:`~zonemount_csi.errors.CsiError`).

NodePublishVolume, in order:

1. required fields (volume_id, target_path, volume_capability) -> INVALID_ARGUMENT;
   a block or UNKNOWN access type/mode -> FAILED_PRECONDITION (the spec's "exceeds
   capabilities");
2. the target path must be absolute, have no ``.``/``..`` parts, resolve (realpath of its
   parent) to a path under ``<kubelet-dir>/pods/`` and not be a symlink -> else INVALID_ARGUMENT;
3. volume context: unknown keys, bucket/prefix/region syntax, ``endpointUrl`` not in the node's
   ``--allowed-endpoint-url`` list, authentication source and credentials -> INVALID_ARGUMENT;
4. PV mount options through the allow-list (:mod:`.mount_options`) -> INVALID_ARGUMENT;
5. only one operation per volume id and per target at a time -> ABORTED for the others;
6. idempotency on the persisted record of the target: same volume + same argv/auth -> OK (a
   broken mount is repaired first, a pod token is refreshed); anything else -> ALREADY_EXISTS;
7. start ``zonemount mount BUCKET TARGET -f --prefix=P --region=R ...`` through the
   :class:`~zonemount_csi.mounter.Mounter` and wait (bounded) until it is mounted.

NodeUnpublishVolume unmounts (SIGTERM to the FUSE process, then ``fusermount3 -u``, lazily if
busy), removes the target directory and forgets the record; an unknown or unmounted target is
OK. :meth:`NodeService.heal_once` (run by the supervisor thread) restarts dead FUSE processes:
a mount that answers ENOTCONN is lazily unmounted and mounted again, counted in
``zonemount_csi_fuse_restarts_total``.

A volume whose part sizes this node's ``--max-memory-target`` cuts (R-FLAGS-MEMORY-TARGET) is
logged when its FUSE server starts, named with the fix in its NodeGetVolumeStats condition
message (not abnormal) and, while published here, in the metric
``zonemount_csi_volume_part_sizes_cut{volume}`` (derived from the records at each scrape).

Request validation is :mod:`.validation` (shared with the controller), target-path
confinement :mod:`.confinement`.

Concurrency: gRPC handlers run on a thread pool; an :class:`~zonemount_csi.locks.InFlight`
holds the volume ids and targets in flight (a second RPC on one is ABORTED). The supervisor
checks volumes without claiming them (a check never makes an RPC wait or fail) and only
*tries* to claim one that needs a repair, skipping it if busy; an RPC meeting a repair is
ABORTED (:meth:`NodeService.heal_once`).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from zonemount_contract import keys as vc
from zonemount_contract.mount_options import DEFAULT_MAX_MEMORY_TARGET_MIB, fit_memory_args
from zonemount_contract.names import is_directory_bucket
from zonemount_operator import quantity

from . import credentials, mount_options, mountinfo
from ._proto import csi_pb2, csi_pb2_grpc
from .confinement import confine, pods_root
from .errors import CsiError, invalid
from .locks import InFlight
from .metrics import Metrics
from .mounter import Mounter, MountError, MountHandle, MountSpec
from .mountinfo import MountState
from .state import StateStore, VolumeRecord, target_digest
from .validation import (
    READ_ONLY_MODES,
    check_capability,
    check_known_keys,
    validate_bucket,
    validate_cache_xz,
    validate_choice,
    validate_prefix,
    validate_region,
    validate_role_arn,
)

log = logging.getLogger(__name__)

DEFAULT_CACHE_MIB = 1024


@dataclass(frozen=True)
class NodeConfig:
    node_id: str
    kubelet_dir: Path
    state_dir: Path
    zone: str = ""
    zone_id: str = ""
    allowed_endpoint_urls: tuple[str, ...] = ()
    mount_timeout: float = 30.0
    unmount_timeout: float = 10.0
    #: Run every FUSE client with --debug (not part of a volume's identity/fingerprint).
    fuse_debug: bool = False
    #: Environment of driver-level mounts; None = the plugin's own environment at mount time.
    base_env: Mapping[str, str] | None = field(default=None, repr=False)
    #: Roots of volume caches (cacheMedium disk / memory), as the FUSE servers see them;
    #: empty: that medium is refused.
    cache_dir: str = ""
    memory_cache_dir: str = ""
    #: Largest cacheSizeLimit a volume may ask for, MiB.
    max_cache_mib: int = 10240
    #: --max-memory-target of every mount (not part of a volume's identity/fingerprint): a
    #: volume's part sizes are cut to fit it (R-FLAGS-MEMORY-TARGET).
    max_memory_target_mib: int = DEFAULT_MAX_MEMORY_TARGET_MIB


@dataclass
class _Desired:
    record: VolumeRecord
    token: str = field(default="", repr=False)


class NodeService:
    """Node logic, independent of gRPC plumbing (the servicer below is a thin adapter)."""

    def __init__(
        self, config: NodeConfig, mounter: Mounter, store: StateStore, metrics: Metrics
    ) -> None:
        self.config = config
        self.mounter = mounter
        self.store = store
        self.metrics = metrics
        self._in_flight = InFlight()
        self._pods_root = pods_root(config.kubelet_dir)
        self._allowed_endpoints = {u.rstrip("/") for u in config.allowed_endpoint_urls}
        self.metrics.published_volumes.set(len(self.store.all()))
        self.metrics.volumes_cut.source = self._volumes_cut

    # -- validation ----------------------------------------------------------------------
    def confine(self, target_path: str) -> str:
        """The real path of ``target_path`` if it is a safe target under <kubelet>/pods/
        (:func:`zonemount_csi.confinement.confine`)."""
        return confine(target_path, self._pods_root)

    def _endpoint(self, url: str) -> str:
        if not url:
            return ""
        if url.rstrip("/") not in self._allowed_endpoints:
            raise invalid(
                "volume context endpointUrl is not allowed on this node: the node plugin only "
                "sends data to endpoints listed in its --allowed-endpoint-url (ask the cluster "
                "admin to add it)"
            )
        return url.rstrip("/")

    def _desired(self, request: csi_pb2.NodePublishVolumeRequest, target: str) -> _Desired:
        """The record (``zonemount mount`` argv and identity) a publish request asks for,
        validated whole before anything on the node changes."""
        ctx = dict(request.volume_context)
        check_known_keys(ctx, vc.VOLUME_CONTEXT_KEYS, "volume context key")
        bucket = validate_bucket(ctx.get(vc.BUCKET_NAME, ""))
        prefix = validate_prefix(ctx.get(vc.PREFIX, ""))
        region = validate_region(ctx.get(vc.REGION, ""))
        endpoint = self._endpoint(ctx.get(vc.ENDPOINT_URL, ""))
        source = validate_choice(
            ctx.get(vc.AUTHENTICATION_SOURCE, "") or vc.AUTH_DRIVER,
            vc.AUTH_SOURCES,
            "volume context authenticationSource",
        )
        options = _mount_options(request, bucket)
        role_arn, token, session = _pod_identity(ctx, source)
        args = ["mount", bucket, target, "-f"]
        if prefix:
            args.append(f"--prefix={prefix}")
        if region:
            args.append(f"--region={region}")
        if endpoint:
            args.append(f"--endpoint-url={endpoint}")
        args.extend(options.to_argv())
        args.extend(self._cache_args(ctx, target))
        args.extend(_cache_xz_args(ctx, bucket))
        record = VolumeRecord(
            volume_id=request.volume_id,
            target_path=target,
            args=args,
            authentication_source=source,
            role_arn=role_arn,
            session_name=session,
            endpoint_url=endpoint,
        )
        return _Desired(record, token)

    def _cache_args(self, ctx: Mapping[str, str], target: str) -> list[str]:
        """``--cache=<root>/<sha256(target)[:24]> --max-cache-size=MiB`` from the volume context."""
        medium = ctx.get(vc.CACHE_MEDIUM, "")
        size = ctx.get(vc.CACHE_SIZE_LIMIT, "")
        if not medium:
            if size:
                raise invalid(
                    f"volume context {vc.CACHE_SIZE_LIMIT} needs {vc.CACHE_MEDIUM}: "
                    f"{' or '.join(vc.CACHE_MEDIUMS)}"
                )
            return []
        if medium not in vc.CACHE_MEDIUMS:
            raise invalid(
                f"volume context {vc.CACHE_MEDIUM} must be one of {', '.join(vc.CACHE_MEDIUMS)}"
            )
        root = self.config.cache_dir if medium == vc.CACHE_DISK else self.config.memory_cache_dir
        if not root:
            flag = "--cache-dir" if medium == vc.CACHE_DISK else "--memory-cache-dir"
            raise invalid(
                f"{vc.CACHE_MEDIUM} {medium} is not available on this node: the node plugin "
                f"runs without {flag} (ask the cluster admin)"
            )
        mib = DEFAULT_CACHE_MIB
        if size:
            try:
                value = quantity.parse(size)
            except ValueError:
                raise invalid(
                    f"volume context {vc.CACHE_SIZE_LIMIT} {size[:30]!r} is not a quantity "
                    "such as 512Mi or 2Gi"
                ) from None
            mib = math.ceil(value / (1024 * 1024))
            if value <= 0:
                raise invalid(f"volume context {vc.CACHE_SIZE_LIMIT} must be positive")
        if mib > self.config.max_cache_mib:
            raise invalid(
                f"volume context {vc.CACHE_SIZE_LIMIT} {size} exceeds this node's limit of "
                f"{self.config.max_cache_mib} MiB (--max-cache-size)"
            )
        return [f"--cache={root.rstrip('/')}/{target_digest(target)}", f"--max-cache-size={mib}"]

    def _memory_warnings(self, record: VolumeRecord) -> tuple[str, ...]:
        """What the mount of ``record`` cuts to fit this node's memory target (one line each,
        the FUSE client logs the same): the option table's rule."""
        return fit_memory_args(record.args, self.config.max_memory_target_mib).warnings

    def _volumes_cut(self) -> list[str]:
        """Ids of the volumes published here whose mounts cut part sizes (the metric)."""
        return [r.volume_id for r in self.store.all() if self._memory_warnings(r)]

    # -- mounting helpers ----------------------------------------------------------------
    def _spec(self, record: VolumeRecord) -> MountSpec:
        vdir = self.store.volume_dir(record.target_path)
        base = self.config.base_env if self.config.base_env is not None else os.environ
        token_file = vdir / credentials.TOKEN_FILE_NAME
        if record.authentication_source == vc.AUTH_POD and not token_file.exists():
            raise CsiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "the pod's service-account token file is gone: the kubelet's next republish "
                "will provide a new one",
            )
        inherits = getattr(self.mounter, "inherits_env", False)
        pod = record.authentication_source == vc.AUTH_POD
        env = credentials.mount_env(
            {} if inherits else base,
            authentication_source=record.authentication_source,
            token_file=token_file,
            role_arn=record.role_arn,
            role_session_name=record.session_name,
        )
        # A mounter that runs servers in its own environment drops its credentials for pods.
        unset = credentials.DRIVER_CREDENTIAL_ENV if inherits and pod else ()
        args = [*record.args, f"--max-memory-target={self.config.max_memory_target_mib}"]
        if self.config.fuse_debug:
            args.append("--debug")
        return MountSpec(
            record.target_path, args, env, vdir / "zonemount.log", unset, _cache_dir(record)
        )

    def _start(self, record: VolumeRecord) -> None:
        """Mount ``record`` (target dir already exists) and persist the new PID."""
        spec = self._spec(record)
        try:
            handle = self.mounter.mount(spec, self.config.mount_timeout)
        except MountError as exc:
            raise CsiError(
                grpc.StatusCode.INTERNAL,
                f"mounting volume {record.volume_id[:80]} failed: {exc}",
            ) from None
        record.pid, record.pid_start_time = handle.pid, handle.start_time
        self.store.put(record)
        for warning in self._memory_warnings(record):
            log.warning("volume %s: %s", record.volume_id[:80], warning)

    def _repair(self, record: VolumeRecord, reason: str) -> None:
        """Restart the FUSE process of a dead/missing mount of ``record``."""
        old = MountHandle(record.pid, record.pid_start_time) if record.pid else None
        log.warning("restarting FUSE process of %s (%s)", record.target_path, reason)
        spec = self._spec(record)
        try:
            handle = self.mounter.remount(spec, self.config.mount_timeout, old)
        except MountError as exc:
            raise CsiError(
                grpc.StatusCode.INTERNAL,
                f"restoring volume {record.volume_id[:80]} failed: {exc}",
            ) from None
        record.pid, record.pid_start_time = handle.pid, handle.start_time
        record.restarts += 1
        self.store.put(record)
        self.metrics.fuse_restarts.labels(reason).inc()

    def _live(self, record: VolumeRecord) -> bool:
        """Mounted, answering, and served by the recorded (still running) process."""
        if self.mounter.state(record.target_path) is not MountState.HEALTHY:
            return False
        return self._alive(record)

    def _alive(self, record: VolumeRecord) -> bool:
        """The recorded process still runs (the same one: its start time matches)."""
        try:
            return self.mounter.alive(MountHandle(record.pid, record.pid_start_time))
        except MountError as exc:
            raise CsiError(grpc.StatusCode.UNAVAILABLE, f"cannot check the mount: {exc}") from None

    # -- RPCs ----------------------------------------------------------------------------
    def publish(self, request: csi_pb2.NodePublishVolumeRequest) -> None:
        started = time.monotonic()
        if not request.volume_id:
            raise invalid("volume_id is required")
        if not request.HasField("volume_capability"):
            raise invalid("volume_capability is required")
        target = self.confine(request.target_path)
        check_capability(request.volume_capability)
        desired = self._desired(request, target)
        with self._in_flight.exclusive(f"volume:{request.volume_id}", f"target:{target}"):
            existing = self.store.get(target)
            if existing is not None:
                if existing.fingerprint() != desired.record.fingerprint():
                    raise CsiError(
                        grpc.StatusCode.ALREADY_EXISTS,
                        "target_path is already published with a different volume or "
                        "different options: unpublish it first",
                    )
                if desired.token:
                    credentials.write_token_file(self.store.volume_dir(target), desired.token)
                if not self._live(existing):
                    self._repair(existing, "publish")
                return
            state = self.mounter.state(target)
            if state is MountState.HEALTHY or state is MountState.FOREIGN:
                raise CsiError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    "target_path is already a mount point this plugin did not publish: "
                    "unmount it first",
                )
            if state is MountState.BROKEN:
                self.mounter.lazy_unmount(target)
            os.makedirs(target, mode=0o750, exist_ok=True)
            if os.path.realpath(target) != target:
                raise invalid("target_path changed while being created (symlink?): refused")
            if desired.token:
                credentials.write_token_file(self.store.volume_dir(target), desired.token)
            try:
                self._start(desired.record)
            except CsiError:
                self.store.remove_volume_dir(target)
                raise
            self.metrics.published_volumes.set(len(self.store.all()))
            self.metrics.publish_duration.observe(time.monotonic() - started)

    def unpublish(self, request: csi_pb2.NodeUnpublishVolumeRequest) -> None:
        if not request.volume_id:
            raise invalid("volume_id is required")
        target = self.confine(request.target_path)
        with self._in_flight.exclusive(f"volume:{request.volume_id}", f"target:{target}"):
            record = self.store.get(target)
            if record is not None and record.volume_id != request.volume_id:
                raise CsiError(
                    grpc.StatusCode.NOT_FOUND,
                    "target_path is published for a different volume_id",
                )
            state = self.mounter.state(target)
            if state is MountState.FOREIGN and record is None:
                raise CsiError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "target_path holds a mount this plugin does not manage: refusing to unmount",
                )
            handle = None if record is None else MountHandle(record.pid, record.pid_start_time)
            # With a record, always (idempotent): it also removes the volume's cache directory.
            if state is not MountState.ABSENT or record is not None:
                try:
                    self.mounter.unmount(
                        target, handle, self.config.unmount_timeout, _cache_dir(record)
                    )
                except MountError as exc:
                    raise CsiError(grpc.StatusCode.INTERNAL, f"unmount failed: {exc}") from None
            try:
                os.rmdir(target)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise CsiError(
                    grpc.StatusCode.INTERNAL,
                    f"cannot remove target_path after unmount: {exc.strerror}",
                ) from None
            self.store.delete(target)
            self.store.remove_volume_dir(target)
            self.metrics.published_volumes.set(len(self.store.all()))

    def get_info(self) -> csi_pb2.NodeGetInfoResponse:
        """The node id and its topology (always: the plugin advertises
        VOLUME_ACCESSIBILITY_CONSTRAINTS, so a node without a zone is refused at start-up)."""
        if not self.config.zone:
            raise CsiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this node plugin has no zone: restart it with --zone (its topology zone)",
            )
        segments = {vc.TOPOLOGY_ZONE: self.config.zone}
        if self.config.zone_id:
            segments[vc.TOPOLOGY_ZONE_ID] = self.config.zone_id
        return csi_pb2.NodeGetInfoResponse(
            node_id=self.config.node_id, accessible_topology=csi_pb2.Topology(segments=segments)
        )

    def volume_stats(self, volume_id: str, path: str) -> csi_pb2.NodeGetVolumeStatsResponse:
        """Usage as the FUSE client's statfs reports it (what ``df`` shows) and the condition.

        The kubelet rejects a response without usage, so a dead mount reports zeros.
        """
        not_found = CsiError(grpc.StatusCode.NOT_FOUND, "volume is not published at volume_path")
        try:
            target = self.confine(path)
        except CsiError:
            raise not_found from None  # no volume is ever published outside <kubelet>/pods/
        record = self.store.get(target)
        if record is None or record.volume_id != volume_id:
            raise not_found
        usage = {"bytes": (0, 0, 0), "inodes": (0, 0, 0)}
        if self._live(record):
            health = mountinfo.fs_health_within(target)
            message = "mounted" if health in (None, "ok") else f"mounted, {health}"
            for warning in self._memory_warnings(record):
                message += f"; {warning}"
            condition = csi_pb2.VolumeCondition(
                abnormal=health is not None and health != "ok", message=message
            )
            st = mountinfo.statvfs_within(target)
            if st is not None:
                size = st.f_frsize
                usage["bytes"] = (
                    st.f_bavail * size,
                    st.f_blocks * size,
                    (st.f_blocks - st.f_bfree) * size,
                )
                usage["inodes"] = (st.f_favail, st.f_files, st.f_files - st.f_ffree)
        else:
            condition = csi_pb2.VolumeCondition(
                abnormal=True, message="the FUSE process is not serving; the plugin restores it"
            )
        unit = csi_pb2.VolumeUsage
        return csi_pb2.NodeGetVolumeStatsResponse(
            usage=[
                unit(available=a, total=t, used=u, unit=kind)
                for (a, t, u), kind in (
                    (usage["bytes"], unit.BYTES),
                    (usage["inodes"], unit.INODES),
                )
            ],
            volume_condition=condition,
        )

    # -- healing -------------------------------------------------------------------------
    def heal_once(self, reason: str = "supervisor") -> int:
        """Restart every dead FUSE process not busy in an RPC; returns how many were restarted.

        The health check of a volume holds no claim: it only reads (the mount table, one
        bounded opendir, the process's start time), as NodeGetVolumeStats does, and it can take
        up to the probe's bound (10 s) on a hung mount. Holding the volume's claim for it made
        a NodePublishVolume/NodeUnpublishVolume that met a routine check ABORTED, and the
        kubelet retries ABORTED with a backoff from 500 ms: the pass, every few seconds, delayed
        pod starts and stops. Only a volume that needs action (a repair, forgetting a removed
        target) is claimed - skipped if an RPC holds it - and checked again under the claim,
        since an RPC may have changed it since the unclaimed check. A repair holds the claim
        (it takes seconds), so an RPC meeting it is ABORTED, as for any concurrent operation.
        """
        restarted = 0
        for record in self.store.all():
            try:
                if self._needs_action(record) is None:
                    continue
            except (CsiError, OSError, MountError):
                pass  # checked again, and logged, under the claim
            keys = (f"volume:{record.volume_id}", f"target:{record.target_path}")
            with self._in_flight.claim(*keys) as busy:
                if busy is not None:
                    continue
                current = self.store.get(record.target_path)
                if current is None:
                    continue
                try:
                    state = self._needs_action(current)
                    if state is None:
                        continue
                    if state is MountState.ABSENT and not os.path.isdir(current.target_path):
                        log.info("forgetting %s: the kubelet removed it", current.target_path)
                        self.store.delete(current.target_path)
                        self.store.remove_volume_dir(current.target_path)
                        continue
                    self._repair(current, reason)
                    restarted += 1
                except (CsiError, OSError, MountError) as exc:
                    log.error("cannot restore %s: %s", current.target_path, exc)
        self.metrics.published_volumes.set(len(self.store.all()))
        return restarted

    def _needs_action(self, record: VolumeRecord) -> MountState | None:
        """Read-only, one probe: None when ``record``'s mount is live (or is not this
        plugin's: FOREIGN), else the state of its target (the supervisor acts on it)."""
        state = self.mounter.state(record.target_path)
        if state is MountState.FOREIGN:
            return None
        if state is MountState.HEALTHY and self._alive(record):
            return None
        return state


def _mount_options(
    request: csi_pb2.NodePublishVolumeRequest, bucket: str
) -> mount_options.MountOptions:
    """The PV's mount options through the allow-list, read-only for read-only access."""
    cap = request.volume_capability
    try:
        options = mount_options.parse(cap.mount.mount_flags)
        options.check_combination(directory_bucket=is_directory_bucket(bucket))
    except mount_options.MountOptionError as exc:
        raise invalid(str(exc)) from None
    if request.readonly or cap.access_mode.mode in READ_ONLY_MODES:
        options = options.with_read_only()
    return options


def _pod_identity(ctx: Mapping[str, str], source: str) -> tuple[str, str, str]:
    """``(role ARN, STS token, session name)`` of a pod-level mount; empty for the driver's."""
    if source != vc.AUTH_POD:
        if ctx.get(vc.ROLE_ARN):
            raise invalid("volume context roleArn only applies with authenticationSource: pod")
        return "", "", ""
    role_arn = validate_role_arn(ctx.get(vc.ROLE_ARN, ""))
    try:
        token = credentials.extract_sts_token(ctx.get(vc.SERVICE_ACCOUNT_TOKENS, ""))
    except credentials.CredentialsError as exc:
        raise invalid(str(exc)) from None
    session = credentials.session_name(ctx.get(vc.POD_NAMESPACE, ""), ctx.get(vc.POD_NAME, ""))
    return role_arn, token, session


def _cache_xz_args(ctx: Mapping[str, str], bucket: str) -> list[str]:
    """``--cache-xz=BUCKET`` (reached at the volume's allow-listed endpoint), or nothing."""
    cache_xz = validate_cache_xz(ctx.get(vc.CACHE_XZ, ""), bucket, f"volume context {vc.CACHE_XZ}")
    return [f"--cache-xz={cache_xz}"] if cache_xz else []


def _cache_dir(record: VolumeRecord | None) -> str:
    """The ``--cache=DIR`` of a record's argv ('' without a cache)."""
    for arg in record.args if record is not None else ():
        if arg.startswith("--cache="):
            return arg.split("=", 1)[1]
    return ""


class Supervisor:
    """Background thread calling :meth:`NodeService.heal_once` every ``interval`` seconds."""

    def __init__(self, service: NodeService, interval: float = 5.0) -> None:
        self.service = service
        self.interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="csi-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self, _key: str | None = None) -> None:
        """Run a pass now (the mounter reported a FUSE server exit)."""
        self._wake.set()

    def _run(self) -> None:
        reason = "adopt"  # the first pass after start re-adopts what a previous run left
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.service.heal_once(reason)
            except Exception:
                log.exception("supervisor pass failed")
            reason = "supervisor"
            self._wake.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)


class NodeServicer(csi_pb2_grpc.NodeServicer):  # type: ignore[misc]
    """gRPC adapter of :class:`NodeService` (errors are raised as CsiError, see server.py)."""

    def __init__(self, service: NodeService) -> None:
        self.service = service

    def NodePublishVolume(
        self, request: csi_pb2.NodePublishVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodePublishVolumeResponse:
        self.service.publish(request)
        return csi_pb2.NodePublishVolumeResponse()

    def NodeUnpublishVolume(
        self, request: csi_pb2.NodeUnpublishVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeUnpublishVolumeResponse:
        self.service.unpublish(request)
        return csi_pb2.NodeUnpublishVolumeResponse()

    def NodeGetCapabilities(
        self, request: csi_pb2.NodeGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeGetCapabilitiesResponse:
        rpc = csi_pb2.NodeServiceCapability.RPC
        return csi_pb2.NodeGetCapabilitiesResponse(
            capabilities=[
                csi_pb2.NodeServiceCapability(rpc=rpc(type=rpc.GET_VOLUME_STATS)),
                csi_pb2.NodeServiceCapability(rpc=rpc(type=rpc.VOLUME_CONDITION)),
            ]
        )

    def NodeGetInfo(
        self, request: csi_pb2.NodeGetInfoRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeGetInfoResponse:
        return self.service.get_info()

    def NodeGetVolumeStats(
        self, request: csi_pb2.NodeGetVolumeStatsRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeGetVolumeStatsResponse:
        if not request.volume_id:
            raise invalid("volume_id is required")
        if not request.volume_path:
            raise invalid("volume_path is required")
        return self.service.volume_stats(request.volume_id, request.volume_path)

    def NodeStageVolume(
        self, request: csi_pb2.NodeStageVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeStageVolumeResponse:
        raise CsiError(grpc.StatusCode.UNIMPLEMENTED, "NodeStageVolume is not supported")

    def NodeUnstageVolume(
        self, request: csi_pb2.NodeUnstageVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeUnstageVolumeResponse:
        raise CsiError(grpc.StatusCode.UNIMPLEMENTED, "NodeUnstageVolume is not supported")

    def NodeExpandVolume(
        self, request: csi_pb2.NodeExpandVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeExpandVolumeResponse:
        raise CsiError(grpc.StatusCode.UNIMPLEMENTED, "NodeExpandVolume is not supported")
