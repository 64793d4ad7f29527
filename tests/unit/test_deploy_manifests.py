"""The shipped YAML agrees with the code: StorageClass parameters parse, examples are sound."""

from __future__ import annotations

from pathlib import Path

import yaml

from csi.controller.parameters import parse_volume_parameters
from provisioner.kubevirt.spec import parse_spec, spec_from_template

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_storage_class_parameters_parse_into_valid_file_system_specs() -> None:
    classes = [d for d in _documents(DEPLOY / "storageclasses.yaml") if d["kind"] == "StorageClass"]
    assert {c["metadata"]["name"] for c in classes} == {"lustre", "lustre-dedicated"}
    for storage_class in classes:
        assert storage_class["provisioner"] == "lustre.csi.io"
        params = parse_volume_parameters(
            storage_class["parameters"], volume_name="pvc-example", default_fsname="lustre"
        )
        spec = spec_from_template(
            params.fsname, params.template, params.template.extra.get("dedicatedTo", "")
        )
        parse_spec(spec)  # raises, naming the field, if the class would make a bad spec


def test_example_file_system_is_a_valid_spec() -> None:
    (example,) = _documents(DEPLOY / "examples" / "lustrefilesystem.yaml")
    parsed = parse_spec(example["spec"])
    assert parsed.fsname == "scratch"


def test_static_pv_example_carries_what_the_node_needs() -> None:
    pv = next(
        d
        for d in _documents(DEPLOY / "examples" / "static-pv.yaml")
        if d["kind"] == "PersistentVolume"
    )
    attributes = pv["spec"]["csi"]["volumeAttributes"]
    assert pv["spec"]["csi"]["driver"] == "lustre.csi.io"
    assert {"fsname", "mgsNids"} <= set(attributes)


def _base() -> list[dict]:
    """Every object `kubectl apply -k deploy/` would apply."""
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    return [doc for path in kustomization["resources"] for doc in _documents(DEPLOY / path)]


def _workload(name: str) -> dict:
    return next(d for d in _base() if d["kind"] in ("Deployment", "DaemonSet")
                and d["metadata"]["name"] == name)


def _args(workload: dict) -> dict[str, str]:
    container = next(c for c in workload["spec"]["template"]["spec"]["containers"]
                     if c["name"] == "lustre-csi")
    return dict(a.split("=", 1) for a in container["args"] if a.startswith("--") and "=" in a)


def _rules_of(service_account: str, namespace: str) -> list[tuple[str | None, dict]]:
    """(namespace or None for cluster-wide, rule) for every rule bound to the account."""
    docs = _base()
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
             for d in docs if d["kind"] in ("Role", "ClusterRole")}
    found = []
    for binding in docs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s.get("kind") == "ServiceAccount" and s["name"] == service_account
                   and s.get("namespace") == namespace for s in binding["subjects"]):
            continue
        scope = binding["metadata"].get("namespace")
        ref = binding["roleRef"]
        role = roles[(ref["kind"], scope if ref["kind"] == "Role" else None, ref["name"])]
        found += [(scope, rule) for rule in role["rules"]]
    return found


def test_the_controllers_whole_file_system_mounts_stay_private_to_its_pod() -> None:
    controller = _workload("lustre-csi-controller")
    spec = controller["spec"]["template"]["spec"]
    container = next(c for c in spec["containers"] if c["name"] == "lustre-csi")
    state_dir = _args(controller)["--state-dir"]
    (state,) = [m for m in container["volumeMounts"] if m["mountPath"] == state_dir]
    # Mounts under the state dir (controller-mounts/<fsname>) must not reach the host, where
    # they would outlive the pod: no propagation, and no host directory behind them.
    assert state.get("mountPropagation", "None") == "None"
    (volume,) = [v for v in spec["volumes"] if v["name"] == state["name"]]
    assert "emptyDir" in volume
    assert not any(m.get("mountPropagation") == "Bidirectional"
                   for c in spec["containers"] for m in c.get("volumeMounts") or [])


def test_the_provisioner_may_delete_pods_and_secrets_only_in_the_server_namespace() -> None:
    controller = _workload("lustre-csi-controller")
    args = _args(controller)
    servers = args["--server-namespace"]
    driver = controller["metadata"]["namespace"]
    assert servers != driver
    assert {d["metadata"]["name"] for d in _base() if d["kind"] == "Namespace"} >= {
        driver, servers}
    destructive = [(scope, rule) for scope, rule in _rules_of("lustre-csi-controller", driver)
                   if set(rule["resources"]) & {"pods", "secrets"}
                   and set(rule["verbs"]) & {"delete", "deletecollection", "*"}]
    assert destructive, "fencing needs pods delete somewhere"
    assert {scope for scope, _ in destructive} == {servers}


def test_the_node_plugins_node_status_patch_is_held_to_its_own_node_by_a_policy() -> None:
    rules = _rules_of("lustre-csi-node", "lustre-csi")
    assert any("nodes/status" in r["resources"] and "patch" in r["verbs"] for _, r in rules)
    # It patches its Node too (the startup taint): the same policy holds that to its own node.
    assert any("nodes" in r["resources"] and "patch" in r["verbs"] for _, r in rules)
    docs = _base()
    (policy,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert policy["spec"]["failurePolicy"] == "Fail"
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["nodes", "nodes/status"] and "UPDATE" in rule["operations"]
    (condition,) = policy["spec"]["matchConditions"]
    assert "system:serviceaccount:lustre-csi:lustre-csi-node" in condition["expression"]
    own_node, only_the_taint = policy["spec"]["validations"]
    assert "request.userInfo.extra['authentication.kubernetes.io/node-name']" in (
        own_node["expression"])
    assert "lustre.csi.io/agent-not-ready" in only_the_taint["message"]
    # The plugin's pods run on the nodes the taint keeps others off.
    tolerations = _workload("lustre-csi-node")["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "lustre.csi.io/agent-not-ready", "operator": "Exists",
            "effect": "NoExecute"} in tolerations
    (binding,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]


def test_metrics_listen_on_loopback_unless_an_admin_opens_them() -> None:
    for name in ("lustre-csi-controller", "lustre-csi-node"):
        workload = _workload(name)
        address = _args(workload).get("--metrics-address", "")
        assert address == "" or address.startswith("127.0.0.1:"), (name, address)
        container = next(c for c in workload["spec"]["template"]["spec"]["containers"]
                         if c["name"] == "lustre-csi")
        assert "metrics" not in {p.get("name") for p in container.get("ports") or []}


def test_layout_examples_parse_as_the_driver_reads_them() -> None:
    from csi.controller.parameters import parse_mutable_parameters

    documents = {d["kind"]: d for d in _documents(DEPLOY / "examples" / "layouts.yaml")}
    storage_class = documents["StorageClass"]
    params = parse_volume_parameters(
        storage_class["parameters"], volume_name="wide-files", default_fsname="lustre",
        mutable_parameters=documents["VolumeAttributesClass"]["parameters"],
    )
    assert params.layout.stripe_size == 1 << 20  # the class's, over the StorageClass's
    assert len(params.layout.extents) == 3 and params.inode_limit == 1_000_000
    parse_mutable_parameters(documents["VolumeAttributesClass"]["parameters"])
    claim = documents["PersistentVolumeClaim"]["spec"]
    assert claim["volumeAttributesClassName"] == "lustre-progressive"
    (example,) = _documents(DEPLOY / "examples" / "lustrefilesystem.yaml")
    assert [(p.name, p.ost_count) for p in parse_spec(example["spec"]).pools] == [("flash", 2)]
