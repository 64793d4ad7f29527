"""Volume ids, subdirectory naming and StorageClass parameter validation."""

from __future__ import annotations

import pytest

from csi.controller.parameters import dedicated_fsname, parse_volume_parameters
from csi.errors import InvalidArgument, NotFound
from csi.volume_id import MAX_ID_BYTES, VolumeId, parse_volume_id, subdir_for_name


def test_id_round_trips_and_fits_the_spec_limit() -> None:
    name = "x" * 128  # csi-sanity's maximum-length name
    volume_id = VolumeId("shared", "lustre", subdir_for_name(name))
    text = str(volume_id)
    assert len(text.encode()) <= MAX_ID_BYTES
    assert parse_volume_id(text) == volume_id


@pytest.mark.parametrize("name", ["pvc-0b6c1f9e-2d44-4f7e-9d1e-4a6a0e3c5b21", "data.v2", "A_b-1"])
def test_short_safe_names_are_their_own_directory(name: str) -> None:
    assert subdir_for_name(name) == name


@pytest.mark.parametrize("name", ["../etc", "a/b", "..", "with space", ".hidden", "x" * 65, "é"])
def test_unsafe_names_map_to_a_stable_safe_directory(name: str) -> None:
    subdir = subdir_for_name(name)
    assert "/" not in subdir and ".." not in subdir and not subdir.startswith(".")
    assert subdir == subdir_for_name(name)
    assert len(subdir) <= 64
    assert subdir != subdir_for_name(name + "x")


@pytest.mark.parametrize(
    "volume_id",
    [
        "reallyfakevolumeid",
        "v1:shared:lustre",
        "v1:other:lustre:a",
        "v1:shared:toolongname:a",
        "v1:shared:lustre:../x",
        "v2:shared:lustre:a",
    ],
)
def test_ids_not_made_by_this_driver_are_not_found(volume_id: str) -> None:
    with pytest.raises(NotFound):
        parse_volume_id(volume_id)


@pytest.mark.parametrize("volume_id", ["", "a" * 129, "v1:shared:lustre:a\n"])
def test_malformed_ids_are_invalid(volume_id: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_volume_id(volume_id)


def test_defaults_give_a_shared_volume_in_the_default_file_system() -> None:
    params = parse_volume_parameters({}, volume_name="v", default_fsname="lustre")
    assert (params.kind, params.fsname) == ("shared", "lustre")


def test_template_parameters_are_parsed_with_units() -> None:
    params = parse_volume_parameters(
        {
            "fsname": "scratch",
            "ostSize": "2Ti",
            "maxOsts": "16",
            "growthThreshold": "0.9",
            "csi.storage.k8s.io/pvc/name": "claim",
        },
        volume_name="v",
        default_fsname="lustre",
    )
    assert params.template.ost_size_bytes == 2 << 40
    assert params.template.max_osts == 16
    assert params.template.growth_threshold == 0.9


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({"fsnmae": "x"}, "fsnmae"),
        ({"fsname": "waytoolong"}, "fsname"),
        ({"fsname": "bad/name"}, "fsname"),
        ({"kind": "exclusive"}, "kind"),
        ({"ostSize": "0"}, "ostSize"),
        ({"ostSize": "10Mi"}, "ostSize"),
        ({"ostSize": "-1Gi"}, "ostSize"),
        ({"maxOsts": "0"}, "maxOsts"),
        ({"growthThreshold": "2"}, "growthThreshold"),
        ({"minOsts": "5", "maxOsts": "2"}, "minOsts"),
        ({"kind": "dedicated", "fsname": "x"}, "fsname"),
    ],
)
def test_bad_parameters_name_the_key(parameters: dict[str, str], named: str) -> None:
    with pytest.raises(InvalidArgument, match=named):
        parse_volume_parameters(parameters, volume_name="v", default_fsname="lustre")


def test_dedicated_fsnames_are_stable_valid_and_distinct() -> None:
    first = dedicated_fsname("pvc-1")
    assert first == dedicated_fsname("pvc-1")
    assert first != dedicated_fsname("pvc-2")
    params = parse_volume_parameters(
        {"kind": "dedicated"}, volume_name="pvc-1", default_fsname="lustre"
    )
    assert params.fsname == first and len(first) == 8


def test_a_dedicated_file_system_is_made_dedicated_to_the_volume_id() -> None:
    # The file system records whom it serves, by the id DeleteVolume will be given.
    params = parse_volume_parameters(
        {"kind": "dedicated"}, volume_name="pvc-1", default_fsname="lustre"
    )
    assert params.template.extra["dedicatedTo"] == f"v1:dedicated:{params.fsname}:pvc-1"


def test_an_fsname_with_a_trailing_newline_is_refused_by_every_check() -> None:
    # One definition of a Lustre name (csi.lustre.fsname), matched whole: '$' alone would let
    # "lustre\n" through to mkfs.lustre, the CR spec and the local ledger.
    from csi.lustre.fsname import validate_fsname
    from provisioner.kubevirt.spec import SpecError, parse_spec

    with pytest.raises(InvalidArgument, match="fsname"):
        parse_volume_parameters({"fsname": "lustre\n"}, volume_name="v", default_fsname="x")
    with pytest.raises(InvalidArgument):
        validate_fsname("lustre\n")
    spec = {"fsname": "lustre\n", "mdtSize": "1Gi", "ostSize": "1Gi", "maxOsts": 4,
            "server": {"image": "img"}, "network": {"attachment": "n", "ipPool": "10.0.0.0/29"}}
    with pytest.raises(SpecError, match=r"spec\.fsname"):
        parse_spec(spec)


def test_storageclass_parameters_and_the_file_system_spec_describe_the_same_fields() -> None:
    # One field table serves both: every parameter reaches the spec, and a problem in a spec
    # built from parameters is named by its parameter.
    from csi.server_sets import TEMPLATE_FIELDS
    from provisioner.kubevirt.spec import SpecError, parse_spec, spec_from_template, template_error

    given = {"mdtSize": "2Gi", "ostSize": "3Gi", "ostsPerOss": "3", "minOsts": "2",
             "maxOsts": "6", "growthThreshold": "0.5", "image": "img:1", "cpu": "4",
             "memory": "16Gi", "targetStorageClass": "fast", "networkAttachment": "net",
             "ipPool": "10.1.0.0/24", "storageInterface": "eth2", "ostPools": "flash:2:nvme"}
    assert set(given) == {f.parameter for f in TEMPLATE_FIELDS}
    params = parse_volume_parameters(given, volume_name="v", default_fsname="lustre")
    spec = parse_spec(spec_from_template("lustre", params.template))
    assert (spec.mdt_size_bytes, spec.ost_size_bytes) == (2 << 30, 3 << 30)
    assert (spec.osts_per_oss, spec.min_osts, spec.max_osts, spec.ost_count) == (3, 2, 6, 2)
    assert spec.growth_threshold == 0.5
    assert (spec.image, spec.cpu, spec.memory) == ("img:1", "4", "16Gi")
    assert spec.target_storage_class == "fast"
    assert (spec.network_attachment, spec.ip_pool.text, spec.storage_interface) == (
        "net", "10.1.0.0/24", "eth2")
    assert [(p.name, p.ost_count, p.target_storage_class) for p in spec.pools] == [
        ("flash", 2, "nvme")]
    bad = parse_volume_parameters({"cpu": "lots"}, volume_name="v", default_fsname="lustre")
    with pytest.raises(SpecError) as error:
        parse_spec(spec_from_template("lustre", bad.template))
    assert "parameter cpu (spec.server.cpu)" in str(template_error(error.value))
