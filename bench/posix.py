"""A small POSIX comparison of FUSE clients mounting the same bucket of the same S3 server.

``python -m bench.posix``: starts moto on loopback, mounts one bucket with zonemount and with
s3fs-fuse (each as root, ``allow_other``), runs the same checks on each mount and prints how many
pass per category (open, unlink, mkdir, rmdir, rename, chmod, chown, utimensat, truncate,
ftruncate, symlink), then every failing check by name. The checks are our own short statements of
what POSIX (and Linux) promise; they are not a third-party suite and do not measure speed.

Invariants:
* every check runs in its own fresh directory (mode 0777) on the mount, so checks do not see
  each other; a check passes when it returns, fails on AssertionError or OSError;
* checks about permissions run their operation in a forked child that drops to uid/gid 65534;
* time checks wait 1.1 s before the change, because s3fs keeps times in whole seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shutil
import stat
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from zonemount_cli.servers import start_moto

from bench.clients import Dataset, FuseClient, S3fs, Target, Zonemount

NOBODY = 65534
Check = Callable[[Path], None]
CHECKS: list[tuple[str, str, Check]] = []


def check(category: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CHECKS.append((category, fn.__name__, fn))
        return fn

    return register


def fails(codes: int | tuple[int, ...], fn: Callable[[], object]) -> None:
    """Assert that ``fn`` fails with one of ``codes``."""
    wanted = codes if isinstance(codes, tuple) else (codes,)
    try:
        fn()
    except OSError as exc:
        assert exc.errno in wanted, f"{errno.errorcode.get(exc.errno or 0)} instead of {wanted}"
        return
    raise AssertionError(f"succeeded instead of failing with {wanted}")


def as_nobody(fn: Callable[[], object]) -> None:
    """Run ``fn`` in a child process as uid/gid 65534; re-raise its OSError here."""
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 0
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            fn()
        except OSError as exc:
            code = min(exc.errno or 1, 250)
        except BaseException:
            code = 251
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 251:
        raise AssertionError("the check failed in the unprivileged child")
    if code:
        raise OSError(code, os.strerror(code))


def write(path: Path, data: bytes = b"data") -> None:
    path.write_bytes(data)


def tick() -> None:
    time.sleep(1.1)


def times(path: Path, follow: bool = True) -> tuple[int, int]:
    st = os.stat(path, follow_symlinks=follow)
    return st.st_mtime_ns, st.st_ctime_ns


# -- open ------------------------------------------------------------------------------
@check("open")
def create_mode_follows_umask(d: Path) -> None:
    old = os.umask(0o022)
    try:
        os.close(os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o666))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o644


@check("open")
def create_exclusive_existing(d: Path) -> None:
    write(d / "f")
    fails(errno.EEXIST, lambda: os.open(d / "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))


@check("open")
def open_missing(d: Path) -> None:
    fails(errno.ENOENT, lambda: os.open(d / "nope", os.O_RDONLY))


@check("open")
def open_dir_for_writing(d: Path) -> None:
    os.mkdir(d / "sub")
    fails(errno.EISDIR, lambda: os.open(d / "sub", os.O_WRONLY))


@check("open")
def open_through_a_file(d: Path) -> None:
    write(d / "f")
    fails(errno.ENOTDIR, lambda: os.open(d / "f" / "x", os.O_CREAT | os.O_WRONLY, 0o644))


@check("open")
def create_name_too_long(d: Path) -> None:
    fails(errno.ENAMETOOLONG, lambda: os.open(d / ("n" * 256), os.O_CREAT | os.O_WRONLY, 0o644))


@check("open")
def open_trunc_empties(d: Path) -> None:
    write(d / "f", b"123456")
    os.close(os.open(d / "f", os.O_WRONLY | os.O_TRUNC))
    assert os.stat(d / "f").st_size == 0


@check("open")
def open_write_without_trunc(d: Path) -> None:
    write(d / "f", b"123456")
    fd = os.open(d / "f", os.O_WRONLY)
    try:
        os.write(fd, b"ab")
    finally:
        os.close(fd)
    assert (d / "f").read_bytes() == b"ab3456"


@check("open")
def open_append(d: Path) -> None:
    write(d / "f", b"123")
    with open(d / "f", "ab") as f:
        f.write(b"45")
    assert (d / "f").read_bytes() == b"12345"


@check("open")
def open_unreadable_as_other_user(d: Path) -> None:
    write(d / "f")
    os.chmod(d / "f", 0o600)
    fails(errno.EACCES, lambda: as_nobody(lambda: os.open(d / "f", os.O_RDONLY)))


@check("open")
def create_in_unwritable_dir(d: Path) -> None:
    os.chmod(d, 0o755)
    fails(
        errno.EACCES,
        lambda: as_nobody(lambda: os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o644)),
    )


@check("open")
def create_owned_by_creator(d: Path) -> None:
    as_nobody(lambda: os.close(os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o644)))
    st = os.stat(d / "f")
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY), (st.st_uid, st.st_gid)


@check("open")
def create_updates_parent_times(d: Path) -> None:
    before = times(d)
    tick()
    write(d / "f")
    after = times(d)
    assert after[0] > before[0] and after[1] > before[1]


@check("open")
def open_read_after_create(d: Path) -> None:
    write(d / "f", b"x" * 5000)
    assert (d / "f").read_bytes() == b"x" * 5000 and os.stat(d / "f").st_size == 5000


# -- unlink ----------------------------------------------------------------------------
@check("unlink")
def unlink_removes(d: Path) -> None:
    write(d / "f")
    os.unlink(d / "f")
    fails(errno.ENOENT, lambda: os.stat(d / "f"))
    assert os.listdir(d) == []


@check("unlink")
def unlink_missing(d: Path) -> None:
    fails(errno.ENOENT, lambda: os.unlink(d / "nope"))


@check("unlink")
def unlink_directory(d: Path) -> None:
    os.mkdir(d / "sub")
    fails((errno.EISDIR, errno.EPERM), lambda: os.unlink(d / "sub"))


@check("unlink")
def unlink_through_a_file(d: Path) -> None:
    write(d / "f")
    fails(errno.ENOTDIR, lambda: os.unlink(d / "f" / "x"))


@check("unlink")
def unlink_name_too_long(d: Path) -> None:
    fails(errno.ENAMETOOLONG, lambda: os.unlink(d / ("n" * 256)))


@check("unlink")
def unlink_symlink_keeps_target(d: Path) -> None:
    write(d / "f", b"kept")
    os.symlink("f", d / "ln")
    os.unlink(d / "ln")
    assert (d / "f").read_bytes() == b"kept"
    fails(errno.ENOENT, lambda: os.lstat(d / "ln"))


@check("unlink")
def unlink_empty_file_right_after_close(d: Path) -> None:
    for i in range(5):
        write(d / f"e{i}", b"")
        os.unlink(d / f"e{i}")


@check("unlink")
def unlink_updates_parent_times(d: Path) -> None:
    write(d / "f")
    before = times(d)
    tick()
    os.unlink(d / "f")
    after = times(d)
    assert after[0] > before[0] and after[1] > before[1]


@check("unlink")
def fstat_after_unlink(d: Path) -> None:
    write(d / "f", b"abc")
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        os.unlink(d / "f")
        st = os.fstat(fd)
    finally:
        os.close(fd)
    assert st.st_nlink == 0 and st.st_size == 3


@check("unlink")
def unlink_in_unwritable_dir(d: Path) -> None:
    write(d / "f")
    os.chmod(d, 0o755)
    fails(errno.EACCES, lambda: as_nobody(lambda: os.unlink(d / "f")))


@check("unlink")
def unlink_in_sticky_dir_by_other(d: Path) -> None:
    write(d / "f")
    os.chmod(d, 0o1777)
    fails((errno.EPERM, errno.EACCES), lambda: as_nobody(lambda: os.unlink(d / "f")))


# -- mkdir -----------------------------------------------------------------------------
@check("mkdir")
def mkdir_mode_follows_umask(d: Path) -> None:
    old = os.umask(0o022)
    try:
        os.mkdir(d / "sub", 0o777)
    finally:
        os.umask(old)
    st = os.stat(d / "sub")
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755


@check("mkdir")
def mkdir_existing(d: Path) -> None:
    os.mkdir(d / "sub")
    fails(errno.EEXIST, lambda: os.mkdir(d / "sub"))


@check("mkdir")
def mkdir_over_file(d: Path) -> None:
    write(d / "f")
    fails(errno.EEXIST, lambda: os.mkdir(d / "f"))


@check("mkdir")
def mkdir_missing_parent(d: Path) -> None:
    fails(errno.ENOENT, lambda: os.mkdir(d / "a" / "b"))


@check("mkdir")
def mkdir_name_too_long(d: Path) -> None:
    fails(errno.ENAMETOOLONG, lambda: os.mkdir(d / ("n" * 256)))


@check("mkdir")
def mkdir_link_counts(d: Path) -> None:
    os.mkdir(d / "sub")
    assert os.stat(d / "sub").st_nlink == 2
    assert os.stat(d).st_nlink == 3


@check("mkdir")
def mkdir_updates_parent_times(d: Path) -> None:
    before = times(d)
    tick()
    os.mkdir(d / "sub")
    after = times(d)
    assert after[0] > before[0] and after[1] > before[1]


@check("mkdir")
def mkdir_owned_by_creator(d: Path) -> None:
    as_nobody(lambda: os.mkdir(d / "sub"))
    st = os.stat(d / "sub")
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)


@check("mkdir")
def mkdir_in_unwritable_dir(d: Path) -> None:
    os.chmod(d, 0o755)
    fails(errno.EACCES, lambda: as_nobody(lambda: os.mkdir(d / "sub")))


@check("mkdir")
def mkdir_then_file_inside(d: Path) -> None:
    os.mkdir(d / "sub")
    write(d / "sub" / "f", b"in")
    assert os.listdir(d / "sub") == ["f"] and (d / "sub" / "f").read_bytes() == b"in"


# -- rmdir -----------------------------------------------------------------------------
@check("rmdir")
def rmdir_removes(d: Path) -> None:
    os.mkdir(d / "sub")
    os.rmdir(d / "sub")
    fails(errno.ENOENT, lambda: os.stat(d / "sub"))


@check("rmdir")
def rmdir_not_empty(d: Path) -> None:
    os.mkdir(d / "sub")
    write(d / "sub" / "f")
    fails((errno.ENOTEMPTY, errno.EEXIST), lambda: os.rmdir(d / "sub"))


@check("rmdir")
def rmdir_file(d: Path) -> None:
    write(d / "f")
    fails(errno.ENOTDIR, lambda: os.rmdir(d / "f"))


@check("rmdir")
def rmdir_missing(d: Path) -> None:
    fails(errno.ENOENT, lambda: os.rmdir(d / "nope"))


@check("rmdir")
def rmdir_dot(d: Path) -> None:
    os.mkdir(d / "sub")
    fails(errno.EINVAL, lambda: os.rmdir(f"{d}/sub/."))  # a str: pathlib drops "."


@check("rmdir")
def rmdir_link_count(d: Path) -> None:
    os.mkdir(d / "a")
    os.mkdir(d / "b")
    assert os.stat(d).st_nlink == 4
    os.rmdir(d / "a")
    assert os.stat(d).st_nlink == 3


@check("rmdir")
def rmdir_updates_parent_times(d: Path) -> None:
    os.mkdir(d / "sub")
    before = times(d)
    tick()
    os.rmdir(d / "sub")
    after = times(d)
    assert after[0] > before[0] and after[1] > before[1]


@check("rmdir")
def rmdir_emptied_dir(d: Path) -> None:
    os.mkdir(d / "sub")
    write(d / "sub" / "f")
    os.unlink(d / "sub" / "f")
    os.rmdir(d / "sub")
    assert os.listdir(d) == []


@check("rmdir")
def rmdir_in_unwritable_dir(d: Path) -> None:
    os.mkdir(d / "sub")
    os.chmod(d, 0o755)
    fails(errno.EACCES, lambda: as_nobody(lambda: os.rmdir(d / "sub")))


# -- rename ----------------------------------------------------------------------------
@check("rename")
def rename_file(d: Path) -> None:
    write(d / "a", b"moved")
    os.rename(d / "a", d / "b")
    assert (d / "b").read_bytes() == b"moved" and not (d / "a").exists()


@check("rename")
def rename_onto_file(d: Path) -> None:
    write(d / "a", b"new")
    write(d / "b", b"old")
    os.rename(d / "a", d / "b")
    assert (d / "b").read_bytes() == b"new" and os.listdir(d) == ["b"]


@check("rename")
def rename_dir_with_contents(d: Path) -> None:
    os.makedirs(d / "x" / "y")
    write(d / "x" / "y" / "f", b"deep")
    os.rename(d / "x", d / "z")
    assert (d / "z" / "y" / "f").read_bytes() == b"deep" and not (d / "x").exists()


@check("rename")
def rename_dir_onto_nonempty_dir(d: Path) -> None:
    os.mkdir(d / "a")
    os.mkdir(d / "b")
    write(d / "b" / "f")
    fails((errno.ENOTEMPTY, errno.EEXIST), lambda: os.rename(d / "a", d / "b"))


@check("rename")
def rename_dir_onto_empty_dir(d: Path) -> None:
    os.mkdir(d / "a")
    write(d / "a" / "f")
    os.mkdir(d / "b")
    os.rename(d / "a", d / "b")
    assert os.listdir(d / "b") == ["f"] and not (d / "a").exists()


@check("rename")
def rename_file_onto_dir(d: Path) -> None:
    write(d / "a")
    os.mkdir(d / "b")
    fails(errno.EISDIR, lambda: os.rename(d / "a", d / "b"))


@check("rename")
def rename_dir_onto_file(d: Path) -> None:
    os.mkdir(d / "a")
    write(d / "b")
    fails(errno.ENOTDIR, lambda: os.rename(d / "a", d / "b"))


@check("rename")
def rename_dir_into_itself(d: Path) -> None:
    os.makedirs(d / "a" / "b")
    fails(errno.EINVAL, lambda: os.rename(d / "a", d / "a" / "b" / "c"))


@check("rename")
def rename_missing(d: Path) -> None:
    fails(errno.ENOENT, lambda: os.rename(d / "nope", d / "b"))


@check("rename")
def rename_name_too_long(d: Path) -> None:
    write(d / "a")
    fails(errno.ENAMETOOLONG, lambda: os.rename(d / "a", d / ("n" * 256)))


@check("rename")
def rename_symlink(d: Path) -> None:
    write(d / "f")
    os.symlink("f", d / "ln")
    os.rename(d / "ln", d / "ln2")
    assert os.readlink(d / "ln2") == "f"


@check("rename")
def rename_updates_both_parents(d: Path) -> None:
    os.mkdir(d / "src")
    os.mkdir(d / "dst")
    write(d / "src" / "f")
    before_src, before_dst = times(d / "src"), times(d / "dst")
    tick()
    os.rename(d / "src" / "f", d / "dst" / "f")
    assert times(d / "src")[0] > before_src[0] and times(d / "dst")[0] > before_dst[0]


@check("rename")
def rename_keeps_mode_and_owner(d: Path) -> None:
    write(d / "a")
    os.chmod(d / "a", 0o604)
    os.chown(d / "a", 123, 456)
    os.rename(d / "a", d / "b")
    st = os.stat(d / "b")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o604, 123, 456)


@check("rename")
def rename_updates_ctime(d: Path) -> None:
    write(d / "a")
    before = times(d / "a")
    tick()
    os.rename(d / "a", d / "b")
    assert times(d / "b")[1] > before[1]


# -- chmod -----------------------------------------------------------------------------
@check("chmod")
def chmod_file(d: Path) -> None:
    write(d / "f")
    os.chmod(d / "f", 0o640)
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o640


@check("chmod")
def chmod_special_bits(d: Path) -> None:
    write(d / "f")
    os.chmod(d / "f", 0o6755)
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o6755


@check("chmod")
def chmod_dir(d: Path) -> None:
    os.mkdir(d / "sub")
    os.chmod(d / "sub", 0o700)
    assert stat.S_IMODE(os.stat(d / "sub").st_mode) == 0o700


@check("chmod")
def chmod_through_symlink(d: Path) -> None:
    write(d / "f")
    os.symlink("f", d / "ln")
    os.chmod(d / "ln", 0o600)
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o600
    assert stat.S_ISLNK(os.lstat(d / "ln").st_mode)


@check("chmod")
def chmod_updates_ctime_not_mtime(d: Path) -> None:
    write(d / "f")
    before = times(d / "f")
    tick()
    os.chmod(d / "f", 0o600)
    after = times(d / "f")
    assert after[1] > before[1] and after[0] == before[0]


@check("chmod")
def chmod_by_other_user(d: Path) -> None:
    write(d / "f")
    fails(errno.EPERM, lambda: as_nobody(lambda: os.chmod(d / "f", 0o777)))


@check("chmod")
def chmod_missing(d: Path) -> None:
    fails(errno.ENOENT, lambda: os.chmod(d / "nope", 0o600))


@check("chmod")
def chmod_by_owner(d: Path) -> None:
    write(d / "f")
    os.chown(d / "f", NOBODY, NOBODY)
    as_nobody(lambda: os.chmod(d / "f", 0o600))
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o600


@check("chmod")
def chmod_keeps_content(d: Path) -> None:
    write(d / "f", b"content")
    os.chmod(d / "f", 0o600)
    assert (d / "f").read_bytes() == b"content"


# -- chown -----------------------------------------------------------------------------
@check("chown")
def chown_file(d: Path) -> None:
    write(d / "f")
    os.chown(d / "f", 123, 456)
    st = os.stat(d / "f")
    assert (st.st_uid, st.st_gid) == (123, 456)


@check("chown")
def chown_dir(d: Path) -> None:
    os.mkdir(d / "sub")
    os.chown(d / "sub", 123, 456)
    st = os.stat(d / "sub")
    assert (st.st_uid, st.st_gid) == (123, 456)


@check("chown")
def lchown_symlink_only(d: Path) -> None:
    write(d / "f")
    os.symlink("f", d / "ln")
    os.lchown(d / "ln", 123, 456)
    assert (os.lstat(d / "ln").st_uid, os.stat(d / "f").st_uid) == (123, 0)


@check("chown")
def chown_through_symlink(d: Path) -> None:
    write(d / "f")
    os.symlink("f", d / "ln")
    os.chown(d / "ln", 123, 456)
    assert (os.stat(d / "f").st_uid, os.lstat(d / "ln").st_uid) == (123, 0)


@check("chown")
def chown_minus_one_keeps(d: Path) -> None:
    write(d / "f")
    os.chown(d / "f", 123, 456)
    os.chown(d / "f", -1, -1)
    os.chown(d / "f", -1, 789)
    st = os.stat(d / "f")
    assert (st.st_uid, st.st_gid) == (123, 789)


@check("chown")
def chown_updates_ctime(d: Path) -> None:
    write(d / "f")
    before = times(d / "f")
    tick()
    os.chown(d / "f", 123, 456)
    assert times(d / "f")[1] > before[1]


@check("chown")
def chown_dir_updates_ctime(d: Path) -> None:
    os.mkdir(d / "sub")
    before = times(d / "sub")
    tick()
    os.chown(d / "sub", 123, 456)
    assert times(d / "sub")[1] > before[1]


@check("chown")
def chown_by_other_user(d: Path) -> None:
    write(d / "f")
    fails(errno.EPERM, lambda: as_nobody(lambda: os.chown(d / "f", NOBODY, NOBODY)))


@check("chown")
def chown_keeps_content_and_mtime(d: Path) -> None:
    write(d / "f", b"content")
    before = times(d / "f")
    tick()
    os.chown(d / "f", 123, 456)
    assert (d / "f").read_bytes() == b"content" and times(d / "f")[0] == before[0]


# -- utimensat -------------------------------------------------------------------------
@check("utimensat")
def utime_explicit(d: Path) -> None:
    write(d / "f")
    os.utime(d / "f", ns=(1_500_000_000 * 10**9, 1_600_000_000 * 10**9))
    st = os.stat(d / "f")
    assert st.st_mtime_ns == 1_600_000_000 * 10**9 and st.st_atime_ns == 1_500_000_000 * 10**9


@check("utimensat")
def utime_nanoseconds(d: Path) -> None:
    write(d / "f")
    os.utime(d / "f", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    assert os.stat(d / "f").st_mtime_ns // 1000 == 1_600_000_000_123_456


@check("utimensat")
def utime_now(d: Path) -> None:
    write(d / "f")
    os.utime(d / "f", ns=(10**18, 10**18))
    os.utime(d / "f")
    assert abs(os.stat(d / "f").st_mtime - time.time()) < 30


@check("utimensat")
def utime_omit_mtime(d: Path) -> None:
    write(d / "f")
    os.utime(d / "f", ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    # atime only: mtime stays (Python's os.utime cannot omit, so use the file descriptor API)
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        os.utime(fd, ns=(1_500_000_000 * 10**9, 1_600_000_000 * 10**9))
    finally:
        os.close(fd)
    assert os.stat(d / "f").st_mtime_ns == 1_600_000_000 * 10**9


@check("utimensat")
def utime_dir(d: Path) -> None:
    os.mkdir(d / "sub")
    os.utime(d / "sub", ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    assert os.stat(d / "sub").st_mtime_ns == 1_600_000_000 * 10**9


@check("utimensat")
def utime_symlink_nofollow(d: Path) -> None:
    write(d / "f")
    os.symlink("f", d / "ln")
    os.utime(d / "ln", ns=(1_600_000_000 * 10**9,) * 2, follow_symlinks=False)
    assert os.lstat(d / "ln").st_mtime_ns == 1_600_000_000 * 10**9


@check("utimensat")
def utime_updates_ctime(d: Path) -> None:
    write(d / "f")
    before = times(d / "f")
    tick()
    os.utime(d / "f", ns=(1_600_000_000 * 10**9,) * 2)
    assert times(d / "f")[1] > before[1]


@check("utimensat")
def utime_explicit_by_other_user(d: Path) -> None:
    write(d / "f")
    os.chmod(d / "f", 0o666)
    fails(errno.EPERM, lambda: as_nobody(lambda: os.utime(d / "f", ns=(10**18, 10**18))))


@check("utimensat")
def utime_now_by_writer(d: Path) -> None:
    write(d / "f")
    os.chmod(d / "f", 0o666)
    as_nobody(lambda: os.utime(d / "f"))


@check("utimensat")
def utime_persists_with_content(d: Path) -> None:
    write(d / "f", b"content")
    os.utime(d / "f", ns=(1_600_000_000 * 10**9,) * 2)
    assert (d / "f").read_bytes() == b"content"
    assert os.stat(d / "f").st_mtime_ns == 1_600_000_000 * 10**9


# -- truncate --------------------------------------------------------------------------
@check("truncate")
def truncate_to_zero(d: Path) -> None:
    write(d / "f", b"123456")
    os.truncate(d / "f", 0)
    assert os.stat(d / "f").st_size == 0 and (d / "f").read_bytes() == b""


@check("truncate")
def truncate_shrink(d: Path) -> None:
    write(d / "f", b"123456")
    os.truncate(d / "f", 3)
    assert (d / "f").read_bytes() == b"123"


@check("truncate")
def truncate_grow(d: Path) -> None:
    write(d / "f", b"12")
    os.truncate(d / "f", 5)
    assert (d / "f").read_bytes() == b"12\0\0\0"


@check("truncate")
def truncate_same_size(d: Path) -> None:
    write(d / "f", b"123")
    os.truncate(d / "f", 3)
    assert (d / "f").read_bytes() == b"123"


@check("truncate")
def truncate_dir(d: Path) -> None:
    os.mkdir(d / "sub")
    fails(errno.EISDIR, lambda: os.truncate(d / "sub", 0))


@check("truncate")
def truncate_missing(d: Path) -> None:
    fails(errno.ENOENT, lambda: os.truncate(d / "nope", 0))


@check("truncate")
def truncate_negative(d: Path) -> None:
    write(d / "f")
    fails(errno.EINVAL, lambda: os.truncate(d / "f", -1))


@check("truncate")
def truncate_updates_times(d: Path) -> None:
    write(d / "f", b"123")
    before = times(d / "f")
    tick()
    os.truncate(d / "f", 0)
    after = times(d / "f")
    assert after[0] > before[0] and after[1] > before[1]


@check("truncate")
def truncate_unwritable_as_other_user(d: Path) -> None:
    write(d / "f", b"123")
    fails(errno.EACCES, lambda: as_nobody(lambda: os.truncate(d / "f", 0)))


# -- ftruncate -------------------------------------------------------------------------
def _ftruncate(path: Path, flags: int, size: int) -> None:
    fd = os.open(path, flags)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


@check("ftruncate")
def ftruncate_to_zero(d: Path) -> None:
    write(d / "f", b"123456")
    _ftruncate(d / "f", os.O_RDWR, 0)
    assert os.stat(d / "f").st_size == 0


@check("ftruncate")
def ftruncate_grow(d: Path) -> None:
    write(d / "f", b"12")
    _ftruncate(d / "f", os.O_RDWR, 4)
    assert (d / "f").read_bytes() == b"12\0\0"


@check("ftruncate")
def ftruncate_shrink_wronly(d: Path) -> None:
    write(d / "f", b"123456")
    _ftruncate(d / "f", os.O_WRONLY, 2)
    assert (d / "f").read_bytes() == b"12"


@check("ftruncate")
def ftruncate_negative(d: Path) -> None:
    write(d / "f")
    fails(errno.EINVAL, lambda: _ftruncate(d / "f", os.O_RDWR, -1))
    fails(errno.EINVAL, lambda: _ftruncate(d / "f", os.O_WRONLY, -1))


@check("ftruncate")
def ftruncate_readonly_fd(d: Path) -> None:
    write(d / "f")
    fails((errno.EINVAL, errno.EBADF), lambda: _ftruncate(d / "f", os.O_RDONLY, 0))


@check("ftruncate")
def ftruncate_new_file(d: Path) -> None:
    fd = os.open(d / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, b"after")
    finally:
        os.close(fd)
    assert (d / "f").read_bytes() == b"after"


@check("ftruncate")
def ftruncate_mode_zero_created(d: Path) -> None:
    fd = os.open(d / "f", os.O_CREAT | os.O_RDWR, 0)
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


@check("ftruncate")
def ftruncate_updates_ctime(d: Path) -> None:
    write(d / "f", b"123")
    before = times(d / "f")
    tick()
    _ftruncate(d / "f", os.O_RDWR, 0)
    assert times(d / "f")[1] > before[1]


# -- symlink ---------------------------------------------------------------------------
@check("symlink")
def symlink_readlink(d: Path) -> None:
    os.symlink("some/target", d / "ln")
    assert os.readlink(d / "ln") == "some/target"


@check("symlink")
def symlink_lstat(d: Path) -> None:
    os.symlink("some/target", d / "ln")
    st = os.lstat(d / "ln")
    assert stat.S_ISLNK(st.st_mode) and st.st_size == len("some/target")


@check("symlink")
def symlink_followed(d: Path) -> None:
    write(d / "f", b"through")
    os.symlink("f", d / "ln")
    assert (d / "ln").read_bytes() == b"through"


@check("symlink")
def symlink_existing(d: Path) -> None:
    write(d / "f")
    fails(errno.EEXIST, lambda: os.symlink("x", d / "f"))


@check("symlink")
def symlink_dangling(d: Path) -> None:
    os.symlink("nowhere", d / "ln")
    fails(errno.ENOENT, lambda: os.stat(d / "ln"))
    assert stat.S_ISLNK(os.lstat(d / "ln").st_mode)


@check("symlink")
def symlink_listed(d: Path) -> None:
    os.symlink("x", d / "ln")
    assert [(e.name, e.is_symlink()) for e in os.scandir(d)] == [("ln", True)]


@check("symlink")
def symlink_to_dir(d: Path) -> None:
    os.mkdir(d / "sub")
    write(d / "sub" / "f", b"in")
    os.symlink("sub", d / "ln")
    assert (d / "ln" / "f").read_bytes() == b"in"


@check("symlink")
def symlink_name_too_long(d: Path) -> None:
    fails(errno.ENAMETOOLONG, lambda: os.symlink("x", d / ("n" * 256)))


# -- driver ----------------------------------------------------------------------------
class _AllowOther:
    """Mount with allow_other so the unprivileged checks reach the mount."""

    def command(self, data: Dataset, target: Target, mnt: Path) -> tuple[list[str], dict[str, str]]:
        cmd, env = super().command(data, target, mnt)  # type: ignore[misc]
        extra = ["--allow-other"] if isinstance(self, Zonemount) else ["-o", "allow_other"]
        return [*cmd, *extra], env


class ZonemountPosix(_AllowOther, Zonemount):
    pass


class S3fsPosix(_AllowOther, S3fs):
    pass


CLIENTS: dict[str, type[FuseClient]] = {"zonemount": ZonemountPosix, "s3fs": S3fsPosix}


@contextlib.contextmanager
def mounted(client: FuseClient, bucket: str, target: Target, work: Path) -> Iterator[Path]:
    data = Dataset(bucket, [], [], "", [], 0, Path(os.devnull), 0)
    mnt = work / f"mnt-{client.name}"
    proc = client.mount(data, target, mnt)
    try:
        yield mnt
    finally:
        client.unmount(proc, mnt)


def run_checks(mnt: Path) -> dict[str, str]:
    """Run every check in its own directory; return name -> "" (pass) or why it failed."""
    results: dict[str, str] = {}
    for index, (_, name, fn) in enumerate(CHECKS):
        d = mnt / f"t{index:03d}-{name}"
        try:
            os.mkdir(d)
            os.chmod(d, 0o777)
            fn(d)
            results[name] = ""
        except (AssertionError, OSError) as exc:
            results[name] = f"{type(exc).__name__}: {exc}"[:160]
    return results


def table(all_results: dict[str, dict[str, str]]) -> str:
    names = list(all_results)
    categories = list(dict.fromkeys(category for category, _, _ in CHECKS))
    lines = [
        "| category | checks | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    totals = dict.fromkeys(names, 0)
    for category in categories:
        members = [name for cat, name, _ in CHECKS if cat == category]
        cells = []
        for client in names:
            passed = sum(1 for name in members if all_results[client].get(name) == "")
            totals[client] += passed
            cells.append(str(passed))
        lines.append(f"| {category} | {len(members)} | " + " | ".join(cells) + " |")
    lines.append(
        f"| **all** | {len(CHECKS)} | " + " | ".join(f"**{totals[c]}**" for c in names) + " |"
    )
    for client in names:
        failed = [(n, why) for n, why in all_results[client].items() if why]
        lines.append(f"\n{client} fails {len(failed)}:")
        lines.extend(f"- {name}: {why}" for name, why in failed)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.posix", description=__doc__)
    parser.add_argument("--clients", default="zonemount,s3fs", help="comma-separated")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.posix: run as root (the checks chown and drop to uid 65534)", file=sys.stderr)
        return 2
    chosen = [name.strip() for name in args.clients.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in CLIENTS]
    if unknown:
        print(f"bench.posix: unknown client(s) {unknown}: use {list(CLIENTS)}", file=sys.stderr)
        return 2
    server = start_moto()
    work = Path(tempfile.mkdtemp(prefix="zonemount-posix-"))
    work.chmod(0o755)  # the unprivileged checks must reach the mounts
    try:
        env = server.env()
        target = Target("loopback", server.endpoint, env)
        s3: Any = server.client()
        all_results: dict[str, dict[str, str]] = {}
        for name in chosen:
            client = CLIENTS[name]()
            reason = client.available()
            if reason:
                print(f"{name}: not available ({reason})", file=sys.stderr)
                continue
            bucket = f"posix-{name}-{uuid.uuid4().hex[:8]}"
            s3.create_bucket(Bucket=bucket)
            with mounted(client, bucket, target, work) as mnt:
                all_results[name] = run_checks(mnt)
        text = table(all_results)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
