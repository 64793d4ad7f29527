"""A file system's growth ceiling counts its OST pools' OSTs, as the KubeVirt provider does.

maxOsts bounds the default OSTs only; a pool's OSTs are room for the file system too. A
ceiling of `maxOsts x ostSize` alone made a volume that grew its pool past it vanish: a
controller replica loading the records skipped its record as larger than the file system's
maximum, and answered NotFound for it (get, expand), left it out of ListVolumes, and a
DeleteVolume left its data. GetCapacity before the file system exists ignored the pools too.

Real (private) mounts of the embedded local server set, as `serve --mode controller` makes.
"""

from __future__ import annotations

from csi.controller.sizes import CapacityRange
from tests.support.controller_replicas import GiB, Replica

# 1 default OST of 1 GiB (maxOsts 2) and 2 flash OSTs: a 3 GiB flash volume grows the pool
# to 4 OSTs, so the file system holds 5 GiB, more than maxOsts x ostSize (2 GiB).
POOLS_PAST_MAX_OSTS = {"ostSize": "1Gi", "minOsts": "1", "maxOsts": "2",
                       "growthThreshold": "0.75", "ostPools": "flash:2"}


def test_a_pool_volume_past_max_osts_x_ost_size_stays_visible_to_a_fresh_replica(
    controller: Replica,
) -> None:
    volume_id = controller.create("fast", 3 * GiB, ostPool="flash", **POOLS_PAST_MAX_OSTS)
    mountpoint = controller.volumes.get(volume_id).mountpoint
    assert controller.lustre.pools(mountpoint, "safe") == {"flash": 4}
    with Replica(controller.state_dir, "c") as fresh:
        volume = fresh.volumes.get(volume_id)
        assert volume.record.capacity_bytes == 3 * GiB
        listed, _ = fresh.volumes.list_page("", 0)
        assert [record.volume_id for record in listed] == [volume_id]
        grown = fresh.volumes.expand(volume_id, CapacityRange(required_bytes=4 * GiB))
        assert grown.record.capacity_bytes == 4 * GiB
        assert fresh.quota_bytes(grown) == 4 * GiB
    with Replica(controller.state_dir, "d") as after_expand:
        assert after_expand.volumes.get(volume_id).record.capacity_bytes == 4 * GiB
        directory = after_expand.directory(grown.record)
        assert directory.is_dir()
        after_expand.volumes.delete(volume_id)
        after_expand.volumes.run_pending_removals()
        assert not directory.exists()  # its data went with it


def test_get_capacity_before_the_file_system_exists_counts_its_pools(
    controller: Replica,
) -> None:
    params = controller.params("fast", **POOLS_PAST_MAX_OSTS)
    assert controller.sets.list_file_systems() == []
    # 2 default OSTs at most and 2 flash OSTs: 4 GiB, 3 GiB of it usable at 0.75.
    capacity = controller.volumes.capacity(params)
    assert capacity.available_bytes == 3 * GiB
    assert capacity.maximum_volume_bytes == 3 * GiB
