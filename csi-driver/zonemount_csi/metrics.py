"""Prometheus metrics of the CSI plugins (one registry per plugin instance).

Names (all prefixed ``zonemount_csi_``):

* ``published_volumes`` (gauge) - targets currently published by this node plugin;
* ``publish_duration_seconds`` (histogram) - NodePublishVolume latency, successful calls;
* ``fuse_restarts_total{reason}`` (counter) - FUSE processes restarted (``supervisor``: found
  dead in the background, ``publish``: repaired by a NodePublishVolume, ``adopt``: found dead
  after a plugin restart);
* ``errors_total{method,code}`` (counter) - failed RPCs by gRPC status code;
* ``volume_part_sizes_cut{volume}`` (gauge, 1) - each volume published here whose part sizes
  (or uploads in flight) the node's memory target cuts (R-FLAGS-MEMORY-TARGET): derived at
  each scrape from what is published (:class:`VolumesCut`), so it is there as long as the
  cut is, once per volume however many pods mount it, and survives a plugin restart.

Invariant: each :class:`Metrics` has its own registry, so several plugins (tests) can live in
one process; :meth:`Metrics.serve` binds only when given an address.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class RegistryServer:
    """One Prometheus registry and the /metrics endpoint serving it (node plugin, mounter)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._server: Any = None

    def serve(self, address: str) -> int:
        """Serve /metrics on ``HOST:PORT`` (``:PORT`` = all interfaces); returns the port."""
        host, _, port = address.rpartition(":")
        if not port.isdigit():
            raise ValueError(f"metrics address {address!r} is not HOST:PORT (e.g. :9810)")
        server, _thread = start_http_server(
            int(port),
            addr=host or "0.0.0.0",  # noqa: S104 - ":PORT" means all interfaces, as documented
            registry=self.registry,
        )
        self._server = server
        bound: int = server.server_port
        return bound

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class VolumesCut(Collector):
    """``zonemount_csi_volume_part_sizes_cut{volume}``: 1 for each volume id ``source()``
    names (the node service: published volumes whose part sizes its memory target cuts)."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[str]] = tuple

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "zonemount_csi_volume_part_sizes_cut",
            "Volumes published on this node whose part sizes (or uploads in flight) the "
            "node's --max-memory-target cuts; the volume's condition message says what and "
            "the fix",
            labels=["volume"],
        )
        for volume in sorted(set(self.source())):
            family.add_metric([volume], 1)
        yield family


class Metrics(RegistryServer):
    def __init__(self) -> None:
        super().__init__()
        self.published_volumes = Gauge(
            "zonemount_csi_published_volumes",
            "Targets currently published by this node plugin",
            registry=self.registry,
        )
        self.publish_duration = Histogram(
            "zonemount_csi_publish_duration_seconds",
            "NodePublishVolume latency (successful calls)",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.fuse_restarts = Counter(
            "zonemount_csi_fuse_restarts",
            "FUSE processes restarted after they died",
            ["reason"],
            registry=self.registry,
        )
        self.errors = Counter(
            "zonemount_csi_errors",
            "Failed CSI RPCs by gRPC status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.volumes_cut = VolumesCut()
        self.registry.register(self.volumes_cut)
