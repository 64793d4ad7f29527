"""Cloud-init for Lustre server VMs: user data (the target script) and network data.

The VM's root disk is a containerDisk, so it is fresh at every boot: everything that must
survive lives on the target PVCs, and the script below re-derives the server's state from them
each time. It is safe to run any number of times, at boot and from a timer (which is how a
hotplugged OST is picked up on a running OSS); a run that finds nothing to do says so.

- LNet: `options lnet networks=<net>(<storage interface>)` is written before any Lustre module
  loads, because `modprobe lustre` brings LNet up by itself on the first interface, which in a
  KubeVirt VM is the management NIC: the MGS would record the pod-network address as the
  server's NID. Targets are not mounted while LNet has any NID off the storage interface.
- Targets: every disk whose serial names a target (`MDT0000`, `OST000a`: Lustre's own hex
  index) is formatted only when `blkid` finds no file system on it at all, then mounted
  (`mount -t lustre_tgt`, Lustre 2.17's type for server targets) unless already mounted; all
  pending targets mount in parallel (after an unclean stop each waits ~44 s for MMP). A disk
  holding anything else (another file system, or a Lustre target of another name) is never
  touched; the health check then fails and says why.
- Multiple-mount protection is enabled in the mkfs itself (`--mkfsoptions="-O mmp"`), so no
  crash can leave a target formatted without it, and checked before every mount: a target
  without it (formatted by an older script, or by hand) gets it, with a log line. With MMP, a
  fenced VM that is in fact still running cannot mount the same target twice.
- Project quota: enabled on the MGS for every target, and `root_prj_enable` with it (root is
  exempt from project quota otherwise, and pods often write as root); each `lctl set_param -P`
  only when the MGS params log lacks it (repeating it would only add records). A fresh MGS has
  no params log: `llog_print` then fails with "llog type is not specified!", which means empty.
- OST pools (the MDS): `lctl pool_new` for each pool the MGS lacks, `lctl pool_add` for each
  registered OST whose index is in the pool's block and is not a member yet (both only when
  missing; see kubevirt/layout.py for the blocks), so pools fill as their OSTs register.
- Health (`/usr/local/sbin/lustre-health`, the VM's readiness probe through the guest agent):
  `lctl get_param -n health_check` is `healthy`, LNet has the storage NID, and every target
  disk present is mounted.

The user data does not list the OSTs: a server's targets are its disks, so growth never has to
rewrite a Secret that a running VM has already read.
"""

from __future__ import annotations

from collections.abc import Sequence

import yaml

from provisioner.kubevirt.addresses import management_mac, storage_mac

SCRIPT_PATH = "/usr/local/sbin/lustre-targets"
HEALTH_PATH = "/usr/local/sbin/lustre-health"
ENV_PATH = "/etc/lustre-csi/server.env"

# Devices a target can appear as: virtio disks at boot, SCSI disks when hotplugged.
_DEVICE_GLOBS = (
    "/dev/disk/by-id/virtio-MDT[0-9a-f][0-9a-f][0-9a-f][0-9a-f] "
    "/dev/disk/by-id/virtio-OST[0-9a-f][0-9a-f][0-9a-f][0-9a-f] "
    "/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_MDT[0-9a-f][0-9a-f][0-9a-f][0-9a-f] "
    "/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_OST[0-9a-f][0-9a-f][0-9a-f][0-9a-f]"
)

