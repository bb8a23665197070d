"""The one reader of ListObjectsV2 pages of zonemount's lean S3 paths.

Both lean paths read their listings here: the FUSE client's fast path
(:mod:`zonemount_fs.store.fastpath`) and the bulk copy engine's (:mod:`zonemount_operator.fasts3`).
:func:`parse_list` reads a page flat (a few C-level scans per page instead of an element tree)
when it has the plain shape S3 servers write, and by ElementTree otherwise; both readers give the
same result for every document the flat one takes (tests/fs/test_unit_listparse.py). Keys are
URL-decoded as botocore decodes them (``encoding-type=url``: ``unquote_plus``).

Invariants: standard library only (this package's rule), no I/O; a document that is not well
formed raises ElementTree's ``ParseError``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote_plus

_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@dataclass(frozen=True, slots=True)
class Listed:
    """One ListObjectsV2 page: (key, size, etag, LastModified text, storage class) per object."""

    objects: list[tuple[str, int, str, str | None, str | None]]
    prefixes: list[str]
    next_token: str | None


def parse_list(data: bytes) -> Listed:
    """A ListObjectsV2 document (requested with ``encoding-type=url``; decoded as botocore
    does, with ``unquote_plus``): read flat (:func:`_parse_list_flat`) when the document has
    the plain shape every S3 server sends, else with ElementTree (which also raises on a
    document that is not well formed)."""
    listed = _parse_list_flat(data)
    return listed if listed is not None else _parse_list_tree(data)


def _parse_list_tree(data: bytes) -> Listed:
    root = ET.fromstring(data)  # noqa: S314 - the S3 endpoint the user named
    encoded = (root.findtext(f"{_NS}EncodingType") or "").lower() == "url"

    def name(text: str | None) -> str:
        return unquote_plus(text or "") if encoded else (text or "")

    objects = []
    for item in root.iterfind(f"{_NS}Contents"):
        size = item.findtext(f"{_NS}Size")
        objects.append(
            (
                name(item.findtext(f"{_NS}Key")),
                int(size) if size else 0,
                item.findtext(f"{_NS}ETag") or "",
                item.findtext(f"{_NS}LastModified"),
                item.findtext(f"{_NS}StorageClass"),
            )
        )
    prefixes = [
        name(item.findtext(f"{_NS}Prefix")) for item in root.iterfind(f"{_NS}CommonPrefixes")
    ]
    truncated = (root.findtext(f"{_NS}IsTruncated") or "false").lower() == "true"
    token = root.findtext(f"{_NS}NextContinuationToken") if truncated else None
    return Listed(objects, prefixes, token or None)


# -- the flat reader of ListObjectsV2 pages ------------------------------------------------
# Why: ElementTree builds an object per element (six per listed key) and reading them back is
# Python work per field: 40% of the FUSE server's instructions in a warm `ls -l` of 10,000
# keys. Here a page is a handful of C-level scans: one findall matches every <Contents> (its
# children in any order; other leaves and one level of containers such as <Owner> skipped) and
# captures the five fields read. Each of those fields must occur once per <Contents> - the
# counts and the absence of empty captures prove it, as a regex cannot - else the page, like
# anything else it does not read (attributes, comments, CDATA, processing instructions, a
# carriage return a parser would normalize, an unknown reference, indentation, a truncated
# document, another encoding or namespace), is left to ElementTree.
_ROOT = f'<ListBucketResult xmlns="{_NS[1:-1]}">'
_LEAF = r"<[A-Za-z]+>[^<]*</[A-Za-z]+>"
_CONTENTS = re.compile(
    r"<Contents>(?:<Key>([^<]*)</Key>|<Size>([^<]*)</Size>|<ETag>([^<]*)</ETag>"
    r"|<LastModified>([^<]*)</LastModified>|<StorageClass>([^<]*)</StorageClass>"
    rf"|{_LEAF}|<([A-Za-z]+)>(?:{_LEAF})*</\6>)*</Contents>"
)
_PREFIX = re.compile(r"<CommonPrefixes><Prefix>([^<]*)</Prefix></CommonPrefixes>")
_REFERENCE = re.compile(r"&(?:#([0-9]+)|#x([0-9a-fA-F]+)|(amp|lt|gt|quot|apos));")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


class _Unreadable(Exception):
    """Not a document the flat reader reads: ElementTree's turn."""


