#!/usr/bin/env bash
# Build the kubernetes-csi sidecars and the reference host-path driver into $REPO/.cache/bin,
# for the end-to-end tests, the node tier and the benchmarks:
#   csi-provisioner            github.com/kubernetes-csi/external-provisioner/v6   (module proxy)
#   csi-resizer                github.com/kubernetes-csi/external-resizer/v2       (module proxy)
#   hostpathplugin             csi-driver-host-path v1.18.0        (source archive, see below)
#   node-driver-registrar      node-driver-registrar v2.17.0       (source archive, node tier)
#   livenessprobe              livenessprobe v2.19.0               (source archive, node tier)
#
# Usage: hack/install-sidecars.sh [--force] [TOOL...]
#   (default: the "required" tools; the "node" tools only when named, by hack/node/build.sh)
#
# Versions are pinned in the TOOLS table below, and only there.
#
# Module-proxy tools: `go install module/cmd/x@version` is refused for modules with `replace`
# directives in their go.mod (external-provisioner pins every k8s.io/* staging module that
# way). So each tool is built the way upstream builds it, as the main module: `go mod download`
# puts the pinned version (checked against go.sum / the checksum database) into Go's module
# cache, the tree is copied out of the read-only cache into .cache/sidecars-src/TOOL, and
# `go build ./cmd/TOOL` runs there, with -mod=readonly: exactly the versions upstream's
# go.mod/go.sum pin. The copy is kept: its deploy/ folder holds upstream's RBAC manifests.
#
# Source-archive tools: the module proxy answers 403 for every csi-driver-host-path version,
# and node-driver-registrar / livenessprobe tag v2.x while their go.mod says no /v2, so Go
# cannot address any of their versions. Their release tags are in ../shared/third_party/ as
# `git archive` tarballs with vendor/ (see its README.md); each archive's sha256 is checked
# against that README's table, it is unpacked into .cache/sidecars-src/TOOL, and built there
# offline with -mod=vendor.
#
# Idempotent: each binary has a stamp (.cache/bin/.stamps/TOOL) holding a hash of its source
# (module@version, or the archive's sha256), the Go version and the build flags; a tool whose
# stamp matches is not rebuilt, and a second run takes well under a second. Every binary is
# also kept in /var/cache/lustre-csi/go-bin/<hash>/ (LUSTRE_CSI_GO_BIN_CACHE overrides it), so
# another clone on this machine copies it instead of building.
set -euo pipefail

# tool | module, or archive:FILE in THIRD_PARTY | version | main package | required/node
TOOLS=(
    "csi-provisioner|github.com/kubernetes-csi/external-provisioner/v6|v6.4.0|./cmd/csi-provisioner|required"
    "csi-resizer|github.com/kubernetes-csi/external-resizer/v2|v2.3.0|./cmd/csi-resizer|required"
    "hostpathplugin|archive:csi-driver-host-path-v1.18.0.tar.xz|v1.18.0|./cmd/hostpathplugin|required"
    "node-driver-registrar|archive:node-driver-registrar-v2.17.0.tar.xz|v2.17.0|./cmd/csi-node-driver-registrar|node"
    "livenessprobe|archive:livenessprobe-v2.19.0.tar.xz|v2.19.0|./cmd/livenessprobe|node"
)
MIN_GO_MINOR=26 # external-provisioner v6.4 and external-resizer v2.3 say `go 1.26.0`

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${REPO}/.cache/bin"
STAMP_DIR="${BIN_DIR}/.stamps"
SRC_DIR="${REPO}/.cache/sidecars-src"
# Where the source archives are: LUSTRE_CSI_THIRD_PARTY, else ../shared/third_party next to
# the clone, else this machine's shared copy (a CI clone elsewhere finds it there).
THIRD_PARTY="${LUSTRE_CSI_THIRD_PARTY:-}"
if [[ -z "$THIRD_PARTY" ]]; then
    for candidate in "$(cd "${REPO}/.." && pwd)/shared/third_party" /work/shared/third_party; do
        if [[ -f "${candidate}/README.md" ]]; then
            THIRD_PARTY="$candidate"
            break
        fi
    done
    THIRD_PARTY="${THIRD_PARTY:-$(cd "${REPO}/.." && pwd)/shared/third_party}"
fi

ALL_TOOLS=()
EXTRA_TOOLS=()
for entry in "${TOOLS[@]}"; do
    if [[ "${entry##*|}" == node ]]; then
        EXTRA_TOOLS+=("${entry%%|*}")
    else
        ALL_TOOLS+=("${entry%%|*}")
    fi
done

SCRIPT_NAME=install-sidecars
# shellcheck source=hack/lib/go-tools.sh
source "${REPO}/hack/lib/go-tools.sh"
parse_tool_args "$@"

# --- Go toolchain -------------------------------------------------------------------------
find_go

# Static binaries (no C toolchain needed, as upstream's release builds), no VCS stamping (the
# copy is not a checkout), no toolchain downloads.
use_reproducible_go_build

# --- helpers ------------------------------------------------------------------------------
mkdir -p "$BIN_DIR" "$STAMP_DIR" "$SRC_DIR"

# One run at a time per checkout (two shells running setup at once would race otherwise).
exec 9> "${BIN_DIR}/.lock-sidecars"
flock 9

tmp_dir="$(mktemp -d "${BIN_DIR}/.tmp-sidecars.XXXXXX")"
trap 'rm -rf "$tmp_dir"' EXIT

