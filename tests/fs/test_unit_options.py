"""``zonemount mount``'s part sizes: ``--part-size`` sets the upload part and the read chunk
(as mount-s3's), ``--write-part-size`` / ``--read-part-size`` set one each, and without any
of them uploads use 8 MiB parts and reads 16 MiB chunks (docs/performance.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from zonemount_fs.options import parse_args

pytestmark = pytest.mark.unit
MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("flags", "write", "read"),
    [
        ([], 8 * MiB, 16 * MiB),
        (["--part-size", str(5 * MiB)], 5 * MiB, 5 * MiB),
        (["--read-part-size", str(4 * MiB)], 8 * MiB, 4 * MiB),
        (["--write-part-size", str(32 * MiB)], 32 * MiB, 16 * MiB),
        (
            ["--part-size", str(6 * MiB), "--read-part-size", str(64 * MiB)],
            6 * MiB,
            64 * MiB,
        ),
        (
            ["--part-size", str(6 * MiB), "--write-part-size", str(10 * MiB)],
            10 * MiB,
            6 * MiB,
        ),
    ],
)
def test_part_sizes(tmp_path: Path, flags: list[str], write: int, read: int) -> None:
    opts = parse_args(["bucket-name", str(tmp_path), *flags])
    assert (opts.part_size, opts.read_chunk_size) == (write, read)
