#!/usr/bin/env bash
# Build the Lustre server disk image: what a user passes as the StorageClass `image` parameter
# (wrapped in a containerDisk by deploy/server-image/Dockerfile) and what the test VM runner
# (tests/support/vm_runner.py) boots under QEMU.
#
#   bash hack/lustre/image.sh [--no-lustre] [--lustre-dir DIR] [--force] [--print-dir]
#
# The Lustre build is hack/lustre/build.sh's newest, linked from .cache/lustre, unless
# --lustre-dir names one; this script never starts a Lustre build.
# Two layers, each cached by the hash of its inputs outside the work tree, so a second run with
# the same inputs takes seconds:
#   base:  Debian bookworm by mmdebstrap (Debian's archive only) with the pinned kernel,
#          systemd, cloud-init (NoCloud), qemu-guest-agent and what the boot script runs
#          (e2fsprogs, kmod, iproute2, util-linux) plus the libraries Lustre's utilities link;
#          kernel modules no server VM can use (GPU, sound, wireless, USB, ...) are left out.
#   image: the base plus Lustre's install tree from hack/lustre/build.sh (modules and utils,
#          headers and static libraries left out), as one disk: an MBR partition table, one
#          ext4 root partition made with `mke2fs -d` (no loop device or mount needed), and
#          GRUB in the MBR gap (KubeVirt boots the disk through the BIOS).
# Output (in /var/cache/lustre-csi/images/<hash>/, linked from .cache/images in the clone):
#   disk.qcow2 (KubeVirt, QEMU), vmlinuz, initrd.img and cmdline (QEMU's -kernel/-initrd/
#   -append: no bootloader on the test path), inputs.txt (what the hash covers).
# --no-lustre builds the image without Lustre (for boot tests before the build exists).
set -euo pipefail

SCRIPT_NAME=image.sh
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE_ROOT="${LUSTRE_CSI_CACHE:-/var/cache/lustre-csi}"
IMAGES="$CACHE_ROOT/images"

KERNEL_RELEASE=6.1.0-57-amd64
KERNEL_PACKAGE="linux-image-${KERNEL_RELEASE}=6.1.192-3"
SUITE=bookworm
MIRRORS=(
    "deb http://deb.debian.org/debian bookworm main"
    "deb http://deb.debian.org/debian bookworm-updates main"
    "deb http://deb.debian.org/debian-security bookworm-security main"
)
PACKAGES=(
    "$KERNEL_PACKAGE" systemd systemd-sysv udev dbus cloud-init qemu-guest-agent
    e2fsprogs kmod iproute2 util-linux mount grub-pc-bin
    # linked by Lustre's utilities (lctl, lnetctl, mount.lustre, mkfs.lustre, lfs)
    libyaml-0-2 libnl-3-200 libnl-genl-3-200 libkeyutils1 libjson-c5 libreadline8 libmount1
    zlib1g libselinux1 libuuid1 libext2fs2 libssl3
)
# Fixed so the kernel command line and fstab can name the root file system.
ROOT_UUID=6c757374-7265-4373-a900-000000000001
ROOT_LABEL=lustre-root
CMDLINE="root=UUID=${ROOT_UUID} ro console=ttyS0,115200 net.ifnames=0 biosdevname=0 quiet"
# Module trees no Lustre server VM loads (SCSI HBAs: all but device_handler).
PRUNED_MODULES=(
    drivers/gpu drivers/media drivers/net/wireless drivers/net/ethernet drivers/net/usb
    drivers/infiniband drivers/staging drivers/iio drivers/usb drivers/hid drivers/bluetooth
    drivers/isdn drivers/mmc drivers/mtd drivers/nfc drivers/input/joystick
    drivers/input/touchscreen drivers/input/misc drivers/video drivers/misc drivers/hwmon
    drivers/thunderbolt drivers/pcmcia drivers/atm drivers/ata/pata_* drivers/net/can
    drivers/net/wan drivers/net/ieee802154 drivers/leds drivers/power drivers/regulator
    drivers/mfd drivers/spi drivers/i2c drivers/gnss drivers/w1 drivers/fpga drivers/comedi
    sound net/wireless net/mac80211 net/bluetooth net/6lowpan net/ieee802154 net/can
    net/nfc net/atm
    drivers/scsi/[a-ce-z]*/ drivers/scsi/d[a-df-z]*/
    fs/btrfs fs/xfs fs/ocfs2 fs/gfs2 fs/ceph fs/smb fs/cifs fs/nfs fs/nfsd fs/f2fs fs/jfs
    fs/reiserfs fs/nilfs2 fs/ubifs fs/afs fs/coda fs/orangefs fs/ntfs3 fs/hfs fs/hfsplus
)

