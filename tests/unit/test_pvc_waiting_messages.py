"""What a PVC's Event says while its volume waits for a file system.

The external-provisioner records a retryable CreateVolume error on the PVC (`ProvisioningFailed
... rpc error: code = Unavailable desc = <message>`), so the message must name the
LustreFileSystem to look at and what it waits for.
"""

from __future__ import annotations

from typing import Any

import pytest

from csi.errors import InProgress
from provisioner.kubevirt.layout import extend_layout, read_layout
from provisioner.kubevirt.provider import endpoint_of
from provisioner.kubevirt.spec import parse_spec
from provisioner.kubevirt.status import Observed, derive_status

SPEC = parse_spec({"fsname": "foo", "mdtSize": "1Gi", "ostSize": "1Gi", "minOsts": 2,
                   "maxOsts": 4, "server": {"image": "img"},
                   "network": {"attachment": "n", "ipPool": "10.0.0.0/29"}}, "foo")
LAYOUT = extend_layout(read_layout(None), SPEC, ())


def _lfs(name: str = "foo", status: dict[str, Any] | None = None,
         **metadata: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "generation": 1, **metadata},
            "spec": {"fsname": "foo"}, "status": status or {}}


def _message(lfs: dict[str, Any]) -> str:
    with pytest.raises(InProgress) as waiting:
        endpoint_of(lfs)
    return str(waiting.value)


def _observed(ready: set[str]) -> Observed:
    names = [f"foo-{s.name}" for s in LAYOUT.servers]
    return Observed(vms={n: {"status": {"ready": n.removeprefix("foo-") in ready}}
                         for n in names})


def test_a_file_system_just_requested_says_the_provisioner_has_not_planned_it() -> None:
    assert _message(_lfs()) == ("waiting for LustreFileSystem foo: requested; the provisioner "
                                "has not planned its servers yet")


def test_a_booting_file_system_says_how_far_its_servers_are() -> None:
    status = derive_status(_lfs(), SPEC, LAYOUT, _observed(set()), now="t").status
    assert _message(_lfs(status=status)) == (
        "waiting for LustreFileSystem foo: booting (MDS 0/1 ready, OSS 0/1 ready, "
        "OSTs 0/2 serving)")
    status = derive_status(_lfs(), SPEC, LAYOUT, _observed({"mds0"}), now="t").status
    assert "booting (MDS 1/1 ready, OSS 0/1 ready, OSTs 0/2 serving)" in _message(
        _lfs(status=status))


def test_a_degraded_file_system_names_the_server_that_is_down() -> None:
    up = derive_status(_lfs(), SPEC, LAYOUT, _observed({"mds0", "oss0"}), now="t").status
    down = derive_status(_lfs(status=up), SPEC, LAYOUT, _observed({"oss0"}), now="t").status
    assert _message(_lfs(status=down)) == (
        "waiting for LustreFileSystem foo: servers not ready (MDS 0/1 ready, OSS 1/1 ready, "
        "OSTs 2/2 serving): mds0 (foo-mds0) is not ready")


def test_the_object_is_named_with_its_fsname_when_they_differ_and_deletion_says_so() -> None:
    message = _message(_lfs("scratch-fs", deletionTimestamp="2026-12-01T00:00:00Z"))
    assert message == ("waiting for LustreFileSystem scratch-fs (fsname foo): it is being "
                       "deleted; once it is gone, a retry creates it again")
