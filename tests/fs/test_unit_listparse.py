"""The flat reader of ListObjectsV2 pages (s3list._parse_list_flat) against ElementTree's.

Every document here is read by both: where the flat reader takes a document it must give
exactly what ElementTree's reader gives; the documents it must leave to ElementTree (shapes it
does not read, and broken ones) are checked to be left (None), and ``parse_list`` still reads
them. The real servers' pages go through both readers in the contract suite
(test_store_contract.py: odd keys, many pages, on SeaweedFS and moto).
"""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from urllib.parse import quote_plus
from xml.sax.saxutils import escape

import pytest
from zonemount_contract.s3list import _parse_list_flat, _parse_list_tree, parse_list

pytestmark = pytest.mark.unit

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
# the children of <Contents> in the order each server writes them
AWS = ("Key", "LastModified", "ETag", "ChecksumAlgorithm", "Size", "Owner", "StorageClass")
SEAWEEDFS = ("Key", "ETag", "Size", "StorageClass", "LastModified")
MOTO = ("Key", "LastModified", "ETag", "Size", "StorageClass")


def contents(key: str, order: tuple[str, ...], size: int = 7, *, encoded: bool = False) -> str:
    values = {
        "Key": escape(quote_plus(key, safe="/") if encoded else key),
        "LastModified": "2026-12-03T22:35:20.000Z",
        "ETag": "&quot;aed563ecafb4bcc5654c597a421547b2&quot;",
        "ChecksumAlgorithm": "CRC32",
        "Size": str(size),
        "StorageClass": "STANDARD",
    }
    parts = []
    for field in order:
        if field == "Owner":
            parts.append("<Owner><ID>abc</ID><DisplayName>me</DisplayName></Owner>")
        else:
            parts.append(f"<{field}>{values[field]}</{field}>")
    return "<Contents>" + "".join(parts) + "</Contents>"


def document(
    items: list[str],
    prefixes: list[str] = (),  # type: ignore[assignment]
    *,
    token: str | None = None,
    encoded: bool = False,
    head: str = '<?xml version="1.0" encoding="UTF-8"?>\n',
) -> bytes:
    common = "".join(
        f"<CommonPrefixes><Prefix>{escape(quote_plus(p, safe='/') if encoded else p)}</Prefix>"
        "</CommonPrefixes>"
        for p in prefixes
    )
    more = f"<NextContinuationToken>{escape(token)}</NextContinuationToken>" if token else ""
    encoding = "<EncodingType>url</EncodingType>" if encoded else ""
    return (
        f'{head}<ListBucketResult xmlns="{NS}"><Name>b</Name><Prefix>d/</Prefix>'
        f"<KeyCount>{len(items)}</KeyCount><MaxKeys>1000</MaxKeys><Delimiter>/</Delimiter>"
        f"<IsTruncated>{'true' if token else 'false'}</IsTruncated>{more}{encoding}"
        f"{''.join(items)}{common}</ListBucketResult>"
    ).encode()


ODD = [
    "d/plain.txt",
    "d/a&b<c>'\"d.txt",
    "d/ünïcødé ☃.txt",
    "d/plus+sign and space",
    "d/percent%20literal%zz",
    "d/tab\there",
    "d/new\nline",
    "d/ends with space ",
]


@pytest.mark.parametrize("order", [AWS, SEAWEEDFS, MOTO], ids=["aws", "seaweedfs", "moto"])
@pytest.mark.parametrize("encoded", [True, False], ids=["url", "raw"])
def test_server_shapes_are_read_flat_as_elementtree_reads_them(
    order: tuple[str, ...], encoded: bool
) -> None:
    items = [contents(k, order, size=i, encoded=encoded) for i, k in enumerate(ODD)]
    data = document(items, ["d/sub dir/", "d/x&y/"], token="1/ab&c==", encoded=encoded)
    flat = _parse_list_flat(data)
    assert flat is not None, "a page as this server writes it must be read flat"
    assert flat == _parse_list_tree(data)
    assert [o[0] for o in flat.objects] == ODD
    assert flat.prefixes == ["d/sub dir/", "d/x&y/"]
    assert flat.next_token == "1/ab&c=="
    assert flat.objects[1][1:] == (
        1,
        '"aed563ecafb4bcc5654c597a421547b2"',
        "2026-12-03T22:35:20.000Z",
        "STANDARD",
    )


def test_random_pages_match_elementtree() -> None:
    rng = random.Random(14)
    alphabet = "ab/ .+%&<>'\"\t\n~*()=é☃" + "\U0001f600"
    for _ in range(200):
        shapes = [AWS, SEAWEEDFS, MOTO] if rng.random() < 0.5 else [rng.choice([AWS, MOTO])]
        encoded = rng.random() < 0.5
        keys = ["d/" + "".join(rng.choices(alphabet, k=rng.randint(1, 12))) for _ in range(20)]
        items = [
            contents(k, rng.choice(shapes), size=rng.randint(0, 10**12), encoded=encoded)
            for k in keys
        ]
        data = document(items, ["d/p/"] if rng.random() < 0.5 else [], encoded=encoded)
        flat = _parse_list_flat(data)
        assert flat is not None
        assert flat == _parse_list_tree(data)


