"""Where a bulk copy reads from and writes to: S3 prefixes and local directories, one shape.

The copy engine (:mod:`zonemount_operator.transfer`) sees only :class:`Source` and
:class:`Destination`; this module owns turning a command-line argument into one of them and
the naming rule that maps a source object to its destination name.

Naming (s5cmd's rules, written once here):

* Every listed object has a *relative name*: its key (or path, ``/``-separated) with the
  source's *base* removed. The destination name is the destination's base + relative name.
* ``s3://b/p/`` or a local directory: everything below it; base = that prefix/directory.
* ``s3://b/p/*.gz`` (wildcards ``*`` and ``?``, as s5cmd takes them): ``*`` matches any run of
  characters *including* ``/`` (so it recurses), ``?`` exactly one character; the base is the
  text up to the last ``/`` before the first wildcard. Local paths take the same wildcards.
* ``s3://b/p/key`` (no wildcard, no trailing ``/``): that one object if it exists, else the
  prefix ``p/key/``; a local file: that one file. A single object keeps its base name unless
  the destination names a file (no trailing ``/`` and, locally, not an existing directory).

Invariants: listings are streamed (a page or one directory at a time, never the whole
listing in memory) and come out in key order (S3's UTF-8 binary order; a local walk sorts each
directory with ``name + "/"`` for subdirectories, which is the same order), except that S3
Express directory buckets list unsorted. Local writes are atomic: data goes to a temporary file
in the target directory and is renamed into place on completion, then given the source's
modification time, so a ``sync`` back finds it up to date; a failed write leaves nothing.
Object bytes need not be held: :class:`FileRange` is a seekable upload body read from the file
in blocks, :meth:`S3Location.chunks` a download handed over ``STREAM_CHUNK`` at a time, and
local writes take either bytes or chunks.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from zonemount_operator import names
from zonemount_operator.errors import SpecError
from zonemount_operator.names import S3Url, parse_directory_bucket, parse_s3_url

WILDCARDS = "*?"
NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})


STREAM_CHUNK = 256 * 1024  # what a streamed GET hands over at a time


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def source_changed(what: str) -> Exception:
    """The error for a source object that is not what its listing said (a ClientError with
    code ``SourceChanged``, so the engine reports it like S3's PreconditionFailed)."""
    import botocore.exceptions

    return botocore.exceptions.ClientError(
        {"Error": {"Code": "SourceChanged", "Message": f"{what}: the source changed"}},
        "GetObject",
    )


class FileRange:
    """``length`` bytes of a local file from ``start``, as a seekable request body.

    botocore reads it in blocks to sign it and urllib3 in blocks to send it (and seeks back
    to retry), so an upload never holds the object or part in memory. The file must still be
    ``size`` bytes long when opened and must not end before the range does (else the source
    changed).
    """

    def __init__(self, path: Path, start: int, length: int, size: int) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        actual = os.fstat(self._fd).st_size
        if actual != size:
            os.close(self._fd)
            raise source_changed(f"{path}: listed {size} bytes, now {actual}")
        self._path, self._start, self._length, self._pos = path, start, length, 0

    def __len__(self) -> int:
        return self._length - self._pos

    def read(self, n: int | None = -1) -> bytes:
        left = self._length - self._pos
        n = left if n is None or n < 0 or n > left else n
        if n == 0:
            return b""
        data = os.pread(self._fd, n, self._start + self._pos)
        if not data:
            raise source_changed(f"{self._path}: ended at {self._start + self._pos}")
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._length}[whence]
        self._pos = max(0, min(self._length, base + offset))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileRange:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


RawEntry = tuple[str, int, str, float]  # key, size, ETag, modified (a listing row)


class SourceObject(NamedTuple):
    """One object to copy: ``key`` is its relative name (see the module docstring). A named
    tuple: one is built per listed object, and a frozen dataclass took 3x as long (~4 us)."""

    key: str
    size: int
    etag: str
    last_modified: float


def has_wildcard(text: str) -> bool:
    return any(c in text for c in WILDCARDS)


