#!/usr/bin/env bash
# Build Lustre 2.17.0 (servers on ldiskfs, and the client) for Debian bookworm's
# pinned kernel, into an install tree and a tarball, cached by the hash of all
# inputs. See hack/lustre/README.md.
#
#   bash hack/lustre/build.sh              build if needed, report where
#   bash hack/lustre/build.sh --print-dir  the same; stdout is only the output dir
#
# Progress goes to stderr. Environment (all optional):
#   LUSTRE_CSI_CACHE    cache root (default /var/cache/lustre-csi)
#   LUSTRE_THIRD_PARTY  where the release tarball and its README are
#                       (default <clone>/../shared/third_party)
#   LUSTRE_BUILD_JOBS   make -j (default 2)
#   LUSTRE_KEEP_BUILD=1 keep the build tree after a successful build
set -euo pipefail

LUSTRE_VERSION=2.17.0
LUSTRE_TARBALL_NAME=lustre-release-v2_17_0.tar.xz
KERNEL_RELEASE=6.1.0-57-amd64
KERNEL_PKG_VERSION=6.1.192-3
LDISKFS_SERIES_NAME=6.1-debian12.series
# The release tarball lacks these conformance images; lustre/tests/Makefile
# lists them as data even with --disable-tests, so empty files stand in.
MISSING_TEST_IMAGES=(disk2_12-ldiskfs disk2_15-ldiskfs disk2_15-zfs)
# What 2.17 builds with these flags: 27 modules (there is no ost.ko in 2.17: the
# OST service is in ofd.ko; ec is the erasure-code library, osd_wbcfs the
# memory-backed OSD).
EXPECTED_MODULES=(
	libcfs lnet ksocklnd lnet_selftest
	obdclass ptlrpc fld fid lmv lov mdc osc mgc lustre obdecho ec
	mgs mdt mdd lod osp ofd lfsck lquota
	osd_ldiskfs ldiskfs osd_wbcfs
)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PATCHES="$HERE/patches"
CACHE_ROOT=${LUSTRE_CSI_CACHE:-/var/cache/lustre-csi}
THIRD_PARTY=${LUSTRE_THIRD_PARTY:-$REPO/../shared/third_party}
JOBS=${LUSTRE_BUILD_JOBS:-2}
TARBALL="$THIRD_PARTY/$LUSTRE_TARBALL_NAME"
BUILD_PACKAGES=(
	"linux-source-6.1=$KERNEL_PKG_VERSION"
	"linux-headers-$KERNEL_RELEASE=$KERNEL_PKG_VERSION"
	build-essential autoconf automake libtool pkg-config flex bison bc kmod
	patch xz-utils python3 e2fsprogs
	libelf-dev libssl-dev libyaml-dev libnl-3-dev libnl-genl-3-dev
	libkeyutils-dev libmount-dev zlib1g-dev libreadline-dev libext2fs-dev
	libselinux1-dev
)

print_dir=0
case "${1:-}" in
"") ;;
--print-dir) print_dir=1 ;;
*)
	echo "usage: $0 [--print-dir]" >&2
	exit 2
	;;
esac

START=$SECONDS
say() { echo "lustre-build: $* ($((SECONDS - START))s)" >&2; }
die() {
	echo "lustre-build: error: $*" >&2
	exit 1
}

# --- inputs and their hash -------------------------------------------------

[[ -r $TARBALL ]] || die "source tarball not found: $TARBALL"
expected_sha=$(grep -F "\`$LUSTRE_TARBALL_NAME\`" "$THIRD_PARTY/README.md" 2>/dev/null |
	grep -oE '\b[0-9a-f]{64}\b' | head -n1 || true)
[[ -n $expected_sha ]] || die "no sha256 for $LUSTRE_TARBALL_NAME in $THIRD_PARTY/README.md"
tarball_sha=$(sha256sum "$TARBALL" | cut -d' ' -f1)
[[ $tarball_sha == "$expected_sha" ]] ||
	die "$TARBALL has sha256 $tarball_sha, README.md says $expected_sha"

