"""``zonemount mount``'s part sizes: ``--part-size`` sets the upload part and the read chunk
(as mount-s3's), ``--write-part-size`` / ``--read-part-size`` set one each, and without any
of them uploads use 8 MiB parts and reads 16 MiB chunks (docs/performance.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from zonemount_contract import mount_options as table
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


# ---------------------------------------------------------------- R-FLAGS-MEMORY-TARGET


@pytest.mark.parametrize(
    ("flags", "write", "read", "in_flight", "warned"),
    [
        # the defaults fit the default target: nothing changes, nothing is said
        ([], 8 * MiB, 16 * MiB, 4, 0),
        (["--read-part-size", str(128 * MiB)], 8 * MiB, 128 * MiB, 4, 0),
        # a tenant's 256 MiB read parts: a quarter of the 512 MiB target
        (["--read-part-size", str(256 * MiB)], 8 * MiB, 128 * MiB, 4, 1),
        # --part-size alone set 5 GiB read chunks (MAX_READ_PART_SIZE did not apply to it)
        (["--part-size", str(5 * 1024 * MiB)], 128 * MiB, 128 * MiB, 1, 3),
        # bigger write parts: fewer in flight, so one file's buffer stays within half
        (["--write-part-size", str(64 * MiB)], 64 * MiB, 16 * MiB, 3, 1),
        (["--write-part-size", str(64 * MiB), "--max-memory-target", "1024"], 64 * MiB,
         16 * MiB, 4, 0),
        # a small target cuts the defaults too, never below S3's minimum part
        (["--max-memory-target", "32"], 8 * MiB, 8 * MiB, 1, 2),
        (["--max-memory-target", "8"], 5 * MiB, 2 * MiB, 1, 3),
    ],
)  # fmt: skip
def test_part_sizes_fit_the_memory_target(
    tmp_path: Path, flags: list[str], write: int, read: int, in_flight: int, warned: int
) -> None:
    """R-FLAGS-MEMORY-TARGET (unit): the part sizes and the uploads in flight per file are cut
    to fit ``--max-memory-target`` - a read chunk at most a quarter of it, one file's upload
    buffer at most half - and every change is a warning line naming the fix."""
    opts = parse_args(["bucket-name", str(tmp_path), *flags])
    assert (opts.part_size, opts.read_chunk_size) == (write, read)
    assert opts.uploads_in_flight == in_flight
    assert len(opts.memory_warnings) == warned, opts.memory_warnings
    for warning in opts.memory_warnings:
        assert "\n" not in warning and "--max-memory-target" in warning
    budget = opts.max_memory_mib * MiB
    if budget >= 32 * MiB:  # above S3's minimum parts the rule holds exactly
        assert 4 * opts.read_chunk_size <= budget
        assert (opts.uploads_in_flight + 1) * opts.part_size <= budget // 2


def test_the_memory_fit_is_the_option_tables_rule() -> None:
    """One rule: the FUSE client's options are what the table's fit_memory says (the CSI node
    plugin calls the same function for a PV's options)."""
    fit = table.fit_memory(512, 256 * MiB, 256 * MiB)
    assert (fit.read_part_size, fit.write_part_size, fit.uploads_in_flight) == (
        128 * MiB,
        128 * MiB,
        1,
    )
    assert fit.warnings[0] == (
        "read part size 268435456 (256 MiB) does not fit --max-memory-target 512 MiB (4 read "
        "chunks at least): reads use 134217728-byte (128 MiB) parts; raise "
        "--max-memory-target to 1024 MiB or lower the read part size"
    )


def test_part_sizes_one_precedence_for_the_mount_and_the_node_plugin(tmp_path: Path) -> None:
    """``--read-part-size``/``--write-part-size`` first, then ``--part-size``, then the
    defaults: the FUSE client's flags and the CSI node's reading of a PV's options agree."""
    mib = 1024 * 1024
    cases = [
        ([], (16 * mib, 8 * mib)),
        ([f"--part-size={32 * mib}"], (32 * mib, 32 * mib)),
        ([f"--part-size={32 * mib}", f"--read-part-size={4 * mib}"], (4 * mib, 32 * mib)),
        ([f"--write-part-size={16 * mib}"], (16 * mib, 16 * mib)),
    ]
    for args, (read, write) in cases:
        fit = table.fit_memory_args(args, 4096)
        assert (fit.read_part_size, fit.write_part_size) == (read, write), args
        opts = parse_args(["bucket-name", str(tmp_path), *(w for a in args for w in a.split("="))])
        assert (opts.read_part_size, opts.part_size) == (read, write), args