TARGET_SCRIPT = r"""#!/bin/bash
# lustre-csi: bring this server's Lustre targets up. Idempotent; run at boot and by a timer.
set -euo pipefail
. /etc/lustre-csi/server.env
log() { logger -t lustre-targets -- "$*"; echo "lustre-targets: $*"; }
mounted() { grep -Eqs "^[^ ]+ $1 lustre(_tgt)? " /proc/mounts; }
nid="${STORAGE_IP}@${LNET_NET}"
if [ "$LNET_NET" = tcp0 ]; then nid="${STORAGE_IP}@tcp"; fi   # as LNet prints it
changed=0

# LNet on the storage interface only, set BEFORE any Lustre module loads: `modprobe lustre`
# brings LNet up by itself, on the first interface (the management NIC, eth0) unless told
# otherwise, and the MGS would record that address as this server's NID for good.
lnet_option="options lnet networks=${LNET_NET}(${STORAGE_IFACE})"
if [ "$(cat /etc/modprobe.d/lustre-csi-lnet.conf 2>/dev/null)" != "$lnet_option" ]; then
    echo "$lnet_option" > /etc/modprobe.d/lustre-csi-lnet.conf
fi
if [ ! -d /sys/module/lustre ]; then
    log "loading Lustre with LNet $LNET_NET on $STORAGE_IFACE ($STORAGE_IP)"
    modprobe lustre
    changed=1
fi
nids="$(lctl list_nids 2>/dev/null || true)"
if ! grep -qxF "$nid" <<<"$nids"; then
    log "configuring LNet $LNET_NET on $STORAGE_IFACE ($STORAGE_IP)"
    lnetctl lnet configure
    lnetctl net add --net "$LNET_NET" --if "$STORAGE_IFACE"
    nids="$(lctl list_nids)"
    changed=1
fi
foreign="$(grep -vxF "$nid" <<<"$nids" | grep -v '@lo$' || true)"
if [ -n "$foreign" ]; then
    # A target mounted now would register these NIDs with the MGS: mount nothing.
    log "refusing to mount targets: LNet has NIDs off the storage interface: ${foreign//$'\n'/ }"
    exit 1
fi

# Targets: format only a blank disk, refuse one holding anything but this target, make sure
# multiple-mount protection is on, then mount them all at once (after an unclean stop each
# waits ~44 s for MMP: in parallel, readiness does not add those waits up).
shopt -s nullglob
pending=()
for dev in __DEVICE_GLOBS__; do
    serial="${dev: -7}"                      # MDT0000 / OST000a
    kind="${serial:0:3}"
    index=$((16#${serial:3}))
    target="${FSNAME}-${serial}"
    mnt="/lustre/${target}"
    if mounted "$mnt"; then
        continue
    fi
    found="$(blkid -p -o value -s TYPE "$dev" || true)"
    if [ -z "$found" ]; then
        log "formatting blank $dev as $target"
        # MMP at format time, in the same mke2fs: no crash can leave a target without it.
        if [ "$kind" = MDT ]; then
            mkfs.lustre --fsname="$FSNAME" --mgs --mdt --index="$index" \
                --mkfsoptions="-O mmp" "$dev"
        else
            mkfs.lustre --fsname="$FSNAME" --ost --index="$index" --mgsnode="$MGS_NID" \
                --mkfsoptions="-O mmp" "$dev"
        fi
        changed=1
    elif ! tunefs.lustre --dryrun "$dev" 2>/dev/null \
            | grep -Eq "^Target: +${FSNAME}[-:]${serial}$"; then
        log "refusing $dev: it holds data that is not $target ($found)"
        continue
    fi
    if ! dumpe2fs -h "$dev" 2>/dev/null | grep -Eq '^Filesystem features:.* mmp( |$)'; then
        log "enabling multiple-mount protection on $target ($dev): it had none"
        tune2fs -O mmp "$dev"
        changed=1
    fi
    pending+=("$dev $target $mnt")
done
declare -A mounting=()
for entry in "${pending[@]}"; do
    read -r dev target mnt <<<"$entry"
    mkdir -p "$mnt"
    log "mounting $target"
    mount -t lustre_tgt "$dev" "$mnt" &
    mounting[$!]="$target"
    changed=1
done
failed=0
for pid in "${!mounting[@]}"; do
    if ! wait "$pid"; then
        log "mounting ${mounting[$pid]} failed (the timer retries)"
        failed=1
    fi
done

if [ "$ROLE" = mds ] && mounted "/lustre/${FSNAME}-MDT0000"; then
    # Persistent (-P) parameters live in the MGS "params" log: set each one only if absent.
    # A fresh MGS has no params log yet: llog_print then says "llog type is not specified!"
    # (or ENOENT) and the log is empty; any other failure is retried, not taken as empty.
    if ! params="$(lctl --device MGS llog_print params 2>&1)"; then
        if grep -Eq "llog type is not specified|No such file" <<<"$params"; then
            params=""
        else
            log "cannot read the MGS params log, retrying later: $params"
            exit 1
        fi
    fi
    # Project quota on every target; root_prj_enable: root is exempt from project quota by
    # default, and pods often write as root.
    for setting in "osd-*.${FSNAME}-OST*.quota_slave.enabled=p" \
                   "osd-*.${FSNAME}-MDT*.quota_slave.enabled=p" \
                   "osd-*.${FSNAME}-OST*.quota_slave.root_prj_enable=1" \
                   "osd-*.${FSNAME}-MDT*.quota_slave.root_prj_enable=1"; do
        if ! grep -qF "parameter: ${setting%%=*}, value: ${setting#*=} " <<<"$params"; then
            log "setting $setting"
            lctl set_param -P "$setting"
            changed=1
        fi
    done
    # OST pools: each made on the MGS once, and every OST that has registered joins the pool
    # whose index block holds its index (pool_new and pool_add refuse repeats: ask first).
    # The MDT's OSP devices (osp.FS-OST000a-osc-MDT0000) are the OSTs that registered; listed
    # by a parameter every one has (a device name alone lists nothing on Lustre 2.17).
    # A pool or member that exists already (a listing that missed it) is not a failure.
    pool_command() {
        local out
        if ! out="$(lctl "$@" 2>&1)"; then
            if grep -qi "exists" <<<"$out"; then return 0; fi
            log "lctl $* failed (the timer retries): $out"
            return 1
        fi
    }
    if [ -n "$POOLS" ]; then
        pools_now="$(lctl pool_list "$FSNAME" 2>/dev/null || true)"
        registered="$(lctl get_param -N "osp.${FSNAME}-OST*-osc-MDT0000.active" 2>/dev/null \
            || true)"
        for entry in $POOLS; do
            IFS=: read -r pool first last <<<"$entry"
            if ! grep -qxF "${FSNAME}.${pool}" <<<"$pools_now"; then
                log "creating OST pool ${FSNAME}.${pool}"
                if ! pool_command pool_new "${FSNAME}.${pool}"; then failed=1; fi
                changed=1
            fi
            members="$(lctl pool_list "${FSNAME}.${pool}" 2>/dev/null || true)"
            for osp in $registered; do
                ost="${osp#osp.${FSNAME}-}"
                ost="${ost%%-osc-*}"                 # OST000a
                index=$((16#${ost:3}))
                if [ "$index" -ge "$first" ] && [ "$index" -le "$last" ] \
                        && ! grep -qxF "${FSNAME}-${ost}_UUID" <<<"$members"; then
                    log "adding ${FSNAME}-${ost} to OST pool ${FSNAME}.${pool}"
                    if ! pool_command pool_add "${FSNAME}.${pool}" "${FSNAME}-${ost}"; then
                        failed=1
                    fi
                    changed=1
                fi
            done
        done
    fi
fi

if [ "$failed" -ne 0 ]; then
    exit 1
fi
if [ "$changed" -eq 0 ]; then
    log "nothing to do: LNet $nid up, every target mounted"
fi
""".replace("__DEVICE_GLOBS__", _DEVICE_GLOBS)

