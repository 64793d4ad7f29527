"""A static PV's layout keys (issue 11): the node gives the admin's directory that default
layout when it stages it, checked against the file system; a dynamic volume's context keys are
never applied again (ModifyVolume may have changed its layout since CreateVolume).

The real driver process over the embedded local server set, with real (private) mounts.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from csi.cli.client import CsiClient, mount_capability
from csi.host.command import SubprocessRunner
from csi.lustre.client import LustreClient
from csi.lustre.layout import LayoutParameters
from csi.rpc import csi_pb2
from provisioner.local import LocalServerSets
from provisioner.local_lustre import LocalLustreCommands
from tests.support.driver import DriverProcess
from tests.support.in_process_node import top_mount

GiB, MiB = 1 << 30, 1 << 20
HANDLE = "admin-written-handle"


def _legacy_directory(driver: DriverProcess, client: CsiClient) -> Path:
    """File system "legacy" (two OSTs), with an admin's directory projects/alpha in it."""
    client.create_volume("seed", GiB, {"fsname": "legacy", "minOsts": "2"})
    shared = driver.state_dir / "filesystems" / "legacy" / "root" / "projects" / "alpha"
    shared.mkdir(parents=True)
    return shared


def _layout_at(driver: DriverProcess, path: str) -> LayoutParameters:
    """What `lfs getstripe -d` says of `path` (the stand-in's lfs, as the driver runs it)."""
    lfs = LocalLustreCommands(LocalServerSets(driver.state_dir), SubprocessRunner())
    return LustreClient(lfs).default_layout(path)


def _static(**layout: str) -> dict[str, str]:
    return {"fsname": "legacy", "mgsNids": "0@lo", "subdir": "projects/alpha", **layout}


def test_a_static_volume_gets_the_layout_its_pv_names_when_staged(driver: DriverProcess) -> None:
    client = driver.client()
    _legacy_directory(driver, client)
    staging = driver.staging_path(HANDLE)
    context = _static(stripeCount="2", stripeSize="4Mi")
    client.stage(HANDLE, staging, context)
    layout = _layout_at(driver, staging)
    assert (layout.stripe_count, layout.stripe_size) == (2, 4 * MiB)
    client.stage(HANDLE, staging, context)  # a repeated stage is the same stage
    client.unstage(HANDLE, staging)
    assert top_mount(staging) is None


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"stripeCount": "3"}, "stripeCount: stripe count 3 is above the 2 OST(s)"),
        ({"ostPool": "flash"}, "ostPool: 'flash' is not an OST pool of file system 'legacy'"),
        ({"stripeSize": "100Ki"}, "stripeSize"),
        ({"stripeCount": "2", "progressiveLayout": "4Mi:1,eof:2"}, "give one, not both"),
    ],
)
def test_a_static_layout_the_file_system_cannot_give_is_refused_and_leaves_nothing_mounted(
    driver: DriverProcess, layout: dict[str, str], message: str
) -> None:
    client = driver.client()
    _legacy_directory(driver, client)
    staging = driver.staging_path(HANDLE)
    with pytest.raises(grpc.RpcError) as refused:
        client.stage(HANDLE, staging, _static(**layout))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (refused.value.details() or "")
    assert top_mount(staging) is None
    # The admin's directory kept the file system's default: nothing was set on it.
    client.stage(HANDLE, staging, _static())
    default = _layout_at(driver, staging)
    assert (default.stripe_count, default.stripe_size, default.pool) == (1, 4 * MiB, None)
    client.unstage(HANDLE, staging)


def test_a_read_only_stage_of_a_static_volume_sets_no_layout(driver: DriverProcess) -> None:
    client = driver.client()
    _legacy_directory(driver, client)
    staging = driver.staging_path(HANDLE)
    reader = mount_capability(csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_READER_ONLY)
    client.stage(HANDLE, staging, _static(stripeCount="2"), reader)
    layout = _layout_at(driver, staging)
    assert (layout.stripe_count, layout.stripe_size) == (1, 4 * MiB)
    client.unstage(HANDLE, staging)


def test_a_dynamic_volumes_context_layout_is_never_applied_again_at_stage(
    driver: DriverProcess,
) -> None:
    client = driver.client()
    volume = client.create_volume("striped", GiB, {"fsname": "legacy", "minOsts": "2",
                                                   "stripeCount": "2"})
    context = dict(volume.volume_context)
    assert context["stripeCount"] == "2" and context["kind"] == "shared"
    # ModifyVolume changed the directory's layout since; the PV's context still says 2.
    client.controller.ControllerModifyVolume(csi_pb2.ControllerModifyVolumeRequest(
        volume_id=volume.volume_id, mutable_parameters={"stripeCount": "1"}))
    staging = driver.staging_path(volume.volume_id)
    client.stage(volume.volume_id, staging, context)
    assert _layout_at(driver, staging).stripe_count == 1
    client.unstage(volume.volume_id, staging)