die() {
    echo "${SCRIPT_NAME}: $*" >&2
    exit 1
}
log() { echo "${SCRIPT_NAME}: $*" >&2; }

# -- the base layer ----------------------------------------------------------------------------

# Runs inside mmdebstrap (customize hook): $1 is the root being built.
customize_base() {
    local root="$1"
    cat > "$root/etc/cloud/cloud.cfg.d/90-lustre-csi.cfg" << 'EOF'
# lustre-csi: KubeVirt hands cloud-init a NoCloud volume; probe nothing else.
datasource_list: [NoCloud, None]
system_info:
  network:
    renderers: [networkd]
# Only the modules the server's user data uses (write_files, runcmd): every other one costs
# seconds under TCG, and locale generation minutes.
cloud_init_modules: [seed_random, bootcmd, write_files, set_hostname, update_hostname]
cloud_config_modules: [runcmd]
cloud_final_modules: [scripts_per_once, scripts_per_boot, scripts_per_instance, scripts_user,
                      final_message]
EOF
    cat > "$root/etc/initramfs-tools/conf.d/lustre-csi" << 'EOF'
# Only what finds the root disk: a small initrd decompresses fast under TCG.
MODULES=list
COMPRESS=gzip
EOF
    printf '%s\n' virtio_pci virtio_blk virtio_scsi sd_mod ext4 crc32c_generic \
        > "$root/etc/initramfs-tools/modules"
    printf 'UUID=%s / ext4 errors=remount-ro 0 1\n' "$ROOT_UUID" > "$root/etc/fstab"
    echo lustre-server > "$root/etc/hostname"
    chroot "$root" systemctl enable systemd-networkd.service
    local modules="$root/lib/modules/$KERNEL_RELEASE/kernel" tree
    for tree in "${PRUNED_MODULES[@]}"; do
        # shellcheck disable=SC2086  # globs in the list are meant
        rm -rf "$modules"/$tree
    done
    chroot "$root" depmod "$KERNEL_RELEASE"
    chroot "$root" update-initramfs -u -k "$KERNEL_RELEASE"
    # usr/share/i18n: locale sources, for the locale module not run above.
    rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
        "$root"/usr/share/i18n \
        "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/*_Packages*
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'en*' ! -name locale.alias \
        -exec rm -rf {} +
}

base_inputs() {
    printf '%s\n' "suite=$SUITE" "${MIRRORS[@]}" "${PACKAGES[@]}" "${PRUNED_MODULES[@]}" \
        "uuid=$ROOT_UUID"
    declare -f customize_base build_base
}

build_base() {
    local dir="$1" tmp
    tmp="$(mktemp -d "$CACHE_ROOT/tmp/base.XXXXXX")"
    local include
    include="$(IFS=,; echo "${PACKAGES[*]}")"
    log "mmdebstrap $SUITE (${#PACKAGES[@]} packages) into $dir"
    mmdebstrap --variant=minbase --mode=root \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --include="$include" \
        --customize-hook="bash '$HERE/image.sh' --customize-root \"\$1\"" \
        "$SUITE" "$tmp/rootfs.tar" "${MIRRORS[@]}"
    mkdir -p "$dir"
    mv "$tmp/rootfs.tar" "$dir/rootfs.tar"
    rm -rf "$tmp"
}

# -- the image ---------------------------------------------------------------------------------

