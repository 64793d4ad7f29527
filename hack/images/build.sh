#!/usr/bin/env bash
# Build the container images the node tier (tests/node) runs, here, with no registry:
#   localhost/lustre-csi/debian-base:bookworm   Debian bookworm from Debian's own packages
#                                               (mmdebstrap), the BASE of our Dockerfile
#   localhost/lustre-csi/lustre-csi:0.1.0       our Dockerfile, built with buildah
#   localhost/lustre-csi/<sidecar>:<version>    csi-provisioner, csi-resizer,
#                                               csi-node-driver-registrar, livenessprobe:
#                                               FROM scratch + the binary built in .cache/bin
#   localhost/lustre-csi/pause:3.10-local       the sandbox image: hack/images/pause (static Go)
#   docker.io/library/busybox:1.37              Debian's busybox-static under the tag
#                                               deploy/examples/pvc-and-pod.yaml names, so the
#                                               example runs unchanged (it is busybox 1.35)
#
# Usage: hack/images/build.sh [--force]
#
# Each image is an OCI archive in IMAGE_CACHE (/var/cache/lustre-csi/node-images, outside the
# clone, so every clone and CI job on this machine shares it; LUSTRE_CSI_IMAGE_CACHE
# overrides it), named by a hash of all its inputs; an archive that exists is not built again,
# so a second run takes seconds. .cache/images/index.tsv lists "<image ref>\t<archive>" for
# the tests, which import them with `ctr -n k8s.io images import`.
#
# Needs: buildah, mmdebstrap (installed by hack/node/build.sh), the Go binaries in .cache/bin
# (hack/install-sidecars.sh), Go (for pause), network to deb.debian.org and PyPI (our
# Dockerfile installs its wheels from PyPI). Runs in a private mount namespace (buildah's
# overlay mounts never reach the host).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
IMAGE_CACHE="${LUSTRE_CSI_IMAGE_CACHE:-/var/cache/lustre-csi/node-images}"
INDEX_DIR="${REPO}/.cache/images"
BIN_DIR="${REPO}/.cache/bin"
DEBIAN_MIRROR="${LUSTRE_CSI_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# What the base holds: what our Dockerfile needs from its BASE (python3 + venv), and
# ca-certificates for pip's downloads from PyPI.
BASE_PACKAGES="python3,python3-venv,ca-certificates,mount,util-linux"
# The images' name prefix: "localhost/" is never pulled from anywhere.
PREFIX="localhost/lustre-csi"
DRIVER_VERSION="0.1.0"
BUILD_CA_BUNDLE="${LUSTRE_CSI_BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

die() {
    echo "images: $*" >&2
    exit 1
}

force=0
case "${1:-}" in
    "") ;;
    --force) force=1 ;;
    *) die "usage: $0 [--force]" ;;
esac

if [[ "${LUSTRE_CSI_IMAGES_PRIVATE:-}" != 1 ]]; then
    LUSTRE_CSI_IMAGES_PRIVATE=1 exec unshare --mount --propagation private -- "$0" "$@"
fi

for tool in buildah mmdebstrap; do
    command -v "$tool" > /dev/null || die "${tool} is missing: run hack/node/build.sh"
done

mkdir -p "$IMAGE_CACHE" "$INDEX_DIR"
exec 9> "${IMAGE_CACHE}/.lock"
flock 9

# buildah's own storage, private to these builds (never /var/lib/containers).
STORAGE="${IMAGE_CACHE}/buildah"
buildah_() {
    buildah --root "${STORAGE}/root" --runroot "${STORAGE}/run" --storage-driver overlay "$@"
}

tmp_dir="$(mktemp -d "${IMAGE_CACHE}/.tmp.XXXXXX")"
trap 'rm -rf "$tmp_dir"' EXIT
index="${tmp_dir}/index.tsv"
: > "$index"

