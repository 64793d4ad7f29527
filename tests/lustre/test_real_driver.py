"""lustre-csi on real Lustre (issue 15, part 2): the driver in a client VM, on part 1's servers.

The client node (tests/lustre/real_cluster.py) runs `lustre-csi serve --mode all
--lustre-tools kernel --server-sets kubevirt`, installed from the project's wheel, against the
API server of the session and the real file system `real`. Every CSI call below goes through
the driver's own gRPC endpoint (`lustre-csi client` in the VM); every check of what it did is
a real Lustre command (`lfs`, /proc/mounts) in the VM.

Quota granularity: Lustre grants block quota to each OST in qunits (1 MiB at the least, less
as the limit nears), so a writer stops at most a few MiB before the hard limit, never past it.
"""

from __future__ import annotations

import json
import time

import pytest

from csi.lustre.layout import parse_getstripe_directory, parse_pool_list, parse_pool_members
from csi.lustre.parsers import parse_lfs_quota
from provisioner.kubevirt.kube import LUSTRE_FILE_SYSTEMS
from tests.lustre.real_cluster import (
    BOOT_TIMEOUT,
    CSI_SOCKET,
    FLASH,
    FLASH_OST,
    FS,
    KUBELET,
    MGS_NID,
    POOL,
    ClientNode,
    RealFileSystem,
)
from tests.provisioner.conftest import wait_for
from tests.support.csi_sanity import SanityReport, sanity_args
from tests.support.node_payload import MOUNT

pytestmark = pytest.mark.timeout(3600)
MiB = 1 << 20
CHECK_MOUNT = "/mnt/check"  # the whole file system, mounted by the test to look at it
# Lustre's quota granularity (see the module docstring): how far below the limit a writer may stop.
QUOTA_SLACK = 4 * MiB


def stage_and_publish(node: ClientNode, volume: dict, name: str) -> tuple[str, str]:
    """NodeStage then NodePublish of a created `volume` at kubelet's paths for pod-<name>."""
    staging, target = node.kubelet_paths(volume["volume_id"], name)
    node.stage(volume, staging)
    node.publish(volume, staging, target)
    return staging, target


def fill(node: ClientNode, directory: str, name: str, limit_mib: int) -> int:
    """Write zeros as root into `directory/name` until EDQUOT; the bytes the file then holds.

    A limit just set takes a few seconds to reach the OSTs, and until then writes pass it (seen
    here: 40 MiB written under a 32 MiB limit set moments before). So a write that ends past
    the limit, or without EDQUOT, is taken back and made again until EDQUOT comes within it.
    """
    deadline = time.monotonic() + 420
    path = f"{directory}/{name}"
    start = int(node.run(f"stat -c %s {path} 2>/dev/null || echo 0").stdout.split()[-1])
    while True:
        attempt = node.run(f"dd if=/dev/zero of={path} bs=1M count={limit_mib + 8} "
                           f"oflag=direct,append conv=notrunc 2>&1; stat -c %s {path}",
                           check=False)
        size = int(attempt.stdout.split()[-1])
        if "Disk quota exceeded" in attempt.stdout and size <= limit_mib * MiB:
            return size
        if time.monotonic() > deadline:
            quota = node.run(f"lfs quota -v -p $(lfs project -d {directory} | awk '{{print $1}}')"
                             f" {directory}", check=False).output
            raise AssertionError(f"root was never stopped by the quota: {attempt.output}\n"
                                 f"{quota}")
        node.run(f"truncate -s {start} {path}")
        time.sleep(10)


def stats(node: ClientNode, volume_id: str, path: str) -> dict:
    return node.csi_json("stats", "--path", path, volume_id)


def usage(response: dict, unit: str = "BYTES") -> dict:
    return next(u for u in response["usage"] if u.get("unit", "BYTES") == unit)


