"""S3 Express One Zone directory buckets through a real mount.

Session credentials come from botocore's own CreateSession handling (not hand-rolled),
against a test endpoint that issues short-lived sessions and rejects anything else.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from zonemount_cli.servers import LocalS3

from .express_endpoint import ExpressEndpoint
from .mounts import ZONEMOUNT, Mounter, is_mounted, unmount

pytestmark = pytest.mark.integration
BUCKET = "spark-data--use1-az4--x-s3"


def _admin(server: LocalS3):  # type: ignore[no-untyped-def]
    """Direct access to moto (which cannot do CreateSession) for setting up and checking."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(s3={"disable_s3_express_session_auth": True}),
    )


def test_express_session_auth_through_mount(moto_server: LocalS3, tmp_path: Path) -> None:
    client = _admin(moto_server)
    try:
        client.create_bucket(Bucket=BUCKET)
    except Exception as exc:  # already there from another run in this session
        assert "BucketAlready" in str(exc)
    client.put_object(Bucket=BUCKET, Key="in/a.txt", Body=b"from s3")
    with ExpressEndpoint(moto_server.endpoint, session_seconds=40) as ep:
        mnt = tmp_path / "express"
        mnt.mkdir()
        env = {**os.environ, **moto_server.env()}
        env.pop("ZONEMOUNT_DISABLE_S3_EXPRESS_SESSION_AUTH", None)
        env.pop("AWS_S3_DISABLE_EXPRESS_SESSION_AUTH", None)
        proc = subprocess.run(
            [
                ZONEMOUNT,
                "mount",
                BUCKET,
                str(mnt),
                "--endpoint-url",
                ep.endpoint,
                "--allow-delete",
                "--allow-overwrite",
                "--metadata-ttl",
                "0",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        try:
            assert (mnt / "in/a.txt").read_bytes() == b"from s3"
            (mnt / "out").mkdir()
            (mnt / "out/b.txt").write_bytes(b"written")
            os.rename(mnt / "out", mnt / "final")
            assert sorted(os.listdir(mnt)) == ["final", "in"]
            first = ep.create_session_calls
            assert first >= 1, "requests must be authorised by CreateSession sessions"
            assert ep.forwarded > 5
            # Sessions expire in 40 s; botocore refreshes inside its 45 s advisory window.
            time.sleep(1)
            assert (mnt / "final/b.txt").read_bytes() == b"written"
            assert ep.create_session_calls > first, "sessions are refreshed before expiry"
            assert ep.rejected == 0, "no request went out without a valid session token"
        finally:
            unmount(mnt)
    assert not is_mounted(mnt)
    assert client.get_object(Bucket=BUCKET, Key="final/b.txt")["Body"].read() == b"written"


def test_plain_sigv4_is_rejected_by_the_endpoint(moto_server: LocalS3) -> None:
    """The endpoint really checks sessions: a client with session auth disabled is refused."""
    import boto3
    from botocore.config import Config

    with ExpressEndpoint(moto_server.endpoint) as ep:
        plain = boto3.client(
            "s3",
            endpoint_url=ep.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(s3={"disable_s3_express_session_auth": True}),
        )
        with pytest.raises(Exception, match=r"AccessDenied|403"):
            plain.list_objects_v2(Bucket=BUCKET)
        assert ep.rejected == 1


def test_directory_bucket_rename_on_endpoint_without_rename_object(
    moto_server: LocalS3, tmp_path: Path
) -> None:
    """Regression: many concurrent first renames must all fall back to copy + delete when the
    endpoint does not really implement RenameObject (moto answers it like a PutObject)."""
    from .mounts import Mounter

    bucket = "renames--use1-az4--x-s3"
    admin = _admin(moto_server)
    admin.create_bucket(Bucket=bucket)
    for i in range(40):
        admin.put_object(Bucket=bucket, Key=f"attempt/p{i // 8}/part-{i}", Body=b"%d" % i)
    mounter = Mounter(moto_server, tmp_path)
    try:
        mnt = mounter.mount(bucket, "--allow-delete", "--allow-overwrite")
        os.rename(mnt / "attempt", mnt / "task")
    finally:
        mounter.cleanup()
    keys = sorted(o["Key"] for o in admin.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == sorted(f"task/p{i // 8}/part-{i}" for i in range(40))
    for i in (0, 17, 39):
        body = admin.get_object(Bucket=bucket, Key=f"task/p{i // 8}/part-{i}")["Body"].read()
        assert body == b"%d" % i


def test_directory_bucket_rename_whose_copy_fails_leaves_the_old_tree(
    moto_server: LocalS3, tmp_path: Path
) -> None:
    """R-RENAME-DIR on a directory bucket whose endpoint has no RenameObject: a copy that
    keeps failing fails the rename (EIO) and every object is still under the old name, none
    under the new one. Before, each object was copied then deleted on its own, so the
    objects copied before the failure had left the old tree (split between two names)."""
    import errno

    from .faultproxy import FaultProxy, Rule
    from .mounts import Mounter

    bucket = "splits--use1-az4--x-s3"
    admin = _admin(moto_server)
    admin.create_bucket(Bucket=bucket)
    before = sorted(f"attempt/p{i // 8}/part-{i}" for i in range(40))
    for key in before:
        admin.put_object(Bucket=bucket, Key=key, Body=key.encode())
    proxy = FaultProxy(moto_server.endpoint)
    mounter = Mounter(moto_server, tmp_path)
    try:
        mnt = mounter.mount(
            bucket, "--allow-delete", "--allow-overwrite", "--endpoint-url", proxy.endpoint
        )
        failing = proxy.add(Rule("PUT", "/task/p2/part-17", "status", status=500))
        with pytest.raises(OSError) as info:
            os.rename(mnt / "attempt", mnt / "task")
        assert info.value.errno == errno.EIO and failing.hits > 0
        keys = sorted(o["Key"] for o in admin.list_objects_v2(Bucket=bucket)["Contents"])
        assert keys == before
        assert sorted(os.listdir(mnt / "attempt")) == [f"p{i}" for i in range(5)]
    finally:
        mounter.cleanup()
        proxy.close()


class _SessionMounter(Mounter):
    """Mounts that authorise with CreateSession sessions (as on AWS), not plain SigV4."""

    def env(self) -> dict[str, str]:
        env = super().env()
        env.pop("ZONEMOUNT_DISABLE_S3_EXPRESS_SESSION_AUTH", None)
        env.pop("AWS_S3_DISABLE_EXPRESS_SESSION_AUTH", None)
        return env


@pytest.mark.parametrize("rename_object", [True, False], ids=["RenameObject", "copies"])
def test_directory_bucket_rename_killed_mid_way_loses_nothing(
    moto_server: LocalS3, tmp_path: Path, rename_object: bool
) -> None:
    """R-RENAME-DIR, a FUSE server killed mid-way on a directory bucket: ``src`` (20 files)
    renamed to ``dst`` through an S3 Express endpoint (sessions from CreateSession), the
    ``zonemount mount`` process SIGKILLed while a proxy holds the move of ``f07`` and the
    other 19 have moved. With RenameObject each
    object is under exactly one name: ``dst`` holds the 19, ``src`` only ``f07`` (the tree
    split between them). Without it (copies first, then deletes) ``src`` is whole and
    ``dst`` holds the 19 copies. Nothing is lost, in S3 and in a fresh mount."""
    from .crashes import contents, kill_mid_rename, reached, tree
    from .faultproxy import FaultProxy, Rule

    bucket = f"kill{os.urandom(4).hex()}--use1-az4--x-s3"
    admin = _admin(moto_server)
    admin.create_bucket(Bucket=bucket)
    files = tree(20)
    for name, body in files.items():
        admin.put_object(Bucket=bucket, Key=f"src/{name}", Body=body)
    admin.put_object(Bucket=bucket, Key="probe", Body=b"p")
    held_name = "f07"
    moved = {k: v for k, v in files.items() if k != held_name}
    want_src = {held_name: files[held_name]} if rename_object else files
    with ExpressEndpoint(moto_server.endpoint, rename_object=rename_object) as ep:
        proxy = FaultProxy(ep.endpoint)
        mounter = _SessionMounter(moto_server, tmp_path)
        try:
            mnt = mounter.mount(bucket, "--allow-delete", "--endpoint-url", proxy.endpoint)
            os.rename(mnt / "probe", mnt / "probed")  # the mount learns if RenameObject works
            assert ep.renamed == int(rename_object)
            held = proxy.add(Rule("PUT", f"/dst/{held_name}", "stall"))

            def ready() -> bool:
                return held.hits > 0 and reached(admin, bucket, set(want_src), set(moved))

            kill_mid_rename(mounter, mnt, "src", "dst", ready)
            assert ep.renamed == (1 + len(moved) if rename_object else 0)
            assert ep.create_session_calls >= 1 and ep.rejected == 0
        finally:
            mounter.cleanup()
            proxy.close()
    old, new = contents(admin, bucket, "src/"), contents(admin, bucket, "dst/")
    assert {**old, **new} == files, "a file was lost or changed"
    assert old == want_src
    assert new == moved
    fresh = Mounter(moto_server, tmp_path)  # plain SigV4 on moto itself
    try:
        again = fresh.mount(bucket)
        for name, want in (("src", want_src), ("dst", moved)):
            assert {f: (again / name / f).read_bytes() for f in os.listdir(again / name)} == want
    finally:
        fresh.cleanup()
