"""``zonemount cp``/``sync`` both ways between local disks and S3 (moto on loopback).

Pins issue 16's cp bullets: local -> S3 and S3 -> local through the one engine, s5cmd's
wildcards, the dry run, "nothing matched" as a one-line failure, byte progress inside a large
object, an 80-column progress line that keeps its numbers, one-line errors for a bad
--endpoint-url and for missing credentials.
"""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from zonemount_cli.servers import LocalS3
from zonemount_operator.cli import _ProgressBar, cp_main, sync_main
from zonemount_operator.locations import (
    LocalLocation,
    S3Location,
    SourceObject,
    local_source,
    split_wildcard,
)
from zonemount_operator.transfer import BulkCopier, CopyOptions, MiB, Progress, copy

from tests.operator.operator_testlib import s3_digests, tree_digests, write_tree

pytestmark = pytest.mark.integration

# A tree whose sorted-walk order is not the naive one ("a-b" sorts before "a/").
TREE = {
    "a/b.txt": 100,
    "a-b": 7,
    "a/c/deep.bin": 70_000,
    "empty": 0,
    "z.txt": 3,
    "big.bin": 11 * MiB + 5,
}


def make_tree(root: Path) -> dict[str, str]:
    return write_tree(root, TREE, random.Random(3).randbytes)


def args(server: LocalS3, *extra: str) -> list[str]:
    return ["--endpoint-url", server.endpoint, "--no-progress", "--part-size", "5", *extra]


