#!/usr/bin/env bash
# Podman set up for this kind of sandbox, and the image built with it.
#
# Usage:
#   scripts/podman-env.sh env           print `export CONTAINERS_CONF=...` lines
#                                       (eval "$(scripts/podman-env.sh env)")
#   scripts/podman-env.sh base          print the base image to build on
#   scripts/podman-env.sh build [TAG]   build the image (default TAG
#                                       localhost/workqueue:<version>); prints its ID
#   scripts/podman-env.sh podman ARGS   run podman with this configuration
#
# Every command first installs podman, buildah, runc, debootstrap and uidmap
# with apt when one is missing (as root), and writes containers.conf and
# storage.conf under $PODMAN_ENV_DIR: runc (crun fails here), cgroupfs,
# file events, ulimits capped at 1024 (the sandbox cannot raise limits),
# storage in that directory. Images and layers stay there between runs.
#
# The base is the Dockerfile's pinned official image when it is present or
# can be pulled, and otherwise a Debian bookworm made with debootstrap
# (localhost/workqueue-base:bookworm, built once, then reused).
#
# Environment:
#   PODMAN_ENV_DIR         state directory (default: <system temp>/workqueue-podman)
#   PODMAN_STORAGE_DRIVER  overlay (default) or vfs
#   BASE_IMAGE             build on this image, skipping the choice above
#   DEBIAN_MIRROR          for debootstrap (default http://deb.debian.org/debian)
#   PIP_INDEX_URL          PyPI mirror for pip inside the build (default: the
#                          host pip's index-url if it has one, else PyPI)
#   PIP_CERT               CA bundle for pip inside the build (default: the host
#                          pip's cert, else the system bundle); it reaches the
#                          build as a secret, never a layer
#   PODMAN_BUILD_NETWORK   network of the build's RUN steps (e.g. host)
#   EXTRAS                 optional dependency groups baked in (e.g. loadtest)
#   TMPDIR                 the system temp directory (default /tmp)
set -euo pipefail

repo="$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)"
state="${PODMAN_ENV_DIR:-${TMPDIR:-/tmp}/workqueue-podman}"
driver="${PODMAN_STORAGE_DRIVER:-overlay}"
local_base="localhost/workqueue-base:bookworm"

log() { echo "podman-env: $*" >&2; }
die() { log "$*"; exit 1; }