def file_layout(node: ClientNode, path: str) -> tuple[int, int, str, list[int]]:
    """(stripe count, stripe size, pool, OST indices) of a file, as `lfs getstripe` says."""
    count, size, pool = (node.run(f"lfs getstripe {flag} {path}").stdout.strip()
                         for flag in ("-c", "-S", "-p"))
    report = node.run(f"lfs getstripe {path}").stdout
    lines = report.splitlines()
    table = next(n for n, line in enumerate(lines) if line.split()[:1] == ["obdidx"])
    indices = [int(line.split()[0]) for line in lines[table + 1:] if line.split()]
    return int(count), int(size), pool, sorted(indices)


def mount_check(node: ClientNode) -> None:
    node.run(f"mountpoint -q {CHECK_MOUNT} || {{ mkdir -p {CHECK_MOUNT} && "
             f"mount -t lustre {MGS_NID}:/{FS} {CHECK_MOUNT}; }}", timeout=600)


def test_csi_sanity_passes_on_a_real_lustre_client(client_node: ClientNode,
                                                   real_fs: RealFileSystem):
    node = client_node
    # Small volumes: the file system has one 2 GiB OST, and growth is a test of its own.
    args = sanity_args(endpoint=f"unix://{CSI_SOCKET}",
                       mount_dir=f"{KUBELET}/csi-sanity/mount",
                       staging_dir=f"{KUBELET}/csi-sanity/staging",
                       params=f"{MOUNT}/sanity-params.yaml",
                       mutable_params=f"{MOUNT}/sanity-mutable-params.yaml",
                       report="/root/junit.xml",
                       volume_bytes=64 * MiB, expand_bytes=128 * MiB, timeout="50m")
    # An admin's own project on the file system, made by hand before the driver's first volume
    # (the servers' test made project 1000 the same way): the driver must not hand its id to a
    # volume (csi/controller/project_ids.py asks `lfs quota -p` first).
    mount_check(node)
    node.run(f"mkdir -p {CHECK_MOUNT}/admin && lfs project -p 1000 -s {CHECK_MOUNT}/admin && "
             f"echo results > {CHECK_MOUNT}/admin/data && "
             f"lfs setquota -p 1000 -B 10M {CHECK_MOUNT}")
    started = time.monotonic()
    node.run(f"mkdir -p {KUBELET}/csi-sanity", check=True)
    result = node.run(f"{MOUNT}/csi-sanity {' '.join(args)} > /root/csi-sanity.log 2>&1",
                      timeout=3200, check=False)
    real_fs.record_timing("csi-sanity on real Lustre", time.monotonic() - started)
    log = node.run("tail -c 6000 /root/csi-sanity.log").stdout
    report = SanityReport.from_junit(node.run("cat /root/junit.xml").stdout)
    assert not report.problems(), f"{report.problems()}\n{log}\n{node.driver_log()}"
    assert result.exit_code == 0, log
    skipped = node.run("journalctl -u lustre-csi --no-pager -o cat | grep -F "
                       f"'project id 1000 on {FS} is used outside lustre-csi'", check=False)
    assert skipped.exit_code == 0, node.driver_log()
    assert f"block limit {10 * MiB}" in skipped.stdout, skipped.stdout  # as real lfs said
    assert node.run(f"lfs project -d {CHECK_MOUNT}/admin").stdout.split()[0] == "1000"


