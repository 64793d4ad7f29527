"""The Helm chart (deploy/chart/lustre-csi) and the kustomize base (deploy/) are one source of
truth: with default values the chart renders the base's objects, values change exactly the
fields they name, `helm lint --strict` passes, and the chart installs on the real API server.

helm is built by hack/install-helm.sh; kubectl, etcd and kube-apiserver by hack/setup.sh.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.support.kube import (
    DEFAULT_BIN_DIR,
    REPO_ROOT,
    SETUP_HINT,
    LocalKubeCluster,
    missing_binaries,
)

pytestmark = pytest.mark.kube

CHART = REPO_ROOT / "deploy" / "chart" / "lustre-csi"
BASE = REPO_ROOT / "deploy"
RELEASE = "lustre-csi"
NAMESPACE = "lustre-csi"
# Metadata Helm (and kustomize's managed-by) add to say who manages an object, not what it is.
MANAGER_METADATA = {"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance"}
DEFAULT_KUBELET_DIR = "/var/lib/kubelet"

# (apiVersion, kind, namespace, name)
ObjectKey = tuple[str, str, str, str]
Objects = dict[ObjectKey, dict[str, Any]]


def built_tool(name: str, hint: str) -> Path:
    path = DEFAULT_BIN_DIR / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} is missing: {hint}", pytrace=False)
    return path


@pytest.fixture(scope="module")
def helm() -> Path:
    return built_tool("helm", "`bash hack/install-helm.sh` builds it")


@pytest.fixture(scope="module")
def kubectl() -> Path:
    return built_tool("kubectl", SETUP_HINT)


@pytest.fixture(scope="module")
def chart_cluster() -> Iterator[LocalKubeCluster]:
    """An API server of this module's own: a real install creates cluster-wide objects (the
    admission policy, the CSIDriver) that the session's shared cluster gets from other tests
    without Helm's ownership, which Helm would rightly refuse to take over."""
    missing = missing_binaries()
    if missing:
        names = ", ".join(p.name for p in missing)
        pytest.fail(f"Kubernetes test binaries missing ({names}): {SETUP_HINT}", pytrace=False)
    cluster = LocalKubeCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


