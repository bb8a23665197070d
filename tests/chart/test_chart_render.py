"""The Helm chart renders, lints and validates against Kubernetes' own schemas.

Every values combination users are told about (IRSA on/off, monitoring on/off, a custom
kubelet dir, a fixed zone, the e2e values) is rendered with the real helm binary, linted with
`helm lint --strict`, and every rendered object is validated with kubernetes-validate in strict
mode (unknown fields are errors) against the oldest and newest Kubernetes minor we support.
Custom kinds are handled explicitly: CRDs are validated as apiextensions.k8s.io/v1 objects,
ServiceMonitor structurally; any other unknown kind fails the test.
"""

from __future__ import annotations

import copy
import filecmp
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from zonemount_contract.keys import DRIVER_NAME

from tests.chart.chartlib import (
    CHART,
    COMBOS,
    REPO,
    ROLE,
    Render,
    by_kind,
    container,
    one,
    pod_spec,
    run_helm,
    template_args,
)

# Oldest EKS standard-support minor we claim (Chart.yaml kubeVersion is >=1.28 for helm's check)
# and the newest kubernetes-validate ships schemas for.
K8S_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def validate_object(obj: dict[str, Any], version: str) -> None:
    key = (obj["apiVersion"], obj["kind"])
    if key == ("monitoring.coreos.com/v1", "ServiceMonitor"):
        validate_service_monitor(obj)
        return
    kubernetes_validate.validate(obj, version, strict=True)


def validate_service_monitor(obj: dict[str, Any]) -> None:
    """Structural check of the Prometheus Operator kind (no schema ships for it)."""
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
    assert obj["metadata"]["name"] and obj["metadata"]["namespace"]
    spec = obj["spec"]
    assert set(spec) <= {"endpoints", "selector", "namespaceSelector", "jobLabel"}
    assert spec["selector"]["matchLabels"]
    assert spec["endpoints"], "a ServiceMonitor without endpoints scrapes nothing"
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "relabelings"}
        assert isinstance(endpoint["port"], str)
        assert endpoint["path"].startswith("/")


@pytest.mark.parametrize("combo", COMBOS)
def test_every_rendered_object_validates(render: Render, combo: str) -> None:
    objects = render(COMBOS[combo])
    assert len(objects) >= 12
    kinds = set()
    for obj in objects:
        kinds.add(obj["kind"])
        if obj["apiVersion"].startswith("monitoring.coreos.com"):
            assert (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS
        for version in K8S_VERSIONS:
            try:
                validate_object(obj, version)
            except kubernetes_validate.SchemaNotFoundError as exc:
                pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {exc.message}")
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(
                    f"{obj['kind']} {obj['metadata']['name']} invalid for Kubernetes {version}: "
                    f"{exc.message} at {list(exc.absolute_path)}"
                )
    assert {"Deployment", "DaemonSet", "CSIDriver", "ClusterRole", "ServiceAccount"} <= kinds


def test_validator_rejects_a_broken_object(render: Render) -> None:
    """Control: the strict validation above does bite on a wrong or unknown field."""
    deployment = one(render(), "Deployment", "-operator")
    typo = copy.deepcopy(deployment)
    pod_spec(typo)["containers"][0]["imagePullPolicyy"] = "Always"
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "one"
    for broken in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


@pytest.mark.parametrize("combo", ["defaults", "irsa", "monitoring", "kubelet-dir"])
def test_helm_lint_strict(helm: Path, combo: str) -> None:
    args = template_args(COMBOS[combo], include_crds=False)
    set_args = args[args.index("--namespace") + 2 :]
    result = run_helm(helm, "lint", "--strict", str(CHART), *set_args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_e2e_values_file_renders_and_validates(helm: Path) -> None:
    values = REPO / "e2e" / "values-e2e.yaml"
    result = run_helm(
        helm, "template", "zm", str(CHART), "-n", "zonemount-system", "-f", str(values)
    )
    assert result.returncode == 0, result.stderr
    objects = [d for d in yaml.safe_load_all(result.stdout) if d]
    for obj in objects:
        validate_object(obj, K8S_VERSIONS[0])
    node = container(one(objects, "DaemonSet", "-node"), "node")
    assert node["imagePullPolicy"] == "Never", "e2e loads images with kind; never pull them"


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"node": {"serviceAccount": {"roleArn": "my-role"}}}, "/node/serviceAccount/roleArn"),
        ({"node": {"kubeletdir": "/x"}}, "kubeletdir"),
        ({"node": {"kubeletDir": "relative/dir"}}, "/node/kubeletDir"),
        ({"aws": {"region": "Oregon"}}, "/aws/region"),
        ({"operator": {"extraArgs": ["--x='y'"]}}, "/operator/extraArgs/0"),
    ],
)
def test_schema_rejects_bad_values_naming_the_key(
    helm: Path, values: dict[str, Any], needle: str
) -> None:
    result = run_helm(helm, *template_args(values, include_crds=False))
    assert result.returncode != 0
    assert needle in result.stderr, result.stderr