def test_a_volume_lives_on_real_lustre(client_node: ClientNode, real_fs: RealFileSystem):
    node = client_node
    volume = node.csi_json("create", "--size", "32Mi", "--param", f"fsname={FS}", "life")
    # The driver's own time per call (its log), without the CLI's start in the VM.
    real_fs.record_timing("CreateVolume (real Lustre)", node.served_seconds("CreateVolume"))
    volume_id, context = volume["volume_id"], volume["volume_context"]
    assert int(volume["capacity_bytes"]) == 32 * MiB
    assert context["mgsNids"] == MGS_NID and context["fsname"] == FS
    staging, target = stage_and_publish(node, volume, "life")
    real_fs.record_timing("NodeStageVolume (real mount.lustre)",
                          node.served_seconds("NodeStageVolume"))
    real_fs.record_timing("NodePublishVolume (bind)", node.served_seconds("NodePublishVolume"))
    mounts = node.run("cat /proc/mounts").stdout
    source = f"{MGS_NID}:/{FS}/{context['subdir']}"
    assert f"{source} {staging} lustre " in mounts, mounts
    assert f" {target} lustre " in mounts
    # What the node plugin reads about this client and this mount.
    real_fs.capture("lctl-list_nids-client.txt", node.run("lctl list_nids").stdout)
    instance = node.run(f"lfs getname -i {target}").stdout
    real_fs.capture("lfs-getname-i.txt", instance)
    real_fs.capture("lctl-get_param-state-connected.txt", node.run(
        f"lctl get_param mdc.*-mdc-{instance.strip()}.state osc.*-osc-{instance.strip()}.state"
    ).stdout)

    # The directory carries the volume's project id, inherited (P), and its quota.
    project = node.run(f"lfs project -d {target}").stdout.split()
    project_id = project[0]
    assert project_id.isdigit() and int(project_id) > 0 and project[1] == "P", project
    quota = parse_lfs_quota(node.run(f"lfs quota -p {project_id} {target}").stdout)
    assert quota.block_hard_limit_bytes == 32 * MiB

    # A writer running as root stops at the quota.
    written = fill(node, target, "data", 32)
    assert 32 * MiB - QUOTA_SLACK <= written <= 32 * MiB, written
    reported = stats(node, volume_id, target)
    assert reported["volume_condition"] == {"message": "mounted"} or \
        not reported["volume_condition"].get("abnormal"), reported
    quota = parse_lfs_quota(node.run(f"lfs quota -p {project_id} {target}").stdout)
    assert int(usage(reported)["total"]) == 32 * MiB
    assert int(usage(reported)["used"]) == quota.used_bytes
    assert abs(quota.used_bytes - written) <= MiB

    # Expansion raises the limit; the same writer goes on.
    node.csi("expand", "--size", "64Mi", volume_id)
    assert parse_lfs_quota(node.run(f"lfs quota -p {project_id} {target}").stdout
                           ).block_hard_limit_bytes == 64 * MiB
    more = fill(node, target, "data", 64)
    assert written < 64 * MiB - QUOTA_SLACK <= more <= 64 * MiB, (written, more)
    assert int(usage(stats(node, volume_id, target))["total"]) == 64 * MiB

    # What each Lustre command the driver spawns costs here, against a bare spawn: the
    # project id is also the FS_IOC_FSSETXATTR ioctl and the quota calls have llapi
    # equivalents, so a spawn's share says what switching would save (bench/real_lustre.py).
    probe_dir = f"{target}/.cost"
    node.run(f"mkdir -p {probe_dir}")
    for what, command in (
            ("spawn /bin/true", "/bin/true"),
            ("lfs project -p -s (assign project)", f"lfs project -p {project_id} -s {probe_dir}"),
            ("lfs project -d (read project)", f"lfs project -d {probe_dir}"),
            ("lfs setquota -p (set limits)",
             f"lfs setquota -p {project_id} -B 64M {target}"),
            ("lfs quota -p (read usage)", f"lfs quota -p {project_id} {target}"),
            ("lfs df -v (capacity)", f"lfs df -v {target}")):
        result = node.run("TIMEFORMAT=%R; for i in 1 2 3 4 5; do time "
                          f"({command} > /dev/null); done 2>&1")
        samples = sorted(float(line) for line in result.stdout.split())
        real_fs.record_timing(f"command in the client VM, median of 5: {what}", samples[2])
    node.run(f"rmdir {probe_dir}")

    stats_seconds = node.served_seconds("NodeGetVolumeStats")
    real_fs.record_timing("NodeGetVolumeStats (statfs, import states, lfs quota)", stats_seconds)
    real_fs.record_timing("ControllerExpandVolume (lfs setquota)",
                          node.served_seconds("ControllerExpandVolume"))
    node.csi("unpublish", "--target-path", target, volume_id)
    real_fs.record_timing("NodeUnpublishVolume", node.served_seconds("NodeUnpublishVolume"))
    node.csi("unstage", "--staging-path", staging, volume_id)
    real_fs.record_timing("NodeUnstageVolume (real umount)",
                          node.served_seconds("NodeUnstageVolume"))
    assert f" {staging} " not in node.run("cat /proc/mounts").stdout
    node.csi("delete", volume_id)
    real_fs.record_timing("DeleteVolume (rename to trash; removal after)",
                          node.served_seconds("DeleteVolume"))
    # The tree is removed in the background after DeleteVolume answers, the quota after it.
    mount_check(node)
    wait_for(lambda: node.run(f"test -e {CHECK_MOUNT}/{context['subdir']}",
                              check=False).exit_code == 1 and parse_lfs_quota(node.run(
        f"lfs quota -p {project_id} {CHECK_MOUNT}").stdout).block_hard_limit_bytes == 0,
        300, "the volume's directory and quota removed")


