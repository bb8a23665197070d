"""The FUSE latency histogram (``zonemount_fuse_op_seconds``, lists without locks) is exposed
exactly as prometheus_client's own ``Histogram`` exposes the same observations (buckets, count,
sum), so dashboards and the tests that count requests by ``_count`` read it unchanged."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from zonemount_fs.metrics import FUSE_LATENCY, OpLatencies


def _samples(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if line[:1] != "#" and "_created" not in line]


def test_same_exposition_as_prometheus_histogram() -> None:
    ours = OpLatencies("t_op_seconds", "doc", FUSE_LATENCY.bounds)
    theirs_registry, ours_registry = CollectorRegistry(), CollectorRegistry()
    theirs = Histogram(
        "t_op_seconds", "doc", ["op"], buckets=FUSE_LATENCY.bounds, registry=theirs_registry
    )
    ours_registry.register(ours)
    rng = random.Random(14)
    edges = [*FUSE_LATENCY.bounds, 0.0, 1e-9, 31.0, 1e6]  # on a bound: counted in it (le)
    for op in ("getattr", "unlink", "lookup"):
        for _ in range(500):
            value = rng.choice(edges) if rng.random() < 0.3 else rng.random() * 2
            theirs.labels(op=op).observe(value)
            ours.labels(op).observe(value)
    assert _samples(ours_registry) == _samples(theirs_registry)


def test_a_child_is_made_once_per_operation() -> None:
    family = OpLatencies("t2_op_seconds", "doc", (0.1, 1.0))
    assert family.labels("read") is family.labels("read")
    family.labels("read").observe(0.5)
    family.labels("read").observe(5.0)
    assert family.labels("read").counts == [0, 1, 1]