# Hash of files and strings: "f:PATH" (relative to the repo, or absolute) hashes a file's
# contents, or a directory tree's relative names and contents; anything else is hashed as given.
hash_of() {
    local item path
    for item in "$@"; do
        if [[ "$item" == f:* ]]; then
            path="${item#f:}"
            [[ "$path" == /* ]] || path="${REPO}/${path}"
            if [[ -d "$path" ]]; then
                (cd "$path" && find . -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 \
                    | LC_ALL=C sort -z | xargs -0 sha256sum)
            else
                sha256sum < "$path"
            fi
        else
            printf '%s\n' "$item"
        fi
    done | sha256sum | cut -c1-16
}

# have REF HASH: the archive exists (and no --force); sets archive either way.
have() {
    archive="${IMAGE_CACHE}/$(tr '/:' '__' <<< "$1")-$2.oci.tar"
    [[ $force -eq 0 && -s "$archive" ]]
}

# push REF: write the image REF from buildah's storage to "$archive", atomically.
push() {
    buildah_ push --quiet "$1" "oci-archive:${archive}.part:$1" > /dev/null
    mv -f "${archive}.part" "$archive"
}

# record REF: list REF's archive in the index, and drop its archives of older inputs.
record() {
    local stem
    stem="$(tr '/:' '__' <<< "$1")"
    find "$IMAGE_CACHE" -maxdepth 1 -name "${stem}-*.oci.tar" ! -path "$archive" -delete
    printf '%s\t%s\n' "$1" "$archive" >> "$index"
    echo "  ${1}: $(du -h "$archive" | cut -f1) (${archive##*/})"
}

# --- the base: Debian bookworm from Debian's packages ------------------------------------
base_ref="${PREFIX}/debian-base:bookworm"
base_hash="$(hash_of "bookworm" "$BASE_PACKAGES" "$DEBIAN_MIRROR" "variant=minbase" "v1")"
if ! have "$base_ref" "$base_hash"; then
    echo "images: building ${base_ref} (mmdebstrap bookworm)..."
    SOURCE_DATE_EPOCH=0 mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" \
        --aptopt='Acquire::Retries "3"' \
        --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
        bookworm "${tmp_dir}/base.tar" "$DEBIAN_MIRROR" \
        || die "mmdebstrap failed"
    container="$(buildah_ from scratch)"
    buildah_ add --quiet "$container" "${tmp_dir}/base.tar" / > /dev/null
    buildah_ config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd /bin/bash "$container"
    buildah_ commit --quiet --rm "$container" "$base_ref" > /dev/null
    push "$base_ref"
fi
record "$base_ref"
base_archive="$archive"

# --- our driver: the project's Dockerfile against that base -------------------------------
driver_ref="${PREFIX}/lustre-csi:${DRIVER_VERSION}"
driver_hash="$(hash_of "$base_hash" f:Dockerfile f:pyproject.toml f:README.md f:proto \
    f:hack/generate_stubs.py f:csi f:provisioner)"
if ! have "$driver_ref" "$driver_hash"; then
    echo "images: building ${driver_ref} (buildah bud Dockerfile, BASE=${base_ref})..."
    # FROM needs the base in buildah's storage: load it from its archive when missing.
    if ! buildah_ inspect --type image "$base_ref" > /dev/null 2>&1; then
        buildah_ tag "$(buildah_ pull --quiet "oci-archive:${base_archive}")" "$base_ref"
    fi
    # Only the files the Dockerfile COPYs go into the build context.
    context="${tmp_dir}/context"
    mkdir -p "${context}/hack"
    (cd "$REPO" && cp -R Dockerfile pyproject.toml README.md proto csi provisioner "$context/" \
        && cp hack/generate_stubs.py "${context}/hack/")
    find "$context" -name __pycache__ -prune -exec rm -rf {} +
    # RUN steps fetch wheels from PyPI and packages from Debian. This machine reaches them
    # through a TLS-intercepting proxy whose CA is only in the host's bundle: bind it into the
    # RUN steps (never into the image) when there is one.
    ca_volume=()
    if [[ -f "$BUILD_CA_BUNDLE" ]]; then
        ca_volume=(--volume "${BUILD_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro")
    fi
    buildah_ bud --quiet --layers=false --network host --pull-never "${ca_volume[@]}" \
        --build-arg "BASE=${base_ref}" -f "${context}/Dockerfile" -t "$driver_ref" "$context" \
        > "${tmp_dir}/bud.log" 2>&1 || { cat "${tmp_dir}/bud.log" >&2; die "buildah bud failed"; }
    push "$driver_ref"
fi
record "$driver_ref"

# --- FROM scratch images of one static binary ------------------------------------------
# scratch_image REF BINARY [NAME]: an image holding BINARY as /NAME, its entrypoint.
scratch_image() {
    local ref="$1" binary="$2" name="${3:-${2##*/}}"
    [[ -x "$binary" ]] || die "missing ${binary}: run hack/node/build.sh"
    if ! have "$ref" "$(hash_of "$ref" "$name" "f:${binary}" "v1")"; then
        echo "images: building ${ref} (FROM scratch + ${name})..."
        local container
        container="$(buildah_ from scratch)"
        buildah_ copy --quiet "$container" "$binary" "/${name}" > /dev/null
        buildah_ config --entrypoint "[\"/${name}\"]" --cmd '' "$container"
        buildah_ commit --quiet --rm "$container" "$ref" > /dev/null
        push "$ref"
    fi
    record "$ref"
}