def test_a_static_volume_mounts_without_the_controller(client_node: ClientNode,
                                                       real_fs: RealFileSystem):
    node = client_node
    mount_check(node)
    node.run(f"mkdir -p {CHECK_MOUNT}/projects/alpha && echo hello > "
             f"{CHECK_MOUNT}/projects/alpha/greeting")
    # What a static PV carries (deploy/examples/static-pv.yaml): an admin's handle and attributes.
    # Its layout keys (issue 11) become the directory's default layout at the stage.
    pv = {"volume_id": "static-projects-alpha",
          "volume_context": {"fsname": FS, "mgsNids": MGS_NID, "subdir": "projects/alpha",
                             "stripeCount": "2", "stripeSize": "4Mi"}}
    staging, target = stage_and_publish(node, pv, "static")
    assert node.run(f"cat {target}/greeting").stdout == "hello\n"
    directory = node.run(f"lfs getstripe -d {CHECK_MOUNT}/projects/alpha").stdout
    real_fs.capture("lfs-getstripe-d-plain.txt", directory)
    layout = parse_getstripe_directory(directory)
    assert (layout.stripe_count, layout.stripe_size) == (2, 4 * MiB), directory
    node.run(f"dd if=/dev/zero of={target}/made-after bs=1M count=8 oflag=direct")
    assert file_layout(node, f"{target}/made-after")[:2] == (2, 4 * MiB)
    mounts = node.run("cat /proc/mounts").stdout
    assert f"{MGS_NID}:/{FS}/projects/alpha {staging} lustre " in mounts
    node.csi("unpublish", "--target-path", target, "static-projects-alpha")
    node.csi("unstage", "--staging-path", staging, "static-projects-alpha")
    assert node.run(f"cat {CHECK_MOUNT}/projects/alpha/greeting").stdout == "hello\n"