def run(argv: list[str | Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=180, check=False
    )


def succeeded(argv: list[str | Path]) -> str:
    result = run(argv)
    assert result.returncode == 0, f"{' '.join(map(str, argv))}:\n{result.stderr}"
    return result.stdout


def key_of(obj: dict[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


def normalised(manifests: str) -> Objects:
    """The objects of a multi-document YAML stream by key, without manager metadata."""
    objects: Objects = {}
    for doc in yaml.safe_load_all(manifests):
        if not doc:
            continue
        meta = doc.setdefault("metadata", {})
        for field in ("labels", "annotations"):
            kept = {k: v for k, v in (meta.get(field) or {}).items() if k not in MANAGER_METADATA}
            if kept:
                meta[field] = kept
            else:
                meta.pop(field, None)
        key = key_of(doc)
        assert key not in objects, f"rendered twice: {key}"
        objects[key] = doc
    return objects


def render_chart(helm: Path, *args: str, namespace: str = NAMESPACE) -> Objects:
    return normalised(
        succeeded([helm, "template", RELEASE, CHART, "-n", namespace, "--include-crds", *args])
    )


def render_base(kubectl: Path) -> Objects:
    return normalised(succeeded([kubectl, "kustomize", BASE]))


def write_values(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def chart_defaults() -> dict[str, Any]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert isinstance(values, dict)
    return values


def leaves(value: Any, path: str = "") -> dict[str, Any]:
    """Every scalar of an object by path; list items that have a name are addressed by it
    (containers[lustre-csi]), so a change shows where it is."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(leaves(v, f"{path}.{k}" if path else str(k)))
        return out
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            name = item.get("name") if isinstance(item, dict) else None
            out.update(leaves(item, f"{path}[{name if isinstance(name, str) else i}]"))
        return out
    return {path: value}


ABSENT = "(absent)"


def changes(before: Objects, after: Objects) -> dict[tuple[ObjectKey, str], tuple[Any, Any]]:
    """(object, path) -> (before, after) for every scalar that differs."""
    out: dict[tuple[ObjectKey, str], tuple[Any, Any]] = {}
    for key in before.keys() | after.keys():
        old, new = leaves(before.get(key, {})), leaves(after.get(key, {}))
        for path in old.keys() | new.keys():
            if old.get(path, ABSENT) != new.get(path, ABSENT):
                out[(key, path)] = (old.get(path, ABSENT), new.get(path, ABSENT))
    return out


def described_difference(chart: dict[str, Any], base: dict[str, Any]) -> str:
    def lines(obj: dict[str, Any]) -> list[str]:
        return json.dumps(obj, indent=1, sort_keys=True).splitlines()

    return "\n".join(
        difflib.unified_diff(
            lines(base), lines(chart), "kubectl kustomize deploy/", "helm template", lineterm=""
        )
    )


def test_built_helm_is_the_version_install_helm_pins(helm: Path) -> None:
    script = (REPO_ROOT / "hack" / "install-helm.sh").read_text()
    pinned = re.search(r'^HELM_VERSION="(v[^"]+)"$', script, re.MULTILINE)
    assert pinned, "hack/install-helm.sh pins no HELM_VERSION"
    assert succeeded([helm, "version", "--short"]).strip() == pinned[1]


# --- one source of truth -------------------------------------------------------------------


def test_chart_defaults_render_the_kustomize_base(helm: Path, kubectl: Path) -> None:
    chart, base = render_chart(helm), render_base(kubectl)
    # The one object the chart leaves out on purpose: the release's namespace, which
    # `helm install --create-namespace` or the admin makes (see templates/namespace.yaml).
    driver_namespace = ("v1", "Namespace", "", NAMESPACE)
    assert driver_namespace in base
    del base[driver_namespace]

    assert sorted(base.keys() - chart.keys()) == [], "in deploy/ but not rendered by the chart"
    assert sorted(chart.keys() - base.keys()) == [], "rendered by the chart but not in deploy/"
    for key in sorted(base):
        hint = ""
        if key[1] == "CustomResourceDefinition":
            hint = (
                " (deploy/chart/lustre-csi/crds/ must be deploy/crds/ plus the labels of "
                "deploy/kustomization.yaml: Helm does not template crds/)"
            )
        assert chart[key] == base[key], (
            f"{key} differs{hint}:\n{described_difference(chart[key], base[key])}"
        )


def test_chart_values_change_exactly_the_fields_they_name(helm: Path, tmp_path: Path) -> None:
    kubelet_dir = "/var/snap/microk8s/common/var/lib/kubelet"
    toleration = {"key": "dedicated", "operator": "Equal", "value": "hpc", "effect": "NoSchedule"}
    scratch = {
        "name": "lustre-scratch",
        "reclaimPolicy": "Retain",
        "allowVolumeExpansion": False,
        "mountOptions": ["flock", "noatime"],
        # minOsts unquoted: parameters are strings however a values file spells them.
        "parameters": {"fsname": "scratch", "ostSize": "256Gi", "minOsts": 4},
    }
    values = {
        "kubeletDir": kubelet_dir,
        "images": {"driver": {"tag": "0.2.0"}},
        "controller": {"replicas": 3},
        "node": {"tolerations": [toleration]},
        # Helm replaces a list whole: keep the default classes and add one.
        "storageClasses": [*chart_defaults()["storageClasses"], scratch],
    }
    default = render_chart(helm)
    custom = render_chart(helm, "-f", write_values(tmp_path, values))

    deployment = ("apps/v1", "Deployment", NAMESPACE, "lustre-csi-controller")
    daemonset = ("apps/v1", "DaemonSet", NAMESPACE, "lustre-csi-node")
    storage_class = ("storage.k8s.io/v1", "StorageClass", "", "lustre-scratch")
    driver_image = "ghcr.io/lustre-csi/lustre-csi"
    pod = "spec.template.spec"
    expected: dict[tuple[ObjectKey, str], tuple[Any, Any]] = {
        (deployment, "spec.replicas"): (2, 3),
        (deployment, f"{pod}.containers[lustre-csi].image"): (
            f"{driver_image}:0.1.0",
            f"{driver_image}:0.2.0",
        ),
        (daemonset, f"{pod}.containers[lustre-csi].image"): (
            f"{driver_image}:0.1.0",
            f"{driver_image}:0.2.0",
        ),
    }
    # The node's toleration (after the startup taint's, always there), not the controller's.
    for field, value in toleration.items():
        expected[(daemonset, f"{pod}.tolerations[1].{field}")] = (ABSENT, value)
    # Every path that names the kubelet dir, and nothing else, moves with it.
    kubelet_paths = []
    for key, obj in default.items():
        for path, value in leaves(obj).items():
            if isinstance(value, str) and DEFAULT_KUBELET_DIR in value:
                kubelet_paths.append((key, path))
                new = value.replace(DEFAULT_KUBELET_DIR, kubelet_dir)
                expected[(key, path)] = (value, new)
    assert {(k[3], p) for k, p in kubelet_paths} >= {
        ("lustre-csi-node", f"{pod}.containers[lustre-csi].args[5]"),
        ("lustre-csi-node", f"{pod}.containers[lustre-csi].volumeMounts[kubelet-dir].mountPath"),
        ("lustre-csi-node", f"{pod}.containers[node-driver-registrar].args[1]"),
        ("lustre-csi-node", f"{pod}.volumes[plugin-dir].hostPath.path"),
        ("lustre-csi-node", f"{pod}.volumes[registration-dir].hostPath.path"),
        ("lustre-csi-node", f"{pod}.volumes[kubelet-dir].hostPath.path"),
    }
    scratch_object = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": "lustre-scratch",
            "labels": default[("storage.k8s.io/v1", "StorageClass", "", "lustre")]["metadata"][
                "labels"
            ],
        },
        "provisioner": "lustre.csi.io",
        "reclaimPolicy": "Retain",
        "allowVolumeExpansion": False,
        "volumeBindingMode": "Immediate",
        "mountOptions": ["flock", "noatime"],
        "parameters": {"fsname": "scratch", "ostSize": "256Gi", "minOsts": "4"},
    }
    for path, value in leaves(scratch_object).items():
        expected[(storage_class, path)] = (ABSENT, value)

    assert changes(default, custom) == expected
    assert custom[storage_class] == scratch_object


def test_chart_metrics_address_off_loopback_declares_a_port_and_empty_turns_metrics_off(
    helm: Path,
) -> None:
    objects = render_chart(
        helm, "--set", "controller.metricsAddress=0.0.0.0:9809", "--set", "node.metricsAddress="
    )
    controller = objects[("apps/v1", "Deployment", NAMESPACE, "lustre-csi-controller")]
    node = objects[("apps/v1", "DaemonSet", NAMESPACE, "lustre-csi-node")]
    driver = controller["spec"]["template"]["spec"]["containers"][0]
    assert "--metrics-address=0.0.0.0:9809" in driver["args"]
    assert {"name": "metrics", "containerPort": 9809} in driver["ports"]
    node_driver = node["spec"]["template"]["spec"]["containers"][0]
    assert not [a for a in node_driver["args"] if a.startswith("--metrics-address")]
    assert [p["name"] for p in node_driver["ports"]] == ["healthz"]

    # On loopback (the default) nothing outside the pod can scrape them: no port declared.
    default = render_chart(helm)
    for key in (
        ("apps/v1", "Deployment", NAMESPACE, "lustre-csi-controller"),
        ("apps/v1", "DaemonSet", NAMESPACE, "lustre-csi-node"),
    ):
        container = default[key]["spec"]["template"]["spec"]["containers"][0]
        assert [p["name"] for p in container["ports"]] == ["healthz"]


def test_chart_log_levels_reach_the_driver_and_the_sidecars(helm: Path) -> None:
    objects = render_chart(helm, "--set", "logLevel=debug", "--set", "sidecarLogLevel=5")
    controller = objects[("apps/v1", "Deployment", NAMESPACE, "lustre-csi-controller")]
    node = objects[("apps/v1", "DaemonSet", NAMESPACE, "lustre-csi-node")]
    for workload in (controller, node):
        driver = workload["spec"]["template"]["spec"]["containers"][0]
        # A global option of the lustre-csi command: before the subcommand.
        assert driver["args"][:2] == ["--log-level=debug", "serve"]
    sidecars = {c["name"]: c["args"] for c in controller["spec"]["template"]["spec"]["containers"]}
    assert "--v=5" in sidecars["csi-provisioner"]
    assert "--v=5" in sidecars["csi-resizer"]


def test_chart_follows_the_release_namespace(helm: Path) -> None:
    objects = render_chart(helm, namespace="storage")
    namespaced = {key[2] for key in objects if key[2]}
    # The servers' namespace and "default" (Events about cluster-scoped objects) stay.
    assert namespaced == {"storage", "lustre-servers", "default"}
    for obj in objects.values():
        for subject in obj.get("subjects") or []:
            assert subject["namespace"] == "storage", obj["metadata"]["name"]
    policy = objects[
        (
            "admissionregistration.k8s.io/v1",
            "ValidatingAdmissionPolicy",
            "",
            "lustre-csi-node-status-own-node-only",
        )
    ]
    assert policy["spec"]["matchConditions"][0]["expression"] == (
        "request.userInfo.username == 'system:serviceaccount:storage:lustre-csi-node'"
    )
    # Only the servers' namespace is rendered; Helm makes the release's.
    assert [k[3] for k in objects if k[1] == "Namespace"] == ["lustre-servers"]


def test_chart_refuses_misspelled_or_bad_values_naming_them(helm: Path) -> None:
    # values.schema.json: a typo is an error, not a setting that silently does nothing.
    for setting, error in (
        ("kubeletPath=/var/lib/k0s/kubelet", "additional properties 'kubeletPath' not allowed"),
        ("kubeletDir=var/lib/kubelet", "'/kubeletDir': 'var/lib/kubelet' does not match"),
        ("controller.replicas=two", "/controller/replicas"),
        ("node.tolerations[0].key=x", ""),  # allowed: a toleration is Kubernetes' to check
        ("storageClasses[0].nam=x", "missing property 'name'"),
        ("images.pullPolicy=Sometimes", "/images/pullPolicy"),
    ):
        result = run([helm, "template", RELEASE, CHART, "-n", NAMESPACE, "--set", setting])
        if error:
            assert result.returncode != 0, setting
            assert error in result.stderr, result.stderr
        else:
            assert result.returncode == 0, result.stderr


def test_chart_passes_strict_lint(helm: Path) -> None:
    output = succeeded([helm, "lint", "--strict", CHART])
    assert "0 chart(s) failed" in output


# --- on the real API server ------------------------------------------------------------------


def test_chart_install_dry_run_server_passes(helm: Path, chart_cluster: LocalKubeCluster) -> None:
    result = run(
        [
            helm,
            "install",
            RELEASE,
            CHART,
            "-n",
            NAMESPACE,
            "--create-namespace",
            "--dry-run=server",
            "--kubeconfig",
            chart_cluster.admin_kubeconfig,
        ]
    )
    assert result.returncode == 0, result.stderr
    assert "STATUS: pending-install" in result.stdout
    assert "kind: DaemonSet" in result.stdout
    # A dry run creates nothing.
    core = k8s.CoreV1Api(chart_cluster.admin_client())
    with pytest.raises(ApiException) as missing:
        core.read_namespace(NAMESPACE)
    assert missing.value.status == 404


def test_chart_installs_and_uninstalls_on_the_api_server(
    helm: Path, chart_cluster: LocalKubeCluster
) -> None:
    kubeconfig = ["--kubeconfig", str(chart_cluster.admin_kubeconfig)]
    # What the README tells an admin to run: the release's namespace from --create-namespace,
    # the CRD from crds/, every other object through schema validation and admission.
    succeeded([helm, "install", RELEASE, CHART, "-n", NAMESPACE, "--create-namespace", *kubeconfig])

    def names(*what: str) -> set[str]:
        return set(chart_cluster.kubectl("get", *what, "-o", "name").stdout.split())

    try:
        assert names("-n", NAMESPACE, "deployments,daemonsets,serviceaccounts") >= {
            "deployment.apps/lustre-csi-controller",
            "daemonset.apps/lustre-csi-node",
            "serviceaccount/lustre-csi-controller",
            "serviceaccount/lustre-csi-node",
        }
        assert names("csidrivers,storageclasses,validatingadmissionpolicies") == {
            "csidriver.storage.k8s.io/lustre.csi.io",
            "storageclass.storage.k8s.io/lustre",
            "storageclass.storage.k8s.io/lustre-dedicated",
            "validatingadmissionpolicy.admissionregistration.k8s.io/"
            "lustre-csi-node-status-own-node-only",
        }
        assert names("namespaces") >= {"namespace/lustre-csi", "namespace/lustre-servers"}
        chart_cluster.wait_for_crd("lustrefilesystems.lustre.csi.io")
    finally:
        succeeded([helm, "uninstall", RELEASE, "-n", NAMESPACE, *kubeconfig])

    assert names("csidrivers,storageclasses,validatingadmissionpolicies") == set()
    assert names("-n", NAMESPACE, "deployments,daemonsets") == set()
    # The CRD stays: deleting it would delete every LustreFileSystem and its servers.
    chart_cluster.wait_for_crd("lustrefilesystems.lustre.csi.io")


def test_chart_installs_into_a_namespace_that_exists_already(
    helm: Path, chart_cluster: LocalKubeCluster
) -> None:
    # An admin who made the namespace beforehand (with quotas, labels): a chart that rendered
    # its release namespace would stop here ("exists and cannot be imported").
    chart_cluster.ensure_namespace("storage")
    kubeconfig = ["--kubeconfig", str(chart_cluster.admin_kubeconfig)]
    succeeded(
        [helm, "install", "lustre", CHART, "-n", "storage",
         "--set", "serverNamespace.name=storage-servers", *kubeconfig]
    )  # fmt: skip
    try:
        listed = chart_cluster.kubectl(
            "get", "rolebindings", "-A", "-o",
            "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name} {end}",
        ).stdout.split()  # fmt: skip
        assert sorted(b for b in listed if "lustre-csi" in b) == [
            "default/lustre-csi-provisioner-events",
            "storage-servers/lustre-csi-provisioner",
            "storage/lustre-csi-provisioner-leader",
            "storage/lustre-csi-sidecar-leader-election",
        ]
    finally:
        succeeded([helm, "uninstall", "lustre", "-n", "storage", *kubeconfig])