def _parse_list_flat(data: bytes) -> Listed | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    body = text.strip()
    if body.startswith("<?xml"):
        declaration, _, body = body.partition("?>")
        if "encoding" in declaration and not re.search(r"encoding=[\"']utf-8", declaration, re.I):
            return None
        body = body.lstrip()
    if not body.startswith(_ROOT) or not body.endswith("</ListBucketResult>"):
        return None
    body = body[len(_ROOT) :]
    if "<!" in body or "<?" in body or "\r" in body:
        return None
    try:
        encoded = (_top(body, "EncodingType") or "").lower() == "url"
        objects = _contents(body, encoded)
        prefixes = _PREFIX.findall(body) if "<CommonPrefixes" in body else []
        if len(prefixes) != body.count("<CommonPrefixes"):
            return None
        names = _texts(prefixes, encoded)
        truncated = (_top(body, "IsTruncated") or "false").lower() == "true"
        token = _top(body, "NextContinuationToken") if truncated else None
        token = _texts([token], False)[0] if token else None
    except _Unreadable:
        return None
    return Listed(objects, names, token)


def _top(body: str, tag: str) -> str | None:
    """The (raw) text of the one ``<tag>`` element of ``body``, None if there is none."""
    count = body.count(f"<{tag}")
    if not count:
        return None
    start = body.find(f"<{tag}>") + len(tag) + 2
    end = body.find("<", start)
    if count > 1 or start < len(tag) + 2 or not body.startswith(f"</{tag}>", end):
        raise _Unreadable(tag)  # several, with attributes, or not a leaf
    return body[start:end]


def _contents(body: str, encoded: bool) -> list[tuple[str, int, str, str | None, str | None]]:
    """Every <Contents> of ``body`` as (key, size, etag, LastModified, storage class), keys
    URL-decoded if ``encoded``; :class:`_Unreadable` unless each has each field once (the
    storage class once in all or in none)."""
    count = body.count("<Contents>")
    if body.count("<Contents") != count:
        raise _Unreadable("Contents")
    if not count:
        return []
    rows = _CONTENTS.findall(body)
    if len(rows) != count:
        raise _Unreadable("Contents")
    keys, sizes, etags, modified, storage, _ = zip(*rows, strict=True)
    classes = body.count("<StorageClass>")
    for field, values in (
        ("Key", keys),
        ("Size", sizes),
        ("ETag", etags),
        ("LastModified", modified),
    ):
        if body.count(f"<{field}>") != count or "" in values:
            raise _Unreadable(field)  # missing, twice, or empty somewhere (ElementTree's turn)
    if classes not in (0, count) or (classes and "" in storage):
        raise _Unreadable("StorageClass")
    try:
        numbers = list(map(int, sizes))
    except ValueError:
        raise _Unreadable("Size") from None  # ElementTree's reader raises the same
    return list(
        zip(
            _texts(keys, encoded),
            numbers,
            _texts(etags, False),
            _texts(modified, False),
            _texts(storage, False) if classes else [None] * count,
            strict=True,
        )
    )


def _texts(values: Sequence[str], encoded: bool) -> list[str]:
    """Character data as text: references resolved (all values at once: joined by NUL, which
    XML cannot hold), then URL-decoded if ``encoded``; :class:`_Unreadable` for a reference
    XML does not define."""
    joined = "\0".join(values)
    if "&" in joined:
        joined = joined.replace("&quot;", '"').replace("&#34;", '"')  # ETags: the usual case
        if "&" in joined:
            if joined.count("&") != len(_REFERENCE.findall(joined)):
                raise _Unreadable("reference")
            joined = _REFERENCE.sub(_resolve, joined)
    texts = joined.split("\0") if values else []
    if encoded and ("%" in joined or "+" in joined):
        return [unquote_plus(t) if "%" in t or "+" in t else t for t in texts]
    return texts


def _resolve(match: re.Match[str]) -> str:
    decimal, hexadecimal, name = match.groups()
    if name:
        return _ENTITIES[name]
    code = int(decimal) if decimal else int(hexadecimal, 16)
    if (
        code in (0x9, 0xA, 0xD)
        or 0x20 <= code <= 0xD7FF
        or (0xE000 <= code <= 0x10FFFF and code not in (0xFFFE, 0xFFFF))
    ):
        return chr(code)
    raise _Unreadable(f"&#{code}; is not an XML character")
