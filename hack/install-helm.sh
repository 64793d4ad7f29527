#!/usr/bin/env bash
# Build helm into $REPO/.cache/bin from the Go module proxy, for the chart's tests
# (tests/kube/test_helm_chart.py) and for admins who install with deploy/chart/lustre-csi:
#   helm          helm.sh/helm/v4 (pinned below)
#
# Usage: hack/install-helm.sh [--force] [helm]
#
# helm's go.mod has no `replace` directives, so `go install helm.sh/helm/v4/cmd/helm@VERSION`
# builds exactly the versions its go.sum pins (checked against the checksum database); no
# wrapper module is needed. Its client-go (v0.37) matches the Kubernetes in hack/kube/go.mod.
#
# Idempotent, like hack/install-go-tools.sh: the binary has a stamp (.cache/bin/.stamps/helm)
# holding a hash of its inputs (module@version, Go version, build flags); when it matches,
# nothing is rebuilt. The binary is also kept in /var/cache/lustre-csi/go-bin/<hash>/
# (LUSTRE_CSI_GO_BIN_CACHE overrides it), so another clone on this machine copies it.
set -euo pipefail

HELM_MODULE="helm.sh/helm/v4"
HELM_VERSION="v4.3.2"
MIN_GO_MINOR=26 # helm v4.3 says `go 1.26.0`

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${REPO}/.cache/bin"
STAMP_DIR="${BIN_DIR}/.stamps"
ALL_TOOLS=(helm)

SCRIPT_NAME=install-helm
# shellcheck source=hack/lib/go-tools.sh
source "${REPO}/hack/lib/go-tools.sh"
parse_tool_args "$@"

find_go
use_reproducible_go_build

# What `helm version` reports, as helm's own Makefile sets it for a tagged release.
ldflags="-s -w -X ${HELM_MODULE}/internal/version.version=${HELM_VERSION}"
ldflags+=" -X ${HELM_MODULE}/internal/version.metadata="
ldflags+=" -X ${HELM_MODULE}/internal/version.gitTreeState=clean"

mkdir -p "$BIN_DIR" "$STAMP_DIR"

# One run at a time per checkout (two shells running setup at once would race otherwise).
exec 9> "${BIN_DIR}/.lock-helm"
flock 9

tmp_dir="$(mktemp -d "${BIN_DIR}/.tmp-helm.XXXXXX")"
trap 'rm -rf "$tmp_dir"' EXIT

hash="$(printf '%s\n' helm "${HELM_MODULE}@${HELM_VERSION}" ./cmd/helm "$go_version" \
    "$(uname -m)" "GOFLAGS=${GOFLAGS}" "CGO_ENABLED=${CGO_ENABLED}" \
    "${common_build_flags[*]}" "ldflags=${ldflags}" | sha256sum | cut -d' ' -f1)"

already_installed helm "$HELM_VERSION" "$hash" && exit 0

echo "building helm ${HELM_VERSION}..."
start=$SECONDS
log="${tmp_dir}/helm.log"
# The go command's own output (module downloads, compile errors) only when the build fails.
if ! GOBIN="$tmp_dir" "$GO" install "${common_build_flags[@]}" -ldflags="$ldflags" \
    "${HELM_MODULE}/cmd/helm@${HELM_VERSION}" > "$log" 2>&1; then
    cat "$log" >&2
    die "building helm ${HELM_VERSION} failed"
fi
install_built helm "$HELM_VERSION" "$hash" "${tmp_dir}/helm" "$start"