# Every file under patches/ and this script, by relative path and content, so a
# renamed, added or edited patch makes a new build.
input_manifest() {
	echo "lustre-tarball $tarball_sha"
	echo "kernel $KERNEL_RELEASE $KERNEL_PKG_VERSION"
	echo "script $(sha256sum "$HERE/build.sh" | cut -d' ' -f1)"
	(cd "$PATCHES" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
}
INPUT_HASH=$(input_manifest | sha256sum | cut -d' ' -f1)
OUT="$CACHE_ROOT/lustre/$INPUT_HASH"

link_into_clone() {
	mkdir -p "$REPO/.cache"
	ln -sfn "$OUT" "$REPO/.cache/lustre"
}

finish() {
	link_into_clone
	if ((print_dir)); then
		echo "$OUT"
	else
		say "ready: $OUT (tarball $(du -h "$OUT/lustre-install.tar.gz" | cut -f1))"
	fi
	exit 0
}

is_complete() { [[ -f $OUT/BUILD-INFO && -f $OUT/lustre-install.tar.gz && -d $OUT/root ]]; }

is_complete && finish

# One builder per input hash: a second caller waits and then finds the result.
mkdir -p "$CACHE_ROOT/lustre" "$CACHE_ROOT/work"
exec 9>"$CACHE_ROOT/lustre/.$INPUT_HASH.lock"
if ! flock -n 9; then
	say "another build of $INPUT_HASH is running; waiting for it"
	flock 9
fi
is_complete && finish

PARTIAL="$OUT.partial"
rm -rf "$PARTIAL"
mkdir -p "$PARTIAL"
LOG="$PARTIAL/build.log"
: >"$LOG"
declare -A TIMES=()

# Run one step with its output in the log; on failure show the log's tail.
step() {
	local name=$1
	shift
	say "$name..."
	echo "=== $name: $*" >>"$LOG"
	local t0=$SECONDS
	# A subshell outside any "if", so that set -e holds inside the step
	# (bash ignores it in functions called from a condition).
	local rc=0
	set +e
	(
		set -e
		"$@"
	) >>"$LOG" 2>&1
	rc=$?
	set -e
	if ((rc != 0)); then
		echo "lustre-build: $name failed after $((SECONDS - t0))s; last lines of $LOG:" >&2
		tail -n 60 "$LOG" >&2
		echo "lustre-build: full log: $LOG" >&2
		exit 1
	fi
	TIMES[$name]=$((SECONDS - t0))
	say "$name done in ${TIMES[$name]}s"
}

# --- build dependencies ----------------------------------------------------

packages_missing() {
	local spec name want have
	for spec in "${BUILD_PACKAGES[@]}"; do
		name=${spec%%=*}
		want=${spec#*=}
		[[ $want == "$spec" ]] && want=
		have=$(dpkg-query -W -f='${Status}|${Version}' "$name" 2>/dev/null || true)
		[[ $have == "install ok installed|"* ]] || return 0
		[[ -z $want || ${have#*|} == "$want" ]] || return 0
	done
	return 1
}

install_packages() {
	local attempt
	export DEBIAN_FRONTEND=noninteractive
	for attempt in 1 2 3 4 5 6; do
		# DPkg::Lock::Timeout waits for another engineer's apt-get; the loop
		# covers a failed download or a lock held longer than that.
		if apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=300 \
			"${BUILD_PACKAGES[@]}"; then
			return 0
		fi
		echo "apt-get install failed (attempt $attempt); updating lists and retrying" >&2
		sleep 20
		apt-get update -o DPkg::Lock::Timeout=300 || true
	done
	return 1
}

if packages_missing; then
	[[ $(id -u) == 0 ]] || die "build packages are missing and apt-get needs root"
	step packages install_packages
else
	TIMES[packages]=0
fi

# --- kernel source (unpacked once per kernel package version) --------------

KSRC="$CACHE_ROOT/work/linux-source-$KERNEL_PKG_VERSION"
unpack_kernel() {
	rm -rf "$KSRC.partial"
	mkdir -p "$KSRC.partial"
	tar -xJf /usr/src/linux-source-6.1.tar.xz -C "$KSRC.partial" --strip-components=1
	mv "$KSRC.partial" "$KSRC"
}
if [[ ! -f $KSRC/Makefile ]]; then
	step unpack-kernel unpack_kernel
else
	TIMES[unpack-kernel]=0
fi
KOBJ=/usr/src/linux-headers-$KERNEL_RELEASE
[[ -f $KOBJ/.config && -f $KOBJ/Module.symvers ]] || die "$KOBJ lacks .config or Module.symvers"

# --- Lustre source with the project's patches -------------------------------

SRC="$CACHE_ROOT/work/lustre-$INPUT_HASH"

# The series file may carry comments; the ldiskfs Makefile reads every word as
# a patch name, so the copy in the tree has only the names.
series_names() { sed -e 's/#.*//' "$PATCHES/ldiskfs/ldiskfs-$LDISKFS_SERIES_NAME" | awk 'NF { print $1 }'; }

prepare_source() {
	rm -rf "$SRC"
	mkdir -p "$SRC"
	tar -xJf "$TARBALL" -C "$SRC" --strip-components=1
	cd "$SRC"
	local p
	for p in "$PATCHES"/lustre/*.patch; do
		echo "applying $(basename "$p")"
		patch -p1 --forward --batch --no-backup-if-mismatch <"$p"
	done
	local kp=ldiskfs/kernel_patches
	cp -r "$PATCHES/ldiskfs/debian12" "$kp/patches/debian12"
	series_names >"$kp/series/ldiskfs-$LDISKFS_SERIES_NAME"
	while read -r p; do
		[[ -f $kp/patches/$p ]] || { echo "series names a missing patch: $p"; return 1; }
	done <"$kp/series/ldiskfs-$LDISKFS_SERIES_NAME"
	# Check the whole series against the kernel's ext4 now, not 10 minutes into make.
	local stage
	stage=$(mktemp -d)
	mkdir -p "$stage/fs/ext4" "$stage/include/linux" "$stage/include/trace/events"
	cp "$KSRC"/fs/ext4/*.[ch] "$KSRC"/fs/ext4/Makefile "$stage/fs/ext4/"
	cp "$KSRC"/include/trace/events/ext4*.h "$stage/include/trace/events/"
	cp "$KSRC"/include/linux/ext4*.h "$stage/include/linux/" 2>/dev/null || true
	while read -r p; do
		echo "checking ldiskfs patch $p"
		(cd "$stage" && patch -p1 -s --batch <"$SRC/$kp/patches/$p") ||
			{ echo "ldiskfs patch $p does not apply to $KSRC"; rm -rf "$stage"; return 1; }
	done <"$kp/series/ldiskfs-$LDISKFS_SERIES_NAME"
	rm -rf "$stage"
	local img
	for img in "${MISSING_TEST_IMAGES[@]}"; do
		[[ -e lustre/tests/$img.tar.bz2 ]] || : >"lustre/tests/$img.tar.bz2"
	done
	# No .git: LUSTRE-VERSION-GEN falls back to its default; pin it so the
	# version cannot drift to a git describe of whatever tree this sits in.
	echo "LUSTRE_VERSION = $LUSTRE_VERSION" >LUSTRE-VERSION-FILE
	local v
	v=$(./LUSTRE-VERSION-GEN)
	[[ $v == "$LUSTRE_VERSION" ]] || { echo "LUSTRE-VERSION-GEN says '$v', want $LUSTRE_VERSION"; return 1; }
	# configure.ac changed (patch 0001) and the tarball ships no configure.
	sh autogen.sh
}
step prepare prepare_source
cd "$SRC"

step configure ./configure \
	--with-linux="$KSRC" \
	--with-linux-obj="$KOBJ" \
	--enable-server --enable-ldiskfs --disable-gss --disable-tests \
	--with-o2ib=no --disable-quilt \
	LDISKFS_SERIES="$LDISKFS_SERIES_NAME" PYTHON=/usr/bin/python3

step make make -j"$JOBS"

ROOT="$PARTIAL/root"
install_tree() {
	make install DESTDIR="$ROOT"
	# Debian bookworm is merged-/usr: /sbin is a link to usr/sbin. A real sbin/
	# directory in the tarball would replace that link when unpacked.
	if [[ -d $ROOT/sbin ]]; then
		mkdir -p "$ROOT/usr/sbin"
		mv "$ROOT"/sbin/* "$ROOT/usr/sbin/"
		rmdir "$ROOT/sbin"
	fi
	find "$ROOT/lib/modules" -name '*.ko' -exec strip --strip-debug {} +
}
step install install_tree

# --- smoke check: cheap, no VM ---------------------------------------------

MODDIR="$ROOT/lib/modules/$KERNEL_RELEASE"
smoke_check() {
	local ko vermagic name bad=0
	[[ -d $MODDIR ]] || { echo "no $MODDIR"; return 1; }
	while IFS= read -r ko; do
		vermagic=$(modinfo -F vermagic "$ko")
		if [[ ${vermagic%% *} != "$KERNEL_RELEASE" ]]; then
			echo "$ko: vermagic '$vermagic', want $KERNEL_RELEASE"
			bad=1
		fi
	done < <(find "$MODDIR" -name '*.ko')
	for name in "${EXPECTED_MODULES[@]}"; do
		[[ -n $(find "$MODDIR" -name "$name.ko" -print -quit) ]] || { echo "missing module $name.ko"; bad=1; }
	done
	local count
	count=$(find "$MODDIR" -name '*.ko' | wc -l)
	((count == ${#EXPECTED_MODULES[@]})) ||
		{ echo "$count modules built, expected ${#EXPECTED_MODULES[@]}"; bad=1; }
	LD_LIBRARY_PATH=$ROOT/usr/lib "$ROOT/usr/sbin/lctl" --version
	# mkfs.lustre looks for its OSD plugins in /usr/lib/lustre, or in
	# $LUSTRE/utils (for the test framework): point that at the tree, so that
	# loading mount_osd_ldiskfs.so is checked too. --help prints the usage and
	# exits 22 by design.
	local plugins help
	plugins=$(mktemp -d)
	ln -s "$ROOT/usr/lib/lustre" "$plugins/utils"
	help=$(LUSTRE=$plugins LD_LIBRARY_PATH=$ROOT/usr/lib "$ROOT/usr/sbin/mkfs.lustre" --help 2>&1 || true)
	rm -rf "$plugins"
	grep -q -- '--backfstype=ldiskfs' <<<"$help" || { echo "mkfs.lustre --help:"; echo "$help"; bad=1; }
	for name in mount.lustre lfs lctl mkfs.lustre tunefs.lustre l_getidentity; do
		[[ -x $ROOT/usr/sbin/$name || -x $ROOT/usr/bin/$name ]] || { echo "missing $name"; bad=1; }
	done
	[[ -n $(find "$ROOT" -name 'liblustreapi.so*' -print -quit) ]] || { echo "missing liblustreapi"; bad=1; }
	return "$bad"
}
step smoke-check smoke_check

# --- tarball and BUILD-INFO ------------------------------------------------

# Fixed owner and mtime (the release date, 2025-12-29), sorted names, no gzip
# timestamp: the same tree gives the same tarball.
pack_tree() {
	tar -C "$ROOT" --sort=name --owner=0 --group=0 --numeric-owner \
		--mtime=@"${SOURCE_DATE_EPOCH:-1766966400}" -cf - . |
		gzip -n -9 >"$PARTIAL/lustre-install.tar.gz"
}
step pack pack_tree

write_build_info() {
	local lctl_version
	lctl_version=$(LD_LIBRARY_PATH=$ROOT/usr/lib "$ROOT/usr/sbin/lctl" --version 2>&1 | head -n1)
	{
		echo "lustre-version: $LUSTRE_VERSION"
		echo "lctl-version: $lctl_version"
		echo "kernel-release: $KERNEL_RELEASE"
		echo "kernel-package-version: $KERNEL_PKG_VERSION"
		echo "backend: ldiskfs (servers) + client"
		echo "ldiskfs-series: $LDISKFS_SERIES_NAME"
		echo "source: $LUSTRE_TARBALL_NAME sha256 $tarball_sha"
		echo "input-hash: $INPUT_HASH"
		echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores, make -j$JOBS"
		local k
		for k in packages unpack-kernel prepare configure make install smoke-check pack; do
			echo "seconds-$k: ${TIMES[$k]:-0}"
		done
		echo "seconds-total: $((SECONDS - START))"
		echo "size-root: $(du -sh "$ROOT" | cut -f1)"
		echo "size-modules: $(du -sh "$MODDIR" | cut -f1)"
		echo "size-tarball: $(du -h "$PARTIAL/lustre-install.tar.gz" | cut -f1)"
		echo "modules: $(find "$MODDIR" -name '*.ko' | wc -l)"
		(cd "$MODDIR" && find . -name '*.ko' -printf '%P %s\n' | LC_ALL=C sort | sed 's/^/  /')
		echo "inputs:"
		input_manifest | sed 's/^/  /'
	} >"$PARTIAL/BUILD-INFO"
}
write_build_info

rm -rf "$OUT"
mv "$PARTIAL" "$OUT"
[[ ${LUSTRE_KEEP_BUILD:-0} == 1 ]] || rm -rf "$SRC"
say "built $INPUT_HASH"
finish
