"""``zonemount csi-node``, ``csi-mounter`` and ``csi-controller``: flags, wiring, shutdown.

Each entry parses its flags, builds the services, serves its unix socket until SIGTERM or
SIGINT, then stops serving (in-flight RPCs get a grace period) and returns 0. The node plugin's
shutdown never unmounts anything: with ``--mounter-endpoint`` the FUSE servers live in
``zonemount csi-mounter`` (another container), otherwise in their own sessions; the next plugin
instance re-adopts them from ``--state-dir`` (or restores them if they died meanwhile). The
mounter's shutdown stops its FUSE servers gracefully (SIGTERM: uploads are flushed) - it is
restarted only on purpose.

Invariants: bad flags or an unusable environment end with one line on stderr and exit code 2
(flags) or 1 (start-up), never a traceback. SIGTERM and SIGINT are caught before any thread
starts or any socket exists (:class:`zonemount_contract.cli.StopSignals`): one that arrives
during start-up, on any thread, ends in the same graceful stop as one that arrives later.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import grpc
from zonemount_contract.cli import OneLineParser, StopSignals
from zonemount_contract.endpoint import EndpointUrlError, check_endpoint_url
from zonemount_contract.mount_options import DEFAULT_MAX_MEMORY_TARGET_MIB

from . import DRIVER_NAME
from ._proto import csi_pb2_grpc
from .controller import ControllerConfig, ControllerService, ControllerServicer
from .identity import IdentityServicer
from .metrics import Metrics
from .mounter import Mounter, ProcessMounter, RemoteMounter
from .node import NodeConfig, NodeService, NodeServicer, Supervisor
from .server import build_server, parse_endpoint
from .state import StateError, StateStore

log = logging.getLogger("zonemount_csi")


def _endpoint_url(value: str) -> str:
    """An ``--allowed-endpoint-url``, refused at start-up when it is not one (an entry no volume
    can ever match would silently allow nothing)."""
    try:
        return check_endpoint_url(value)
    except EndpointUrlError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity on stderr (default INFO)",
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", default="unix:///csi/csi.sock", help="CSI unix socket")
    parser.add_argument(
        "--metrics-address", default="", help="serve Prometheus /metrics on HOST:PORT (e.g. :9810)"
    )
    parser.add_argument(
        "--allowed-endpoint-url",
        action="append",
        default=[],
        type=_endpoint_url,
        metavar="URL",
        help="S3 endpoint a volume may name in endpointUrl (repeatable; none by default)",
    )
    _log_level(parser)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def _fail(message: str) -> int:
    print(f"zonemount: {message}", file=sys.stderr)
    return 1


def node_main(argv: Sequence[str]) -> int:
    parser = OneLineParser(
        prog="zonemount csi-node", description=f"CSI node plugin of {DRIVER_NAME}"
    )
    _common(parser)
    parser.add_argument("--node-id", required=True, help="this node's name (spec.nodeName)")
    parser.add_argument(
        "--zone", default="", help="topology.kubernetes.io/zone of this node (required)"
    )
    parser.add_argument("--zone-id", default="", help="AZ ID of this node (e.g. use1-az4)")
    parser.add_argument(
        "--kubelet-dir",
        default="/var/lib/kubelet",
        type=Path,
        help="kubelet's root directory as seen in this container; target paths must lie under "
        "its pods/ (default /var/lib/kubelet)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"persisted publish records (default KUBELET_DIR/plugins/{DRIVER_NAME}/state)",
    )
    parser.add_argument("--mount-timeout", type=float, default=30.0, help="seconds per mount")
    parser.add_argument(
        "--supervise-interval", type=float, default=5.0, help="seconds between health checks"
    )
    parser.add_argument(
        "--fuse-debug",
        action="store_true",
        help="run every FUSE client with --debug (its log may hold request signatures)",
    )
    parser.add_argument(
        "--mounter-endpoint",
        default="",
        metavar="unix://PATH",
        help="socket of zonemount csi-mounter: mount here, serve there (default: FUSE "
        "processes are children of this plugin)",
    )
    parser.add_argument(
        "--cache-dir",
        default="",
        help="root of volumes' disk caches (cacheMedium: disk), as the FUSE servers see it",
    )
    parser.add_argument(
        "--memory-cache-dir",
        default="",
        help="root of volumes' memory caches (cacheMedium: memory): a tmpfs path",
    )
    parser.add_argument(
        "--max-cache-size",
        type=int,
        default=10240,
        metavar="MiB",
        help="largest cacheSizeLimit a volume may ask for",
    )
    parser.add_argument(
        "--max-memory-target",
        type=int,
        default=DEFAULT_MAX_MEMORY_TARGET_MIB,
        metavar="MiB",
        help="--max-memory-target of every FUSE server (read-ahead memory; a volume's part "
        "sizes are cut to fit it); keep it well below the mounter's --max-memory-per-mount",
    )
    args = parser.parse_args(list(argv))
    _setup_logging(args.log_level)
    signals = StopSignals()  # before any thread or socket: see StopSignals
    if args.max_memory_target < 1:
        return _fail("--max-memory-target must be at least 1 (MiB)")
    for flag in ("cache_dir", "memory_cache_dir"):
        value = getattr(args, flag)
        if value and not value.startswith("/"):
            return _fail(f"--{flag.replace('_', '-')} {value!r} must be an absolute path")
    try:
        parse_endpoint(args.endpoint)
        mounter_path = parse_endpoint(args.mounter_endpoint) if args.mounter_endpoint else None
    except ValueError as exc:
        return _fail(str(exc))
    state_dir = args.state_dir or args.kubelet_dir / "plugins" / DRIVER_NAME / "state"
    if not args.kubelet_dir.is_dir():
        return _fail(
            f"--kubelet-dir {args.kubelet_dir} is not a directory: mount the host's kubelet "
            "directory into the container at that path (a hostPath volume), or pass the path "
            "where it is mounted"
        )
    if not args.zone:
        # The driver advertises VOLUME_ACCESSIBILITY_CONSTRAINTS: NodeGetInfo must report a zone.
        return _fail(
            "--zone is required: pass this node's topology.kubernetes.io/zone (the chart reads "
            "it from the node's label, or set node.zone)"
        )
    try:
        store = StateStore(state_dir)
    except (StateError, OSError) as exc:
        return _fail(str(exc))
    metrics = Metrics()
    config = NodeConfig(
        node_id=args.node_id,
        kubelet_dir=args.kubelet_dir,
        state_dir=state_dir,
        zone=args.zone,
        zone_id=args.zone_id,
        allowed_endpoint_urls=tuple(args.allowed_endpoint_url),
        mount_timeout=args.mount_timeout,
        fuse_debug=args.fuse_debug,
        cache_dir=args.cache_dir,
        memory_cache_dir=args.memory_cache_dir,
        max_cache_mib=args.max_cache_size,
        max_memory_target_mib=args.max_memory_target,
    )
    mounter: Mounter = ProcessMounter() if mounter_path is None else RemoteMounter(mounter_path)
    service = NodeService(config, mounter, store, metrics)
    supervisor = Supervisor(service, args.supervise_interval)
    if isinstance(mounter, RemoteMounter):
        mounter.watch(supervisor.wake)  # a FUSE server exit triggers a repair pass at once

    def register(server: grpc.Server) -> None:
        csi_pb2_grpc.add_IdentityServicer_to_server(IdentityServicer(mounter.check), server)  # type: ignore[no-untyped-call]
        csi_pb2_grpc.add_NodeServicer_to_server(NodeServicer(service), server)  # type: ignore[no-untyped-call]

    return _serve(args, metrics, register, supervisor, signals)


def mounter_main(argv: Sequence[str]) -> int:
    from .mounter_server import MemoryLimiter, MounterDaemon, MounterMetrics

    parser = OneLineParser(
        prog="zonemount csi-mounter",
        description="host of the FUSE servers of the node plugin (fd passing, unprivileged)",
    )
    parser.add_argument("--endpoint", required=True, metavar="unix://PATH", help="mounter socket")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path("/var/lib/zonemount/mounter"),
        help="per-volume metadata and FUSE server logs (a host path: survives restarts)",
    )
    parser.add_argument(
        "--max-memory-per-mount",
        type=int,
        default=0,
        metavar="MiB",
        help="memory bound of each FUSE server (0: none); an RLIMIT_AS bound adds the stacks "
        "of the threads the mount's --max-threads lets it start",
    )
    parser.add_argument(
        "--memory-limit-mode",
        default="auto",
        choices=["auto", "cgroup", "rlimit"],
        help="cgroup v2 memory.max per server, RLIMIT_AS, or cgroup when available (auto)",
    )
    parser.add_argument(
        "--shutdown-grace", type=float, default=20.0, help="seconds FUSE servers get to flush"
    )
    parser.add_argument(
        "--metrics-address", default="", help="serve Prometheus /metrics on HOST:PORT (:9812)"
    )
    _log_level(parser)
    args = parser.parse_args(list(argv))
    _setup_logging(args.log_level)
    signals = StopSignals()  # before any thread or socket: see StopSignals
    metrics = MounterMetrics()
    try:
        path = parse_endpoint(args.endpoint)
        limiter = MemoryLimiter(args.max_memory_per_mount, args.memory_limit_mode)
        daemon = MounterDaemon(args.state_dir, limiter=limiter, metrics=metrics)
        if args.metrics_address:
            metrics.serve(args.metrics_address)
    except (ValueError, OSError, RuntimeError) as exc:
        metrics.shutdown()
        return _fail(str(exc))
    log.info("memory bound per FUSE server: %s", limiter.mode)
    stop = threading.Event()
    loop = threading.Thread(target=daemon.serve_forever, args=(path, stop), daemon=True)
    loop.start()
    name = signals.wait()
    log.info("%s received: stopping the FUSE servers (they flush, then exit)", name)
    stop.set()
    daemon.shutdown(args.shutdown_grace)
    loop.join(5)
    metrics.shutdown()
    return 0


def controller_main(argv: Sequence[str]) -> int:
    parser = OneLineParser(
        prog="zonemount csi-controller", description=f"CSI controller plugin of {DRIVER_NAME}"
    )
    _common(parser)
    args = parser.parse_args(list(argv))
    _setup_logging(args.log_level)
    signals = StopSignals()  # before any thread or socket: see StopSignals
    metrics = Metrics()
    service = ControllerService(ControllerConfig(tuple(args.allowed_endpoint_url)))

    def register(server: grpc.Server) -> None:
        csi_pb2_grpc.add_IdentityServicer_to_server(IdentityServicer(), server)  # type: ignore[no-untyped-call]
        csi_pb2_grpc.add_ControllerServicer_to_server(ControllerServicer(service), server)  # type: ignore[no-untyped-call]

    return _serve(args, metrics, register, None, signals)


def _serve(
    args: argparse.Namespace,
    metrics: Metrics,
    register: object,
    supervisor: Supervisor | None,
    signals: StopSignals,
) -> int:
    try:
        if args.metrics_address:
            port = metrics.serve(args.metrics_address)
            log.info("metrics on %s (port %d)", args.metrics_address, port)
        server, path = build_server(args.endpoint, register, metrics)  # type: ignore[arg-type]
    except (ValueError, OSError, RuntimeError) as exc:
        metrics.shutdown()
        return _fail(str(exc))
    log.info("%s serving on unix://%s", DRIVER_NAME, path)
    if supervisor is not None:
        supervisor.start()
    name = signals.wait()
    log.info("%s received: stopping (mounts stay alive)", name)
    server.stop(grace=5).wait()
    if supervisor is not None:
        supervisor.stop()
    metrics.shutdown()
    path.unlink(missing_ok=True)
    return 0