def wildcard_regex(pattern: str) -> re.Pattern[str]:
    """s5cmd's wildcards: ``*`` any run of characters (``/`` included), ``?`` one character."""
    out = []
    for char in pattern:
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out), re.DOTALL)


def split_wildcard(path: str) -> tuple[str, str, re.Pattern[str] | None]:
    """``a/b/c*d`` -> (base ``a/b/``, literal prefix ``a/b/c``, regex for the full name)."""
    first = min((path.index(c) for c in WILDCARDS if c in path), default=-1)
    if first < 0:
        return path, path, None
    literal = path[:first]
    base = literal[: literal.rfind("/") + 1]
    return base, literal, wildcard_regex(path)


def check_endpoint_url(url: str | None, flag: str = "--endpoint-url") -> None:
    """An endpoint must be ``http(s)://host[:port][/path]``; raises SpecError otherwise."""
    if url is not None:
        names.validate_endpoint_url(url, flag)


# -- S3 ----------------------------------------------------------------------------------------
class S3Location:
    """A bucket and the part of its key space a copy reads or writes.

    ``base`` is removed from listed keys to form relative names (and prepended on writes);
    ``list_prefix`` is what ListObjectsV2 is asked for; ``pattern`` (if any) filters full keys;
    ``single`` names one object (its relative name is its base name).
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        base: str,
        *,
        list_prefix: str | None = None,
        pattern: re.Pattern[str] | None = None,
        single: SourceObject | None = None,
        fast: Any = None,
    ) -> None:
        self.client = client
        self.fast = fast  # a fasts3.FastS3 for this endpoint, or None (botocore only)
        self.bucket = bucket
        self.base = base
        self.list_prefix = base if list_prefix is None else list_prefix
        self.pattern = pattern
        self.single = single

    kind = "s3"

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.base}"

    def describe(self, rel: str) -> str:
        return f"s3://{self.bucket}/{self.base}{rel}"

    @property
    def endpoint(self) -> str:
        return str(self.client.meta.endpoint_url)

    def key(self, rel: str) -> str:
        return self.base + rel

    @property
    def sorted_listing(self) -> bool:
        """General-purpose buckets list in key order; S3 Express directory buckets do not."""
        return parse_directory_bucket(self.bucket) is None

    def stat(self, rel: str) -> SourceObject | None:
        import botocore.exceptions

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(rel))
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in NOT_FOUND:
                return None
            raise
        return _from_head(rel, head)

    # reading
    def objects(self, pages: Iterator[list[RawEntry]] | None = None) -> Iterator[SourceObject]:
        """The listing, streamed page by page (``pages``: raw pages from another lister)."""
        if self.single is not None:
            yield self.single
            return
        cut = len(self.base)
        pattern = self.pattern
        for page in self._pages() if pages is None else pages:
            for key, size, etag, modified in page:
                if key.endswith("/") and size == 0 and key == self.base:
                    continue
                if pattern is not None and not pattern.fullmatch(key):
                    continue
                yield SourceObject(key[cut:], size, etag, modified)

    def _pages(self) -> Iterator[list[RawEntry]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.list_prefix):
            yield [
                (
                    item["Key"],
                    int(item["Size"]),
                    str(item.get("ETag", "")).strip('"'),
                    item["LastModified"].timestamp() if "LastModified" in item else 0.0,
                )
                for item in page.get("Contents", ())
            ]

    def read(
        self, rel: str, start: int | None = None, end: int | None = None, etag: str = ""
    ) -> bytes:
        """The object's bytes, or the inclusive range ``start..end``; ``etag``: If-Match."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(rel)}
        if etag:
            kwargs["IfMatch"] = f'"{etag}"'
        if start is not None and end is not None:
            kwargs["Range"] = f"bytes={start}-{end}"
        return bytes(self.client.get_object(**kwargs)["Body"].read())

    def chunks(
        self, rel: str, start: int | None = None, end: int | None = None, etag: str = ""
    ) -> Iterator[bytes]:
        """:meth:`read`, streamed: ``STREAM_CHUNK`` bytes at a time (the connection goes
        back to the pool once the body is exhausted or closed)."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(rel)}
        if etag:
            kwargs["IfMatch"] = f'"{etag}"'
        if start is not None and end is not None:
            kwargs["Range"] = f"bytes={start}-{end}"
        body = self.client.get_object(**kwargs)["Body"]
        try:
            yield from body.iter_chunks(STREAM_CHUNK)
        finally:
            body.close()

    # writing (``data``: bytes or a seekable body such as :class:`FileRange`)
    def put(self, rel: str, data: Any, src: SourceObject) -> None:
        del src
        self.client.put_object(Bucket=self.bucket, Key=self.key(rel), Body=data)

    def copy(self, rel: str, source: S3Location, src_rel: str, etag: str = "") -> None:
        self.client.copy_object(
            Bucket=self.bucket,
            Key=self.key(rel),
            CopySource={"Bucket": source.bucket, "Key": source.key(src_rel)},
            **({"CopySourceIfMatch": f'"{etag}"'} if etag else {}),
        )

    def begin(self, rel: str, src: SourceObject) -> Any:
        del src
        return self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key(rel))[
            "UploadId"
        ]

    def write_part(self, rel: str, upload: Any, number: int, offset: int, data: Any) -> Any:
        del offset
        resp = self.client.upload_part(
            Bucket=self.bucket, Key=self.key(rel), UploadId=upload, PartNumber=number, Body=data
        )
        return {"PartNumber": number, "ETag": resp["ETag"]}

    def copy_part(
        self,
        rel: str,
        upload: Any,
        number: int,
        source: S3Location,
        src_rel: str,
        rng: tuple[int, int],
        etag: str = "",
    ) -> Any:
        resp = self.client.upload_part_copy(
            Bucket=self.bucket,
            Key=self.key(rel),
            UploadId=upload,
            PartNumber=number,
            CopySource={"Bucket": source.bucket, "Key": source.key(src_rel)},
            CopySourceRange=f"bytes={rng[0]}-{rng[1]}",
            **({"CopySourceIfMatch": f'"{etag}"'} if etag else {}),
        )
        return {"PartNumber": number, "ETag": resp["CopyPartResult"]["ETag"]}

    def complete(self, rel: str, upload: Any, parts: list[Any], src: SourceObject) -> None:
        del src
        self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key(rel),
            UploadId=upload,
            MultipartUpload={"Parts": parts},
        )

    def abort(self, rel: str, upload: Any) -> None:
        self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key(rel), UploadId=upload)


# -- local -------------------------------------------------------------------------------------
def _walk_sorted(directory: str, rel: str) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, stat) of every regular file below ``directory``, in key order."""
    try:
        with os.scandir(directory) as it:
            entries = [(e.name + "/" if e.is_dir(follow_symlinks=True) else e.name, e) for e in it]
    except (FileNotFoundError, NotADirectoryError):
        return
    entries.sort(key=lambda pair: pair[0])
    for sort_name, entry in entries:
        if sort_name.endswith("/"):
            yield from _walk_sorted(entry.path, rel + sort_name)
            continue
        try:
            st = entry.stat(follow_symlinks=True)
        except FileNotFoundError:
            continue  # removed between listing and stat
        if stat.S_ISREG(st.st_mode):
            yield rel + entry.name, st