def test_local_to_s3_and_back_every_byte(
    moto_server: LocalS3,
    s3_env: dict[str, str],
    bucket: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3: Any = moto_server.client()
    digests = make_tree(tmp_path / "src")
    assert cp_main([str(tmp_path / "src"), f"s3://{bucket}/up/", *args(moto_server)]) == 0
    assert f"cp: {len(TREE)} copied, 0 up to date, 0 failed" in capsys.readouterr().err
    assert s3_digests(s3, bucket, "up/") == digests
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

    assert cp_main([f"s3://{bucket}/up/", str(tmp_path / "down"), *args(moto_server)]) == 0
    capsys.readouterr()
    assert tree_digests(tmp_path / "down") == digests  # no temporary files left either
    # Downloads carry the object's time, so syncing either way finds everything up to date.
    assert sync_main([f"s3://{bucket}/up/", str(tmp_path / "down"), *args(moto_server)]) == 0
    assert f"sync: 0 copied, {len(TREE)} up to date" in capsys.readouterr().err
    assert sync_main([str(tmp_path / "src"), f"s3://{bucket}/up/", *args(moto_server)]) == 0
    assert f"sync: 0 copied, {len(TREE)} up to date" in capsys.readouterr().err
    # A changed local file (size differs) is uploaded again, and only it.
    (tmp_path / "src" / "z.txt").write_bytes(b"changed")
    assert sync_main([str(tmp_path / "src"), f"s3://{bucket}/up/", *args(moto_server)]) == 0
    assert f"sync: 1 copied, {len(TREE) - 1} up to date" in capsys.readouterr().err


def test_single_objects_keep_or_take_a_name(
    moto_server: LocalS3, s3_env: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    s3: Any = moto_server.client()
    s3.put_object(Bucket=bucket, Key="d/one.txt", Body=b"1")
    assert cp_main([f"s3://{bucket}/d/one.txt", str(tmp_path) + "/", *args(moto_server)]) == 0
    assert (tmp_path / "one.txt").read_bytes() == b"1"
    assert cp_main([f"s3://{bucket}/d/one.txt", str(tmp_path / "two"), *args(moto_server)]) == 0
    assert (tmp_path / "two").read_bytes() == b"1"
    assert cp_main([str(tmp_path / "two"), f"s3://{bucket}/e/three", *args(moto_server)]) == 0
    assert cp_main([str(tmp_path / "two"), f"s3://{bucket}/f/", *args(moto_server)]) == 0
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {"d/one.txt", "e/three", "f/two"}


def test_wildcards_as_s5cmd_takes_them(
    moto_server: LocalS3,
    s3_env: dict[str, str],
    bucket: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3: Any = moto_server.client()
    for key in ["logs/2024/a.gz", "logs/2024/x/b.gz", "logs/2025/c.gz", "logs/2024/d.txt"]:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    # '*' crosses '/', names keep their path after the last '/' before the wildcard.
    assert cp_main([f"s3://{bucket}/logs/2024/*.gz", str(tmp_path / "o"), *args(moto_server)]) == 0
    assert sorted(tree_digests(tmp_path / "o")) == ["a.gz", "x/b.gz"]
    assert cp_main([f"s3://{bucket}/logs/202?/c*", str(tmp_path / "q"), *args(moto_server)]) == 0
    assert sorted(tree_digests(tmp_path / "q")) == ["2025/c.gz"]
    # Local wildcards upload the same way.
    capsys.readouterr()
    src = f"{tmp_path}/o/*.gz"
    assert cp_main([src, f"s3://{bucket}/up/", *args(moto_server)]) == 0
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="up/")["Contents"]}
    assert keys == {"up/a.gz", "up/x/b.gz"}


def test_dry_run_copies_nothing_and_says_what_it_would(
    moto_server: LocalS3,
    s3_env: dict[str, str],
    bucket: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3: Any = moto_server.client()
    for key in ["p/a", "p/b"]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    (tmp_path / "a").write_bytes(b"x")  # same size, newer: up to date for sync
    code = sync_main([f"s3://{bucket}/p/", str(tmp_path), "--dry-run", *args(moto_server)])
    out, err = capsys.readouterr()
    assert code == 0
    assert out.splitlines() == [f"sync s3://{bucket}/p/b {tmp_path / 'b'}"]
    assert "dry run: 1 would be copied, 1 up to date" in err
    assert not (tmp_path / "b").exists()


def test_nothing_matched_is_a_one_line_failure(
    moto_server: LocalS3,
    s3_env: dict[str, str],
    bucket: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cp_main([f"s3://{bucket}/nope/*.gz", str(tmp_path), *args(moto_server)])
    err = capsys.readouterr().err
    assert code == 1
    assert err == f"zonemount cp: no objects match s3://{bucket}/nope/*.gz: nothing to copy\n"


@pytest.mark.parametrize("flag", ["--endpoint-url", "--source-endpoint-url"])
@pytest.mark.parametrize("main", [cp_main, sync_main], ids=["cp", "sync"])
def test_bad_endpoint_url_is_one_line(
    flag: str, main: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["s3://bucket/a/", "s3://bucket/b/", flag, "notaurl"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{flag} 'notaurl' is not an http(s) URL" in err


def test_missing_credentials_are_named_not_access_denied(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in list(os.environ):
        if var.startswith("AWS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    (tmp_path / "f").write_bytes(b"x")
    code = cp_main([str(tmp_path / "f"), "s3://bucket/b/", "--endpoint-url", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "no AWS credentials found" in err and "denied" not in err


def test_large_object_progress_moves_before_it_completes(
    moto_server: LocalS3, s3_env: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    """Bytes of a multipart object count part by part, before the object is complete."""
    s3: Any = moto_server.client()
    (tmp_path / "big").write_bytes(os.urandom(16 * MiB))
    seen: list[tuple[int, int]] = []

    class Watched(S3Location):
        def write_part(self, rel: str, upload: Any, number: int, offset: int, data: bytes) -> Any:
            p = copier_progress[0]
            seen.append((p.bytes_copied, p.objects_copied))
            return super().write_part(rel, upload, number, offset, data)

    copier_progress: list[Progress] = []
    source = local_source(str(tmp_path / "big"))
    dest = Watched(s3, bucket, "big/")
    copier = BulkCopier(source, dest, CopyOptions(concurrency=1, part_size=5 * MiB))
    copier_progress.append(copier.progress)
    copier._parts.shutdown()
    copier._parts = ThreadPoolExecutor(1)  # parts one at a time: a deterministic order
    result = copier.run()
    assert result.objects_copied == 1 and result.bytes_copied == 16 * MiB
    assert seen[0] == (0, 0)
    assert [b for b, _ in seen] == [0, 5 * MiB, 10 * MiB, 15 * MiB]  # one part at a time
    assert all(objects == 0 for _, objects in seen)


def test_failed_streamed_object_takes_its_counted_bytes_back(
    moto_server: LocalS3, s3_env: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    s3: Any = moto_server.client()
    (tmp_path / "big").write_bytes(os.urandom(11 * MiB))

    class FailLast(S3Location):
        def complete(self, rel: str, upload: Any, parts: list[Any], src: SourceObject) -> None:
            raise OSError(5, "injected")

    result = copy(
        local_source(str(tmp_path / "big")),
        FailLast(s3, bucket, "x/"),
        CopyOptions(part_size=5 * MiB, retries=1, backoff_base=0.01),
    )
    assert result.objects_failed == 1 and result.bytes_copied == 0
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.unit
def test_progress_line_keeps_its_numbers_at_80_columns() -> None:
    from rich.console import Console

    console = Console(width=80, force_terminal=True, record=True, color_system=None)
    bar = _ProgressBar("sync", console=console)
    bar.update(
        Progress(
            objects_total=20_000,
            bytes_total=125_200_000_000,
            objects_copied=12_345,
            bytes_copied=77_300_000_000,
            elapsed=100.0,
            listing_done=True,
        )
    )
    console.print(bar._progress.get_renderable())
    line = console.export_text().splitlines()[0]
    assert len(line) <= 80
    assert "12345/20000 obj" in line and "77.3/125.2 GB" in line and line.startswith("sync ")


@pytest.mark.unit
def test_local_walk_is_in_key_order(tmp_path: Path) -> None:
    make_tree(tmp_path)
    keys = [o.key for o in LocalLocation(tmp_path).objects()]
    assert keys == sorted(TREE)


@pytest.mark.unit
def test_split_wildcard() -> None:
    assert split_wildcard("a/b/c*d")[:2] == ("a/b/", "a/b/c")
    _, _, pattern = split_wildcard("a/*.gz")
    assert pattern is not None
    assert pattern.fullmatch("a/x/y.gz") and not pattern.fullmatch("a/x/y.gzz")
    assert split_wildcard("plain/") == ("plain/", "plain/", None)