ensure_tools() {
  local missing=() tool
  for tool in podman buildah runc debootstrap newuidmap; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  ((${#missing[@]})) || return 0
  [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}; install podman buildah runc debootstrap uidmap (needs root)"
  log "installing podman, buildah, runc, debootstrap and uidmap with apt (missing: ${missing[*]})"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    podman buildah runc debootstrap uidmap >&2
}

write_config() {
  mkdir -p "$state/tmp" "$state/$driver/run" "$state/$driver/root"
  local conf="$state/containers.conf" storage="$state/storage-$driver.conf"
  cat > "$conf.new" <<EOF
# Written by scripts/podman-env.sh: podman for a sandbox that runs cgroup v1,
# cannot raise rlimits and where crun fails.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$state/tmp"
EOF
  cat > "$storage.new" <<EOF
# Written by scripts/podman-env.sh: images and containers of this project only.
[storage]
driver = "$driver"
runroot = "$state/$driver/run"
graphroot = "$state/$driver/root"
EOF
  mv "$conf.new" "$conf"
  mv "$storage.new" "$storage"
  export CONTAINERS_CONF="$conf" CONTAINERS_STORAGE_CONF="$storage"
}

setup() {
  ensure_tools
  write_config
  podman info >/dev/null 2>"$state/info.err" || die "podman does not work here: $(tail -n 3 "$state/info.err")"
}

dockerfile_base() {
  sed -n 's/^ARG BASE_IMAGE=//p' "$repo/Dockerfile" | head -n 1
}

build_local_base() {
  local rootfs="$state/rootfs" mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  log "building $local_base with debootstrap from $mirror (about a minute, once)"
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$mirror" \
    > "$state/debootstrap.log" 2>&1 || die "debootstrap failed; see $state/debootstrap.log"
  # What the official images leave out too: package caches, docs, translations.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc "$rootfs"/usr/share/man "$rootfs"/usr/share/locale
  tar -C "$rootfs" -c . | podman import \
    --change 'ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV=LANG=C.UTF-8' \
    --change 'CMD=["/bin/bash"]' \
    - "$local_base" >/dev/null
  rm -rf "$rootfs"
}

choose_base() {
  if [[ -n "${BASE_IMAGE:-}" ]]; then
    echo "$BASE_IMAGE"
    return
  fi
  # One chooser (and debootstrap) at a time; runs of other work trees share
  # this directory. The lock goes with this subshell.
  exec 9> "$state/base.lock"
  flock 9
  local official
  official="$(dockerfile_base)"
  [[ -n "$official" ]] || die "no 'ARG BASE_IMAGE=' default in the Dockerfile"
  if podman image exists "$official"; then
    echo "$official"
    return
  fi
  if podman image exists "$local_base"; then
    echo "$local_base"
    return
  fi
  # A registry that is not reachable answers at once here (no DNS).
  if timeout 120 podman pull --quiet "$official" >/dev/null 2>"$state/pull.err"; then
    echo "$official"
    return
  fi
  log "cannot pull $official ($(tail -n 1 "$state/pull.err")); using a local Debian base"
  build_local_base
  echo "$local_base"
}

host_pip() {
  # The host pip's setting $1 (e.g. global.cert), if pip and the setting exist.
  local python
  python="$(command -v python3 || true)"
  [[ -n "$python" ]] || return 0
  "$python" -m pip config get "$1" 2>/dev/null || true
}

build() {
  local tag="${1:-}" base cert index version revision
  version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/pyproject.toml" | head -n 1)"
  [[ -n "$tag" ]] || tag="localhost/workqueue:${version:-latest}"
  base="$(choose_base)"
  local args=(--build-arg "BASE_IMAGE=$base" --build-arg "VERSION=$version" --tag "$tag")
  # pip inside the build reaches PyPI through the same network as the host,
  # which here is a TLS-intercepting proxy: pip needs the host's CA bundle.
  cert="${PIP_CERT:-$(host_pip global.cert)}"
  [[ -n "$cert" ]] || cert=/etc/ssl/certs/ca-certificates.crt
  [[ -f "$cert" ]] && args+=(--secret "id=pip_cert,src=$cert")
  index="${PIP_INDEX_URL:-$(host_pip global.index-url)}"
  [[ -n "$index" ]] && args+=(--build-arg "PIP_INDEX_URL=$index")
  [[ -n "${PODMAN_BUILD_NETWORK:-}" ]] && args+=(--network "$PODMAN_BUILD_NETWORK")
  # EXTRAS=loadtest: the load-test image (Locust, matplotlib) of the Job.
  [[ -n "${EXTRAS:-}" ]] && args+=(--build-arg "EXTRAS=$EXTRAS")
  revision="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || true)"
  [[ -n "$revision" ]] && args+=(--build-arg "REVISION=$revision")
  log "building $tag on $base"
  # The ID, not the tag, names what was built: a run in another work tree
  # may retag the same name meanwhile.
  podman build --iidfile "$state/tmp/iid.$$" "${args[@]}" "$repo" >&2
  local iid
  iid="$(cat "$state/tmp/iid.$$")"
  rm -f "$state/tmp/iid.$$"
  echo "${iid#sha256:}"
}

command="${1:-}"
[[ $# -gt 0 ]] && shift
case "$command" in
  env)
    setup
    printf 'export CONTAINERS_CONF=%q\nexport CONTAINERS_STORAGE_CONF=%q\n' "$CONTAINERS_CONF" "$CONTAINERS_STORAGE_CONF"
    ;;
  base)
    setup
    choose_base
    ;;
  build)
    setup
    build "$@"
    ;;
  podman)
    setup
    exec podman "$@"
    ;;
  *)
    sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
