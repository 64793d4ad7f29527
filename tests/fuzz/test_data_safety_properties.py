"""Property-based fuzzing of the controller and node services (issue 8's invariants).

Hypothesis generates volume names, ids, StorageClass parameters, staging and target paths,
volume contexts, mount options and on-disk records, and throws them at a driver running in this
process (see conftest.py). After every request:

- nothing outside the file system or the kubelet directory changed (a sentinel tree);
- no victim volume lost data or mounts, and the pod's secret tmpfs is still mounted, since no
  request named a victim's own id (kubelet owns its paths: a victim's exact paths are not
  handed to unstage or unpublish);
- no mount appeared outside the kubelet directory or the driver's state directory;
- no answer was UNKNOWN or INTERNAL: bad input gets a code that says what was wrong.

Runs are derandomised (the same examples every time, so CI is repeatable); set
HYPOTHESIS_PROFILE=explore for a longer, random search on a workstation.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csi.cli.client import CsiClient, mount_capability
from csi.rpc import csi_pb2
from csi.server import Driver, DriverConfig
from tests.fuzz.conftest import World

pytestmark = pytest.mark.root

settings.register_profile(
    "ci",
    max_examples=500,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "explore",
    max_examples=3000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

GiB = 1 << 30
BAD_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}

# -- strategies --------------------------------------------------------------------------------
tricky_text = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=string.ascii_letters + string.digits + "-_./:", max_size=40),
    st.sampled_from(
        [
            "",
            ".",
            "..",
            "../..",
            "/",
            "//",
            ".lustre-csi",
            ".lustre-csi/volumes",
            ".lustre-csi/../x",
            "victim-shared",
            "victim-shared/..",
            "victim-dedicated",
            "projects",
            "a" * 200,
            "x\x00y",
            "caf\u00e9",
        ]
    ),
)
fsnames = st.one_of(
    st.sampled_from(["lustre", "x", "", "-", "toolongname", "lus tre"]),
    st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=9),
)


def volume_ids_near(world: World) -> st.SearchStrategy[str]:
    """Ids a forger would try: a victim's own id with one or two of its parts changed."""
    victim_parts = [victim.volume_id.split(":") for victim in world.victims]
    fs_of_victims = [parts[2] for parts in victim_parts]
    subdirs_of_victims = [parts[3] for parts in victim_parts]
    replacements = [
        st.sampled_from(["v0", "", "V1", "v1 "]),
        st.sampled_from(["shared", "dedicated", "static", ""]),
        st.one_of(st.sampled_from(fs_of_victims), fsnames),
        st.one_of(st.sampled_from([*subdirs_of_victims, "projects", "anything"]), tricky_text),
    ]

    @st.composite
    def mutated(draw: st.DrawFn) -> str:
        parts = list(draw(st.sampled_from(victim_parts)))
        for position in draw(st.lists(st.integers(0, 3), min_size=1, max_size=2, unique=True)):
            parts[position] = draw(replacements[position])
        return ":".join(parts)

    return st.one_of(mutated(), mutated(), mutated(), tricky_text)


parameter_keys = st.sampled_from(
    [
        "kind",
        "fsname",
        "mdtSize",
        "ostSize",
        "ostsPerOss",
        "minOsts",
        "maxOsts",
        "growthThreshold",
        "image",
        "cpu",
        "memory",
        "targetStorageClass",
        "networkAttachment",
        "ipPool",
        "storageInterface",
        "ostPools",
        "stripeCount",
        "stripeSize",
        "ostPool",
        "progressiveLayout",
        "inodeLimit",
        "colour",
        "csi.storage.k8s.io/pvc/name",
    ]
)
parameter_values = st.one_of(
    tricky_text,
    st.sampled_from(
        ["shared", "dedicated", "1Gi", "0", "-1", "1e400", "nan", "0.5", "2", "64", "10.0.0.0/8",
         "1Mi", "64Ki", "100Ki", "flash", "flash:1", "4Mi:1,eof:-1", "eof:2", "-- -c"]
    ),
)
parameters = st.dictionaries(parameter_keys, parameter_values, max_size=4)
any_mount_flags = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "flock",
                "noatime",
                "ro",
                "suid",
                "dev",
                "exec",
                "user_fid2path",
                "bind",
                "remount",
                "loop",
                "context=x",
                "noatime,suid",
            ]
        ),
        tricky_text,
    ),
    max_size=3,
)
# Mostly flags a StorageClass would carry, so requests get past validation to the mounts.
mount_flags = st.one_of(
    st.just([]), st.lists(st.sampled_from(["flock", "noatime"]), max_size=2), any_mount_flags
)
contexts = st.fixed_dictionaries(
    {},
    optional={
        "fsname": fsnames,
        "mgsNids": st.one_of(
            st.sampled_from(["0@lo", "10.0.0.5@tcp", "0@lo:10.0.0.6@tcp", "", "x@y"]), tricky_text
        ),
        "subdir": tricky_text,
        "kind": st.sampled_from(["shared", "dedicated", "static", ""]),
    },
)