HEALTH_SCRIPT = r"""#!/bin/bash
# lustre-csi readiness: Lustre healthy, LNet on the storage address, every target disk mounted.
set -uo pipefail
. /etc/lustre-csi/server.env
health="$(lctl get_param -n health_check 2>/dev/null)"
if [ "$health" != healthy ]; then echo "health_check: ${health:-unavailable}"; exit 1; fi
nid="${STORAGE_IP}@${LNET_NET}"
if [ "$LNET_NET" = tcp0 ]; then nid="${STORAGE_IP}@tcp"; fi
if ! lctl list_nids 2>/dev/null | grep -qxF "$nid"; then echo "LNet: no NID $nid"; exit 1; fi
shopt -s nullglob
for dev in __DEVICE_GLOBS__; do
    mnt="/lustre/${FSNAME}-${dev: -7}"
    grep -Eqs "^[^ ]+ ${mnt} lustre(_tgt)? " /proc/mounts || { echo "not mounted: $mnt"; exit 1; }
done
exit 0
""".replace("__DEVICE_GLOBS__", _DEVICE_GLOBS)

SERVICE_UNIT = """[Unit]
Description=lustre-csi: bring Lustre targets up
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/lustre-targets
"""

TIMER_UNIT = """[Unit]
Description=lustre-csi: pick up new (hotplugged) Lustre targets

[Timer]
OnBootSec=5
OnUnitInactiveSec=20

[Install]
WantedBy=timers.target
"""