class LocalLocation:
    """A local directory (or one file) a copy reads or writes; names are ``/``-separated."""

    kind = "local"

    def __init__(
        self,
        root: Path,
        *,
        list_prefix: str = "",
        pattern: re.Pattern[str] | None = None,
        single: SourceObject | None = None,
    ) -> None:
        self.root = root
        self.list_prefix = list_prefix  # relative to root
        self.pattern = pattern  # matched against the path relative to root
        self.single = single

    def __str__(self) -> str:
        return str(self.root) + ("" if self.single else os.sep)

    def describe(self, rel: str) -> str:
        return str(self.path(rel))

    def path(self, rel: str) -> Path:
        if self.single is not None and rel == self.single.key:
            return self.root
        return self.root.joinpath(*rel.split("/")) if rel else self.root

    sorted_listing = True

    def stat(self, rel: str) -> SourceObject | None:
        try:
            st = os.stat(self.path(rel))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return SourceObject(rel, st.st_size, "", st.st_mtime) if stat.S_ISREG(st.st_mode) else None

    # reading
    def objects(self, pages: Iterator[list[RawEntry]] | None = None) -> Iterator[SourceObject]:
        del pages
        if self.single is not None:
            yield self.single
            return
        start_dir, _, _ = self.list_prefix.rpartition("/")
        top = os.path.join(self.root, *start_dir.split("/")) if start_dir else str(self.root)
        rel0 = start_dir + "/" if start_dir else ""
        for rel, st in _walk_sorted(top, rel0):
            if not rel.startswith(self.list_prefix):
                continue
            if self.pattern is not None and not self.pattern.fullmatch(rel):
                continue
            yield SourceObject(rel, st.st_size, "", st.st_mtime)

    def open_range(self, rel: str, start: int, length: int, size: int) -> FileRange:
        """``length`` bytes from ``start`` as a request body (see :class:`FileRange`)."""
        return FileRange(self.path(rel), start, length, size)

    def read(
        self, rel: str, start: int | None = None, end: int | None = None, etag: str = ""
    ) -> bytes:
        del etag  # local files have none; the engine compares sizes
        with open(self.path(rel), "rb") as handle:
            if start is None or end is None:
                return handle.read()
            return os.pread(handle.fileno(), end - start + 1, start)

    # writing: a temporary file renamed into place (atomic), mtime set to the source's
    def _temp(self, rel: str) -> Path:
        final = self.path(rel)
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_name(f".{final.name}.zm-{secrets.token_hex(4)}")

    def _publish(self, temp: Path, rel: str, src: SourceObject) -> None:
        if src.last_modified:
            os.utime(temp, (src.last_modified, src.last_modified))
        os.replace(temp, self.path(rel))

    def put(self, rel: str, data: bytes | Iterable[bytes], src: SourceObject) -> None:
        """Write the object (bytes, or chunks as they arrive) and publish it atomically."""
        temp = self._temp(rel)
        try:
            with open(temp, "wb") as handle:
                if isinstance(data, bytes | bytearray | memoryview):
                    handle.write(data)
                else:
                    for chunk in data:
                        handle.write(chunk)
            self._publish(temp, rel, src)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise

    def begin(self, rel: str, src: SourceObject) -> Any:
        temp = self._temp(rel)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            os.ftruncate(fd, src.size)
        finally:
            os.close(fd)
        return temp

    def write_part(
        self, rel: str, upload: Any, number: int, offset: int, data: bytes | Iterable[bytes]
    ) -> Any:
        """Write a part (bytes, or chunks as they arrive) at ``offset`` of the temporary file."""
        fd = os.open(upload, os.O_WRONLY)
        try:
            for chunk in [data] if isinstance(data, bytes | bytearray | memoryview) else data:
                view = memoryview(chunk)
                while view:
                    n = os.pwrite(fd, view, offset)
                    view, offset = view[n:], offset + n
        finally:
            os.close(fd)
        return number

    def complete(self, rel: str, upload: Any, parts: list[Any], src: SourceObject) -> None:
        del parts
        self._publish(Path(upload), rel, src)

    def abort(self, rel: str, upload: Any) -> None:
        with contextlib.suppress(OSError):
            Path(upload).unlink()


