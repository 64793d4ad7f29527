# shellcheck shell=bash
# shellcheck disable=SC2034  # named, common_build_flags and GO are read by the caller
# Shared by hack/install-go-tools.sh, hack/install-sidecars.sh and hack/install-helm.sh
# (sourced, not run).
# The caller sets SCRIPT_NAME, ALL_TOOLS, MIN_GO_MINOR, BIN_DIR and STAMP_DIR first, and may set
# EXTRA_TOOLS: tools built only when named (the node tier's), never by default.

die() {
    echo "${SCRIPT_NAME}: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 [--force] [TOOL...]   (default: ${ALL_TOOLS[*]}; also: ${EXTRA_TOOLS[*]:-none})"
}

# parse_tool_args "$@": sets force (0/1), selected (tools to build) and named (1 when the
# caller named tools, 0 when it asked for all of them).
parse_tool_args() {
    [[ -v EXTRA_TOOLS ]] || EXTRA_TOOLS=()
    force=0
    selected=()
    named=0
    local arg t known
    for arg in "$@"; do
        case "$arg" in
            --force) force=1 ;;
            -h | --help)
                usage
                exit 0
                ;;
            -*)
                usage >&2
                exit 2
                ;;
            *)
                known=0
                for t in "${ALL_TOOLS[@]}" "${EXTRA_TOOLS[@]}"; do
                    if [[ "$t" == "$arg" ]]; then known=1; fi
                done
                [[ $known -eq 1 ]] || die "unknown tool '${arg}' (tools: ${ALL_TOOLS[*]} ${EXTRA_TOOLS[*]})"
                selected+=("$arg")
                ;;
        esac
    done
    if [[ ${#selected[@]} -eq 0 ]]; then
        selected=("${ALL_TOOLS[@]}")
    else
        named=1
    fi
}

# find_go: sets GO and go_version, or dies when there is no Go >= 1.MIN_GO_MINOR.
find_go() {
    if [[ -n "${GO:-}" ]]; then
        :
    elif command -v go > /dev/null 2>&1; then
        GO="$(command -v go)"
    elif [[ -x /usr/local/go/bin/go ]]; then
        GO=/usr/local/go/bin/go
    else
        die "no Go toolchain found (put go on PATH, or set GO=/path/to/go)"
    fi
    go_version="$("$GO" env GOVERSION)"
    if [[ ! "$go_version" =~ ^go1\.([0-9]+) ]] || ((BASH_REMATCH[1] < MIN_GO_MINOR)); then
        die "need Go >= 1.${MIN_GO_MINOR}, ${GO} is ${go_version}"
    fi
}

# Reproducible, self-contained builds: go.sum must already cover every module
# (-mod=readonly), no cgo (static binaries, no C toolchain needed), no VCS stamping, no
# toolchain downloads.
use_reproducible_go_build() {
    export GOFLAGS="-mod=readonly"
    export CGO_ENABLED=0
    export GOTOOLCHAIN=local
    common_build_flags=(-trimpath -buildvcs=false)
}

# is_up_to_date TOOL HASH: the binary exists and its stamp holds HASH (and no --force).
is_up_to_date() {
    local tool="$1" hash="$2"
    [[ $force -eq 0 && -x "${BIN_DIR}/${tool}" && -f "${STAMP_DIR}/${tool}" ]] \
        && [[ "$(< "${STAMP_DIR}/${tool}")" == "$hash" ]]
}

# already_installed TOOL VERSION HASH: says so and succeeds when BIN_DIR/TOOL is current, or
# once it is copied in from the machine-wide cache; fails when it must be built.
already_installed() {
    local tool="$1" version="$2" hash="$3"
    if is_up_to_date "$tool" "$hash"; then
        echo "${tool} ${version}: up to date"
        return 0
    fi
    if restore_from_cache "$tool" "$hash"; then
        echo "${tool} ${version}: copied from ${GO_BIN_CACHE}/${hash}"
        return 0
    fi
    return 1
}

# install_built TOOL VERSION HASH OUT START: move the binary a build wrote to OUT into BIN_DIR
# atomically (a running test keeps its old inode), write its stamp, keep it in the
# machine-wide cache and say how long the build took since START (a $SECONDS value).
install_built() {
    local tool="$1" version="$2" hash="$3" out="$4" start="$5"
    [[ -x "$out" ]] || die "building ${tool} produced no binary"
    mv -f "$out" "${BIN_DIR}/${tool}" || die "installing ${BIN_DIR}/${tool} failed"
    printf '%s\n' "$hash" > "${STAMP_DIR}/${tool}" || die "writing the stamp of ${tool} failed"
    save_to_cache "$tool" "$hash"
    echo "  done ${tool} ${version} in $((SECONDS - start))s"
}

# --- the machine-wide binary cache ----------------------------------------------------------
# Besides .cache/bin, every built binary is kept in GO_BIN_CACHE/<inputs hash>/<tool> (outside
# the clone), so a fresh clone or a CI job on a machine that built it before copies it in
# seconds instead of building again. The hash names every input, so an entry never goes stale;
# a directory holds the binary only once it is complete (written under a temp name, renamed).
GO_BIN_CACHE="${LUSTRE_CSI_GO_BIN_CACHE:-/var/cache/lustre-csi/go-bin}"

# restore_from_cache TOOL HASH: install GO_BIN_CACHE/HASH/TOOL into BIN_DIR with its stamp;
# fails (status 1) when the cache has no such entry.
restore_from_cache() {
    local tool="$1" hash="$2" cached="${GO_BIN_CACHE}/$2/$1"
    [[ $force -eq 0 && -x "$cached" ]] || return 1
    cp -f "$cached" "${BIN_DIR}/.${tool}.restore" || return 1
    mv -f "${BIN_DIR}/.${tool}.restore" "${BIN_DIR}/${tool}" || return 1
    printf '%s\n' "$hash" > "${STAMP_DIR}/${tool}" || return 1
}

# save_to_cache TOOL HASH: copy BIN_DIR/TOOL into GO_BIN_CACHE/HASH/. A cache that cannot be
# written (not root, read-only) is reported and otherwise ignored: it only saves time.
save_to_cache() {
    local tool="$1" hash="$2" dir="${GO_BIN_CACHE}/$2"
    if mkdir -p "$dir" 2> /dev/null \
        && cp -f "${BIN_DIR}/${tool}" "${dir}/.${tool}.tmp.$$" 2> /dev/null \
        && mv -f "${dir}/.${tool}.tmp.$$" "${dir}/${tool}"; then
        return 0
    fi
    rm -f "${dir}/.${tool}.tmp.$$" 2> /dev/null || true
    echo "  (could not keep ${tool} in ${GO_BIN_CACHE}; only .cache/bin has it)"
}
