"""Security properties of the rendered chart, for every values combination.

- RBAC: no wildcard in verbs, resources or apiGroups; no access to Secrets; nobody may
  escalate, bind or impersonate; the node plugin can only read Nodes.
- Pods: only the node plugin container is privileged (FUSE mounts that propagate to the host
  need it); every other container drops all capabilities, cannot escalate and has a read-only
  root filesystem; the operator and controller pods run as non-root.
- Bidirectional mount propagation appears only on the privileged node plugin container.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.chartlib import COMBOS, Render, by_kind, container, one, pod_spec

WORKLOAD_KINDS = ("Deployment", "DaemonSet")


def all_containers(
    objects: list[dict[str, Any]],
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload name, pod spec, container) for every container and init container."""
    out = []
    for kind in WORKLOAD_KINDS:
        for workload in by_kind(objects, kind):
            spec = pod_spec(workload)
            for c in spec.get("initContainers", []) + spec["containers"]:
                out.append((workload["metadata"]["name"], spec, c))
    return out


@pytest.mark.parametrize("combo", COMBOS)
def test_rbac_has_no_wildcards_and_no_secrets(render: Render, combo: str) -> None:
    objects = render(COMBOS[combo])
    roles = by_kind(objects, "ClusterRole") + by_kind(objects, "Role")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            name = role["metadata"]["name"]
            for field in ("verbs", "resources", "apiGroups"):
                assert "*" not in rule.get(field, []), f"{name}: wildcard in {field}"
            assert "secrets" not in rule["resources"], f"{name} may read Secrets"
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), name
            assert "nonResourceURLs" not in rule, name


def test_rbac_bindings_point_at_chart_roles(render: Render) -> None:
    objects = render()
    role_names = {
        r["metadata"]["name"] for r in by_kind(objects, "ClusterRole") + by_kind(objects, "Role")
    }
    sa_names = {sa["metadata"]["name"] for sa in by_kind(objects, "ServiceAccount")}
    for binding in by_kind(objects, "ClusterRoleBinding") + by_kind(objects, "RoleBinding"):
        assert binding["roleRef"]["name"] in role_names, "no binding to built-in roles"
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount" and subject["name"] in sa_names


@pytest.mark.parametrize("combo", COMBOS)
def test_only_the_node_plugin_is_privileged(render: Render, combo: str) -> None:
    privileged = []
    for workload, _spec, c in all_containers(render(COMBOS[combo])):
        sc = c.get("securityContext", {})
        if sc.get("privileged"):
            privileged.append((workload, c["name"]))
            continue
        assert sc.get("allowPrivilegeEscalation") is False, (workload, c["name"])
        assert sc.get("readOnlyRootFilesystem") is True, (workload, c["name"])
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], (workload, c["name"])
        assert "add" not in sc.get("capabilities", {}), (workload, c["name"])
        for mount in c.get("volumeMounts", []):
            assert mount.get("mountPropagation", "None") == "None", (workload, c["name"])
    assert privileged == [("zm-zonemount-node", "node")]


@pytest.mark.parametrize("suffix", ["-operator", "-controller"])
def test_operator_and_controller_run_as_non_root(render: Render, suffix: str) -> None:
    deployment = one(render(), "Deployment", suffix)
    pod_sc = pod_spec(deployment)["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] != 0
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod_spec(deployment)["containers"]:
        assert c["securityContext"].get("runAsUser", pod_sc["runAsUser"]) != 0
    assert not pod_spec(deployment).get("hostNetwork", False)
    assert not any("hostPath" in v for v in pod_spec(deployment)["volumes"])


def test_operator_root_filesystem_is_read_only(render: Render) -> None:
    operator = container(one(render(), "Deployment", "-operator"), "operator")
    assert operator["securityContext"]["readOnlyRootFilesystem"] is True
    writable = {m["mountPath"] for m in operator["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/tmp"}


def test_node_plugin_privilege_is_confined_to_what_fuse_needs(render: Render) -> None:
    daemonset = one(render(), "DaemonSet", "-node")
    spec = pod_spec(daemonset)
    assert not spec.get("hostNetwork", False) and not spec.get("hostPID", False)
    node = container(daemonset, "node")
    assert node["securityContext"]["readOnlyRootFilesystem"] is True
    propagating = [m["mountPath"] for m in node["volumeMounts"] if m.get("mountPropagation")]
    assert propagating == ["/var/lib/kubelet"]
    host_paths = sorted(v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v)
    assert host_paths == [
        "/dev/fuse",
        "/var/lib/kubelet",
        "/var/lib/kubelet/plugins/s3.csi.zonemount.io",
        "/var/lib/kubelet/plugins_registry",
        "/var/lib/zonemount",
    ]
    init = container(daemonset, "node-zone")
    assert init["securityContext"]["runAsNonRoot"] is True