def test_layouts_reach_the_files_made_in_a_volume(client_node: ClientNode,
                                                  real_fs: RealFileSystem):
    """A striped class's files are striped so; a pool-bound volume's files sit only on that
    pool's OSTs; ModifyVolume changes the layout of the files made after it, not before."""
    node = client_node
    mount_check(node)
    # What the driver reads to check a layout against the file system (LustreClient.pools).
    listed = node.run(f"lfs pool_list {CHECK_MOUNT}").stdout
    members = node.run(f"lfs pool_list {FS}.{FLASH}").stdout
    real_fs.capture("lfs-pool_list-mountpoint.txt", listed)
    real_fs.capture("lfs-pool_list-pool.txt", members)
    assert parse_pool_list(listed, FS) == [FLASH], listed
    assert parse_pool_members(members, FS, FLASH) == [f"{FS}-{FLASH_OST}_UUID"], members

    striped = node.csi_json("create", "--size", "64Mi", "--param", f"fsname={FS}",
                            "--param", "stripeCount=2", "--param", "stripeSize=2Mi", "striped")
    assert (striped["volume_context"]["stripeCount"],
            striped["volume_context"]["stripeSize"]) == ("2", "2Mi")
    staging, target = stage_and_publish(node, striped, "striped")
    node.run(f"dd if=/dev/zero of={target}/before bs=1M count=8 oflag=direct")
    real_fs.capture("lfs-getstripe-file-striped.txt",
                    node.run(f"lfs getstripe {target}/before").stdout)
    assert file_layout(node, f"{target}/before") == (2, 2 * MiB, "", [0, 1024])

    # ModifyVolume (a VolumeAttributesClass): one stripe of 1 MiB for files made from now on.
    node.csi("modify", striped["volume_id"], "--param", "stripeCount=1",
             "--param", "stripeSize=1Mi")
    node.run(f"dd if=/dev/zero of={target}/after bs=1M count=8 oflag=direct")
    assert file_layout(node, f"{target}/after")[:2] == (1, MiB)
    assert file_layout(node, f"{target}/before") == (2, 2 * MiB, "", [0, 1024])
    real_fs.record_timing("ControllerModifyVolume (lfs setstripe)",
                          node.served_seconds("ControllerModifyVolume"))

    # Bound to the pool, striped over all of it: its files sit on the pool's one OST only.
    pooled = node.csi_json("create", "--size", "64Mi", "--param", f"fsname={FS}",
                           "--param", f"ostPool={FLASH}", "--param", "stripeCount=-1", "pooled")
    pool_staging, pool_target = stage_and_publish(node, pooled, "pooled")
    directory = node.run(f"lfs getstripe -d {pool_target}").stdout
    real_fs.capture("lfs-getstripe-d-pool.txt", directory)
    assert parse_getstripe_directory(directory).pool == FLASH, directory
    # No stripeSize given: the file system's default (4 MiB on 2.17, LOV_DESC_STRIPE_SIZE_DEFAULT).
    default_size = int(node.run("lctl get_param -n lov.*.stripesize").stdout.split()[0])
    for number in range(3):
        node.run(f"dd if=/dev/zero of={pool_target}/f{number} bs=1M count=2 oflag=direct")
        assert file_layout(node, f"{pool_target}/f{number}") == (1, default_size, FLASH, [1024])
    # A pool the file system lacks is refused by name, and nothing is made.
    refused = node.csi("create", "--size", "64Mi", "--param", f"fsname={FS}",
                       "--param", "ostPool=nvme", "refused", check=False)
    assert refused.exit_code != 0 and "ostPool: 'nvme' is not an OST pool" in refused.output
    for volume, (stage_path, target_path) in ((striped, (staging, target)),
                                             (pooled, (pool_staging, pool_target))):
        node.csi("unpublish", "--target-path", target_path, volume["volume_id"])
        node.csi("unstage", "--staging-path", stage_path, volume["volume_id"])
        node.csi("delete", volume["volume_id"])