def path_strategy(world: World) -> st.SearchStrategy[str]:
    kubelet = str(world.kubelet)
    component = st.one_of(
        st.sampled_from(["pod-a", "pv-a", "x", "..", ".", "", "victim-shared"]),
        st.text(alphabet=string.ascii_letters + string.digits + "-_.~", min_size=1, max_size=20),
    )
    # Paths an attacker would aim at; listed as several branches so they come up often.
    aimed = st.sampled_from(
        [
            kubelet,
            kubelet + "/",
            "/" + kubelet,
            kubelet + "//pods/p/volumes/kubernetes.io~csi/pv/mount",
            kubelet + "/../outside/precious",
            str(world.outside / "precious"),
            str(world.secret_dir),
            str(world.secret_dir) + "/token",
            str(world.secret_dir) + "/globalmount",
            world.target_path("secret-pod", "..") + "/kubernetes.io~secret/token",
            str(world.state),
            "/etc",
            "/proc/self",
            "/",
            "relative/path",
            "",
        ]
    )
    return st.one_of(
        aimed,
        aimed,
        aimed,
        st.builds(world.staging_path, tricky_text),
        st.builds(world.target_path, component, component),
        st.builds(lambda *parts: "/".join([kubelet, *parts]), component, component, component),
        tricky_text,
    )


def capability(flags: list[str], mode: int) -> csi_pb2.VolumeCapability:
    cap = mount_capability(mount_flags=flags)
    cap.access_mode.mode = mode
    return cap


AccessMode = csi_pb2.VolumeCapability.AccessMode
access_modes = st.one_of(
    st.just(AccessMode.MULTI_NODE_MULTI_WRITER),
    st.sampled_from(list(AccessMode.Mode.values())),
)


# -- the check every example ends with -----------------------------------------------------------
def call_and_check(world: World, request: str, call: Callable[[], object]) -> None:
    if world.culprit:
        pytest.fail(f"the protected state was already changed by: {world.culprit}")
    kind = request.split("(", 1)[0]
    try:
        call()
        world.outcomes[kind, "OK"] += 1
    except grpc.RpcError as failure:
        world.outcomes[kind, failure.code().name] += 1
        assert failure.code() not in BAD_CODES, (
            f"{failure.code().name} for bad input: {failure.details()}"
        )
    after = world.snapshot()
    if after != world.baseline:
        world.culprit = request
        changed = sorted(k for k in after if after[k] != world.baseline.get(k))
        pytest.fail(f"{request} changed what was not its own: {', '.join(changed)}")


def reached(world: World, *kinds: str) -> None:
    """The examples got past validation too: each kind of request succeeded at least once."""
    table = ", ".join(f"{k} {c}: {n}" for (k, c), n in sorted(world.outcomes.items()))
    print(f"outcomes: {table}")
    missing = [kind for kind in kinds if not world.outcomes[kind, "OK"]]
    assert not missing, f"no {', '.join(missing)} request ever succeeded; outcomes: {table}"


# -- controller --------------------------------------------------------------------------------
def test_controller_requests_touch_nothing_but_their_own(world: World) -> None:
    controller = world.client.controller

    @given(
        name=tricky_text,
        volume_id=volume_ids_near(world),
        params=parameters,
        flags=mount_flags,
        mode=access_modes,
        size=st.integers(min_value=-(1 << 62), max_value=1 << 62),
        token=st.one_of(tricky_text, volume_ids_near(world)),
        which=st.sampled_from(
            ["create", "delete", "delete", "expand", "get", "validate", "list", "modify"]
        ),
    )
    def one_request(name, volume_id, params, flags, mode, size, token, which):
        if which == "delete" and volume_id in world.protected_ids():
            return
        cap = capability(flags, mode)
        requests: dict[str, Callable[[], object]] = {
            "create": lambda: controller.CreateVolume(
                csi_pb2.CreateVolumeRequest(
                    name=name,
                    parameters=params,
                    volume_capabilities=[cap],
                    capacity_range=csi_pb2.CapacityRange(required_bytes=size),
                ),
                timeout=30,
            ),
            "delete": lambda: controller.DeleteVolume(
                csi_pb2.DeleteVolumeRequest(volume_id=volume_id), timeout=30
            ),
            "expand": lambda: controller.ControllerExpandVolume(
                csi_pb2.ControllerExpandVolumeRequest(
                    volume_id=volume_id,
                    capacity_range=csi_pb2.CapacityRange(required_bytes=size),
                ),
                timeout=30,
            ),
            "get": lambda: controller.ControllerGetVolume(
                csi_pb2.ControllerGetVolumeRequest(volume_id=volume_id), timeout=30
            ),
            "validate": lambda: controller.ValidateVolumeCapabilities(
                csi_pb2.ValidateVolumeCapabilitiesRequest(
                    volume_id=volume_id, volume_capabilities=[cap], parameters=params
                ),
                timeout=30,
            ),
            # A layout or inode limit is the volume's own to change; its data stays.
            "modify": lambda: controller.ControllerModifyVolume(
                csi_pb2.ControllerModifyVolumeRequest(
                    volume_id=volume_id, mutable_parameters=params
                ),
                timeout=30,
            ),
            "list": lambda: controller.ListVolumes(
                csi_pb2.ListVolumesRequest(starting_token=token, max_entries=abs(size) % 5),
                timeout=30,
            ),
        }
        call_and_check(
            world,
            f"{which}(name={name!r}, volume_id={volume_id!r}, params={params!r})",
            requests[which],
        )

    one_request()