# --- pause ----------------------------------------------------------------------------------
pause_bin="${REPO}/.cache/images/pause"
(cd "${REPO}/hack/images/pause" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=readonly \
    go build -trimpath -buildvcs=false -ldflags="-s -w" -o "${pause_bin}.part" . \
    && mv -f "${pause_bin}.part" "$pause_bin") || die "building hack/images/pause failed"
scratch_image "${PREFIX}/pause:3.10-local" "$pause_bin" pause

# --- busybox for the example pod ------------------------------------------------------------
# Debian's busybox-static .deb, unpacked (not installed: it would replace the host's busybox).
busybox_ref="docker.io/library/busybox:1.37"
# The .deb is kept in IMAGE_CACHE/debs by version, so a warm run needs no network.
busybox_version="$(apt-cache policy busybox-static | awk '$1 == "Candidate:" { print $2 }')"
[[ -n "$busybox_version" && "$busybox_version" != "(none)" ]] \
    || die "apt knows no busybox-static (apt-get update?)"
busybox_deb="${IMAGE_CACHE}/debs/busybox-static_${busybox_version//:/%3a}_amd64.deb"
if [[ ! -s "$busybox_deb" ]]; then
    mkdir -p "${tmp_dir}/debs" "${IMAGE_CACHE}/debs"
    (cd "${tmp_dir}/debs" && apt-get download "busybox-static=${busybox_version}") \
        > "${tmp_dir}/apt.log" 2>&1 \
        || { cat "${tmp_dir}/apt.log" >&2; die "apt-get download busybox-static failed"; }
    mv -f "${tmp_dir}"/debs/busybox-static_*.deb "$busybox_deb"
fi
if ! have "$busybox_ref" "$(hash_of "$busybox_ref" "f:${busybox_deb}" "v1")"; then
    echo "images: building ${busybox_ref} (${busybox_deb##*/})..."
    root="${tmp_dir}/busybox"
    dpkg-deb -x "$busybox_deb" "${tmp_dir}/busybox-deb"
    mkdir -p "${root}/bin" "${root}/tmp" "${root}/etc"
    cp "${tmp_dir}/busybox-deb/bin/busybox" "${root}/bin/busybox"
    for applet in $("${root}/bin/busybox" --list); do
        [[ "$applet" == busybox ]] || ln -s busybox "${root}/bin/${applet}"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' \
        > "${root}/etc/passwd"
    container="$(buildah_ from scratch)"
    buildah_ copy --quiet "$container" "$root" / > /dev/null
    buildah_ config --env PATH=/bin --cmd /bin/sh "$container"
    buildah_ commit --quiet --rm "$container" "$busybox_ref" > /dev/null
    push "$busybox_ref"
fi
record "$busybox_ref"

# The version hack/install-sidecars.sh pins for TOOL (its TOOLS table is the one place).
sidecar_version() {
    local v
    [[ -x "${BIN_DIR}/$1" ]] || die "missing ${BIN_DIR}/$1: run hack/node/build.sh"
    v="$(awk -F'|' -v t="\"$1" '$1 ~ /^[[:space:]]*"/ { sub(/^[[:space:]]*/, "", $1) } $1 == t { print $3; exit }' \
        "${REPO}/hack/install-sidecars.sh")"
    [[ "$v" == v* ]] || die "hack/install-sidecars.sh pins no version for $1"
    printf '%s' "$v"
}
scratch_image "${PREFIX}/csi-provisioner:$(sidecar_version csi-provisioner)" \
    "${BIN_DIR}/csi-provisioner"
scratch_image "${PREFIX}/csi-resizer:$(sidecar_version csi-resizer)" "${BIN_DIR}/csi-resizer"
scratch_image "${PREFIX}/csi-node-driver-registrar:$(sidecar_version node-driver-registrar)" \
    "${BIN_DIR}/node-driver-registrar" csi-node-driver-registrar
scratch_image "${PREFIX}/livenessprobe:$(sidecar_version livenessprobe)" \
    "${BIN_DIR}/livenessprobe"


# Images replaced by newer builds: the archives are what counts, keep the storage small.
buildah_ rmi --prune > /dev/null 2>&1 || true
mv -f "$index" "${INDEX_DIR}/index.tsv"
echo "images: index in ${INDEX_DIR}/index.tsv"
