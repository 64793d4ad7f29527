#!/usr/bin/env bash
# Build the kubernetes-csi sidecars (and the reference host-path driver) into $REPO/.cache/bin,
# from the Go module proxy only, for the end-to-end tests and the benchmarks:
#   csi-provisioner            github.com/kubernetes-csi/external-provisioner/v6
#   csi-resizer                github.com/kubernetes-csi/external-resizer/v2
#   hostpathplugin             github.com/kubernetes-csi/csi-driver-host-path      (optional)
#
# Usage: hack/install-sidecars.sh [--force] [TOOL...]     (default: all tools)
#
# Versions are pinned in the TOOLS table below, and only there.
#
# Why not `go install module/cmd/x@version`: these modules carry `replace` directives in their
# go.mod (external-provisioner pins every k8s.io/* staging module that way), and `go install
# pkg@version` refuses any module that has them. So each tool is built the way upstream builds
# it, as the main module: `go mod download` puts the pinned version (checked against go.sum /
# the checksum database) into Go's module cache, the tree is copied out of the read-only cache
# into .cache/sidecars-src/TOOL, and `go build ./cmd/TOOL` runs there, where its go.mod, go.sum
# and replace directives all apply. The module zip has no vendor/ directory, so the build
# resolves modules from the module cache, with -mod=readonly: exactly the versions upstream's
# go.mod/go.sum pin (they are complete; -mod=mod would be the fallback if a version's go.sum
# were not). The copy is kept: its deploy/ folder holds upstream's RBAC manifests.
#
# Idempotent: each binary has a stamp (.cache/bin/.stamps/TOOL) holding a hash of
# module@version, the Go version and the build flags; a tool whose stamp matches is not
# rebuilt, and a second run takes well under a second. Go's default module and build caches
# (outside the repo) are used as they are.
#
# "optional" tools: the module proxy this project can reach answers 403 "This module version
# is not available" for every csi-driver-host-path version tried (v1.0.0 ... v1.25.0, commit
# hashes). An optional tool that cannot be downloaded is reported and skipped (exit 0) when all
# tools are built, and is an error when asked for by name. node-driver-registrar and
# livenessprobe are not here at all: their go.mod says `module .../node-driver-registrar`
# (no /v2) while their tags are v2.x, so Go ignores those tags and no version is addressable.
set -euo pipefail

# tool | module | version | main package (in the module) | required/optional
TOOLS=(
    "csi-provisioner|github.com/kubernetes-csi/external-provisioner/v6|v6.4.0|./cmd/csi-provisioner|required"
    "csi-resizer|github.com/kubernetes-csi/external-resizer/v2|v2.3.0|./cmd/csi-resizer|required"
    "hostpathplugin|github.com/kubernetes-csi/csi-driver-host-path|v1.17.0|./cmd/hostpathplugin|optional"
)
MIN_GO_MINOR=26 # external-provisioner v6.4 and external-resizer v2.3 say `go 1.26.0`

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${REPO}/.cache/bin"
STAMP_DIR="${BIN_DIR}/.stamps"
SRC_DIR="${REPO}/.cache/sidecars-src"

ALL_TOOLS=()
for entry in "${TOOLS[@]}"; do
    ALL_TOOLS+=("${entry%%|*}")
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

# Hash of everything a binary depends on: module@version, what is built from it and how, and
# the Go version. (The module's content is fixed by its version: go.sum / the checksum
# database vouch for it.)
inputs_hash() {
    local tool="$1" ldflags="$2"
    printf '%s\n' "$tool" "${module}@${version}" "$pkg" "$go_version" "$(uname -m)" \
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
    if is_up_to_date "$tool" "$hash"; then
        echo "${tool} ${version}: up to date"
        return 0
    fi
    start=$SECONDS

    local json dir
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
    echo "building ${tool} ${version}..."
    dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<< "$json")"
    [[ -n "$dir" && -f "${dir}/go.mod" ]] || die "go mod download gave no Dir for ${module}@${version}"

    local src="${SRC_DIR}/${tool}"
    # (set -e does not apply in here: build runs on the left of ||, hence the explicit dies.)
    rm -rf "$src" || die "removing ${src} failed"
    cp -R "$dir" "$src" || die "copying ${dir} to ${src} failed"
    chmod -R u+w "$src" || die "chmod ${src} failed" # the module cache is read-only
    if ! (cd "$src" && "$GO" build "${common_build_flags[@]}" -ldflags="$ldflags" \
        -o "$out" "$pkg") > "$log" 2>&1; then
        cat "$log" >&2
        die "building ${tool} ${version} failed (sources in ${src})"
    fi
    [[ -x "$out" ]] || die "building ${tool} produced no binary"
    mv -f "$out" "${BIN_DIR}/${tool}" || die "installing ${BIN_DIR}/${tool} failed"
    printf '%s\n' "$hash" > "${STAMP_DIR}/${tool}" || die "writing the stamp of ${tool} failed"
    echo "  done ${tool} ${version} in $((SECONDS - start))s"
}

# --- tools ----------------------------------------------------------------------------------
for tool in "${selected[@]}"; do
    rc=0
    build "$tool" || rc=$?
    if [[ $rc -eq 3 ]]; then
        lookup "$tool"
        if [[ $named -eq 1 || "$kind" != optional ]]; then
            die "could not download ${module}@${version}"
        fi
        echo "  skipped ${tool} (optional)"
    elif [[ $rc -ne 0 ]]; then
        exit "$rc"
    fi
done
