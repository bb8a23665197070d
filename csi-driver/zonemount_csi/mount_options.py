"""PV ``mountOptions`` as a typed value object, parsed through an allow-list.

What a PersistentVolume author may ask of the FUSE client is exactly the set of options in
:data:`ALLOWED` (after mountpoint-s3-csi-driver ``pkg/mountpoint/args.go``), generated from the
one option table :mod:`zonemount_contract.mount_options` (which also makes the FUSE client's
flags and the operator's typed options). Everything else is refused with
:class:`MountOptionError` (the node answers INVALID_ARGUMENT) and never reaches a process:

* anything that redirects data, files or credentials - ``--endpoint-url`` (the volume context's
  ``endpointUrl`` goes through the node's endpoint allow-list instead), ``--cache``,
  ``--max-cache-size``, ``--log-directory``, ``--profile``, ``--metrics-address``;
* ``--debug``: the S3 client's debug log can hold request signatures and session tokens (the
  node plugin's ``--fuse-debug`` turns it on for every volume, an admin decision);
* options the volume context or the driver own - ``--prefix``, ``--region``, ``-f``,
  ``--foreground``, ``--auto-unmount``;
* ``--max-memory-target`` (the node plugin gives every mount its own, ``csi-node
  --max-memory-target``; a volume's part sizes are fitted into it by the table's
  :func:`~zonemount_contract.mount_options.fit_memory`);
* ``-o`` and every other single-dash form, commas (one option per list entry), unknown names,
  control characters, values outside their type's range, and an option given twice.

Accepted spellings per entry: ``name``, ``--name``, ``name=value``, ``--name=value`` and
``--name value``. Invariant: :meth:`MountOptions.to_argv` is a pure function of the typed
fields, so two publishes with the same options produce byte-identical argv (idempotency is
decided on it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace

from zonemount_contract import mount_options as table


class MountOptionError(ValueError):
    """A mount option was refused; the message names it and says what to do instead."""


_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
_VALUE_RE = re.compile(r"^[A-Za-z0-9:/._+-]{1,256}$")

#: Refused options and why (the reason is part of the error message): from the one table.
REFUSED: dict[str, str] = table.REFUSED


def _parser(option: table.Option) -> Callable[[str | None], object]:
    """The table's allow-list check, converted to the type of the MountOptions field."""

    def parse(value: str | None) -> object:
        if not option.takes_value:
            return True
        text = table.check_value(option, value or "")
        if option.kind == "int":
            return int(text)
        if option.kind == "mode":
            return int(text, 8)
        return text

    return parse


# option name -> (field name, parser, takes a value), generated from the one table
ALLOWED: dict[str, tuple[str, Callable[[str | None], object], bool]] = {
    o.name: (o.field, _parser(o), o.takes_value) for o in table.ALLOWED
}


@dataclass(frozen=True)
class MountOptions:
    """The FUSE client options of one volume; every field is validated by :func:`parse`."""

    read_only: bool = False
    allow_delete: bool = False
    allow_overwrite: bool = False
    incremental_upload: bool = False
    force_path_style: bool = False
    allow_other: bool = False
    allow_root: bool = False
    no_sign_request: bool = False
    uid: int | None = None
    gid: int | None = None
    dir_mode: int | None = None
    file_mode: int | None = None
    metadata_ttl: str | None = None
    negative_metadata_ttl: int | None = None
    part_size: int | None = None
    read_part_size: int | None = None
    write_part_size: int | None = None
    max_threads: int | None = None
    storage_class: str | None = None
    sse: str | None = None
    sse_kms_key_id: str | None = None

    def check_combination(self, *, directory_bucket: bool | None) -> None:
        """The table's rules across options (MountOptionError); the bucket kind when known."""
        given: dict[str, str | None] = {}
        for arg in self.to_argv():
            name, _, value = arg[2:].partition("=")
            given[name] = value or None
        try:
            table.check_combination(given, directory_bucket=directory_bucket)
        except table.OptionValueError as exc:
            raise MountOptionError(f"mount options: {exc}") from None

    def with_read_only(self) -> MountOptions:
        """``--read-only`` wins over everything (CSI ``readonly`` or a reader-only access mode)."""
        return replace(self, read_only=True)

    def to_argv(self) -> list[str]:
        """The options as ``zonemount mount`` arguments, in a fixed order.

        Values are always attached (``--uid=1000``), so no value can ever be parsed as a flag.
        """
        by_field = {spec[0]: (name, spec[2]) for name, spec in ALLOWED.items()}
        argv: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            name, takes_value = by_field[f.name]
            if not takes_value:
                if value:
                    argv.append(f"--{name}")
            elif value is not None:
                text = format(value, "04o") if f.name in {"dir_mode", "file_mode"} else str(value)
                argv.append(f"--{name}={text}")
        return argv


def _split(raw: str) -> tuple[str, str | None]:
    """One list entry -> (name, value); refuses the syntax we do not accept."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in raw):
        raise MountOptionError("mount option contains a control character: remove it")
    entry = raw.strip()
    if "," in entry:
        raise MountOptionError(
            f"mount option {entry!r} contains a comma: give one option per mountOptions entry"
        )
    if entry.startswith("-") and not entry.startswith("--"):
        raise MountOptionError(
            f"mount option {entry!r} is refused: single-dash options (such as -o) are not "
            "accepted; give each allowed option as its own entry, e.g. allow-delete or uid=1000"
        )
    body = entry[2:] if entry.startswith("--") else entry
    name, value = body, None
    for sep in ("=", " "):
        if sep in body:
            name, value = body.split(sep, 1)
            value = value.strip()
            break
    return name.strip(), value


def parse(flags: Iterable[str]) -> MountOptions:
    """Parse PV mount options through the allow-list; raise :class:`MountOptionError`."""
    values: dict[str, object] = {}
    seen: set[str] = set()
    for raw in flags:
        if not raw.strip():
            continue
        name, value = _split(raw)
        if name in REFUSED:
            raise MountOptionError(f"mount option --{name} is refused: {REFUSED[name]}")
        if not _NAME_RE.match(name) or name not in ALLOWED:
            shown = name if _NAME_RE.match(name) else "(malformed)"
            raise MountOptionError(
                f"unknown mount option {shown!r}: allowed are {', '.join(sorted(ALLOWED))}"
            )
        if name in seen:
            raise MountOptionError(f"mount option --{name} is given twice: keep one")
        seen.add(name)
        field_name, parser, takes_value = ALLOWED[name]
        if not takes_value and value is not None:
            raise MountOptionError(f"mount option --{name} takes no value: write just {name}")
        if takes_value:
            if value is None or value == "":
                raise MountOptionError(f"mount option --{name} needs a value: write {name}=VALUE")
            if not _VALUE_RE.match(value):
                raise MountOptionError(f"mount option --{name} has a malformed value")
        try:
            values[field_name] = parser(value)
        except ValueError as exc:
            raise MountOptionError(f"mount option --{name}: {exc}") from None
    options = MountOptions(**values)  # type: ignore[arg-type]
    options.check_combination(directory_bucket=None)
    return options
