"""Bad input gets a clear InvalidArgument (or the spec's code) and changes nothing."""

from __future__ import annotations

import os
from collections.abc import Callable

import grpc
import pytest

from csi.cli.client import CsiClient, mount_capability
from csi.rpc import csi_pb2
from tests.support.driver import DriverProcess

GiB = 1 << 30


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as failure:
        call()
    return failure.value.code(), failure.value.details() or ""


@pytest.mark.parametrize(
    ("parameters", "mentions"),
    [
        ({"fsname": "much-too-long"}, "fsname"),
        ({"fsname": "a b"}, "fsname"),
        ({"colour": "blue"}, "colour"),
        ({"ostSize": "lots"}, "ostSize"),
        ({"kind": "dedicated", "fsname": "x"}, "fsname"),
    ],
)
def test_bad_parameters(driver: DriverProcess, parameters: dict[str, str], mentions: str) -> None:
    client = driver.client()
    code, message = _code(lambda: client.create_volume("bad", GiB, parameters))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and mentions in message
    assert client.list_volumes().entries == []


@pytest.mark.parametrize(
    "flags", [["bind"], ["flock,remount"], ["noatime;rm -rf /"], ["$(id)"], ["ro\n"]]
)
def test_mount_options_outside_the_allow_list(driver: DriverProcess, flags: list[str]) -> None:
    client = driver.client()
    capability = mount_capability(mount_flags=flags)
    code, message = _code(lambda: client.create_volume("opts", GiB, {}, capability))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "volume_capabilities[0]" in message


def test_sizes_out_of_range(driver: DriverProcess) -> None:
    client = driver.client()
    request = csi_pb2.CreateVolumeRequest(
        name="range",
        capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GiB, limit_bytes=GiB),
        volume_capabilities=[mount_capability()],
    )
    code, message = _code(lambda: client.controller.CreateVolume(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "limit_bytes" in message
    client.create_volume("sized", GiB)
    code, _ = _code(lambda: client.create_volume("sized", 3 * GiB))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    code, _ = _code(lambda: client.create_volume("max", 1 << 60))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_block_access_and_unknown_fs_type(driver: DriverProcess) -> None:
    client = driver.client()
    block = csi_pb2.VolumeCapability(
        block=csi_pb2.VolumeCapability.BlockVolume(),
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=1),
    )
    code, message = _code(lambda: client.create_volume("blk", GiB, {}, block))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "block" in message
    ext4 = mount_capability()
    ext4.mount.fs_type = "ext4"
    code, message = _code(lambda: client.create_volume("ext4", GiB, {}, ext4))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "fs_type" in message


def test_volume_ids(driver: DriverProcess) -> None:
    client = driver.client()
    code, _ = _code(lambda: client.expand_volume("v1:shared:nofs:x", GiB))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = _code(lambda: client.expand_volume("x" * 200, GiB))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    client.delete_volume("not-one-of-ours")  # deleting an unknown volume succeeds
    code, _ = _code(lambda: client.list_volumes(starting_token="garbage"))
    assert code == grpc.StatusCode.ABORTED


def test_node_paths_and_context(driver: DriverProcess, tmp_path: os.PathLike[str]) -> None:
    client: CsiClient = driver.client()
    volume = client.create_volume("paths", GiB)
    context = dict(volume.volume_context)
    inside = driver.kubelet_dir.joinpath(driver.staging_path(volume.volume_id))
    cases = [
        (str(tmp_path), "not a staging path kubelet gives"),
        (f"{driver.kubelet_dir}/plugins/../../escape", "normalised"),
        ("relative/path", "absolute"),
    ]
    for path, mentions in cases:
        code, message = _code(lambda p=path: client.stage(volume.volume_id, p, context))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and mentions in message
    for bad_context in [
        {"fsname": context["fsname"]},
        {**context, "mgsNids": "0@lo;reboot"},
        {**context, "subdir": "../../etc"},
        {**context, "fsname": "bad name"},
    ]:
        code, _ = _code(lambda c=bad_context: client.stage(volume.volume_id, str(inside), c))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, bad_context
    assert not inside.exists() or not os.listdir(inside)
