"""The contract test: one S3MountClass walks the real chain, and the option table holds.

operator (``parse_mountclass`` -> ``render_storage_class``) -> StorageClass parameters and
``mountOptions`` -> the CSI controller's CreateVolume (real gRPC socket, moto S3) -> the node
plugin's NodePublishVolume (real gRPC socket) -> the ``zonemount mount`` argv it would run ->
the FUSE client's own parser (``zonemount_fs.options.parse_args``).

Property-based over :data:`zonemount_contract.mount_options.OPTIONS`: every typed option the
operator can emit, with any value its CRD allows, is accepted at every step and arrives in the
FUSE client's options; nothing the CSI allow-list refuses can be emitted by the operator.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from zonemount_contract import mount_options as table
from zonemount_csi import mount_options as csi_options
from zonemount_csi._proto import csi_pb2
from zonemount_csi.validation import validate_prefix
from zonemount_fs.errors import ConfigError
from zonemount_fs.options import build_parser, parse_args
from zonemount_operator.errors import SpecError
from zonemount_operator.mountclass import BucketFacts, render_storage_class
from zonemount_operator.spec import parse_mountclass

from tests.csi.conftest import NodePlugin, mount_capability

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "s3mountclasses.yaml"


def _crd_mount_options() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    props: dict[str, Any] = schema["properties"]["spec"]["properties"]["mountOptions"]
    return props


# ---------------------------------------------------------------- the table and its three uses


@pytest.mark.unit
def test_the_csi_allow_list_is_the_tables() -> None:
    assert set(csi_options.ALLOWED) == {o.name for o in table.ALLOWED}
    fields = [f.name for f in dataclasses.fields(csi_options.MountOptions)]
    assert sorted(fields) == sorted(o.field for o in table.ALLOWED)
    for option in table.OPTIONS:
        if option.refused:
            assert csi_options.REFUSED[option.name] == option.refused


@pytest.mark.unit
def test_the_fuse_client_has_every_flag_of_the_table_and_no_other() -> None:
    parser = build_parser()
    flags = {s for a in parser._actions for s in a.option_strings} - {"-h", "--help"}
    expected = {f"--{o.name}" for o in table.OPTIONS} | {o.short for o in table.OPTIONS if o.short}
    assert flags == expected


@pytest.mark.unit
def test_the_crd_offers_exactly_the_typed_options_with_the_tables_bounds() -> None:
    crd = _crd_mount_options()
    assert set(crd["properties"]) == set(table.TYPED)
    for key, option in table.TYPED.items():
        prop = crd["properties"][key]
        assert not option.refused, f"{key} is typed but refused by the CSI allow-list"
        if option.kind == "flag":
            assert prop["type"] == "boolean"
        elif option.kind == "int":
            assert prop["type"] == "integer"
            assert (prop.get("minimum", 0), prop["maximum"]) == (option.low, option.high), key
        else:
            assert prop["type"] == "string"


# ---------------------------------------------------------------- values the CRD allows


def _typed_value(option: table.Option) -> st.SearchStrategy[object]:
    if option.kind == "flag":
        return st.booleans()
    if option.kind == "int":
        return st.integers(option.low, option.high)
    if option.kind == "mode":
        return st.from_regex(r"0?[0-7]{3}", fullmatch=True)
    if option.kind == "ttl":
        return st.one_of(
            st.sampled_from(["minimal", "indefinite"]),
            st.integers(0, table.MAX_TTL_SECONDS).map(str),
        )
    raise AssertionError(f"no strategy for typed option {option.name} ({option.kind})")


TYPED_OPTIONS = st.fixed_dictionaries(
    {}, optional={key: _typed_value(o) for key, o in table.TYPED.items()}
)


def _mountclass(bucket: str, options: dict[str, object]) -> dict[str, Any]:
    return {
        "bucketName": bucket,
        "region": "us-east-1",
        "prefix": "claims/",
        "reclaimPolicy": "Delete",
        "mountOptions": options,
    }


@pytest.mark.unit
@given(options=TYPED_OPTIONS)
def test_every_line_the_operator_emits_passes_the_csi_allow_list(
    options: dict[str, object],
) -> None:
    try:
        spec = parse_mountclass("fast", _mountclass("bucket-a", options))
    except SpecError:
        return  # refused up front, with a condition: nothing is emitted
    parsed = csi_options.parse(spec.mount_options)
    assert sorted(parsed.to_argv()) == sorted(
        table.render(table.TYPED[k], table.check_value(table.TYPED[k], str(v)))
        if table.TYPED[k].takes_value
        else table.render(table.TYPED[k])
        for k, v in options.items()
        if v is not False
    )


# ---------------------------------------------------------------- the whole chain


@pytest.fixture
def node(node_plugin_factory: Any, moto_server: Any) -> NodePlugin:
    plugin: NodePlugin = node_plugin_factory(allowed=(moto_server.endpoint,))
    return plugin


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(options={"allowOther": True, "allowRoot": True})
@example(options={"incrementalUpload": True})
@example(options={"maxThreads": 256, "partSize": table.MAX_PART_SIZE, "dirMode": "0700"})
@given(options=TYPED_OPTIONS)
def test_a_mountclass_walks_operator_storageclass_controller_node_to_fuse_argv(
    controller: Any, node: NodePlugin, bucket: str, options: dict[str, object]
) -> None:
    # operator: S3MountClass -> StorageClass
    try:
        spec = parse_mountclass("fast", _mountclass(bucket, options))
        facts = BucketFacts(bucket, "us-east-1", "us-east-1a", "use1-az4")
        sc = render_storage_class("fast", "uid-1", spec, facts)
    except SpecError:
        return  # the operator refuses the class with a condition: nothing reaches the chain
    # external-provisioner: StorageClass parameters (+ PVC metadata) -> CreateVolume
    claim = f"pvc-{len(node.mounter.specs)}-{abs(hash(str(options))) % 10**8}"
    volume = controller.CreateVolume(
        csi_pb2.CreateVolumeRequest(
            name=claim,
            volume_capabilities=[mount_capability(sc.get("mountOptions", []))],
            parameters={
                **sc["parameters"],
                "csi.storage.k8s.io/pvc/namespace": "team-a",
                "csi.storage.k8s.io/pvc/name": claim,
            },
        )
    ).volume
    # kubelet: PV (volume id, context, StorageClass mountOptions) -> NodePublishVolume
    target = node.target(pv=claim)
    node.node.NodePublishVolume(
        csi_pb2.NodePublishVolumeRequest(
            volume_id=volume.volume_id,
            target_path=target,
            volume_capability=mount_capability(sc.get("mountOptions", [])),
            volume_context=dict(volume.volume_context),
        )
    )
    argv = node.mounter.specs[-1].args
    assert argv[0] == "mount"
    # the FUSE client's own parser accepts exactly what the node would run
    try:
        fuse = parse_args(argv[1:])
    except ConfigError as exc:
        pytest.fail(f"the FUSE client refuses what the chain accepted: {exc}; argv {argv}")
    assert fuse.bucket == bucket
    assert fuse.prefix == volume.volume_context["prefix"]
    for key, value in options.items():
        option = table.TYPED[key]
        got = getattr(fuse, option.field)
        if option.kind == "flag":
            assert got is bool(value), key
        elif option.name == "part-size":  # cut to fit the node's memory target
            fit = table.fit_memory(fuse.max_memory_mib, int(str(value)), int(str(value)))
            assert (got, fuse.read_chunk_size) == (fit.write_part_size, fit.read_part_size)
        elif option.kind == "int" and option.fuse_type != "ttl":
            assert got == value, key
        elif option.kind == "mode":
            assert got == int(str(value), 8), key
    node.node.NodeUnpublishVolume(
        csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume.volume_id, target_path=target)
    )


# ---------------------------------------------------------------- rules across options


@pytest.mark.unit
@pytest.mark.parametrize(
    ("options", "bucket", "ok"),
    [
        ({"allowOther": True, "allowRoot": True}, "bucket-a", False),
        ({"incrementalUpload": True}, "bucket-a", False),
        ({"incrementalUpload": True}, "data--use1-az4--x-s3", True),
        ({"allowOther": True, "allowDelete": True}, "bucket-a", True),
    ],
)
def test_the_operator_refuses_what_the_fuse_client_would(
    options: dict[str, object], bucket: str, ok: bool
) -> None:
    """Found by the chain test: the operator wrote --allow-other with --allow-root, and
    --incremental-upload for a general-purpose bucket; the FUSE client refused both."""
    try:
        parse_mountclass("fast", _mountclass(bucket, options))
    except SpecError as exc:
        assert not ok, exc
        assert "spec.mountOptions" in str(exc)
    else:
        assert ok


@pytest.mark.parametrize(
    ("flags", "bucket", "ok"),
    [
        (["allow-other", "allow-root"], "bucket-a", False),
        (["incremental-upload"], "bucket-a", False),
        (["incremental-upload"], "data--use1-az4--x-s3", True),
        (["sse-kms-key-id=arn:aws:kms:us-east-1:111122223333:key/k"], "bucket-a", False),
    ],
)
def test_the_node_refuses_what_the_fuse_client_would(
    node_plugin_factory: Any, flags: list[str], bucket: str, ok: bool
) -> None:
    """NodePublishVolume answers INVALID_ARGUMENT for option combinations the FUSE client
    refuses (before: the mount process failed, INTERNAL)."""
    plugin: NodePlugin = node_plugin_factory()
    request = plugin.publish_request(
        plugin.target(), context={"bucketName": bucket, "prefix": "d/"}, flags=flags
    )
    if ok:
        plugin.node.NodePublishVolume(request)
        parse_args(plugin.mounter.specs[-1].args[1:])
        return
    with pytest.raises(grpc.RpcError) as info:
        plugin.node.NodePublishVolume(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert plugin.mounter.specs == []


# ---------------------------------------------------------------- prefixes


@pytest.mark.unit
@example(prefix="a//b/")
@example(prefix="./x/")
@example(prefix="data/\u00fc/")
@example(prefix="-x/")
@given(prefix=st.text(alphabet="ab./-\u00fc ", max_size=8).map(lambda p: p and p + "/"))
def test_every_prefix_the_operator_accepts_the_csi_controller_accepts(prefix: str) -> None:
    """An S3MountClass spec.prefix becomes the StorageClass basePrefix: the operator must not
    accept one CreateVolume refuses (the claim would stay Pending with INVALID_ARGUMENT)."""
    try:
        spec = parse_mountclass("fast", {**_mountclass("bucket-a", {}), "prefix": prefix})
    except SpecError:
        return
    assert validate_prefix(spec.prefix, "StorageClass parameter basePrefix") == spec.prefix


# ---------------------------------------------------------------- PV mountOptions -> FUSE


def _pv_value(option: table.Option) -> st.SearchStrategy[str | None]:
    if option.kind == "flag":
        return st.none()
    if option.kind == "choice":
        return st.sampled_from(option.choices)
    if option.kind == "kms-arn":
        return st.sampled_from(
            [
                "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab",
                "arn:aws:kms:us-east-1:111122223333:alias/team/data",
            ]
        )
    value = _typed_value(option)
    return value.map(str)


PV_OPTIONS = st.fixed_dictionaries({}, optional={o.name: _pv_value(o) for o in table.ALLOWED})


@pytest.mark.unit
@given(options=PV_OPTIONS, bucket=st.sampled_from(["bucket-a", "data--use1-az4--x-s3"]))
def test_every_pv_option_the_csi_allow_list_accepts_the_fuse_client_accepts(
    options: dict[str, str | None], bucket: str
) -> None:
    """The whole allow-list (not only the S3MountClass's typed subset): whatever the node
    would pass on, the FUSE client's parser takes."""
    flags = [name if value is None else f"{name}={value}" for name, value in options.items()]
    try:
        parsed = csi_options.parse(flags)
        parsed.check_combination(directory_bucket=bucket.endswith("--x-s3"))
    except csi_options.MountOptionError:
        return
    argv = [bucket, "/mnt/volume", "-f", "--prefix=d/", *parsed.to_argv()]
    try:
        parse_args(argv)
    except ConfigError as exc:
        pytest.fail(f"the FUSE client refuses what the CSI node passes: {exc}; argv {argv}")


@pytest.mark.unit
@given(options=PV_OPTIONS)
def test_the_mounters_thread_count_is_the_fuse_clients(options: dict[str, str | None]) -> None:
    """The CSI mounter's RLIMIT_AS bound counts the stacks of the threads a mount may start
    from the argv the node passes (``thread_stacks_args``); the FUSE client starts them from
    its own parse of the same argv: the two read the same ``--max-threads``."""
    flags = [name if value is None else f"{name}={value}" for name, value in options.items()]
    try:
        parsed = csi_options.parse(flags)
    except csi_options.MountOptionError:
        return
    argv = ["bucket-a", "/mnt/volume", "-f", *parsed.to_argv()]
    try:
        opts = parse_args(argv)
    except ConfigError:
        return
    per_thread = table.THREAD_STACK_BYTES + table.THREAD_OVERHEAD_BYTES
    threads = opts.max_threads + table.metadata_threads(opts.max_threads) + table.OTHER_THREADS
    assert table.thread_stacks_args(["mount", *argv]) == threads * per_thread


@pytest.mark.unit
def test_the_threads_outside_the_limiters_fit_their_margin() -> None:
    """``OTHER_THREADS`` covers the FUSE server's threads that no store-call limiter counts:
    the shared cache's pools, a DeleteObjects fallback's pool, the watchdog, the metrics
    server with a request in flight, and the threads of trio's default limiter (the fast
    path's connections and botocore fallbacks, which a deadline abandons to run on: review
    found them uncounted - 63 threads, not 32, outside the limiters)."""
    import trio
    from zonemount_fs import shared_cache
    from zonemount_fs.store import s3

    async def default_limit() -> int:
        return int(trio.to_thread.current_default_thread_limiter().total_tokens)

    pools = shared_cache.WRITERS + shared_cache.READERS + s3.DELETE_CONCURRENCY
    assert pools + 1 + 2 + trio.run(default_limit) <= table.OTHER_THREADS
