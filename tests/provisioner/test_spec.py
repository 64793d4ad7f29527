import tracemalloc

import pytest

from provisioner.kubevirt.addresses import allocate, parse_pool, storage_mac
from provisioner.kubevirt.layout import Layout, extend_layout, layout_status, read_layout
from provisioner.kubevirt.spec import SpecError, object_name, parse_spec, template_error

GOOD = {"fsname": "scratch", "mdtSize": "1Gi", "ostSize": "1Gi", "maxOsts": 4,
        "server": {"image": "img"}, "network": {"attachment": "n", "ipPool": "10.0.0.0/29"}}


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"fsname": "ninechars"}, "spec.fsname", "not a Lustre file system name"),
    ({"fsname": "a.b"}, "spec.fsname", "not a Lustre file system name"),
    ({"ostSize": "0"}, "spec.ostSize", "below the minimum of 1Gi"),
    ({"mdtSize": "100Mi"}, "spec.mdtSize", "below the minimum of 1Gi"),
    ({"ostSize": "-1Gi"}, "spec.ostSize", "not a size"),
    ({"minOsts": 5}, "spec.minOsts", "above spec.maxOsts"),
    ({"growthThreshold": 0}, "spec.growthThreshold", "0.05 to 1.0"),
    ({"network": {"attachment": "n", "ipPool": "10.0.0.1-10.0.0.2/24"}}, "spec.network.ipPool",
     "holds 2 address(es) but the file system may need 3"),
    ({"network": {"attachment": "n", "ipPool": "10.0.0.9-10.0.0.1/24"}}, "spec.network.ipPool",
     "ends before it starts"),
    ({"network": {"attachment": "n"}}, "spec.network.ipPool", "is required"),
])
def test_bad_fields_are_named(change, field, words):
    with pytest.raises(SpecError) as error:
        parse_spec({**GOOD, **change})
    assert f"{field}: " in str(error.value)
    assert words in str(error.value)


def test_pool_must_hold_every_server_max_osts_could_need():
    # maxOsts 4 at 2 per OSS: mds + 2 OSS = 3 addresses; a /30 has 2 hosts.
    with pytest.raises(SpecError, match=r"holds 2 address\(es\) but the file system may need 3"):
        parse_spec({**GOOD, "network": {"attachment": "n", "ipPool": "10.0.0.0/30"}})
    assert parse_spec(GOOD).max_servers == 3


def test_template_errors_name_the_storageclass_parameter():
    with pytest.raises(SpecError) as error:
        parse_spec({**GOOD, "ostSize": "1Mi"})
    assert str(template_error(error.value)).startswith("parameter ostSize (spec.ostSize): ")


def test_object_names_are_stable_dns_labels():
    assert object_name("scratch") == "scratch"
    assert object_name("Scr_1") == object_name("Scr_1") != object_name("scr_1")
    assert object_name("Scr_1").startswith("scr-1-")


def test_pool_allocation_skips_taken_addresses_and_macs_follow_the_address():
    pool = parse_pool("10.0.0.0/30, 10.0.1.5-10.0.1.6/24")
    assert list(pool) == ["10.0.0.1", "10.0.0.2", "10.0.1.5", "10.0.1.6"]
    assert allocate(pool, {"10.0.0.2"}, 2) == ["10.0.0.1", "10.0.1.5"]
    assert pool.prefix_length("10.0.1.6") == 24
    assert storage_mac("10.0.1.6") == "02:4c:0a:00:01:06"


def test_growth_fills_an_oss_then_adds_one_and_never_reuses_an_index():
    spec = parse_spec({**GOOD, "ostCount": 1})
    first = extend_layout(Layout(), spec, [])
    assert [(s.name, s.address) for s in first.servers] == [("mds0", "10.0.0.1"),
                                                           ("oss0", "10.0.0.2")]
    grown = extend_layout(first, parse_spec({**GOOD, "ostCount": 3}), [])
    assert [(o.index, o.oss, o.hotplug) for o in grown.osts] == [
        (0, "oss0", False), (1, "oss0", True), (2, "oss1", False)]
    # A row removed by hand does not free its index: nextOstIndex only grows.
    status = layout_status(grown, spec)
    status["osts"] = status["osts"][:2]
    again = extend_layout(read_layout(status), parse_spec({**GOOD, "ostCount": 3}), [])
    assert [o.index for o in again.osts] == [0, 1, 3]
    # Complete layouts are returned unchanged (repeating a pass changes nothing).
    assert extend_layout(grown, parse_spec({**GOOD, "ostCount": 3}), []) == grown


def test_pool_exhaustion_is_reported_not_raised():
    spec = parse_spec({**GOOD, "ostCount": 4})
    layout = extend_layout(Layout(), spec, taken={"10.0.0.2", "10.0.0.3", "10.0.0.4",
                                                  "10.0.0.5"})
    assert [s.name for s in layout.servers] == ["mds0", "oss0"]
    assert layout.problems and "no free address" in layout.problems[0]


def test_a_slash_8_pool_is_parsed_and_allocated_without_being_expanded():
    # A /8 holds 16 million addresses; the spec is parsed on every reconcile and CreateVolume.
    tracemalloc.start()
    try:
        spec = parse_spec({**GOOD, "network": {"attachment": "n", "ipPool": "10.0.0.0/8"}})
        taken = {"10.0.0.1", "10.0.0.2", "10.0.0.4", "10.255.255.254"}
        layout = extend_layout(Layout(), parse_spec({**GOOD, "ostCount": 4, "network": {
            "attachment": "n", "ipPool": "10.0.0.0/8"}}), taken)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert spec.ip_pool.size == (1 << 24) - 2
    assert "10.255.255.254" in spec.ip_pool and "11.0.0.0" not in spec.ip_pool
    assert [s.address for s in layout.servers] == ["10.0.0.3", "10.0.0.5", "10.0.0.6"]
    assert peak < 1 << 20, f"parsing and allocating used {peak} bytes"


def test_allocation_in_overlapping_and_edge_pools_is_in_order_and_never_repeats():
    pool = parse_pool("10.0.0.8/31, 10.0.0.0/29, 10.0.0.5-10.0.0.12/24, 10.0.1.1/32")
    assert list(pool) == [f"10.0.0.{n}" for n in range(1, 13)] + ["10.0.1.1"]
    assert pool.size == 13
    assert allocate(pool, {"10.0.0.1", "10.0.0.7", "10.0.0.12", "junk"}, 20) == (
        [f"10.0.0.{n}" for n in (2, 3, 4, 5, 6, 8, 9, 10, 11)] + ["10.0.1.1"])
