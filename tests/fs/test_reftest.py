"""Reference-model property test (after Mountpoint's reftests).

Hypothesis drives random sequences of file-system operations through a real mount - create,
write, read, unlink, mkdir, rmdir, rename of files and directories - interleaved with puts and
deletes made directly in the bucket by *another* client, and after every step compares the
whole visible tree (names, kinds, sizes, contents) with a small model of the semantics in
docs/SEMANTICS.md. The mount runs with metadata TTLs of 0 so the model need not reason about
caching (caching has its own tests).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from zonemount_cli.servers import LocalS3

from .mounts import Mounter

pytestmark = pytest.mark.integration

NAMES = st.sampled_from(["a", "b", "c"])
DIRS = st.sampled_from(["", "d", "e", "d/f"])
DATA = st.binary(max_size=64) | st.sampled_from([b"", b"x" * 70_000])


class Model:
    """Files by path; directories made by mkdir that hold nothing remote yet."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.local_dirs: set[str] = set()

    def remote_dirs(self) -> set[str]:
        out: set[str] = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                out.add("/".join(parts[:i]))
        return out

    def dirs(self) -> set[str]:
        # A directory holding a local one stays even when S3 no longer shows it
        # (R-DIR-LOCAL-CHILDREN-KEEP-PARENT).
        out = self.remote_dirs() | self.local_dirs
        for d in self.local_dirs:
            parts = d.split("/")
            out |= {"/".join(parts[:i]) for i in range(1, len(parts))}
        return out

    def is_dir(self, path: str) -> bool:
        return path == "" or path in self.dirs()

    def is_file(self, path: str) -> bool:
        return path in self.files and not self.is_dir(path)

    def exists(self, path: str) -> bool:
        return self.is_dir(path) or self.is_file(path)

    def tree(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for d in self.dirs():
            out[d] = "dir"
        for path, data in self.files.items():
            if not self.is_dir(path):  # a directory shadows a file of the same name
                out[path] = data
        return out

    def emptied(self, path: str) -> None:
        """This mount removed ``path``: its directory stays (R-DIR-EMPTIED-STAYS)."""
        if "/" in path:
            self.local_dirs.add(path.rsplit("/", 1)[0])

    def written(self, path: str) -> None:
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        while parent:
            self.local_dirs.discard(parent)
            parent = parent.rsplit("/", 1)[0] if "/" in parent else ""


def join(d: str, n: str) -> str:
    return f"{d}/{n}" if d else n


class MountMachine(RuleBasedStateMachine):
    server: LocalS3
    mounter: Mounter
    counter = 0

    def __init__(self) -> None:
        super().__init__()
        MountMachine.counter += 1
        self.bucket = f"ref-{os.getpid()}-{MountMachine.counter}"
        self.s3: Any = self.server.client()
        self.s3.create_bucket(Bucket=self.bucket)
        self.mnt = self.mounter.mount(
            self.bucket,
            "--allow-delete",
            "--allow-overwrite",
            "--metadata-ttl",
            "0",
            "--negative-metadata-ttl",
            "0",
        )
        self.model = Model()

    def teardown(self) -> None:
        self.mounter.cleanup()
        self.mounter.mounts.clear()

    def p(self, path: str) -> Path:
        return self.mnt / path if path else self.mnt

    # -- operations through the mount ------------------------------------------------
    @rule(d=DIRS, n=NAMES, data=DATA)
    def write_file(self, d: str, n: str, data: bytes) -> None:
        path = join(d, n)
        m = self.model
        try:
            self.p(path).write_bytes(data)
        except OSError as exc:
            if not m.is_dir(d):
                assert exc.errno == errno.ENOENT
            elif m.is_dir(path):
                assert exc.errno == errno.EISDIR
            else:
                raise
            return
        assert m.is_dir(d) and not m.is_dir(path)
        m.files[path] = data
        m.written(path)

    @rule(d=DIRS, n=NAMES)
    def read_file(self, d: str, n: str) -> None:
        path = join(d, n)
        if self.model.is_file(path):
            assert self.p(path).read_bytes() == self.model.files[path]

    @rule(d=DIRS, n=NAMES)
    def unlink(self, d: str, n: str) -> None:
        path = join(d, n)
        try:
            os.unlink(self.p(path))
        except OSError as exc:
            assert not self.model.is_file(path), exc
            return
        assert self.model.is_file(path)
        del self.model.files[path]
        self.model.emptied(path)

    @rule(d=DIRS, n=NAMES)
    def mkdir(self, d: str, n: str) -> None:
        path = join(d, n)
        try:
            os.mkdir(self.p(path))
        except OSError as exc:
            assert self.model.exists(path) or not self.model.is_dir(d), exc
            return
        assert not self.model.exists(path) and self.model.is_dir(d)
        self.model.local_dirs.add(path)

    @rule(d=DIRS, n=NAMES)
    def rmdir(self, d: str, n: str) -> None:
        path = join(d, n)
        m = self.model
        empty = m.is_dir(path) and not any(
            x.startswith(path + "/") for x in list(m.files) + list(m.local_dirs)
        )
        try:
            os.rmdir(self.p(path))
        except OSError as exc:
            assert not empty, exc
            return
        assert empty
        m.local_dirs.discard(path)
        m.emptied(path)

    @rule(sd=DIRS, sn=NAMES, dd=DIRS, dn=NAMES)
    def rename(self, sd: str, sn: str, dd: str, dn: str) -> None:
        src, dst = join(sd, sn), join(dd, dn)
        m = self.model
        try:
            os.rename(self.p(src), self.p(dst))
        except OSError:
            return  # errors are covered by test_semantics; the model checks state stays put
        m.emptied(src)
        if m.is_file(src):
            data = m.files.pop(src)
            m.files[dst] = data
            m.local_dirs.discard(dst)
            m.written(dst)
        elif m.is_dir(src):
            moved_files = {k: v for k, v in m.files.items() if k.startswith(src + "/")}
            for k in moved_files:
                del m.files[k]
            for k, v in moved_files.items():
                m.files[dst + k[len(src) :]] = v
            moved_local = {x for x in m.local_dirs if x == src or x.startswith(src + "/")}
            m.local_dirs -= moved_local
            m.local_dirs.discard(dst)
            m.local_dirs |= {dst + x[len(src) :] for x in moved_local}
            if moved_files:
                m.written(dst + "/x")
            elif src not in moved_local:
                m.local_dirs.add(dst)

    # -- another client --------------------------------------------------------------
    @rule(d=DIRS, n=NAMES, data=st.binary(max_size=32))
    def other_put(self, d: str, n: str, data: bytes) -> None:
        path = join(d, n)
        if self.model.is_dir(path) or any(
            p in self.model.files and not self.model.is_dir(p)
            for p in [d[:i] for i in range(1, len(d) + 1) if i == len(d) or d[i] == "/"]
        ):
            return  # keep the model free of file/dir name clashes (tested separately)
        self.s3.put_object(Bucket=self.bucket, Key=path, Body=data)
        self.model.files[path] = data

    @rule(d=DIRS, n=NAMES)
    def other_delete(self, d: str, n: str) -> None:
        path = join(d, n)
        if self.model.is_file(path):
            self.s3.delete_object(Bucket=self.bucket, Key=path)
            del self.model.files[path]

    # -- the comparison --------------------------------------------------------------
    @invariant()
    def tree_matches(self) -> None:
        seen: dict[str, Any] = {"": "dir"}
        for root, dirs, files in os.walk(self.mnt):
            rel = os.path.relpath(root, self.mnt)
            rel = "" if rel == "." else rel
            for name in dirs:
                seen[join(rel, name)] = "dir"
            for name in files:
                seen[join(rel, name)] = (self.mnt / join(rel, name)).read_bytes()
        expected = self.model.tree()
        expected[""] = "dir"
        assert seen == expected


@pytest.fixture
def machine_env(moto_server: LocalS3, tmp_path: Path) -> None:
    MountMachine.server = moto_server
    MountMachine.mounter = Mounter(moto_server, tmp_path)


def test_reference_model(machine_env: None) -> None:
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(
        MountMachine,
        settings=settings(
            max_examples=int(os.environ.get("ZONEMOUNT_REFTEST_EXAMPLES", "12")),
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