# Copy Lustre's install tree into the root, without what no server runs.
add_lustre() {
    local root="$1" tree="$2"
    tar -C "$tree" --exclude='./usr/include' --exclude='./usr/share/man' \
        --exclude='./usr/share/doc' --exclude='*.a' --exclude='*.la' \
        --exclude='./usr/lib/lustre/tests' --exclude='./usr/lib64/lustre/tests' \
        -cf - . | tar -C "$root" -xf - --no-same-owner --keep-directory-symlink
    # Lustre's install hook links mount.lustre_tgt (what `mount -t lustre_tgt` runs) by the
    # absolute DESTDIR path, which points nowhere in an image: link it relative.
    if [[ ! -e "$root/usr/sbin/mount.lustre_tgt" ]]; then
        ln -sfn mount.lustre "$root/usr/sbin/mount.lustre_tgt"
    fi
    depmod -b "$root" "$KERNEL_RELEASE"
    chroot "$root" ldconfig
    # Every Lustre utility must find its libraries in the image, not only on the build host.
    local missing
    missing="$(find "$root/usr/sbin" "$root/usr/bin" "$root/sbin" -maxdepth 1 -type f \
        \( -name 'l*' -o -name 'mkfs.lustre' -o -name 'mount.lustre*' -o -name 'tunefs.lustre' \) \
        -printf '/%P\n' 2>/dev/null | sort -u | while read -r name; do
            for dir in usr/sbin usr/bin sbin; do
                [[ -x "$root/$dir$name" ]] || continue
                chroot "$root" ldd "/$dir$name" 2>/dev/null | grep 'not found' || true
            done
        done)"
    [[ -z "$missing" ]] || die "Lustre utilities miss libraries in the image: $missing"
}

write_grub() {
    local root="$1" raw="$2"
    mkdir -p "$root/boot/grub"
    cat > "$root/boot/grub/grub.cfg" << EOF
set timeout=0
menuentry "lustre-server" {
    linux /boot/vmlinuz-${KERNEL_RELEASE} ${CMDLINE}
    initrd /boot/initrd.img-${KERNEL_RELEASE}
}
EOF
    # grub-install wants a block device; a disk image needs only what grub-bios-setup would
    # write: boot.img in the MBR (its defaults load core.img from sector 1) and core.img in the
    # gap before the partition at 1 MiB.
    chroot "$root" grub-mkimage -O i386-pc -o /tmp/core.img -p '(hd0,msdos1)/boot/grub' \
        biosdisk part_msdos ext2 normal linux configfile echo test
    local core="$root/tmp/core.img"
    [[ $(stat -c %s "$core") -lt $((2047 * 512)) ]] || die "core.img does not fit the MBR gap"
    dd if="$root/usr/lib/grub/i386-pc/boot.img" of="$raw" bs=440 count=1 conv=notrunc status=none
    dd if="$core" of="$raw" bs=512 seek=1 conv=notrunc status=none
    rm -f "$core"
}

image_inputs() {
    base_inputs | sha256sum
    printf 'cmdline=%s\n' "$CMDLINE"
    declare -f add_lustre write_grub build_image
    if [[ $with_lustre -eq 1 ]]; then
        echo "lustre=$(sha256sum < "$lustre_dir/lustre-install.tar.gz" | cut -d' ' -f1)"
    else
        echo "lustre=none"
    fi
}