def test_service_monitor_requires_metrics_service(helm: Path) -> None:
    values = {"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}}
    result = run_helm(helm, *template_args(values, include_crds=False))
    assert result.returncode != 0
    assert "metrics.serviceMonitor.enabled needs metrics.enabled=true" in result.stderr


def test_irsa_annotations_follow_values(render: Render) -> None:
    plain = {sa["metadata"]["name"]: sa for sa in by_kind(render(), "ServiceAccount")}
    assert len(plain) == 4 and "zm-zonemount-import" in plain  # import Job pods have their own
    for sa in plain.values():
        assert "eks.amazonaws.com/role-arn" not in sa["metadata"].get("annotations", {})
    irsa = {sa["metadata"]["name"]: sa for sa in by_kind(render(COMBOS["irsa"]), "ServiceAccount")}
    for component in ("operator", "controller", "node"):
        annotations = irsa[f"zm-zonemount-{component}"]["metadata"]["annotations"]
        assert annotations["eks.amazonaws.com/role-arn"] == ROLE.format(f"zm-{component}")


def test_existing_service_account_is_used_not_created(render: Render) -> None:
    objects = render({"node": {"serviceAccount": {"create": False, "name": "byo-node"}}})
    names = {sa["metadata"]["name"] for sa in by_kind(objects, "ServiceAccount")}
    assert "byo-node" not in names
    assert pod_spec(one(objects, "DaemonSet", "-node"))["serviceAccountName"] == "byo-node"
    binding = one(objects, "ClusterRoleBinding", "-node")
    assert binding["subjects"][0]["name"] == "byo-node"


def test_monitoring_on_and_off(render: Render) -> None:
    assert by_kind(render(), "ServiceMonitor") == []
    objects = render(COMBOS["monitoring"])
    monitor = one(objects, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        s
        for s in by_kind(objects, "Service")
        if all(s["metadata"]["labels"].get(k) == v for k, v in selector.items())
    ]
    assert sorted(s["metadata"]["name"] for s in selected) == [
        "zm-zonemount-controller-metrics",
        "zm-zonemount-mounter-metrics",
        "zm-zonemount-node-metrics",
    ], "the ServiceMonitor must select every metrics Service"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    for service in selected:
        port_names = {p["name"] for p in service["spec"]["ports"]}
        assert monitor["spec"]["endpoints"][0]["port"] in port_names
        name = service["metadata"]["name"]
        component = next(c for c in ("-node", "-mounter", "-controller") if f"{c}-" in name)
        workload = one(
            objects, "Deployment" if component == "-controller" else "DaemonSet", component
        )
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        assert all(pod_labels[k] == v for k, v in service["spec"]["selector"].items())
        container_ports = {
            p["name"] for c in pod_spec(workload)["containers"] for p in c.get("ports", [])
        }
        assert service["spec"]["ports"][0]["targetPort"] in container_ports
    node = container(one(objects, "DaemonSet", "-node"), "node")
    assert {"name": "metrics", "containerPort": 9810, "protocol": "TCP"} in node["ports"]
    assert "--metrics-address :9810" in node["args"][0]
    assert by_kind(render(COMBOS["no-metrics"]), "Service") == []


def test_csidriver_object(render: Render) -> None:
    driver = one(render(), "CSIDriver")
    assert driver["metadata"]["name"] == DRIVER_NAME  # the chart's name is the contract's
    spec = driver["spec"]
    assert spec["attachRequired"] is False
    assert spec["podInfoOnMount"] is True
    assert spec["requiresRepublish"] is True
    assert spec["tokenRequests"] == [{"audience": "sts.amazonaws.com"}]
    assert spec["volumeLifecycleModes"] == ["Persistent"]
    assert spec["fsGroupPolicy"] == "None"


def test_custom_kubelet_dir_is_used_everywhere(render: Render) -> None:
    kubelet = "/var/lib/k0s/kubelet"
    daemonset = one(render(COMBOS["kubelet-dir"]), "DaemonSet", "-node")
    host_paths = {
        v["name"]: v["hostPath"]["path"] for v in pod_spec(daemonset)["volumes"] if "hostPath" in v
    }
    assert host_paths["kubelet-dir"] == kubelet
    assert host_paths["plugin-dir"] == f"{kubelet}/plugins/s3.csi.zonemount.io"
    assert host_paths["registration-dir"] == f"{kubelet}/plugins_registry"
    node = container(daemonset, "node")
    mount = next(m for m in node["volumeMounts"] if m["name"] == "kubelet-dir")
    # kubelet passes host paths as target paths: they must resolve the same in the container.
    assert mount["mountPath"] == kubelet
    assert mount["mountPropagation"] == "Bidirectional"
    assert f'--kubelet-dir "{kubelet}"' in node["args"][0]
    registrar = container(daemonset, "node-driver-registrar")
    assert (
        f"--kubelet-registration-path={kubelet}/plugins/s3.csi.zonemount.io/csi.sock"
        in registrar["args"]
    )
    assert "/var/lib/kubelet" not in yaml.safe_dump(daemonset)


def test_node_daemonset_shape(render: Render) -> None:
    daemonset = one(render(), "DaemonSet", "-node")
    spec = pod_spec(daemonset)
    assert spec["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in spec["tolerations"]
    assert not spec.get("hostNetwork", False)
    names = [c["name"] for c in spec["containers"]]
    assert names == ["node", "node-driver-registrar", "liveness-probe"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["dev-fuse"]["hostPath"] == {"path": "/dev/fuse", "type": "CharDevice"}
    node = container(daemonset, "node")
    assert "/dev/fuse" in {m["mountPath"] for m in node["volumeMounts"]}
    script = node["args"][0]
    for flag in ("--endpoint unix:///csi/csi.sock", '--node-id "$NODE_NAME"', "--state-dir"):
        assert flag in script
    env = {e["name"]: e for e in node["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    # zone from the node label by default: init container (`zonemount node-zone`) + get-nodes RBAC
    assert [c["name"] for c in spec["initContainers"]] == ["node-zone"]
    assert spec["initContainers"][0]["command"] == ["zonemount", "node-zone"]
    objects = render()
    assert one(objects, "ClusterRole", "-node")["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}
    ]
    configmaps = [o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"]
    assert configmaps == ["zm-zonemount-tenancy"], "no script shipped in a ConfigMap (data only)"


def test_fixed_zone_needs_no_node_access(render: Render) -> None:
    objects = render(COMBOS["fixed-zone"])
    daemonset = one(objects, "DaemonSet", "-node")
    assert "initContainers" not in pod_spec(daemonset)
    assert not [
        r for r in by_kind(objects, "ClusterRole") if r["metadata"]["name"].endswith("-node")
    ]
    env = {e["name"]: e.get("value") for e in container(daemonset, "node")["env"]}
    assert env["ZONEMOUNT_ZONE"] == "us-west-2a"


def test_controller_and_provisioner(render: Render) -> None:
    deployment = one(render(), "Deployment", "-controller")
    controller = container(deployment, "controller")
    assert controller["args"] == [
        "csi-controller",
        "--endpoint",
        "unix:///csi/csi.sock",
        "--metrics-address",
        ":9811",
    ]
    assert {"name": "metrics", "containerPort": 9811, "protocol": "TCP"} in controller["ports"]
    provisioner = container(deployment, "csi-provisioner")
    assert "--extra-create-metadata" in provisioner["args"]
    assert "--csi-address=/csi/csi.sock" in provisioner["args"]
    assert "--leader-election" in provisioner["args"]
    assert "--feature-gates=Topology=true" in provisioner["args"]
    mounts = {
        c["name"]: {m["mountPath"] for m in c["volumeMounts"]}
        for c in pod_spec(deployment)["containers"]
    }
    assert all("/csi" in paths for paths in mounts.values()), "all three share the socket dir"


def test_operator_deployment(render: Render) -> None:
    deployment = one(render(), "Deployment", "-operator")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    operator = container(deployment, "operator")
    assert operator["args"][:2] == ["operator", "--all-namespaces"]
    assert operator["args"][2:4] == ["--liveness-port", "8080"]
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert operator["resources"]["requests"] and operator["resources"]["limits"]


def test_aws_test_endpoint_env_reaches_every_zonemount_container(render: Render) -> None:
    objects = render(COMBOS["test-endpoint"])
    for workload, name in (
        (one(objects, "Deployment", "-operator"), "operator"),
        (one(objects, "Deployment", "-controller"), "controller"),
        (one(objects, "DaemonSet", "-node"), "node"),
    ):
        env = {e["name"]: e for e in container(workload, name)["env"]}
        assert env["AWS_ENDPOINT_URL"]["value"] == "http://10.96.200.200:5000"
        assert env["ZONEMOUNT_AWS_ENDPOINT_URL"]["value"] == "http://10.96.200.200:5000"
        assert env["ZONEMOUNT_DISABLE_S3_EXPRESS_SESSION_AUTH"]["value"] == "1"
        assert env["AWS_S3_DISABLE_EXPRESS_SESSION_AUTH"]["value"] == "true"
        ref = env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "moto-credentials", "key": "AWS_SECRET_ACCESS_KEY"}
    defaults = {e["name"] for e in container(one(render(), "DaemonSet", "-node"), "node")["env"]}
    assert not {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"} & defaults


def test_sidecar_images_are_pinned(render: Render) -> None:
    for obj in by_kind(render(), "Deployment") + by_kind(render(), "DaemonSet"):
        spec = pod_spec(obj)
        for c in spec["containers"] + spec.get("initContainers", []):
            repo, _, tag = c["image"].rpartition(":")
            assert repo and tag and tag != "latest", c["image"]
            if repo.startswith("registry.k8s.io/sig-storage/"):
                assert tag.startswith("v") and tag.count(".") == 2, c["image"]


def crd_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.yaml"))


def test_chart_crds_are_copies_of_top_level_crds(render: Render) -> None:
    source = REPO / "crds"
    copies = CHART / "crds"
    if not crd_files(source):
        pytest.skip(
            "crds/ has no CRD yet (the operator's CRDs land there); `make chart-crds` copies them"
        )
    assert crd_files(copies) == crd_files(source), "run `make chart-crds`"
    for name in crd_files(source):
        assert filecmp.cmp(source / name, copies / name, shallow=False), (
            f"charts/zonemount/crds/{name} differs from crds/{name}: run `make chart-crds`"
        )
    rendered = {o["metadata"]["name"] for o in by_kind(render(), "CustomResourceDefinition")}
    assert {"s3expressbuckets.zonemount.io", "s3mountclasses.zonemount.io"} <= rendered


def test_operator_rbac_covers_its_crds(render: Render) -> None:
    """The ClusterRole grants what the CRDs declare (plural names, status subresource)."""
    role = one(render(), "ClusterRole", "-operator")
    granted = {
        (g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    for path in sorted((REPO / "crds").glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
            assert (group, plural) in granted
            if any(
                v.get("subresources", {}).get("status") is not None for v in crd["spec"]["versions"]
            ):
                assert (group, f"{plural}/status") in granted


def test_operator_rbac_covers_its_events_and_bucket_users(render: Render) -> None:
    """Issue 13: the operator posts core/v1 Events (kopf's poster) and, before deleting an
    S3ExpressBucket, lists the S3MountClasses that might use it."""
    rules = one(render(), "ClusterRole", "-operator")["rules"]

    def allows(group: str, resource: str, verb: str) -> bool:
        return any(
            group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
            for r in rules
        )

    assert allows("", "events", "create")
    assert allows("zonemount.io", "s3mountclasses", "list")


def nulls(node: Any, path: str = "") -> list[str]:
    if node is None:
        return [path]
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in nulls(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in nulls(v, f"{path}[{i}]")]
    return []


@pytest.mark.parametrize("combo", COMBOS)
def test_no_empty_blocks_render_as_null(render: Render, combo: str) -> None:
    """A template block that rendered nothing shows up as `key:` = null; none may remain."""
    for obj in render(COMBOS[combo], include_crds=False):
        assert nulls(obj) == [], f"{obj['kind']} {obj['metadata']['name']}: {nulls(obj)}"


def notes(helm: Path, values: dict[str, Any] | None) -> str:
    """NOTES.txt as `helm install --dry-run=client` prints it (no cluster involved)."""
    args = template_args(values, include_crds=False)
    args[0] = "install"
    result = run_helm(helm, *args, "--dry-run=client")
    assert result.returncode == 0, result.stderr
    return result.stdout.split("NOTES:", 1)[1]


def test_notes_warn_only_without_aws_identity(helm: Path) -> None:
    plain = notes(helm, None)
    assert "WARNING: operator.serviceAccount.roleArn is empty" in plain
    assert "kubectl get nodes -L topology.kubernetes.io/zone" in plain
    with_irsa = notes(helm, COMBOS["irsa"])
    assert "WARNING" not in with_irsa
    fixed = notes(helm, COMBOS["fixed-zone"])
    assert 'Every node reports zone "us-west-2a"' in fixed


def test_optional_zone_keeps_the_plugin_off_nodes_without_one(render: Render) -> None:
    """The plugin refuses to start without a zone (it advertises VOLUME_ACCESSIBILITY_CONSTRAINTS):
    requireZone=false schedules it only to nodes carrying the zone label."""
    assert "affinity" not in pod_spec(one(render(), "DaemonSet", "-node"))
    spec = pod_spec(one(render({"node": {"requireZone": False}}), "DaemonSet", "-node"))
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "Exists"}]}
    ]
    fixed = pod_spec(
        one(render({"node": {"requireZone": False, "zone": "us-west-2a"}}), "DaemonSet", "-node")
    )
    assert "affinity" not in fixed


def test_import_jobs_rbac_and_settings(render: Render) -> None:
    """The operator may create/read/delete Jobs in its own namespace only (a Role), and its
    environment names the image and ServiceAccount import Job pods use (issue 17)."""
    objects = render({"operator": {"import": {"maxWorkers": 12}}})
    role = one(objects, "Role", "-import-jobs")
    assert role["rules"] == [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "create", "delete"]}
    ]
    binding = one(objects, "RoleBinding", "-import-jobs")
    assert binding["subjects"][0]["name"] == "zm-zonemount-operator"
    operator = one(objects, "Deployment", "-operator")
    env = {e["name"]: e.get("value") for e in pod_spec(operator)["containers"][0]["env"]}
    assert env["ZONEMOUNT_IMPORT_SERVICE_ACCOUNT"] == "zm-zonemount-import"
    assert env["ZONEMOUNT_IMPORT_MAX_WORKERS"] == "12"
    assert env["ZONEMOUNT_IMPORT_IMAGE"] == pod_spec(operator)["containers"][0]["image"]
