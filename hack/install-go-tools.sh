#!/usr/bin/env bash
# Build the Go test tools into $REPO/.cache/bin, from the Go module proxy only:
#   csi-sanity                                   kubernetes-csi conformance suite (pinned below)
#   kube-apiserver, kube-controller-manager, kubectl   from hack/kube/go.mod (k8s.io/kubernetes)
#   etcd                                         from hack/etcd/go.mod (go.etcd.io/etcd/server/v3)
# and, only when named (the node tier, tests/node, via hack/node/build.sh):
#   kubelet, kube-scheduler                      from hack/kube/go.mod, like kube-apiserver
#   containerd, ctr, containerd-shim-runc-v2     github.com/containerd/containerd/v2 (pinned below)
#
# Usage: hack/install-go-tools.sh [--force] [TOOL...]     (default: all but the node tools)
#
# Idempotent: each binary has a stamp file (.cache/bin/.stamps/TOOL) holding a hash of its
# inputs (version, wrapper go.mod/go.sum, Go version, build flags); a tool whose stamp matches
# is not rebuilt, so a second run takes seconds. Go's own module and build caches (outside the
# repo) are used as they are, and every binary is also kept in /var/cache/lustre-csi/go-bin/
# <hash>/ (LUSTRE_CSI_GO_BIN_CACHE overrides it), so a fresh clone on a machine that built it
# before copies it instead of building.
#
# Versions live in one place each: csi-sanity below, Kubernetes in hack/kube/go.mod
# (regenerate it with hack/kube/bump.sh vX.Y.Z), etcd in hack/etcd/go.mod.
set -euo pipefail

CSI_SANITY_MODULE="github.com/kubernetes-csi/csi-test/v5"
CSI_SANITY_VERSION="v5.6.0"
# containerd 2.x: kubelet after 1.35 does not support containerd 1.x.
CONTAINERD_MODULE="github.com/containerd/containerd/v2"
CONTAINERD_VERSION="v2.4.2"
MIN_GO_MINOR=26 # k8s.io/kubernetes v1.37 needs Go 1.26

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${REPO}/.cache/bin"
STAMP_DIR="${BIN_DIR}/.stamps"
KUBE_MOD_DIR="${REPO}/hack/kube"
ETCD_MOD_DIR="${REPO}/hack/etcd"
ALL_TOOLS=(csi-sanity etcd kube-apiserver kube-controller-manager kubectl)
EXTRA_TOOLS=(kube-scheduler kubelet containerd ctr containerd-shim-runc-v2)

SCRIPT_NAME=install-go-tools
# shellcheck source=hack/lib/go-tools.sh
source "${REPO}/hack/lib/go-tools.sh"
parse_tool_args "$@"

# --- Go toolchain -------------------------------------------------------------------------
find_go

use_reproducible_go_build

# The version a wrapper go.mod requires for a module ("" when it is not there).
mod_version() {
    local gomod="$1" module="$2"
    awk -v m="$module" '
        $1 == "require" && $2 == m { print $3; exit }
        $1 == m && $2 ~ /^v/ { print $2; exit }
    ' "$gomod"
}

kube_version="$(mod_version "${KUBE_MOD_DIR}/go.mod" k8s.io/kubernetes)"
[[ -n "$kube_version" ]] || die "hack/kube/go.mod does not require k8s.io/kubernetes"
etcd_version="$(mod_version "${ETCD_MOD_DIR}/go.mod" go.etcd.io/etcd/server/v3)"
[[ -n "$etcd_version" ]] || die "hack/etcd/go.mod does not require go.etcd.io/etcd/server/v3"

# What `kubectl version` / the apiserver's /version report (as Kubernetes' own build does).
kube_minor="${kube_version#v1.}"
kube_minor="${kube_minor%%.*}"
kube_ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    kube_ldflags+=" -X ${pkg}.gitVersion=${kube_version}"
    kube_ldflags+=" -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${kube_minor}"
    kube_ldflags+=" -X ${pkg}.gitTreeState=clean"
done
# What `containerd --version` reports (containerd's Makefile sets the same variable).
containerd_ldflags="-s -w -X ${CONTAINERD_MODULE}/version.Version=${CONTAINERD_VERSION}"

