"""The gRPC server of a CSI plugin on a unix socket, and its logging interceptor.

:class:`LoggingInterceptor` wraps every unary RPC: it logs the method and the request with
secrets stripped (:func:`zonemount_csi.redact.redact`), turns a raised
:class:`~zonemount_csi.errors.CsiError` into ``context.abort(code, message)``, turns any other
exception into INTERNAL (logged with its type only - exception text may quote request data),
and counts failures in ``zonemount_csi_errors_total{method,code}``.

Invariants: only ``unix://`` endpoints are served (a CSI socket is local by definition); a stale
socket file from a previous run is removed before binding; the socket is mode 0660.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from .errors import CsiError
from .metrics import Metrics
from .redact import redact

log = logging.getLogger("zonemount_csi.grpc")
#: Polled every few seconds by sidecars/kubelet: logged at DEBUG to keep logs readable.
QUIET_METHODS = frozenset(
    {
        "Probe",
        "GetPluginInfo",
        "GetPluginCapabilities",
        "NodeGetCapabilities",
        "NodeGetInfo",
        "NodeGetVolumeStats",
        "ControllerGetCapabilities",
    }
)


def parse_endpoint(endpoint: str) -> Path:
    """``unix:///csi/csi.sock`` (or ``unix:/csi/csi.sock``) -> ``/csi/csi.sock``."""
    if not endpoint.startswith("unix:"):
        raise ValueError(f"endpoint {endpoint!r} is not a unix socket: use unix:///csi/csi.sock")
    path = endpoint[len("unix:") :]
    if path.startswith("//"):
        path = path[2:]
    if not path.startswith("/"):
        raise ValueError(f"endpoint {endpoint!r} needs an absolute path: unix:///csi/csi.sock")
    return Path(path)


class LoggingInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method: str = handler_call_details.method.rsplit("/", 1)[-1]
        behavior = handler.unary_unary
        metrics = self.metrics
        level = logging.DEBUG if method in QUIET_METHODS else logging.INFO

        def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.monotonic()
            if log.isEnabledFor(level):
                log.log(level, "%s request: %s", method, redact(request))
            try:
                response = behavior(request, context)
            except CsiError as err:
                code, message = err.code, err.message
            except NotImplementedError:
                code, message = grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented"
            except Exception as exc:
                code = grpc.StatusCode.INTERNAL
                message = f"internal error in {method} ({type(exc).__name__}); see plugin logs"
                log.error(
                    "%s failed with %s",
                    method,
                    type(exc).__name__,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
            else:
                if log.isEnabledFor(level):
                    elapsed = time.monotonic() - started
                    log.log(level, "%s ok in %.3fs: %s", method, elapsed, redact(response))
                return response
            log.warning(
                "%s failed in %.3fs: %s %s", method, time.monotonic() - started, code.name, message
            )
            metrics.errors.labels(method, code.name).inc()
            context.abort(code, message)

        return grpc.unary_unary_rpc_method_handler(
            wrapper,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def build_server(
    endpoint: str,
    register: Callable[[grpc.Server], None],
    metrics: Metrics,
    max_workers: int = 8,
) -> tuple[grpc.Server, Path]:
    """A started gRPC server on ``endpoint`` with the servicers ``register`` adds."""
    path = parse_endpoint(endpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
        else:
            raise ValueError(f"{path} exists and is not a socket: remove it or pick another path")
    except FileNotFoundError:
        pass
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="csi"),
        interceptors=[LoggingInterceptor(metrics)],
    )
    register(server)
    server.add_insecure_port(f"unix://{path}")
    server.start()
    os.chmod(path, 0o660)
    return server, path
