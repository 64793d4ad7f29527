"""The shipped YAML agrees with the code: StorageClass parameters parse, examples are sound."""

from __future__ import annotations

from pathlib import Path

import yaml

from csi.parameters import parse_volume_parameters
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
