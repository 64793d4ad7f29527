"""Concurrent duplicates get ABORTED; unrelated requests are not held up by them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from csi.cli.client import CsiClient
from csi.rpc import csi_pb2
from csi.server_sets import FileSystemEndpoint, ServerSetTemplate
from provisioner.local import LocalServerSets
from tests.support.in_process_driver import serving_in_process

GiB = 1 << 30


class GatedServerSets(LocalServerSets):
    """The local server sets, except that file system 'slow' waits for a gate to open:
    it stands for a provider call that takes a while (an API server round trip)."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def ensure_file_system(self, fsname: str, template: ServerSetTemplate) -> FileSystemEndpoint:
        if fsname == "slow":
            self.entered.set()
            assert self.gate.wait(10)
        return super().ensure_file_system(fsname, template)


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[tuple[GatedServerSets, CsiClient]]:
    state = tmp_path / "state"
    provider = GatedServerSets(state)
    with serving_in_process(
        tmp_path / "csi.sock", state, tmp_path, node_id="n", provider=provider
    ) as driver:
        try:
            with CsiClient(driver.socket_path) as client:
                yield provider, client
        finally:
            provider.gate.set()  # before the stop: a call held at the gate would hold it up


def test_duplicate_create_is_aborted_while_unrelated_ones_proceed(
    gated: tuple[GatedServerSets, CsiClient],
) -> None:
    provider, client = gated
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(client.create_volume, "dup", GiB, {"fsname": "slow"})
        assert provider.entered.wait(5)
        with pytest.raises(grpc.RpcError) as duplicate:
            client.create_volume("dup", GiB, {"fsname": "slow"})
        assert duplicate.value.code() == grpc.StatusCode.ABORTED
        # Another volume, even in another file system, is not blocked by the first call.
        other = client.create_volume("other", GiB, {"fsname": "fast"})
        assert other.volume_id.endswith(":fast:other")
        assert not first.done()
        provider.gate.set()
        volume = first.result(10)
    again = client.create_volume("dup", GiB, {"fsname": "slow"})
    assert again.volume_id == volume.volume_id


def test_many_parallel_creates_on_one_file_system_all_succeed(
    gated: tuple[GatedServerSets, CsiClient],
) -> None:
    _, client = gated

    def create(n: int) -> csi_pb2.Volume:
        # As the external-provisioner does: UNAVAILABLE (every volume-call thread busy) is
        # retried; nothing else is.
        while True:
            try:
                return client.create_volume(f"par-{n}", GiB, {"fsname": "fast"})
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise

    with ThreadPoolExecutor(16) as pool:
        volumes = list(pool.map(create, range(64)))
    assert len({v.volume_id for v in volumes}) == 64
    listed = client.list_volumes().entries
    assert len(listed) == 64
