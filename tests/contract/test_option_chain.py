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

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from zonemount_contract import mount_options as table
from zonemount_csi import mount_options as csi_options
from zonemount_fs.options import build_parser
from zonemount_operator.errors import SpecError
from zonemount_operator.spec import parse_mountclass

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