# --- helpers ------------------------------------------------------------------------------
mkdir -p "$BIN_DIR" "$STAMP_DIR"

# One build at a time per checkout (two shells running setup at once would race otherwise).
if command -v flock > /dev/null 2>&1; then
    exec 9> "${BIN_DIR}/.lock"
    flock 9
fi

tmp_dir="$(mktemp -d "${BIN_DIR}/.tmp.XXXXXX")"
trap 'rm -rf "$tmp_dir"' EXIT

# Hash of everything a tool's binary depends on: its name, version, build recipe, Go version
# and the wrapper module's go.mod/go.sum (if any).
inputs_hash() {
    local tool="$1" version="$2" recipe="$3" mod_dir="$4"
    # The recipe names the wrapper module by its path in this clone: hashed as a path in the
    # repository, so another clone on the machine finds the same cache entry.
    recipe="${recipe//"${REPO}"/<repo>}"
    {
        printf '%s\n' "$tool" "$version" "$recipe" "$go_version" "$(uname -m)" \
            "GOFLAGS=${GOFLAGS}" "CGO_ENABLED=${CGO_ENABLED}" "${common_build_flags[*]}"
        if [[ -n "$mod_dir" ]]; then
            cat "${mod_dir}/go.mod" "${mod_dir}/go.sum"
        fi
    } | sha256sum | cut -d' ' -f1
}

# ensure TOOL VERSION MOD_DIR COMMAND...: run COMMAND (which must write "$out") unless the
# stamp says the binary is current; then move the binary into place atomically (a running
# test keeps its old inode) and write the stamp. The go command's own output (module
# downloads, compile errors) is shown only when the build fails.
ensure() {
    local tool="$1" version="$2" mod_dir="$3"
    shift 3
    local hash start
    hash="$(inputs_hash "$tool" "$version" "$*" "$mod_dir")"
    if already_installed "$tool" "$version" "$hash"; then
        return 0
    fi
    echo "building ${tool} ${version}..."
    start=$SECONDS
    out="${tmp_dir}/${tool}"
    local log="${tmp_dir}/${tool}.log"
    rm -f "$out"
    if ! "$@" > "$log" 2>&1; then
        cat "$log" >&2
        die "building ${tool} ${version} failed"
    fi
    install_built "$tool" "$version" "$hash" "$out" "$start"
}

build_csi_sanity() {
    GOBIN="$tmp_dir" "$GO" install "${common_build_flags[@]}" \
        "${CSI_SANITY_MODULE}/cmd/csi-sanity@${CSI_SANITY_VERSION}"
}

build_module_command() {
    local pkg="$1" ldflags="$2"
    GOBIN="$tmp_dir" "$GO" install "${common_build_flags[@]}" -ldflags="$ldflags" "$pkg"
}

build_in_module() {
    local mod_dir="$1" pkg="$2" ldflags="$3"
    (cd "$mod_dir" && "$GO" build "${common_build_flags[@]}" -ldflags="$ldflags" -o "$out" "$pkg")
}

# --- tools ----------------------------------------------------------------------------------
for tool in "${selected[@]}"; do
    case "$tool" in
        csi-sanity)
            ensure csi-sanity "$CSI_SANITY_VERSION" "" build_csi_sanity
            ;;
        etcd)
            ensure etcd "$etcd_version" "$ETCD_MOD_DIR" \
                build_in_module "$ETCD_MOD_DIR" go.etcd.io/etcd/server/v3 "-s -w"
            ;;
        kube-apiserver | kube-controller-manager | kubectl | kube-scheduler | kubelet)
            ensure "$tool" "$kube_version" "$KUBE_MOD_DIR" \
                build_in_module "$KUBE_MOD_DIR" "k8s.io/kubernetes/cmd/${tool}" "$kube_ldflags"
            ;;
        containerd | ctr | containerd-shim-runc-v2)
            ensure "$tool" "$CONTAINERD_VERSION" "" build_module_command \
                "${CONTAINERD_MODULE}/cmd/${tool}@${CONTAINERD_VERSION}" "$containerd_ldflags"
            ;;
    esac
done
