# shellcheck shell=bash
# Sourced by the setup scripts: install the Debian packages a tier needs, only when missing.

# ensure_debian_packages WHO PACKAGE...: install the missing ones, waiting for apt when another
# job on the machine holds it rather than failing; prints one line either way.
ensure_debian_packages() {
    local who="$1" package status attempt
    shift
    local missing=()
    for package in "$@"; do
        status="$(dpkg-query -W -f='${Status}' "$package" 2> /dev/null || true)"
        [[ "$status" == "install ok installed" ]] || missing+=("$package")
    done
    if ((${#missing[@]} == 0)); then
        echo "${who}: Debian packages present"
        return 0
    fi
    echo "${who}: installing Debian packages: ${missing[*]}"
    for attempt in 1 2 3 4 5 6; do
        if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -o DPkg::Lock::Timeout=120 "${missing[@]}" > /dev/null; then
            return 0
        fi
        ((attempt < 6)) || { echo "${who}: apt-get install failed" >&2; return 1; }
        apt-get update -qq || true
        sleep 10
    done
}