def test_io_survives_a_server_restart(client_node: ClientNode, real_fs: RealFileSystem):
    """Kill -9 the OSS, then the MDS, while a client writes; restart each from its objects."""
    node = client_node
    volume = node.csi_json("create", "--size", "512Mi", "--param", f"fsname={FS}", "recover")
    volume_id = volume["volume_id"]
    staging, target = stage_and_publish(node, volume, "recover")
    # The writer records each chunk's checksum before it writes it: nothing it wrote may be lost.
    node.run("systemd-run --unit=writer /bin/sh -c 'for i in $(seq 1 120); do "
             "head -c 1M /dev/urandom > /tmp/chunk; sha256sum < /tmp/chunk | "
             f"sed \"s|-|{target}/f$i|\" >> /root/written; cp /tmp/chunk {target}/f$i; "
             "sync; sleep 2; done'")
    for server in ("oss0", "mds0"):
        vm = real_fs.vms[server]
        time.sleep(10)
        vm.kill()
        deadline = time.monotonic() + 120
        while not (condition := stats(node, volume_id, target)["volume_condition"]).get(
                "abnormal"):
            assert time.monotonic() < deadline, f"{server} away, the volume still reads healthy"
            time.sleep(5)
        assert condition["message"], condition
        # Which check said it (the run's record, not a parser fixture).
        (real_fs.work_dir / f"stats-abnormal-{server}-killed.txt").write_text(
            condition["message"] + "\n")
        if server == "oss0":
            real_fs.capture("lctl-get_param-state-all-mounts-oss-just-killed.txt",
                            node.run("lctl get_param mdc.*.state osc.*.state").stdout)
        started = time.monotonic()
        vm.start()
        vm.wait_ready(BOOT_TIMEOUT)
        deadline = time.monotonic() + 900
        while stats(node, volume_id, target)["volume_condition"].get("abnormal"):
            assert time.monotonic() < deadline, f"never healthy after {server} came back"
            time.sleep(10)
        real_fs.record_timing(f"{server} killed: restart to volume healthy",
                              time.monotonic() - started)
    deadline = time.monotonic() + 1200
    while node.run("systemctl is-active writer", check=False).stdout.strip() == "active":
        assert time.monotonic() < deadline, "the writer never finished"
        time.sleep(10)
    assert node.run("systemctl show -p Result --value writer").stdout.strip() == "success"
    written = node.run("cat /root/written").stdout
    assert written.count("\n") == 120
    assert node.run("sha256sum -c --quiet /root/written", timeout=600).exit_code == 0
    node.csi("unpublish", "--target-path", target, volume_id)
    node.csi("unstage", "--staging-path", staging, volume_id)
    node.csi("delete", volume_id)


def test_a_volume_past_the_threshold_grows_the_file_system(client_node: ClientNode,
                                                           real_fs: RealFileSystem):
    """The provisioner adds an OSS, the runner boots it, its OST joins the live file system."""
    node = client_node
    # Room now: OST0000 and the pool's OST0400, 2 GiB each (a pool's OSTs hold volumes that
    # name no pool too), 3.2 GiB under the 80% threshold; 3.5 GiB needs one more default OST.
    size = "3584Mi"
    started = time.monotonic()
    first = node.csi("create", "--size", size, "--param", f"fsname={FS}", "big", check=False)
    assert first.exit_code != 0 and "growing" in first.output, first.output
    # oss1 serves the pool: the new OSS is oss2.
    wait_for(lambda: "oss2" in real_fs.server_names(), 120, "the new OSS's objects")
    (new_oss,) = real_fs.boot_new_servers()
    new_oss.wait_ready(BOOT_TIMEOUT)
    deadline = time.monotonic() + 900
    while (retried := node.csi("create", "--size", size, "--param", f"fsname={FS}", "big",
                               check=False)).exit_code != 0:
        assert time.monotonic() < deadline, f"CreateVolume never succeeded: {retried.output}"
        time.sleep(10)
    real_fs.record_timing("growth: CreateVolume past the threshold to success",
                          time.monotonic() - started)
    volume_id = json.loads(retried.stdout)["volume_id"]
    osts = (real_fs.env.lfs(FS) or {})["status"]["osts"]
    assert sorted((o["index"], o["state"]) for o in osts) == [
        (0, "Active"), (1, "Active"), (1024, "Active")], osts
    log = real_fs.boot_log(new_oss)
    assert f"formatting blank /dev/disk/by-id/virtio-OST0001 as {FS}-OST0001" in log
    mount_check(node)
    df = node.run(f"lfs df {CHECK_MOUNT}").stdout
    assert f"{FS}-OST0001_UUID" in df, df
    real_fs.capture("lfs-df-two-osts.txt", df)
    # A file striped over every OST lands on the new one too.
    node.run(f"lfs setstripe -c -1 {CHECK_MOUNT}/striped && "
             f"dd if=/dev/zero of={CHECK_MOUNT}/striped bs=1M count=4 oflag=direct")
    assert file_layout(node, f"{CHECK_MOUNT}/striped")[3] == [0, 1, 1024]
    node.run(f"rm -f {CHECK_MOUNT}/striped")
    node.csi("delete", volume_id)


