"""Entry point of the ``zonemount`` console script.

Owns only the dispatch from a subcommand name to the module that implements it. Each
subcommand parses its own arguments (so ``zonemount mount`` keeps mount-s3's flags verbatim)
and is imported lazily, so ``zonemount mount`` never pays for importing kopf or grpc.

Invariant: every entry returns a process exit code; bad input is reported by the subcommand
as one line on stderr, never as a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

# name -> ("module:function", one-line help). Functions take argv (without the name) -> int.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "mount": ("zonemount_fs.cli:main", "mount a bucket (mount-s3 compatible flags)"),
    "csi-node": ("zonemount_csi.cli:node_main", "run the CSI node plugin"),
    "csi-mounter": ("zonemount_csi.cli:mounter_main", "host the FUSE servers of csi-node"),
    "csi-controller": ("zonemount_csi.cli:controller_main", "run the CSI controller plugin"),
    "node-zone": (
        "zonemount_csi.node_zone:main",
        "write this node's zone labels to files (the node plugin pod's init step)",
    ),
    "operator": ("zonemount_operator.cli:operator_main", "run the kopf operator"),
    "reconcile": ("zonemount_operator.cli:reconcile_main", "reconcile a CR file once"),
    "cp": ("zonemount_operator.cli:cp_main", "parallel copy: S3 <-> S3, local -> S3, S3 -> local"),
    "sync": ("zonemount_operator.cli:sync_main", "copy only what is missing or changed (like cp)"),
    "spark-conf": (
        "zonemount_cli.spark_conf:main",
        "print the mount flags and Spark settings for jobs that write to a mount",
    ),
    "demo": ("zonemount_cli.demo:main", "run the end-to-end demo on an embedded S3 server"),
    "local-s3": (
        "zonemount_cli.local_s3:main",
        "serve S3 on loopback and print how to mount it (try zonemount without AWS)",
    ),
}


def _usage() -> str:
    lines = ["usage: zonemount COMMAND [ARGS...]", "", "commands:"]
    width = max(len(name) for name in SUBCOMMANDS)
    for name, (_, text) in SUBCOMMANDS.items():
        lines.append(f"  {name.ljust(width)}  {text}")
    lines.append("")
    lines.append("Run 'zonemount COMMAND --help' for the options of a command.")
    return "\n".join(lines)


def _resolve(target: str) -> Callable[[Sequence[str]], int]:
    module_name, func_name = target.split(":")
    module = importlib.import_module(module_name)
    func: Callable[[Sequence[str]], int] = getattr(module, func_name)
    return func


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        from importlib.metadata import version

        print(f"zonemount {version('zonemount')}")
        return 0
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"zonemount: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return _resolve(SUBCOMMANDS[name][0])(rest)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
