"""Which staging and target paths the node accepts: kubelet's CSI layouts, below its root."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import csi.node.paths as paths_module
from csi.errors import FailedPrecondition, InvalidArgument
from csi.node.paths import PathPolicy, kubelet_staging_path, kubelet_target_path

VOLUME = "v1:shared:scratch:pvc-1"
SHA = hashlib.sha256(VOLUME.encode()).hexdigest()


@pytest.fixture
def kubelet(tmp_path: Path) -> str:
    (tmp_path / "kubelet").mkdir()
    return str(tmp_path / "kubelet")


def test_kubelets_own_layouts_are_accepted(kubelet: str) -> None:
    policy = PathPolicy([kubelet])
    staging = f"{kubelet}/plugins/kubernetes.io/csi/lustre.csi.io/{SHA}/globalmount"
    assert kubelet_staging_path(kubelet, VOLUME) == staging
    assert policy.staging_path(staging, "staging_target_path", VOLUME) == staging
    target = kubelet_target_path(kubelet, "pvc-1", "6f1c2b6e-7d1a-4d8e-9d3a-0b7c5a1e2f40")
    assert policy.target_path(target, "target_path") == target
    assert policy.target_path(target + "/", "target_path") == target
    assert policy.volume_path(staging, "volume_path") == staging
    assert policy.volume_path(target, "volume_path") == target


@pytest.mark.parametrize(
    "relative",
    [
        "",  # the kubelet root itself
        "pods/uid-1",
        "pods/uid-1/volumes/kubernetes.io~csi/pvc-1",
        "pods/uid-1/volumes/kubernetes.io~csi/pvc-1/mount/deeper",  # inside another volume
        "pods/uid-1/volumes/kubernetes.io~secret/token",  # a secret's tmpfs
        "pods/uid-1/volumes/kubernetes.io~empty-dir/cache/mount",
        "pods/uid-1/volumes/kubernetes.io~csi/..hidden/mount",
        "pods/uid-1/volume-subpaths/pvc-1/app/0",
        "plugins/kubernetes.io/csi/lustre.csi.io/globalmount",
        f"plugins/kubernetes.io/csi/other.csi.io/{SHA}/globalmount",  # another driver's
        "plugins/lustre.csi.io/pvc-1/globalmount",
        "plugins/kubernetes.io/csi/pv/pvc-1/globalmount/x",
    ],
)
def test_other_paths_below_the_kubelet_root_are_refused(kubelet: str, relative: str) -> None:
    policy = PathPolicy([kubelet])
    path = f"{kubelet}/{relative}".rstrip("/")
    for check in (
        lambda: policy.staging_path(path, "staging_target_path", VOLUME),
        lambda: policy.target_path(path, "target_path"),
        lambda: policy.volume_path(path, "volume_path"),
    ):
        with pytest.raises(InvalidArgument, match="kubelet gives this driver"):
            check()


def test_a_staging_path_must_be_the_one_of_its_own_volume(kubelet: str) -> None:
    policy = PathPolicy([kubelet])
    other = kubelet_staging_path(kubelet, "v1:shared:scratch:pvc-2")
    with pytest.raises(InvalidArgument, match="staging_target_path"):
        policy.staging_path(other, "staging_target_path", VOLUME)
    assert policy.volume_path(other, "volume_path") == other  # stats do not name a volume


def test_a_target_path_is_not_a_staging_path_and_back(kubelet: str) -> None:
    policy = PathPolicy([kubelet])
    with pytest.raises(InvalidArgument):
        policy.target_path(kubelet_staging_path(kubelet, VOLUME), "target_path")
    with pytest.raises(InvalidArgument):
        policy.staging_path(kubelet_target_path(kubelet, "p", "u"), "staging_target_path", VOLUME)


def test_a_kubelet_root_given_as_a_symlink_answers_in_the_mount_tables_spelling(
    tmp_path: Path, kubelet: str
) -> None:
    link = tmp_path / "var-lib-kubelet"
    link.symlink_to(kubelet)
    policy = PathPolicy([str(link)])
    target = kubelet_target_path(str(link), "pvc-1", "uid-1")
    assert policy.target_path(target, "target_path") == kubelet_target_path(
        kubelet, "pvc-1", "uid-1"
    )


def test_outside_paths_and_bad_spellings_are_refused(tmp_path: Path, kubelet: str) -> None:
    policy = PathPolicy([kubelet])
    good = kubelet_target_path(kubelet, "pvc-1", "uid-1")
    for bad in [
        "",
        "relative/path",
        "/" + good,  # '//' in front survives normpath
        good.replace("/pods/", "/pods//"),
        good.replace("/pods/uid-1/", "/pods/uid-1/../uid-2/"),
        good + "\n",
        kubelet_target_path(str(tmp_path / "elsewhere"), "pvc-1", "uid-1"),
    ]:
        with pytest.raises(InvalidArgument, match="target_path"):
            policy.target_path(bad, "target_path")


def test_a_symlink_swapped_in_after_the_check_does_not_redirect_the_held_path(
    tmp_path: Path, kubelet: str
) -> None:
    policy = PathPolicy([kubelet])
    target = policy.target_path(kubelet_target_path(kubelet, "pvc-1", "uid-1"), "target_path")
    held = policy.hold(target, "target_path", make_parents=True)
    assert held is not None
    with held:
        # Between the check and the mount, the parent is moved away and a symlink to
        # somewhere else put in its place.
        parent = Path(target).parent
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        parent.rename(parent.with_name("moved"))
        parent.symlink_to(elsewhere)
        held.make_dir()
    assert (parent.with_name("moved") / "mount").is_dir()  # made where the check looked
    assert list(elsewhere.iterdir()) == []


def test_missing_parents_are_made_only_when_asked(kubelet: str) -> None:
    policy = PathPolicy([kubelet])
    target = kubelet_target_path(kubelet, "pvc-1", "uid-1")
    assert policy.hold(target, "target_path", make_parents=False) is None
    held = policy.hold(target, "target_path", make_parents=True)
    assert held is not None
    with held:
        assert not held.exists()
    assert Path(target).parent.is_dir()


def test_the_pre_124_staging_layout_that_names_no_volume_id_is_refused(kubelet: str) -> None:
    # `pv/<pv name>/globalmount` (kubelets before 1.24) is not tied to the volume id: an
    # unstage with any id could take another volume's staging mount there.
    policy = PathPolicy([kubelet])
    legacy = f"{kubelet}/plugins/kubernetes.io/csi/pv/pvc-1/globalmount"
    for volume_id in (VOLUME, "pvc-1", "v1:shared:scratch:pvc-2"):
        with pytest.raises(InvalidArgument, match="kubelet gives this driver"):
            policy.staging_path(legacy, "staging_target_path", volume_id)
    with pytest.raises(InvalidArgument, match="kubelet gives this driver"):
        policy.volume_path(legacy, "volume_path")


def test_a_missing_kubelet_root_is_a_clear_precondition_not_an_internal_error(
        tmp_path: Path) -> None:
    # Found on the real-Lustre client node: NodeStage before kubelet made its root answered
    # INTERNAL with a bare FileNotFoundError.
    missing = str(tmp_path / "no-kubelet-here")
    policy = PathPolicy([missing])
    staging = policy.staging_path(kubelet_staging_path(missing, VOLUME), "staging_target_path",
                                  VOLUME)
    with pytest.raises(FailedPrecondition, match=r"kubelet directory .* does not exist"):
        policy.hold(staging, "staging_target_path", make_parents=True)
    # Undoing what was never made is nothing to do.
    assert policy.hold(staging, "staging_target_path", make_parents=False) is None


def test_a_final_directory_that_is_not_there_has_no_mount_without_the_mount_table(
    kubelet: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = PathPolicy([kubelet])
    target = kubelet_target_path(kubelet, "pvc-1", "uid-1")
    held = policy.hold(target, "target_path", make_parents=True)
    assert held is not None
    with held:
        assert held.has_no_mount()  # no such name: the first publish, the usual case
        held.make_dir()
        assert held.has_no_mount()  # a plain directory on the parent's mount
        real_open = paths_module.os.open

        def stale(path: object, flags: int, *args: object, **kwargs: object) -> int:
            if path == held.name:  # a mount whose root went away answers ENOENT too
                raise FileNotFoundError(2, "No such file or directory")
            return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(paths_module.os, "open", stale)
        assert not held.has_no_mount()  # named in the parent: the caller reads the table
