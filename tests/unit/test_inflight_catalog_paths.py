"""In-flight keys, the volume catalog's pagination and reservations, node path checks."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from csi.controller.catalog import VolumeCatalog
from csi.controller.records import VolumeRecord, new_directory
from csi.errors import CallHung, InProgress, InvalidArgument, OperationInFlight
from csi.inflight import InFlightKeys
from csi.node.paths import PathPolicy


def test_a_held_key_refuses_a_duplicate_and_frees_on_exit() -> None:
    keys = InFlightKeys()
    with keys.claim("vol-a"):
        with pytest.raises(OperationInFlight, match="vol-a"), keys.claim("vol-a"):
            pass
        with keys.claim("vol-b"):  # unrelated work runs alongside
            assert len(keys) == 2
    assert len(keys) == 0
    with keys.claim("vol-a"):
        pass


def _ends_on_a_hung_call(keys: InFlightKeys, *held: str, returned: threading.Event | None,
                         shared: tuple[str, ...] = ()) -> None:
    with pytest.raises(CallHung), keys.claim(*held, shared=shared):
        raise CallHung("write the record of v did not answer", returned)


def test_keys_of_a_request_that_ended_on_a_hung_call_stay_held_until_it_returns() -> None:
    keys = InFlightKeys(hold_past_hung_calls=True)
    returned = threading.Event()
    _ends_on_a_hung_call(keys, "name:v", "id:v", returned=returned, shared=("fs",))
    for retry in (("id:v",), ("name:v", "id:w"), ()):
        # UNAVAILABLE, not ABORTED: the CO retries with backoff, not at once.
        with pytest.raises(InProgress, match="still waiting on its file system"), keys.claim(
            *retry, shared=("fs",) if not retry else ()
        ):
            pass
    with keys.claim("id:w"):  # other volumes go on
        pass
    returned.set()  # the hung write is back: its late effect is behind the retry now
    with keys.claim("name:v", "id:v", shared=("fs",)):
        pass
    assert len(keys) == 0
    # Keys of calls that returned are not kept for ever, even if never claimed again.
    _ends_on_a_hung_call(keys, "id:x", returned=returned)  # returned already: not held
    _ends_on_a_hung_call(keys, "id:y", returned=(still := threading.Event()))
    _ends_on_a_hung_call(keys, "id:z", returned=threading.Event())
    still.set()
    _ends_on_a_hung_call(keys, "id:w", returned=threading.Event())
    assert set(keys._hung) == {"id:z", "id:w"}


def test_a_hung_call_holds_nothing_when_it_never_started_or_the_keys_are_not_held_past_it(
) -> None:
    held_past = InFlightKeys(hold_past_hung_calls=True)
    _ends_on_a_hung_call(held_past, "id:v", returned=None)  # refused before it started
    with held_past.claim("id:v"):
        pass
    node = InFlightKeys()  # an unpublish of a dead mount must not wait for a hung stat
    _ends_on_a_hung_call(node, "target", returned=threading.Event())
    with node.claim("target"):
        pass


def test_a_failed_claim_of_several_keys_holds_none() -> None:
    keys = InFlightKeys()
    with keys.claim("b"), pytest.raises(OperationInFlight), keys.claim("a", "b"):
        pass
    with keys.claim("a"):
        pass


def test_shared_claims_run_together_but_never_beside_an_exclusive_one() -> None:
    # Publishes share their staging path; an unstage of it must wait for all of them.
    keys = InFlightKeys()
    publishes = (keys.claim("target-1", shared=["staging"]), keys.claim("t-2", shared=["staging"]))
    with publishes[0], publishes[1]:
        assert len(keys) == 3
        with pytest.raises(OperationInFlight, match="staging"), keys.claim("staging"):
            pass
    with keys.claim("staging"):
        publish = keys.claim("target-3", shared=["staging"])
        with pytest.raises(OperationInFlight, match="staging"), publish:
            pass
    assert len(keys) == 0
    with keys.claim("staging"):  # all released
        pass


def test_concurrent_claims_of_one_key_admit_exactly_one() -> None:
    keys = InFlightKeys()
    inside = threading.Barrier(8, timeout=5)
    admitted, refused = [], []
    release = threading.Event()

    def attempt() -> None:
        try:
            with keys.claim("same"):
                admitted.append(1)
                inside.wait()
                release.wait(5)
        except OperationInFlight:
            refused.append(1)
            inside.wait()

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join()
    assert (len(admitted), len(refused)) == (1, 7)


def _record(n: int, fsname: str = "fs", size: int = 10, state: str = "ready") -> VolumeRecord:
    return VolumeRecord(
        name=f"n{n:05d}",
        volume_id=f"v1:shared:{fsname}:n{n:05d}",
        kind="shared",
        fsname=fsname,
        subdir=f"n{n:05d}",
        capacity_bytes=size,
        project_id=1000 + n,
        state=state,
        directory=new_directory(f"n{n:05d}"),  # records name the directory the driver made
    )


def test_pages_cover_every_volume_once_and_survive_deletion_of_the_token(tmp_path: Path) -> None:
    catalog = VolumeCatalog()
    catalog.load("fs", tmp_path)
    for n in range(25):
        catalog.write(tmp_path, _record(n))
    seen, token = [], ""
    first, token = catalog.page("", 10)
    seen += [r.volume_id for r in first]
    catalog.remove(tmp_path, first[-1])  # the token's own volume goes away between pages
    while token:
        page, token = catalog.page(token, 10)
        seen += [r.volume_id for r in page]
    assert seen == sorted({_record(n).volume_id for n in range(25)})


def test_records_persist_and_reload_with_reservations(tmp_path: Path) -> None:
    catalog = VolumeCatalog()
    catalog.load("fs", tmp_path)
    for n in range(3):
        catalog.write(tmp_path, _record(n, size=100))
    catalog.hold(_record(9, size=1000, state="creating"))
    assert catalog.reserved_bytes("fs") == 1300
    assert [r.name for r in catalog.page("", 0)[0]] == ["n00000", "n00001", "n00002"]
    reloaded = VolumeCatalog()
    reloaded.load("fs", tmp_path)
    assert reloaded.reserved_bytes("fs") == 300
    assert reloaded.allocate_project_id("fs", tmp_path, "v-new") == 1003


def test_project_ids_are_claimed_on_the_file_system_not_just_in_memory(tmp_path: Path) -> None:
    # Two controllers whose indexes both say "next is 1000" (a leader change with a stale
    # index) still get different ids, because the claim is an O_EXCL file on the file system.
    first, second = VolumeCatalog(), VolumeCatalog()
    ids = {
        first.allocate_project_id("fs", tmp_path, "v-a"),
        second.allocate_project_id("fs", tmp_path, "v-b"),
    }
    assert ids == {1000, 1001}
    first.release_project_id(tmp_path, 1000)
    assert VolumeCatalog().allocate_project_id("fs", tmp_path, "v-c") == 1000


def test_node_paths_must_stay_inside_the_kubelet_dirs(tmp_path: Path) -> None:
    kubelet = tmp_path / "kubelet"
    (kubelet / "pods").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    (outside / "volumes/kubernetes.io~csi/pv/mount").mkdir(parents=True)
    (kubelet / "pods" / "escape").symlink_to(outside)
    (kubelet / "pods/uid/volumes/kubernetes.io~csi/pv").mkdir(parents=True)
    (kubelet / "pods/uid/volumes/kubernetes.io~csi/pv/mount").symlink_to(outside)
    policy = PathPolicy([str(kubelet)])
    good = f"{kubelet}/pods/new/volumes/kubernetes.io~csi/pv/mount"
    assert policy.target_path(good, "target_path") == good
    for bad in [
        "",
        "relative/path",
        f"{kubelet}/pods/../../elsewhere",
        f"{kubelet}//pods/new/volumes/kubernetes.io~csi/pv/mount",
        f"/{good}",  # '//' in front survives normpath
        str(outside),
        f"{good}\n",
    ]:
        with pytest.raises(InvalidArgument, match="target_path"):
            policy.target_path(bad, "target_path")
    # Symlinks on the way, or in the mount point's place, are found when the path is held.
    for redirected in [
        f"{kubelet}/pods/escape/volumes/kubernetes.io~csi/pv/mount",
        f"{kubelet}/pods/uid/volumes/kubernetes.io~csi/pv/mount",
    ]:
        checked = policy.target_path(redirected, "target_path")
        with pytest.raises(InvalidArgument, match="symlink"):
            held = policy.hold(checked, "target_path", make_parents=True)
            assert held is not None
            with held:
                held.make_dir()
    assert not (outside / "volumes/kubernetes.io~csi/pv/mount").is_symlink()
    assert list((outside / "volumes/kubernetes.io~csi/pv/mount").iterdir()) == []