def test_mixed_shapes_are_read_flat() -> None:
    """AWS writes <ChecksumAlgorithm> only for objects uploaded with one, and <Owner> or
    <RestoreStatus> for some: the children of one page's <Contents> differ."""
    restored = "<RestoreStatus><IsRestoreInProgress>false</IsRestoreInProgress></RestoreStatus>"
    items = [
        contents("d/a", AWS),
        contents("d/b", MOTO),
        contents("d/c", SEAWEEDFS).replace("</Contents>", restored + "</Contents>"),
    ]
    data = document(items)
    flat = _parse_list_flat(data)
    assert flat is not None and flat == _parse_list_tree(data)
    assert [o[0] for o in flat.objects] == ["d/a", "d/b", "d/c"]


def test_character_references_are_resolved() -> None:
    item = (
        "<Contents><Key>d/&#x263A;&#9731;&amp;&lt;&gt;&apos;&quot;</Key>"
        "<ETag>&#34;e&#34;</ETag><Size>1</Size><LastModified>t</LastModified></Contents>"
    )
    data = document([item])
    flat = _parse_list_flat(data)
    assert flat is not None and flat == _parse_list_tree(data)
    assert flat.objects == [("d/☺☃&<>'\"", 1, '"e"', "t", None)]


def test_empty_page() -> None:
    data = document([])
    assert _parse_list_flat(data) == _parse_list_tree(data)
    assert parse_list(data).objects == []


LEFT_TO_ELEMENTTREE = {
    "indented": document([contents("d/a", MOTO)]).replace(b"<Key>", b"\n  <Key>"),
    "comment": document([contents("d/a", MOTO)]).replace(b"<Name>", b"<!-- x --><Name>"),
    "cdata key": document([contents("d/a", MOTO).replace("d/a", "<![CDATA[d/a<b]]>")]),
    "attribute on a field": document([contents("d/a", MOTO)]).replace(
        b"<Size>", b'<Size unit="B">'
    ),
    "attribute on IsTruncated": document([]).replace(b"<IsTruncated>", b'<IsTruncated a="1">'),
    "a field twice": document(["<Contents><Key>d/a</Key><Key>d/b</Key><ETag>e</ETag></Contents>"]),
    "a field missing in one": document(
        [contents("d/a", MOTO), contents("d/b", MOTO).replace("<Size>7</Size>", "")]
    ),
    "twice in one, missing in another": document(
        [
            contents("d/a", MOTO).replace("<Size>7</Size>", "<Size>7</Size><Size>8</Size>"),
            contents("d/b", MOTO).replace("<Size>7</Size>", ""),
        ]
    ),
    "storage class in some": document([contents("d/a", MOTO), contents("d/b", ("Key", "Size"))]),
    "nested two levels": document(
        [contents("d/a", MOTO).replace("</Contents>", "<A><B><C>x</C></B></A></Contents>")]
    ),
    "a field nested in a container": document(
        [contents("d/a", MOTO).replace("</Contents>", "<A><Key>x</Key></A></Contents>")]
    ),
    "no namespace": document([contents("d/a", MOTO)]).replace(f' xmlns="{NS}"'.encode(), b""),
    "carriage return": document([contents("d/a\r", MOTO)]),
    "latin-1 declared": document(
        [contents("d/a", MOTO)], head='<?xml version="1.0" encoding="ISO-8859-1"?>'
    ),
    "empty LastModified": document([contents("d/a", MOTO)]).replace(
        b"2026-12-03T22:35:20.000Z", b""
    ),
}


@pytest.mark.parametrize("name", sorted(LEFT_TO_ELEMENTTREE))
def test_other_shapes_are_left_to_elementtree(name: str) -> None:
    data = LEFT_TO_ELEMENTTREE[name]
    assert _parse_list_flat(data) is None
    assert parse_list(data) == _parse_list_tree(data)


BROKEN = {
    "truncated": document([contents("d/a", MOTO)])[:-30],
    "unknown entity": document([contents("d/a", MOTO).replace("d/a", "d/&nbsp;")]),
    "bare ampersand": document([contents("d/a", MOTO).replace("d/a", "d/a&b")]),
    "NUL reference": document([contents("d/a", MOTO).replace("d/a", "d/&#0;")]),
    "size not a number": document([contents("d/a", MOTO).replace("<Size>7<", "<Size>x<")]),
    "not UTF-8": document([contents("d/a", MOTO)]).replace(b"d/a", b"d/\xff"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_documents_still_fail_as_before(name: str) -> None:
    """What ElementTree refuses, parse_list refuses: the flat reader leaves it alone."""
    data = BROKEN[name]
    assert _parse_list_flat(data) is None
    with pytest.raises((ET.ParseError, ValueError)):
        _parse_list_tree(data)
    with pytest.raises((ET.ParseError, ValueError)):
        parse_list(data)
