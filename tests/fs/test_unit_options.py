"""``zonemount mount``'s part sizes: ``--part-size`` sets the upload part and the read chunk
(as mount-s3's), ``--write-part-size`` / ``--read-part-size`` set one each, and without any
of them uploads use 8 MiB parts and reads 16 MiB chunks (docs/performance.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from zonemount_fs.errors import ConfigError
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


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--read-part-size", "1000"],
            "--read-part-size 1000: expected an integer 1048576..268435456 bytes; leave it out "
            "for the default",
        ),
        (
            ["--write-part-size", "1000"],
            "--write-part-size 1000: expected an integer 5242880..5368709120 bytes (S3's part "
            "limits); leave it out for the default",
        ),
    ],
)
def test_part_sizes_out_of_range_say_so_in_one_line(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_args(["bucket-name", str(tmp_path), *flags])
    assert str(err.value) == message
