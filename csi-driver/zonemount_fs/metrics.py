"""Prometheus metrics of one mount (served on ``--metrics-address``).

Names follow Prometheus conventions (``zonemount_fuse_*``, ``zonemount_s3_*``); label values
are bounded sets (operation names, errno names), never paths or keys.

Every FUSE request is observed in ``zonemount_fuse_op_seconds`` (:class:`OpLatency`), a
histogram of plain lists written by the trio thread only: prometheus_client's ``Histogram``
takes a lock for the sum and another for the bucket (1.2 us per request, measured hot; ``rm
-rf`` sends three requests per file). A scrape runs in the metrics server's thread and reads
the lists under the GIL: it may see an observation in its bucket and not yet in the sum.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.metrics_core import HistogramMetricFamily, Metric


class OpLatency:
    """One operation's latency: per-bucket counts (not cumulative) and the sum.
    :meth:`observe` only from one thread (the trio thread of the mount)."""

    __slots__ = ("_bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self._bounds, seconds)] += 1  # le: the first bound >= it
        self.total += seconds


class OpLatencies:
    """The ``op``-labelled histogram family of :class:`OpLatency` children, exposed as a
    Prometheus histogram (``_bucket{le}``, ``_count``, ``_sum``)."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name, self.documentation, self.bounds = name, documentation, tuple(buckets)
        self._ops: dict[str, OpLatency] = {}

    def labels(self, op: str) -> OpLatency:
        child = self._ops.get(op)
        if child is None:
            child = self._ops[op] = OpLatency(self.bounds)
        return child

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=["op"])]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=["op"])
        for op, child in list(self._ops.items()):
            counts, running, buckets = list(child.counts), 0, []
            for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
                running += count
                buckets.append((_le(bound), running))
            family.add_metric([op], buckets, child.total)
        yield family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


FUSE_LATENCY = OpLatencies(
    "zonemount_fuse_op_seconds",
    "Latency of FUSE operations",
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
)
REGISTRY.register(FUSE_LATENCY)
FUSE_ERRORS = Counter("zonemount_fuse_errors_total", "FUSE operations failed", ["op", "errno"])
BYTES_READ = Counter("zonemount_fuse_read_bytes_total", "Bytes returned by read()")
S3_REQUESTS = Counter("zonemount_s3_requests_total", "S3 requests by operation", ["op"])
S3_ERRORS = Counter("zonemount_s3_errors_total", "S3 requests failed after retries", ["op", "code"])
FLUSHES_LEFT_TO_OPENER = Counter(
    "zonemount_flushes_left_to_opener_total",
    "Flushes of another process' copy of a descriptor while the opener still writes the file"
    " (R-WRITE-FORKED-CLOSE): nothing was completed",
)
UPLOADS_ABORTED = Counter(
    "zonemount_uploads_aborted_total",
    "Uploads aborted: nothing was published (writer-killed, failed-at-release)",
    ["reason"],
)
S3_DEADLINES = Counter(
    "zonemount_s3_deadline_exceeded_total",
    "S3 calls given up at their total deadline (EIO), by kind (data, metadata)",
    ["kind"],
)
BYTES_WRITTEN = Counter("zonemount_fuse_written_bytes_total", "Bytes accepted by write()")
RETAINED_OPENS = Counter(
    "zonemount_retained_opens_total",
    "Opens for reading answered from the bytes this mount wrote, without a GET (R-READ-RETAINED)",
)
READ_AHEAD_BYTES = Gauge(
    "zonemount_read_ahead_bytes",
    "Read-ahead memory held now: chunks holding a slot of --max-memory-target, times the read "
    "part size (a reader's chunk fetched without a free slot is not counted)",
)
# The shared cache bucket (--cache-xz) is a second store: its requests are counted apart, so
# zonemount_s3_* keep meaning "requests to the mounted bucket".
CACHE_XZ_REQUESTS = Counter(
    "zonemount_cache_xz_requests_total", "Requests to the --cache-xz bucket", ["op"]
)
CACHE_XZ_ERRORS = Counter(
    "zonemount_cache_xz_errors_total", "Requests to the --cache-xz bucket failed", ["op", "code"]
)
CACHE_XZ_BLOCKS = Counter(
    "zonemount_cache_xz_blocks_total",
    "Shared cache blocks by outcome (hit, miss, invalid, error, stored, dropped)",
    ["result"],
)


def serve(host: str, port: int) -> None:
    from prometheus_client import start_http_server

    start_http_server(port, addr=host)
