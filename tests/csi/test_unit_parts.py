"""Unit tests of the node's pure parts: mount-option allow-list (table + property), redaction,
persisted state, mountinfo parsing, credentials and volume ids."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from zonemount_csi import credentials, mount_options
from zonemount_csi._proto import csi_pb2
from zonemount_csi.mount_options import ALLOWED, REFUSED, MountOptionError, parse
from zonemount_csi.mountinfo import MountState, probe
from zonemount_csi.mountinfo import parse as parse_mountinfo
from zonemount_csi.redact import STRIPPED, redact
from zonemount_csi.state import StateError, StateStore, VolumeRecord
from zonemount_csi.volume_record import (
    RecordError,
    VolumeId,
    VolumeSpec,
    digest,
    overlaps,
    verify,
)

pytestmark = pytest.mark.unit


# ---------------------------------------------------------------- mount options


@pytest.mark.parametrize(
    ("flags", "argv"),
    [
        ([], []),
        (["allow-delete", "--allow-overwrite"], ["--allow-delete", "--allow-overwrite"]),
        (
            ["uid=1000", "--gid=1000", "--file-mode 0640", "dir-mode=755"],
            ["--uid=1000", "--gid=1000", "--dir-mode=0755", "--file-mode=0640"],
        ),
        (
            ["metadata-ttl=indefinite", "negative-metadata-ttl=5"],
            ["--metadata-ttl=indefinite", "--negative-metadata-ttl=5"],
        ),
        (["part-size=8388608", "max-threads=64"], ["--part-size=8388608", "--max-threads=64"]),
        (
            [
                "storage-class=EXPRESS_ONEZONE",
                "sse=aws:kms",
                "sse-kms-key-id=arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab",
            ],
            [
                "--storage-class=EXPRESS_ONEZONE",
                "--sse=aws:kms",
                "--sse-kms-key-id=arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab",
            ],
        ),
        (["  read-only  ", ""], ["--read-only"]),
    ],
)
def test_allowed_options_become_exact_argv(flags: list[str], argv: list[str]) -> None:
    assert parse(flags).to_argv() == argv


def test_every_refused_option_names_its_reason() -> None:
    for name, reason in REFUSED.items():
        with pytest.raises(MountOptionError) as info:
            parse([f"--{name}=x"] if name not in {"f", "o"} else [f"-{name}"])
        text = str(info.value)
        assert "refused" in text
        if name not in {"f", "o"}:
            assert reason in text


def test_read_only_wins() -> None:
    assert parse(["allow-delete"]).with_read_only().to_argv() == ["--read-only", "--allow-delete"]


_SAFE_NAMES = set(ALLOWED)


@given(st.lists(st.text(max_size=40), max_size=5))
def test_parser_never_emits_anything_outside_the_allow_list(flags: list[str]) -> None:
    try:
        argv = parse(flags).to_argv()
    except MountOptionError:
        return
    for arg in argv:
        assert arg.startswith("--")
        name = arg[2:].split("=", 1)[0]
        assert name in _SAFE_NAMES
        assert "," not in arg and " " not in arg and "\n" not in arg


@given(st.tuples(st.text(max_size=15), st.text(max_size=15)).map(lambda p: f"{p[0]},{p[1]}"))
def test_any_comma_is_refused(flag: str) -> None:
    with pytest.raises(MountOptionError):
        parse([flag])


# ---------------------------------------------------------------- redaction


def test_redact_strips_secret_fields_and_token_keys() -> None:
    request = csi_pb2.NodePublishVolumeRequest(
        volume_id="v",
        secrets={"accessKey": "AKIA-SECRET", "other": "pw-1"},
        volume_context={
            "csi.storage.k8s.io/serviceAccount.tokens": '{"sts.amazonaws.com":{"token":"T0K3N"}}',
            "bucketName": "visible-bucket",
            "myPassword": "hunter2",
        },
    )
    text = redact(request)
    for secret in ("AKIA-SECRET", "pw-1", "T0K3N", "hunter2"):
        assert secret not in text
    assert "visible-bucket" in text and STRIPPED in text and "accessKey" in text
    assert request.secrets["accessKey"] == "AKIA-SECRET"  # the original is untouched


def test_redact_walks_nested_and_repeated_messages() -> None:
    request = csi_pb2.CreateVolumeRequest(name="n", secrets={"k": "create-secret"})
    request.volume_capabilities.add().mount.mount_flags.append("uid=1")
    assert "create-secret" not in redact(request)
    assert "uid=1" in redact(request)
    assert redact(csi_pb2.ProbeRequest()) == "{}"


# ---------------------------------------------------------------- state


def test_state_store_persists_reloads_and_deletes_twice(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    record = VolumeRecord(
        "vol", "/t", ["mount", "b", "/t", "-f"], "driver", pid=42, pid_start_time=7
    )
    store.put(record)
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    reloaded = StateStore(tmp_path / "state")
    assert reloaded.get("/t") == record
    reloaded.delete("/t")
    reloaded.delete("/t")
    assert StateStore(tmp_path / "state").all() == []
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["state.json"]  # no temp files


def test_state_store_refuses_a_corrupt_file_with_a_fix(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(StateError, match="move it aside"):
        StateStore(tmp_path)


def test_volume_dir_is_private(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    path = store.volume_dir("/var/lib/kubelet/pods/x/mount")
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    store.remove_volume_dir("/var/lib/kubelet/pods/x/mount")
    assert not path.exists()


# ---------------------------------------------------------------- mountinfo


MOUNTINFO = (
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "90 22 0:50 / /var/lib/kubelet/pods/a/volumes/kubernetes.io~csi/pv\\0401/mount "
    "rw,nosuid,nodev,relatime shared:60 - fuse.zonemount zonemount rw,user_id=0,group_id=0\n"
    "91 22 0:51 / /mnt/other rw - nfs4 server:/x rw\n"
    "garbage line\n"
)


def test_mountinfo_parse_unescapes_and_skips_garbage() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    assert [e.fstype for e in entries] == ["ext4", "fuse.zonemount", "nfs4"]
    assert entries[1].mount_point == "/var/lib/kubelet/pods/a/volumes/kubernetes.io~csi/pv 1/mount"


def test_probe_classifies(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO + f"92 22 0:52 / {tmp_path} rw - fuse.zonemount zonemount rw\n")
    assert probe("/mnt/other", info) is MountState.FOREIGN
    assert probe("/nowhere", info) is MountState.ABSENT
    assert probe(str(tmp_path), info) is MountState.HEALTHY


# ---------------------------------------------------------------- credentials


def test_token_file_is_0600_and_rewritten_atomically(tmp_path: Path) -> None:
    path = credentials.write_token_file(tmp_path, "one")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    inode = path.stat().st_ino
    credentials.write_token_file(tmp_path, "two")
    assert path.read_text() == "two" and path.stat().st_ino != inode
    assert sorted(os.listdir(tmp_path)) == ["web-identity-token"]


def test_pod_env_drops_every_driver_credential(tmp_path: Path) -> None:
    base = {key: "driver-value" for key in credentials.DRIVER_CREDENTIAL_ENV}
    base["AWS_ENDPOINT_URL"] = "http://127.0.0.1:1"
    env = credentials.mount_env(
        base,
        authentication_source="pod",
        token_file=tmp_path / "t",
        role_arn="arn:aws:iam::123456789012:role/r",
        role_session_name="s",
    )
    assert "driver-value" not in {env[k] for k in env if k not in ("AWS_ENDPOINT_URL",)}
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1"
    assert credentials.mount_env(base, authentication_source="driver") == base


def test_session_name_is_valid_for_sts() -> None:
    name = credentials.session_name("ns" * 40, "pod/with:odd chars")
    assert len(name) <= 64 and " " not in name and "/" not in name


def test_extract_token_errors_do_not_echo_input() -> None:
    for raw in ("", "[]", json.dumps({"sts.amazonaws.com": {"token": "has space SECRETX"}})):
        with pytest.raises(credentials.CredentialsError) as info:
            credentials.extract_sts_token(raw)
        assert "SECRETX" not in str(info.value)


# ---------------------------------------------------------------- controller ids and records


def test_volume_id_round_trip_and_rejects_foreign_ids() -> None:
    vid = VolumeId("my-bucket", "a" * 32, "b" * 8)
    assert VolumeId.parse(str(vid)) == vid
    assert VolumeId.parse(str(VolumeId("my-bucket", "c" * 32))) == VolumeId("my-bucket", "c" * 32)
    legacy = VolumeId.parse("zm1:my-bucket:" + "d" * 32)
    assert legacy is not None and legacy.legacy
    for bad in (
        "",
        "zm2:my-bucket",
        "zm3:my-bucket:" + "a" * 32,
        "zm2:BAD:" + "a" * 32,
        "zm2:my-bucket:xyz",
        "zm2:my-bucket:" + "a" * 32 + ":zz",
    ):
        assert VolumeId.parse(bad) is None


def test_volume_record_proves_only_itself() -> None:
    """verify(): the record must hash to the id, name its bucket and endpoint, and hold a
    proper prefix; anything else is a RecordError (DeleteVolume: FAILED_PRECONDITION)."""
    good = VolumeSpec(name="n", bucket="b-1", prefix="claims/ns/pvc/", delete_data=True)
    tags = {"http://127.0.0.1:9000": "0123abcd"}
    vid = good.volume_id("")
    assert verify(vid, good.to_record(), tags) == good
    with pytest.raises(RecordError, match="does not match"):
        verify(vid, good.to_record().replace(b"claims/ns/pvc/", b"claims/"), tags)
    for bad in (
        dataclasses.replace(good, bucket="victim"),
        dataclasses.replace(good, endpoint_url="http://127.0.0.1:9000"),
        *(dataclasses.replace(good, prefix=p) for p in ("", "/", "../", "a//", ".zonemount/v/")),
    ):
        body = bad.to_record()  # a self-consistent record under the wrong id
        with pytest.raises(RecordError):
            verify(dataclasses.replace(vid, digest=digest(body, 32)), body, tags)
    with pytest.raises(RecordError, match="not authenticated"):
        verify(dataclasses.replace(vid, version="zm1"), good.to_record(), tags)


@given(
    a=st.from_regex(r"[a-c]{1,2}(/[a-c]{1,2}){0,2}/", fullmatch=True),
    b=st.from_regex(r"[a-c]{1,2}(/[a-c]{1,2}){0,2}/", fullmatch=True),
)
def test_overlaps_is_exactly_key_containment(a: str, b: str) -> None:
    """Two volume prefixes overlap iff some key could live under both."""
    key = max(a, b, key=len) + "k"
    assert overlaps(a, b) == (key.startswith(a) and key.startswith(b))


def test_mount_options_module_documents_every_refusal() -> None:
    doc = mount_options.__doc__ or ""
    for name in ("--endpoint-url", "--cache", "--log-directory", "--profile", "-o"):
        assert name in doc


def test_probe_treats_a_hung_mount_as_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from zonemount_csi import mountinfo

    info = tmp_path / "mountinfo"
    info.write_text(f"92 22 0:52 / {tmp_path} rw - fuse.zonemount zonemount rw\n")
    release = threading.Event()
    real_open = os.open

    def hung_open(path: str, flags: int) -> int:
        release.wait(10)
        return real_open(path, flags)

    monkeypatch.setattr(mountinfo.os, "open", hung_open)
    try:
        assert probe(str(tmp_path), info, stat_timeout=0.2) is MountState.BROKEN
    finally:
        release.set()


# ---------------------------------------------------------------- path confinement (property)

_SEGMENTS = st.sampled_from(
    ["pods", "uid", "..", ".", "", "volumes", "kubernetes.io~csi", "pv", "mount", "etc", "link"]
)


@pytest.fixture(scope="module")
def confine_service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from zonemount_csi.metrics import Metrics
    from zonemount_csi.node import NodeConfig, NodeService

    root = tmp_path_factory.mktemp("confine")
    (root / "kubelet" / "pods" / "uid").mkdir(parents=True)
    (root / "kubelet" / "pods" / "link").symlink_to("/etc")  # an escape hatch to catch
    return NodeService(
        NodeConfig("n", root / "kubelet", root / "state"),
        None,  # type: ignore[arg-type]  # confine() never mounts
        StateStore(root / "state"),
        Metrics(),
    )


@example(segments=["link", "mount"], base="pods")  # symlink escape (regression)
@example(segments=["uid", "..", "..", "..", "etc", "mount"], base="pods")
@given(
    segments=st.lists(_SEGMENTS, min_size=1, max_size=8),
    base=st.sampled_from(["pods", "kubelet", "relative"]),
)
def test_confine_never_returns_a_path_outside_pods(
    confine_service: Any, segments: list[str], base: str
) -> None:
    from zonemount_csi.errors import CsiError

    kubelet = str(confine_service.config.kubelet_dir)
    roots = {"pods": [kubelet, "pods"], "kubelet": [kubelet], "relative": []}
    raw = "/".join([*roots[base], *segments])
    try:
        real = confine_service.confine(raw)
    except CsiError as err:
        assert err.code.name == "INVALID_ARGUMENT"
        return
    pods = os.path.realpath(os.path.join(kubelet, "pods"))
    assert real.startswith(pods + "/")
    assert os.path.realpath(os.path.dirname(real)).startswith(pods)
    assert not os.path.islink(real)
