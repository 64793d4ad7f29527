"""Cloud-init for Lustre server VMs: user data (the target script) and network data.

The VM's root disk is a containerDisk, so it is fresh at every boot: everything that must
survive lives on the target PVCs, and the script below re-derives the server's state from them
each time. It is safe to run any number of times, at boot and from a timer (which is how a
hotplugged OST is picked up on a running OSS):

- LNet: configured on the storage interface only when its NID is not up yet.
- Targets: every disk whose serial names a target (`MDT0000`, `OST000a`: Lustre's own hex
  index) is formatted only when `blkid` finds no file system on it at all, then mounted
  unless already mounted. A disk holding anything else (another file system, or a Lustre
  target of another name) is never touched; the health check then fails and says why.
- Multiple-mount protection (`tune2fs -O mmp`) is enabled at format time, so a fenced VM that
  is in fact still running cannot mount the same target twice.
- Project quota: enabled once, on the MGS, only when not already enabled (`lctl set_param -P`
  writes the MGS configuration log; repeating it would only add records).
- Health (`/usr/local/sbin/lustre-health`, the VM's readiness probe through the guest agent):
  `lctl get_param -n health_check` is `healthy` and every target disk present is mounted.

The user data does not list the OSTs: a server's targets are its disks, so growth never has to
rewrite a Secret that a running VM has already read.
"""

from __future__ import annotations

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

modprobe lustre
if ! lnetctl net show --net "$LNET_NET" 2>/dev/null | grep -q "nid: ${STORAGE_IP}@"; then
    log "configuring LNet $LNET_NET on $STORAGE_IFACE ($STORAGE_IP)"
    lnetctl lnet configure
    lnetctl net add --net "$LNET_NET" --if "$STORAGE_IFACE"
fi

shopt -s nullglob
for dev in __DEVICE_GLOBS__; do
    serial="${dev: -7}"                      # MDT0000 / OST000a
    kind="${serial:0:3}"
    index=$((16#${serial:3}))
    target="${FSNAME}-${serial}"
    mnt="/lustre/${target}"
    if grep -qs " ${mnt} lustre " /proc/mounts; then
        continue
    fi
    if [ -z "$(blkid -p -o value -s TYPE "$dev" || true)" ]; then
        log "formatting blank $dev as $target"
        if [ "$kind" = MDT ]; then
            mkfs.lustre --fsname="$FSNAME" --mgs --mdt --index="$index" "$dev"
        else
            mkfs.lustre --fsname="$FSNAME" --ost --index="$index" --mgsnode="$MGS_NID" "$dev"
        fi
        tune2fs -O mmp "$dev"
    elif ! tunefs.lustre --dryrun "$dev" 2>/dev/null \
            | grep -Eq "^Target: +${FSNAME}[-:]${serial}$"; then
        log "refusing $dev: it holds data that is not $target"
        continue
    fi
    mkdir -p "$mnt"
    log "mounting $target"
    mount -t lustre "$dev" "$mnt"
done

if [ "$ROLE" = mds ]; then
    # Persistent (-P) parameters live in the MGS "params" log: set each one only if absent.
    params="$(lctl --device MGS llog_print params 2>/dev/null || true)"
    for pattern in "${FSNAME}-OST*" "${FSNAME}-MDT*"; do
        if ! grep -qF "parameter: osd-*.${pattern}.quota_slave.enabled, value: p" <<<"$params"; then
            log "enabling project quota on $pattern"
            lctl set_param -P "osd-*.${pattern}.quota_slave.enabled=p"
        fi
    done
fi
""".replace("__DEVICE_GLOBS__", _DEVICE_GLOBS)

HEALTH_SCRIPT = r"""#!/bin/bash
# lustre-csi readiness: Lustre healthy and every target disk of this server mounted.
set -uo pipefail
. /etc/lustre-csi/server.env
health="$(lctl get_param -n health_check 2>/dev/null)"
if [ "$health" != healthy ]; then echo "health_check: ${health:-unavailable}"; exit 1; fi
shopt -s nullglob
for dev in __DEVICE_GLOBS__; do
    mnt="/lustre/${FSNAME}-${dev: -7}"
    grep -qs " ${mnt} lustre " /proc/mounts || { echo "not mounted: $mnt"; exit 1; }
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
                       storage_interface: str, lnet_network: str) -> str:
    values = {
        "FSNAME": fsname, "ROLE": role, "MGS_NID": mgs_nid, "STORAGE_IP": storage_ip,
        "STORAGE_IFACE": storage_interface, "LNET_NET": lnet_network,
    }
    # Every value is validated by spec.py to hold no spaces or quotes; quote anyway.
    return "".join(f"{key}='{value}'\n" for key, value in values.items())


def user_data(*, fsname: str, role: str, mgs_nid: str, storage_ip: str,
              storage_interface: str, lnet_network: str) -> str:
    environment = server_environment(
        fsname=fsname, role=role, mgs_nid=mgs_nid, storage_ip=storage_ip,
        storage_interface=storage_interface, lnet_network=lnet_network,
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
