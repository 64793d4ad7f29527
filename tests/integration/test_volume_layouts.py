"""Volume layouts end to end in one controller: CreateVolume sets the directory's default layout
and records it, a layout the file system cannot give leaves nothing behind, ModifyVolume
changes the layout for new files and the inode limit.

Real (private) mounts of the embedded local server set, as `serve --mode controller` makes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from csi.controller.parameters import parse_mutable_parameters
from csi.controller.servicer import volume_context
from csi.controller.sizes import CapacityRange
from csi.errors import InProgress, InvalidArgument, NotFound
from csi.lustre.layout import LayoutParameters, parse_layout
from tests.support.controller_replicas import GiB, Replica

MiB = 1 << 20



def _directory(controller: Replica, volume_id: str) -> Path:
    record = controller.volumes.get(volume_id).record
    return controller.root(record.fsname) / record.directory


def test_create_sets_records_and_reports_the_default_layout(controller: Replica) -> None:
    volume_id = controller.create("striped", minOsts="2", stripeCount="2", stripeSize="4Mi")
    layout = controller.lustre.default_layout(_directory(controller, volume_id))
    assert (layout.stripe_count, layout.stripe_size) == (2, 4 * MiB)
    record = controller.volumes.get(volume_id).record
    assert record.layout == {"stripeCount": "2", "stripeSize": "4Mi"}
    context = volume_context(record, ("0@lo",))
    assert (context["stripeCount"], context["stripeSize"]) == ("2", "4Mi")
    # A retry with the same parameters is the same volume; other layouts are another volume.
    assert controller.create("striped", minOsts="2", stripeCount="2", stripeSize="4Mi") == volume_id


def test_a_volume_without_layout_parameters_keeps_the_file_system_default(
    controller: Replica,
) -> None:
    volume_id = controller.create("plain")
    assert controller.volumes.get(volume_id).record.layout == {}
    default = controller.lustre.default_layout(_directory(controller, volume_id))
    assert (default.stripe_count, default.stripe_size, default.pool) == (1, 4 * MiB, None)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"stripeCount": "3"}, r"stripeCount: stripe count 3 is above the 2 OST\(s\) of file"),
        ({"progressiveLayout": "4Mi:1,eof:5"}, r"progressiveLayout: stripe count 5 is above"),
        ({"ostPool": "flash"}, r"ostPool: 'flash' is not an OST pool of file system 'safe'"),
    ],
)
def test_a_layout_the_file_system_cannot_give_is_refused_and_leaves_nothing(
    controller: Replica, parameters: dict[str, str], message: str
) -> None:
    controller.create("neighbour", minOsts="2")
    with pytest.raises(InvalidArgument, match=message):
        controller.create("refused", minOsts="2", **parameters)
    assert [r.name for r in controller.volumes.catalog] == ["neighbour"]
    assert not list((controller.root("safe") / "csi-volumes").glob("refused-*"))
    # Nothing was reserved or claimed for it: the name makes a volume once the layout fits.
    assert controller.create("refused", minOsts="2", stripeCount="2")


def test_a_layout_may_name_a_pool_of_the_file_system(controller: Replica) -> None:
    pools = {"minOsts": "2", "ostPools": "flash:1,disk:3"}
    with pytest.raises(InvalidArgument, match=r"above the 1 OST\(s\) of pool 'flash'"):
        controller.create("fast", ostPool="flash", stripeCount="2", **pools)
    volume_id = controller.create("fast", ostPool="flash", stripeCount="-1", **pools)
    assert controller.lustre.default_layout(_directory(controller, volume_id)).pool == "flash"
    # A stripe count fits the pool's OSTs, not the file system's (2 + 1 + 3 OSTs).
    assert controller.create("wide", ostPool="disk", stripeCount="3", **pools)
    mountpoint = controller.volumes.get(volume_id).mountpoint
    assert controller.lustre.pools(mountpoint, "safe") == {"flash": 1, "disk": 3}


def test_modify_changes_the_layout_for_new_files_and_the_inode_limit(controller: Replica) -> None:
    volume_id = controller.create("growing", minOsts="2", stripeCount="1")
    changes = parse_mutable_parameters(
        {"progressiveLayout": "64Mi:1,eof:-1", "stripeSize": "1Mi", "inodeLimit": "5000"}
    )
    modified = controller.volumes.modify(volume_id, changes).record
    expected = parse_layout({"progressiveLayout": "64Mi:1,eof:-1", "stripeSize": "1Mi"})
    assert controller.lustre.default_layout(_directory(controller, volume_id)) == expected
    assert modified.layout == expected.to_attributes()
    mountpoint = controller.volumes.get(volume_id).mountpoint
    quota = controller.lustre.project_quota(mountpoint, modified.project_id)
    assert quota.inode_hard_limit == 5000
    assert quota.block_hard_limit_bytes == GiB  # the capacity is untouched
    # The change is in the record: another controller sees it, and CreateVolume's own
    # parameters (what a retry must match) are what they were.
    with Replica(controller.state_dir, "c") as fresh:
        record = fresh.volumes.get(volume_id).record
        assert (record.layout, record.inode_limit) == (modified.layout, 5000)
        assert fresh.create("growing", minOsts="2", stripeCount="1") == volume_id


def test_modify_that_does_not_fit_changes_nothing(controller: Replica) -> None:
    volume_id = controller.create("steady", minOsts="2", stripeCount="2")
    with pytest.raises(InvalidArgument, match=r"stripeCount: stripe count 4 is above"):
        controller.volumes.modify(volume_id, parse_mutable_parameters({"stripeCount": "4"}))
    assert controller.volumes.get(volume_id).record.layout == {"stripeCount": "2"}
    layout = controller.lustre.default_layout(_directory(controller, volume_id))
    assert layout.stripe_count == 2


def test_modify_of_an_unknown_volume_is_not_found(controller: Replica) -> None:
    controller.create("known")
    with pytest.raises(NotFound):
        controller.volumes.modify(
            "v1:shared:safe:unknown", parse_mutable_parameters({"stripeCount": "1"})
        )


def test_repeating_a_modify_is_a_no_op(controller: Replica) -> None:
    volume_id = controller.create("twice", minOsts="2")
    changes = parse_mutable_parameters({"stripeCount": "-1"})
    first = controller.volumes.modify(volume_id, changes).record
    second = controller.volumes.modify(volume_id, changes).record
    assert first == second
    assert parse_layout(second.layout) == LayoutParameters(stripe_count=-1)
    # Growing the volume keeps the layout it was given.
    assert controller.volumes.expand(volume_id, CapacityRange(required_bytes=2 * GiB))
    assert controller.volumes.get(volume_id).record.layout == {"stripeCount": "-1"}


def test_a_pool_short_of_room_grows_and_only_that_pool(controller: Replica) -> None:
    # ostSize 10Gi at a 0.5 threshold: one flash OST holds 5 GiB of reservations.
    pools = {"minOsts": "2", "ostPools": "flash:1,disk:1"}
    first = controller.create("fast-1", 4 * GiB, ostPool="flash", **pools)
    mountpoint = controller.volumes.get(first).mountpoint
    assert controller.lustre.pools(mountpoint, "safe") == {"flash": 1, "disk": 1}
    controller.create("fast-2", 4 * GiB, ostPool="flash", **pools)  # 8 GiB: flash needs 2
    assert controller.lustre.pools(mountpoint, "safe") == {"flash": 2, "disk": 1}
    controller.create("plain", 1 * GiB, **pools)  # on no pool: no pool grows
    assert controller.lustre.pools(mountpoint, "safe") == {"flash": 2, "disk": 1}
    # Growing a pool volume makes room in its pool too.
    controller.volumes.expand(first, CapacityRange(required_bytes=8 * GiB))
    assert controller.lustre.pools(mountpoint, "safe") == {"flash": 3, "disk": 1}
    indices = [ost.index for ost in controller.lustre.df(mountpoint).osts]
    assert sorted(indices) == [0, 1, 1024, 1025, 1026, 2048]


# OSTs of 1 GiB at a 0.75 threshold: 3 GiB of reservations need 4 GiB of OSTs.
TIGHT_POOLS = {"ostSize": "1Gi", "minOsts": "1", "maxOsts": "3", "growthThreshold": "0.75",
               "ostPools": "flash:2"}


def test_a_pool_volume_too_big_for_the_file_system_grows_its_pool_and_no_default_ost(
    controller: Replica,
) -> None:
    # 1 default + 2 flash OSTs hold 2.25 GiB: the 3 GiB flash volume needs 4 flash OSTs,
    # and those new OSTs are room for the file system too, so no default OST is added
    # (growing the file system first ended at 2 default + 4 flash).
    volume_id = controller.create("fast", 3 * GiB, ostPool="flash", **TIGHT_POOLS)
    mountpoint = controller.volumes.get(volume_id).mountpoint
    assert controller.lustre.pools(mountpoint, "safe") == {"flash": 4}
    indices = [ost.index for ost in controller.lustre.df(mountpoint).osts]
    assert sorted(indices) == [0, 1024, 1025, 1026, 1027]


def test_a_pool_still_growing_answers_in_progress_and_leaves_the_default_osts(
    controller: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = controller.create("small", GiB, ostPool="flash", **TIGHT_POOLS)
    mountpoint = controller.volumes.get(first).mountpoint

    def growing(*args: object) -> None:
        raise InProgress("growing OST pool flash")

    monkeypatch.setattr(controller.sets, "ensure_pool_capacity", growing)
    with pytest.raises(InProgress, match="growing OST pool flash"):
        controller.create("fast", 2 * GiB, ostPool="flash", **TIGHT_POOLS)
    indices = [ost.index for ost in controller.lustre.df(mountpoint).osts]
    assert sorted(indices) == [0, 1024, 1025]  # no default OST was added meanwhile
    assert controller.volumes.catalog.reserved_bytes("safe") == GiB
    # Once the pool grows, the retry fits without a default OST either.
    monkeypatch.undo()
    controller.create("fast", 2 * GiB, ostPool="flash", **TIGHT_POOLS)
    indices = [ost.index for ost in controller.lustre.df(mountpoint).osts]
    assert sorted(indices) == [0, 1024, 1025, 1026, 1027]


def test_moving_a_volume_to_a_pool_makes_room_there(controller: Replica) -> None:
    pools = {"minOsts": "2", "ostPools": "flash:1"}
    controller.create("on-flash", 4 * GiB, ostPool="flash", **pools)
    elsewhere = controller.create("elsewhere", 4 * GiB, **pools)
    mountpoint = controller.volumes.get(elsewhere).mountpoint
    assert controller.lustre.pools(mountpoint, "safe") == {"flash": 1}
    moved = controller.volumes.modify(elsewhere, parse_mutable_parameters({"ostPool": "flash"}))
    assert moved.record.layout == {"ostPool": "flash"}
    assert controller.lustre.pools(mountpoint, "safe") == {"flash": 2}  # 8 GiB on flash
    # A refused move leaves the index as the record is: reservations count as before.
    with pytest.raises(InvalidArgument, match="not an OST pool"):
        controller.volumes.modify(elsewhere, parse_mutable_parameters({"ostPool": "nvme"}))
    assert controller.volumes.catalog.reserved_bytes("safe") == 8 * GiB