Location = S3Location | LocalLocation


# -- parsing arguments -------------------------------------------------------------------------
def is_s3(arg: str) -> bool:
    return arg.startswith("s3://")


def source_location(arg: str, client: Any | None) -> Location:
    """Turn a ``cp``/``sync`` SRC argument into a location (see the naming rules above)."""
    if is_s3(arg):
        url = parse_s3_url(arg, "SRC")
        return s3_source(client, url)
    return local_source(arg)


def s3_source(client: Any, url: S3Url) -> S3Location:
    if has_wildcard(url.bucket):
        raise SpecError(f"SRC s3://{url.bucket}/: wildcards are allowed in keys, not bucket names")
    if has_wildcard(url.prefix):
        base, literal, pattern = split_wildcard(url.prefix)
        return S3Location(client, url.bucket, base, list_prefix=literal, pattern=pattern)
    if url.prefix == "" or url.prefix.endswith("/"):
        return S3Location(client, url.bucket, url.prefix)
    import botocore.exceptions

    try:
        head = client.head_object(Bucket=url.bucket, Key=url.prefix)
    except botocore.exceptions.ClientError as exc:
        if _code(exc) not in NOT_FOUND:
            raise
        return S3Location(client, url.bucket, url.prefix + "/")
    base = url.prefix[: url.prefix.rfind("/") + 1]
    single = _from_head(url.prefix[len(base) :], head)
    return S3Location(client, url.bucket, base, single=single)


