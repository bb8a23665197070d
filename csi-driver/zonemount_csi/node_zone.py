"""``zonemount node-zone``: the node plugin pod's init step, this node's zone labels to files.

The downward API cannot expose node labels, so the chart's DaemonSet runs this in an init
container with the pod's ServiceAccount (RBAC: get nodes), and the node plugin passes the files'
contents as ``--zone`` and ``--zone-id``. Standard library only (it runs before anything else,
and importing it loads no gRPC).

Settings come from flags, each defaulting to an environment variable (the chart sets the
environment): ``--node-name`` NODE_NAME (downward API, required); ``--zone-label`` ZONE_LABEL
(default topology.kubernetes.io/zone) and ``--zone-file`` ZONE_FILE; REQUIRE_ZONE ("1", the
default: a missing zone label is an error; ``--optional-zone`` = "0"); ``--zone-id-label``
ZONE_ID_LABEL (default topology.k8s.aws/zone-id, always optional) and ``--zone-id-file``
ZONE_ID_FILE; KUBE_API_URL (default: the in-cluster https://$KUBERNETES_SERVICE_HOST:PORT; an
http:// URL skips TLS and the token, for tests); KUBE_TOKEN_FILE / KUBE_CA_FILE.

Invariants: exit 0 only after the file is written (empty when the label is absent and the zone
is optional); any failure is one line on stderr naming the cause and the fix, never a
traceback; the token never appears in output. Transient API errors are retried a few times.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from zonemount_contract import keys
from zonemount_contract.cli import OneLineParser

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
ATTEMPTS = 5


class ZoneError(Exception):
    """A failure a person must act on; str() is the one-line message."""


def _api_url() -> str:
    explicit = os.environ.get("KUBE_API_URL")
    if explicit:
        return explicit.rstrip("/")
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise ZoneError("KUBERNETES_SERVICE_HOST is not set: run inside a pod or set KUBE_API_URL")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"https://{host}:{port}"


def _fetch_node(api: str, node: str) -> dict[str, object]:
    url = f"{api}/api/v1/nodes/{urllib.parse.quote(node, safe='')}"
    headers = {"Accept": "application/json"}
    context: ssl.SSLContext | None = None
    if url.startswith("https://"):
        token_file = Path(os.environ.get("KUBE_TOKEN_FILE", SA_DIR / "token"))
        ca_file = os.environ.get("KUBE_CA_FILE", str(SA_DIR / "ca.crt"))
        try:
            headers["Authorization"] = "Bearer " + token_file.read_text().strip()
        except OSError as exc:
            raise ZoneError(
                f"cannot read the ServiceAccount token {token_file}: {exc.strerror};"
                " keep automountServiceAccountToken enabled for the node plugin"
            ) from None
        context = ssl.create_default_context(cafile=ca_file)
    elif not url.startswith("http://"):
        raise ZoneError(f"KUBE_API_URL {api!r} must start with https:// or http://")
    # Scheme checked above: only https:// (in-cluster) or http:// (tests) reach urlopen.
    request = urllib.request.Request(url, headers=headers)  # noqa: S310
    last = ""
    for attempt in range(ATTEMPTS):
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as response:  # noqa: S310
                body: dict[str, object] = json.load(response)
                return body
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise ZoneError(
                    f"the API refused to read node {node!r} (HTTP {exc.code}): the node plugin's"
                    " ServiceAccount needs 'get' on nodes (the chart's <release>-node ClusterRole)"
                ) from None
            if exc.code == 404:
                raise ZoneError(
                    f"node {node!r} does not exist: NODE_NAME must come from spec.nodeName"
                ) from None
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = str(getattr(exc, "reason", exc))
        if attempt + 1 < ATTEMPTS:
            time.sleep(0.25 * 2**attempt)  # 0.25 .. 2 s; kubelet retries the init container anyway
    raise ZoneError(f"cannot reach the Kubernetes API at {api} after {ATTEMPTS} attempts: {last}")


def zone_of(node_obj: dict[str, object], label: str) -> str:
    """The value of ``label`` on a Node object, or "" when absent."""
    metadata = node_obj.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    value = labels.get(label, "") if isinstance(labels, dict) else ""
    return value if isinstance(value, str) else ""


def _write(path: Path, value: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value)
    except OSError as exc:
        raise ZoneError(f"cannot write {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class Settings:
    node: str
    zone_label: str = keys.TOPOLOGY_ZONE  # the well-known node label is the topology key
    zone_file: Path = Path("/run/zonemount/zone")
    zone_id_label: str = "topology.k8s.aws/zone-id"
    zone_id_file: Path = Path("/run/zonemount/zone-id")
    require_zone: bool = True


def run(settings: Settings) -> tuple[str, str]:
    node = settings.node
    if not node:
        raise ZoneError(
            "NODE_NAME is not set: pass it from the downward API (spec.nodeName) or --node-name"
        )
    label = settings.zone_label
    node_obj = _fetch_node(_api_url(), node)
    zone, zone_id = zone_of(node_obj, label), zone_of(node_obj, settings.zone_id_label)
    if not zone and settings.require_zone:
        raise ZoneError(
            f"node {node!r} has no label {label}: label it (kubectl label node {node}"
            f" {label}=<zone>), or set the chart value node.zone, or node.requireZone=false"
        )
    _write(settings.zone_file, zone)
    _write(settings.zone_id_file, zone_id)
    return zone, zone_id


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = OneLineParser(
        prog="zonemount node-zone",
        description="Write this node's zone and AZ ID labels (read from the Kubernetes API with "
        "the pod's ServiceAccount) to files for csi-node --zone/--zone-id. The init step of "
        "the chart's node plugin pod; every flag defaults to the environment variable named.",
    )
    parser.add_argument(
        "--node-name", default=env("NODE_NAME", ""), help="this node (env NODE_NAME; required)"
    )
    parser.add_argument(
        "--zone-label",
        default=env("ZONE_LABEL") or Settings.zone_label,
        help=f"label holding the zone (env ZONE_LABEL; default {Settings.zone_label})",
    )
    parser.add_argument(
        "--zone-file",
        type=Path,
        default=Path(env("ZONE_FILE") or Settings.zone_file),
        help=f"file to write the zone to (env ZONE_FILE; default {Settings.zone_file})",
    )
    parser.add_argument(
        "--zone-id-label",
        default=env("ZONE_ID_LABEL") or Settings.zone_id_label,
        help=f"label holding the AZ ID (env ZONE_ID_LABEL; default {Settings.zone_id_label})",
    )
    parser.add_argument(
        "--zone-id-file",
        type=Path,
        default=Path(env("ZONE_ID_FILE") or Settings.zone_id_file),
        help=f"file to write the AZ ID to (env ZONE_ID_FILE; default {Settings.zone_id_file})",
    )
    parser.add_argument(
        "--optional-zone",
        action="store_true",
        default=env("REQUIRE_ZONE", "1") != "1",
        help="write an empty file when the zone label is missing instead of failing "
        "(env REQUIRE_ZONE=0)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    settings = Settings(
        node=args.node_name,
        zone_label=args.zone_label,
        zone_file=args.zone_file,
        zone_id_label=args.zone_id_label,
        zone_id_file=args.zone_id_file,
        require_zone=not args.optional_zone,
    )
    try:
        zone, zone_id = run(settings)
    except ZoneError as exc:
        print(f"node-zone: {exc}", file=sys.stderr)
        return 1
    print(f"node-zone: zone={zone or '(none)'} zone-id={zone_id or '(none)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