# -- node --------------------------------------------------------------------------------------
def test_node_requests_touch_nothing_but_their_own(world: World) -> None:
    node = world.client  # NodeCalls: each request as kubelet builds it, with a 30 s deadline

    # A few ids and pods recur, so examples build on each other's stages and publishes and
    # reach the calls that succeed, not only the ones refused at the door.
    pool_ids = st.sampled_from(["static-a", "static-b", "v1:shared:lustre:static-c"])
    pool_targets = st.builds(
        world.target_path, st.sampled_from(["pod-1", "pod-2"]), st.sampled_from(["pv-a", "pv-b"])
    )
    # The root of a managed file system (refused: it holds every volume) and an admin's
    # directory on one (a static PV, which stages).
    whole_file_systems = st.sampled_from(
        [
            *(
                {"fsname": victim.context["fsname"], "mgsNids": "0@lo", "subdir": ""}
                for victim in world.victims
            ),
            {"fsname": "lustre", "mgsNids": "0@lo", "subdir": world.admin_dir.name},
        ]
    )

    # Each example starts from a request kubelet could send for a pool volume and changes up
    # to three of its fields, so most requests are nearly right: the ones that probe the
    # checks behind validation, where mounts are made and removed.
    mutations = st.lists(
        st.sampled_from(
            [
                *("id", "staging", "target", "context", "flags", "mode"),
                *("victim-context", "victim-staging"),
            ]
        ),
        max_size=3,
        unique=True,
    )

    @given(
        data=st.data(),
        readonly=st.booleans(),
        which=st.sampled_from(
            [*["stage", "publish"] * 3, *["unpublish", "unstage", "stats"] * 2, "expand"]
        ),
    )
    def one_request(data, readonly, which):
        victim = world.victims[0]
        volume_id = data.draw(pool_ids, "volume_id")
        target = data.draw(pool_targets, "target")
        context = data.draw(whole_file_systems, "context")
        flags: list[str] = []
        mode = AccessMode.MULTI_NODE_MULTI_WRITER
        changed = data.draw(mutations, "mutations")
        if "id" in changed:
            volume_id = data.draw(volume_ids_near(world), "mutated volume_id")
        staging = world.staging_path(volume_id)  # where kubelet would stage this id
        if "staging" in changed:
            staging = data.draw(path_strategy(world), "mutated staging")
        if "target" in changed:
            target = data.draw(path_strategy(world), "mutated target")
        if "context" in changed:
            context = data.draw(contexts, "mutated context")
        if "flags" in changed:
            flags = data.draw(any_mount_flags, "mutated flags")
        if "mode" in changed:
            mode = data.draw(access_modes, "mutated mode")
        if "victim-context" in changed:
            context = dict(victim.context)  # another volume's context under a foreign id
        if "victim-staging" in changed:
            staging = victim.staging  # publish someone else's staged mount
        if volume_id in world.protected_ids():
            return
        if which in ("unstage", "unpublish") and {staging, target} & world.protected_paths():
            return  # kubelet owns its paths; it never hands us a live pod's path to undo
        cap = capability(flags, mode)
        exposed_before = world.exposures()
        requests: dict[str, Callable[[], object]] = {
            "stage": lambda: node.stage(volume_id, staging, context, capability=cap),
            "unstage": lambda: node.unstage(volume_id, staging),
            "publish": lambda: node.publish(
                volume_id, staging, target, context, readonly=readonly, capability=cap
            ),
            "unpublish": lambda: node.unpublish(volume_id, target),
            "stats": lambda: node.volume_stats(volume_id, target),
            "expand": lambda: node.expand(volume_id, target),
        }
        call_and_check(
            world,
            f"{which}(volume_id={volume_id!r}, staging={staging!r}, target={target!r}, "
            f"context={context!r}, flags={flags!r})",
            requests[which],
        )
        if (context.get("fsname"), context.get("subdir", "")) != (
            victim.context["fsname"],
            victim.context.get("subdir", ""),
        ):
            # Only a request that names the victim's own tree may show it somewhere else.
            assert world.exposures() <= exposed_before, (
                f"{which} exposed a victim's data at a path of another volume"
            )

    one_request()
    reached(world, "stage", "publish", "unpublish", "unstage", "stats")