def test_a_dedicated_volume_boots_its_own_file_system_and_tears_it_down(
        client_node: ClientNode, real_fs: RealFileSystem):
    """kind=dedicated: CreateVolume makes a LustreFileSystem of its own; DeleteVolume removes it."""
    node = client_node
    env = real_fs.env
    params = [arg for key, value in {
        "kind": "dedicated", "mdtSize": "1Gi", "ostSize": "2Gi", "ostsPerOss": "1",
        "minOsts": "1", "maxOsts": "1", "image": "example.org/lustre-server:2.17", "cpu": "1",
        "memory": "1536Mi", "networkAttachment": "lustre-storage", "ipPool": POOL,
    }.items() for arg in ("--param", f"{key}={value}")]
    started = time.monotonic()
    first = node.csi("create", "--size", "64Mi", *params, "solo", check=False)
    assert first.exit_code != 0, first.output
    own = wait_for(lambda: [item for item in env.admin.list(LUSTRE_FILE_SYSTEMS)[0]
                            if (item.get("spec") or {}).get("dedicatedTo")], 60,
                   "the dedicated LustreFileSystem")[0]
    fsname = own["spec"]["fsname"]
    dedicated = RealFileSystem(env, real_fs.network, real_fs.image, fsname, {}, real_fs.work_dir)
    assert real_fs.readiness is not None
    real_fs.readiness.watch(dedicated)
    try:
        wait_for(lambda: len(dedicated.server_names()) >= 2, 60, "its servers' objects")
        dedicated.boot_new_servers()
        dedicated.wait_all_ready("dedicated: first boot to ready")
        deadline = time.monotonic() + 900
        while (made := node.csi("create", "--size", "64Mi", *params, "solo",
                                check=False)).exit_code != 0:
            assert time.monotonic() < deadline, f"CreateVolume never succeeded: {made.output}"
            time.sleep(10)
        real_fs.record_timing("dedicated: CreateVolume to success (its servers booted)",
                              time.monotonic() - started)
        volume = json.loads(made.stdout)
        volume_id, context = volume["volume_id"], volume["volume_context"]
        assert context["fsname"] == fsname and volume_id.startswith(f"v1:dedicated:{fsname}:")
        assert own["spec"]["dedicatedTo"] == volume_id
        staging, target = stage_and_publish(node, volume, "solo")
        assert f" {staging} lustre " in node.run("cat /proc/mounts").stdout
        node.run(f"echo solo > {target}/own && cat {target}/own")
        node.csi("unpublish", "--target-path", target, volume_id)
        node.csi("unstage", "--staging-path", staging, volume_id)
        started = time.monotonic()
        deadline = time.monotonic() + 600
        while (deleted := node.csi("delete", volume_id, timeout=180, check=False)).exit_code:
            if time.monotonic() > deadline:
                # Every thread's stack into the journal (faulthandler on SIGUSR1), then the log.
                node.run("systemctl kill -s USR1 lustre-csi", check=False)
                time.sleep(2)
                raise AssertionError(f"DeleteVolume never finished: {deleted.output}\n"
                                     f"{node.driver_log(600)}")
            dedicated.stop_deleted_servers()
            time.sleep(5)
        real_fs.record_timing("dedicated: DeleteVolume to file system gone",
                              time.monotonic() - started)
        assert env.lfs(own["metadata"]["name"]) is None
        dedicated.stop_deleted_servers()
        assert not dedicated.vms, "a VM of the deleted file system still has its object"
        # The shared file system is untouched.
        assert (env.lfs(FS) or {})["status"]["phase"] == "Ready"
    finally:
        for vm in dedicated.vms.values():
            vm.kill()
