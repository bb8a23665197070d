"""The S3 store's fast timestamp parser answers as botocore's own for every form S3 sends."""

from __future__ import annotations

import botocore.utils
import pytest
from zonemount_fs.store.s3 import parse_timestamp

FORMS = [
    "2026-12-03T15:46:52.000Z",  # ListObjectsV2 LastModified
    "2026-12-03T15:46:52Z",
    "2026-12-03T15:46:52.123456Z",
    "2026-12-03T15:46:52+02:00",
    "2026-12-03T15:46:52",  # no zone: botocore reads UTC
    "Thu, 03 Dec 2026 15:46:52 GMT",  # HEAD's Last-Modified header
    "1764776812",  # epoch seconds
    "1764776812.5",
]


@pytest.mark.parametrize("value", FORMS)
def test_same_instant_as_botocore(value: str) -> None:
    ours, theirs = parse_timestamp(value), botocore.utils.parse_timestamp(value)
    assert ours.tzinfo is not None
    assert ours.timestamp() == theirs.timestamp()


def test_garbage_is_refused_as_botocore_does() -> None:
    with pytest.raises(ValueError):
        botocore.utils.parse_timestamp("not a time")
    with pytest.raises(ValueError):
        parse_timestamp("not a time")