build_image() {
    local base="$1" dir="$2" tmp root
    tmp="$(mktemp -d "$CACHE_ROOT/tmp/image.XXXXXX")"
    root="$tmp/rootfs"
    mkdir "$root"
    tar -C "$root" -xf "$base/rootfs.tar"
    if [[ $with_lustre -eq 1 ]]; then
        log "adding Lustre from $lustre_dir"
        add_lustre "$root" "$lustre_dir/root"
    fi
    cp "$root/boot/vmlinuz-$KERNEL_RELEASE" "$tmp/vmlinuz"
    cp "$root/boot/initrd.img-$KERNEL_RELEASE" "$tmp/initrd.img"
    echo "$CMDLINE" > "$tmp/cmdline"
    # Root file system: what is there plus a quarter free (the VM's root is ephemeral; logs and
    # cloud-init state only), in 4 KiB blocks, after 1 MiB for the MBR and GRUB.
    local used_kib blocks raw="$tmp/disk.raw"
    used_kib="$(du -sk "$root" | cut -f1)"
    blocks=$(((used_kib * 5 / 4 + 262144) / 4))
    truncate -s $((1048576 + blocks * 4096)) "$raw"
    echo 'start=2048, type=83, bootable' | sfdisk --quiet "$raw"
    write_grub "$root" "$raw"
    # grub 2.06 reads neither orphan_file nor metadata_csum_seed.
    mke2fs -q -t ext4 -b 4096 -O ^orphan_file,^metadata_csum_seed -L "$ROOT_LABEL" -U "$ROOT_UUID" \
        -E offset=1048576,root_owner=0:0 -d "$root" "$raw" "$blocks"
    qemu-img convert -q -c -f raw -O qcow2 "$raw" "$tmp/disk.qcow2"
    rm -rf "$root" "$raw"
    image_inputs > "$tmp/inputs.txt"
    echo "rootfs_kib=$used_kib" >> "$tmp/inputs.txt"
    rm -rf "$dir"
    chmod 755 "$tmp"
    mv "$tmp" "$dir"
}

# -- main --------------------------------------------------------------------------------------

with_lustre=1
force=0
print_dir=0
lustre_dir=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-lustre) with_lustre=0 ;;
        --lustre-dir)
            lustre_dir="${2:?--lustre-dir needs a directory}"
            shift
            ;;
        --force) force=1 ;;
        --print-dir) print_dir=1 ;;
        --customize-root) # internal: mmdebstrap's customize hook
            customize_base "${2:?}"
            exit 0
            ;;
        -h | --help)
            sed -n '2,24p' "$0"
            exit 0
            ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done

if [[ $with_lustre -eq 1 && -z "$lustre_dir" ]]; then
    # build.sh points .cache/lustre at its newest complete build (asking build.sh itself
    # would start a build: half an hour, not what --print-dir should cost).
    [[ -e "$REPO/.cache/lustre" ]] \
        || die "no Lustre build linked from .cache/lustre (run: bash hack/lustre/build.sh), or pass --lustre-dir DIR or --no-lustre"
    lustre_dir="$(readlink -f "$REPO/.cache/lustre")"
fi
if [[ $with_lustre -eq 1 && ! -f "$lustre_dir/lustre-install.tar.gz" ]]; then
    die "no Lustre build in ${lustre_dir} (run: bash hack/lustre/build.sh), or pass --no-lustre"
fi

base_hash="$(base_inputs | sha256sum | cut -c1-16)"
image_hash="$(image_inputs | sha256sum | cut -c1-16)"
base_dir="$IMAGES/base-$base_hash"
image_dir="$IMAGES/$image_hash"
if [[ $print_dir -eq 1 ]]; then
    echo "$image_dir"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "needs root (mmdebstrap --mode=root, files owned by root in the image)"
for tool in mmdebstrap mke2fs sfdisk qemu-img; do
    command -v "$tool" > /dev/null || die "$tool missing: apt-get install mmdebstrap e2fsprogs fdisk qemu-utils"
done
mkdir -p "$IMAGES" "$CACHE_ROOT/tmp"
if [[ $force -eq 1 ]]; then
    rm -rf "$base_dir" "$image_dir"
fi
start=$SECONDS
if [[ ! -f "$base_dir/rootfs.tar" ]]; then
    build_base "$base_dir"
fi
if [[ ! -f "$image_dir/disk.qcow2" ]]; then
    build_image "$base_dir" "$image_dir"
fi
# Stable names for the newest build of each kind, and the clone's (git-ignored) link to them.
ln -sfn "$image_hash" "$IMAGES/$([[ $with_lustre -eq 1 ]] && echo lustre-server || echo no-lustre)"
mkdir -p "$REPO/.cache"
ln -sfn "$IMAGES" "$REPO/.cache/images"
log "image in $image_dir ($(du -h --apparent-size "$image_dir/disk.qcow2" | cut -f1) qcow2," \
    "root file system $(($(grep "^rootfs_kib=" "$image_dir/inputs.txt" | cut -d= -f2) / 1024)) MiB," \
    "$((SECONDS - start)) s)"
echo "$image_dir"
