"""Prometheus metrics of one mount (served on ``--metrics-address``).

Names follow Prometheus conventions (``zonemount_fuse_*``, ``zonemount_s3_*``); label values
are bounded sets (operation names, errno names), never paths or keys.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FUSE_LATENCY = Histogram(
    "zonemount_fuse_op_seconds",
    "Latency of FUSE operations",
    ["op"],
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
)
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