def _from_head(rel: str, head: dict[str, Any]) -> SourceObject:
    return SourceObject(
        rel,
        int(head["ContentLength"]),
        str(head.get("ETag", "")).strip('"'),
        head["LastModified"].timestamp() if "LastModified" in head else 0.0,
    )


def local_source(arg: str) -> LocalLocation:
    if has_wildcard(arg):
        base, literal, _ = split_wildcard(arg)
        root = Path(base or ".")
        if not root.is_dir():
            raise SpecError(f"SRC {arg!r}: directory {str(root)!r} does not exist")
        rel_pattern = wildcard_regex(arg[len(base) :])
        return LocalLocation(root, list_prefix=literal[len(base) :], pattern=rel_pattern)
    path = Path(arg)
    if path.is_dir():
        return LocalLocation(path)
    if path.is_file():
        st = path.stat()
        return LocalLocation(path, single=SourceObject(path.name, st.st_size, "", st.st_mtime))
    raise SpecError(f"SRC {arg!r} does not exist: name a file, a directory or s3://bucket/prefix/")


def destination_location(arg: str, client: Any | None, source: Location) -> Location:
    """Turn DST into a location; a single-object source may name the destination file."""
    single = source.single
    if is_s3(arg):
        url = parse_s3_url(arg, "DST")
        if has_wildcard(url.prefix):
            raise SpecError(f"DST {arg!r}: wildcards are allowed only in SRC")
        if single is not None and url.prefix and not url.prefix.endswith("/"):
            base = url.prefix[: url.prefix.rfind("/") + 1]
            name = url.prefix[len(base) :]
            return _renamed(S3Location(client, url.bucket, base), single, name)
        prefix = url.prefix if not url.prefix or url.prefix.endswith("/") else url.prefix + "/"
        return S3Location(client, url.bucket, prefix)
    if has_wildcard(arg):
        raise SpecError(f"DST {arg!r}: wildcards are allowed only in SRC")
    path = Path(arg)
    if single is not None and not arg.endswith(("/", os.sep)) and not path.is_dir():
        return LocalLocation(path, single=SourceObject(single.key, 0, "", 0.0))
    if path.exists() and not path.is_dir():
        raise SpecError(f"DST {arg!r} is a file: name a directory for more than one object")
    return LocalLocation(path)


def _renamed(dst: S3Location, single: SourceObject, name: str) -> S3Location:
    """A destination whose one object (``single.key``) is written under ``name``."""
    return _RenamedS3(dst.client, dst.bucket, dst.base, single.key, name)


class _RenamedS3(S3Location):
    def __init__(self, client: Any, bucket: str, base: str, src_name: str, name: str) -> None:
        super().__init__(client, bucket, base, single=SourceObject(src_name, 0, "", 0.0))
        self._src_name = src_name
        self._name = name

    def key(self, rel: str) -> str:
        return self.base + (self._name if rel == self._src_name else rel)

    def describe(self, rel: str) -> str:
        return f"s3://{self.bucket}/{self.key(rel)}"