# -- records on a shared file system -------------------------------------------------------------
def record_files(world: World) -> st.SearchStrategy[bytes]:
    """Record files as anyone who can mount the file system could write them."""
    documents = st.fixed_dictionaries(
        {},
        optional={
            "name": tricky_text,
            "volume_id": volume_ids_near(world),
            "kind": st.sampled_from(["shared", "dedicated", "static", ""]),
            "fsname": fsnames,
            "subdir": st.one_of(
                tricky_text,
                st.sampled_from(
                    ["/", "/etc", "../../outside/precious", "victim-shared", "projects"]
                ),
            ),
            "capacity_bytes": st.one_of(st.integers(), tricky_text),
            "project_id": st.one_of(st.integers(), tricky_text),
            "state": st.sampled_from(["creating", "ready", "deleting", "gone", ""]),
            "parameters": st.one_of(
                st.dictionaries(tricky_text, tricky_text, max_size=2), st.none()
            ),
            # A forged layout is applied to nothing: the record is skipped or its layout is
            # one the driver could have set.
            "layout": st.one_of(
                st.dictionaries(parameter_keys, parameter_values, max_size=2), tricky_text
            ),
            "inode_limit": st.one_of(st.integers(), tricky_text),
        },
    )
    return st.one_of(
        st.builds(lambda d: json.dumps(d).encode(), documents),
        st.binary(max_size=64),
        st.sampled_from([b"", b"{", b"null", b"[]", b'"x"', b"\xff\xfe"]),
    )


def test_records_planted_on_the_file_system_break_nothing_and_remove_nothing(
    world: World, tmp_path: Path
) -> None:
    victim = world.victims[0]
    records = _records_dir(world, victim)
    counter = iter(range(1_000_000))

    @settings(max_examples=40)
    @given(
        content=record_files(world),
        file_name=st.sampled_from(["forged", "victim-shared", "zz"]),
    )
    def one_record(content, file_name):
        # A fresh name each time: the real records are never overwritten, only joined.
        planted = records / f"{file_name}-{next(counter)}.json"
        planted.write_bytes(content)
        try:
            # A restarted controller (a replica that becomes active) loads every record.
            socket = tmp_path / f"r{next(counter)}.sock"
            replica = Driver(
                DriverConfig(
                    mode="controller",
                    endpoint=f"unix://{socket}",
                    node_id="fuzz-replica",
                    state_dir=world.state,
                    kubelet_dirs=[str(world.kubelet)],
                )
            )
            replica.start()
            try:
                with CsiClient(str(socket), timeout=30) as client:
                    forged_id = _forged_id(content)
                    calls: list[Callable[[], object]] = [
                        lambda: client.list_volumes(),
                        lambda: client.controller.ControllerGetVolume(
                            csi_pb2.ControllerGetVolumeRequest(volume_id=victim.volume_id),
                            timeout=30,
                        ),
                        lambda: client.create_volume(f"fresh-{next(counter)}", GiB),
                    ]
                    if forged_id and forged_id not in world.protected_ids():
                        calls.append(lambda: client.delete_volume(forged_id))
                    for call in calls:
                        call_and_check(world, f"with a planted record {content!r}", call)
                    # The victim is still a volume, whatever else lies beside its record.
                    client.controller.ControllerGetVolume(
                        csi_pb2.ControllerGetVolumeRequest(volume_id=victim.volume_id), timeout=30
                    )
            finally:
                replica.stop()
        finally:
            planted.unlink(missing_ok=True)

    one_record()


def _records_dir(world: World, victim) -> Path:
    """Where the victim's file system keeps records, found from the record of the victim."""
    fsname = victim.context["fsname"]
    namespace = world.state / "filesystems" / fsname / "root"
    found = [p.parent for p in namespace.rglob("*.json") if victim.volume_id in p.read_text()]
    assert found, f"no record of {victim.volume_id} under {namespace}"
    return found[0]


def _forged_id(content: bytes) -> str:
    try:
        document = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return ""
    value = document.get("volume_id") if isinstance(document, dict) else None
    return value if isinstance(value, str) else ""