# The table row of a tool, split into globals: module, version, pkg, kind.
lookup() {
    local entry
    for entry in "${TOOLS[@]}"; do
        if [[ "${entry%%|*}" == "$1" ]]; then
            IFS='|' read -r _ module version pkg kind <<< "$entry"
            return 0
        fi
    done
    die "no table entry for $1"
}

# The sha256 the third_party README's table gives for an archive ("" when it has no row).
pinned_sha256() {
    awk -F'|' -v f="\`$1\`" '{ gsub(/ /, "", $2) } $2 == f { gsub(/ /, "", $7); print $7; exit }' \
        "${THIRD_PARTY}/README.md"
}

# Hash of everything a binary depends on: its source (module@version, fixed by go.sum / the
# checksum database; or the archive's checked sha256), what is built from it and how, and
# the Go version.
inputs_hash() {
    local tool="$1" ldflags="$2" source="${module}@${version}"
    if [[ "$module" == archive:* ]]; then
        source="${module}@$(pinned_sha256 "${module#archive:}")"
    fi
    printf '%s\n' "$tool" "$source" "$pkg" "$go_version" "$(uname -m)" \
        "GOFLAGS=${GOFLAGS}" "CGO_ENABLED=${CGO_ENABLED}" "${common_build_flags[*]}" \
        "ldflags=${ldflags}" | sha256sum | cut -d' ' -f1
}

# build TOOL: unless the stamp says the binary is current, download module@version, copy it
# out of the module cache, build the main package there, move the binary into place
# atomically (a running test keeps its old inode) and write the stamp. The go command's own
# output is shown only when something fails. Returns 3 when module@version cannot be
# downloaded (not served, or no network); the caller decides whether that is fatal.
build() {
    local tool="$1"
    lookup "$tool"
    # What `TOOL --version` prints, as upstream's release-tools/build.make sets it.
    local ldflags="-s -w -X main.version=${version}"
    local hash start log="${tmp_dir}/${tool}.log" out="${tmp_dir}/${tool}"
    hash="$(inputs_hash "$tool" "$ldflags")"
    if already_installed "$tool" "$version" "$hash"; then
        return 0
    fi
    start=$SECONDS
    local src="${SRC_DIR}/${tool}"
    local goflags="$GOFLAGS"
    if [[ "$module" == archive:* ]]; then
        unpack_archive "${module#archive:}" "$src" || return $?
        goflags="-mod=vendor"
    else
        fetch_module "$src" "$log" || return $?
    fi
    echo "building ${tool} ${version}..."
    if ! (cd "$src" && GOFLAGS="$goflags" "$GO" build "${common_build_flags[@]}" \
        -ldflags="$ldflags" -o "$out" "$pkg") > "$log" 2>&1; then
        cat "$log" >&2
        die "building ${tool} ${version} failed (sources in ${src})"
    fi
    install_built "$tool" "$version" "$hash" "$out" "$start"
}

# unpack_archive FILE DEST: check FILE (in THIRD_PARTY) against the sha256 its README pins,
# then unpack its one top directory as DEST.
unpack_archive() {
    local file="$1" dest="$2" archive="${THIRD_PARTY}/$1" want got
    [[ -f "$archive" ]] || die "missing source archive ${archive}"
    want="$(pinned_sha256 "$file")"
    [[ -n "$want" ]] || die "${THIRD_PARTY}/README.md pins no sha256 for ${file}"
    got="$(sha256sum "$archive" | cut -d' ' -f1)"
    [[ "$got" == "$want" ]] || die "${archive}: sha256 ${got}, but README.md pins ${want}"
    rm -rf "$dest" "${dest}.unpack" || die "removing ${dest} failed"
    mkdir -p "${dest}.unpack" || die "mkdir ${dest}.unpack failed"
    tar -xJf "$archive" -C "${dest}.unpack" --strip-components=1 --no-same-owner \
        || die "unpacking ${archive} failed"
    mv "${dest}.unpack" "$dest" || die "moving ${dest}.unpack into place failed"
}

# fetch_module DEST LOG: download module@version into Go's module cache and copy it to DEST.
# Returns 3 when it cannot be downloaded (not served, or no network).
fetch_module() {
    local src="$1" log="$2" json dir
    if ! json="$(cd "$tmp_dir" && "$GO" mod download -json "${module}@${version}" 2> "$log")"; then
        # `go mod download -json` reports the failure in the JSON's "Error" field.
        local why
        why="$(sed -n 's/^[[:space:]]*"Error": "\(.*\)",\{0,1\}$/\1/p' <<< "$json")"
        [[ -n "$why" ]] || why="$(tail -n 1 "$log")"
        if grep -q 'not available\|403 Forbidden\|404 Not Found' <<< "$why"; then
            why="not served by the Go module proxy"
        fi
        echo "${tool} ${version}: cannot download ${module}@${version}: ${why}"
        return 3
    fi
    dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<< "$json")"
    [[ -n "$dir" && -f "${dir}/go.mod" ]] || die "go mod download gave no Dir for ${module}@${version}"
    # (set -e does not apply in here: build runs on the left of ||, hence the explicit dies.)
    rm -rf "$src" || die "removing ${src} failed"
    cp -R "$dir" "$src" || die "copying ${dir} to ${src} failed"
    chmod -R u+w "$src" || die "chmod ${src} failed" # the module cache is read-only
}

# --- tools ----------------------------------------------------------------------------------
for tool in "${selected[@]}"; do
    rc=0
    build "$tool" || rc=$?
    if [[ $rc -eq 3 ]]; then
        lookup "$tool"
        die "could not download ${module}@${version}"
    elif [[ $rc -ne 0 ]]; then
        exit "$rc"
    fi
done