def server_environment(*, fsname: str, role: str, mgs_nid: str, storage_ip: str,
                       storage_interface: str, lnet_network: str,
                       pools: Sequence[tuple[str, int, int]] = ()) -> str:
    values = {
        "FSNAME": fsname, "ROLE": role, "MGS_NID": mgs_nid, "STORAGE_IP": storage_ip,
        "STORAGE_IFACE": storage_interface, "LNET_NET": lnet_network,
        # `<pool>:<first OST index>:<last OST index> ...`, for the MGS
        "POOLS": " ".join(f"{name}:{first}:{last}" for name, first, last in pools),
    }
    # Every value is validated by spec.py to hold no spaces or quotes; quote anyway.
    return "".join(f"{key}='{value}'\n" for key, value in values.items())


def user_data(*, fsname: str, role: str, mgs_nid: str, storage_ip: str,
              storage_interface: str, lnet_network: str,
              pools: Sequence[tuple[str, int, int]] = ()) -> str:
    """`pools` (the MDS's): each OST pool with the first and last OST index of its block."""
    environment = server_environment(
        fsname=fsname, role=role, mgs_nid=mgs_nid, storage_ip=storage_ip,
        storage_interface=storage_interface, lnet_network=lnet_network, pools=pools,
    )
    document = {
        "write_files": [
            {"path": ENV_PATH, "permissions": "0644", "content": environment},
            {"path": SCRIPT_PATH, "permissions": "0755", "content": TARGET_SCRIPT},
            {"path": HEALTH_PATH, "permissions": "0755", "content": HEALTH_SCRIPT},
            {"path": "/etc/systemd/system/lustre-targets.service", "content": SERVICE_UNIT},
            {"path": "/etc/systemd/system/lustre-targets.timer", "content": TIMER_UNIT},
        ],
        "runcmd": [
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", "lustre-targets.timer"],
            ["systemctl", "start", "lustre-targets.service"],
        ],
    }
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False, width=1000)


def network_data(*, storage_ip: str, prefix_length: int, storage_interface: str,
                 gateway: str = "") -> str:
    """Netplan v2: the pod network by DHCP, the storage network static; both matched by MAC."""
    storage: dict[str, object] = {
        "match": {"macaddress": storage_mac(storage_ip)},
        "set-name": storage_interface,
        "addresses": [f"{storage_ip}/{prefix_length}"],
    }
    if gateway:
        storage["routes"] = [{"to": "default", "via": gateway, "metric": 200}]
    document = {
        "version": 2,
        "ethernets": {
            "management": {
                "match": {"macaddress": management_mac(storage_ip)},
                "set-name": "eth0",
                "dhcp4": True,
            },
            "storage": storage,
        },
    }
    return yaml.safe_dump(document, sort_keys=False)
