#!/usr/bin/env bash
# Builds the sandbox image paddock-sandbox:latest from sandbox-images/base and dist/paddock.
# The base, debian:bookworm-slim, is used if present. Otherwise: with --pull it is pulled
# from Docker Hub (a real server); by default it is made here, offline from any registry,
# with debootstrap from Debian's mirror and `docker import` (about a minute), as CI does.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=debian:bookworm-slim
IMAGE=${PADDOCK_DOCKER_IMAGE:-paddock-sandbox:latest}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

# One build at a time: test files running in parallel may each ask for the images.
exec 9>/tmp/paddock-build-images.lock
flock 9

docker info >/dev/null 2>&1 || { echo "build-images: no Docker engine reachable (is dockerd running?)" >&2; exit 1; }
[ -x dist/paddock ] || npm run --silent build

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  if [ "${1:-}" = "--pull" ]; then
    docker pull "$BASE"
  else
    command -v debootstrap >/dev/null || { echo "build-images: $BASE is missing and debootstrap is not installed (apt-get install debootstrap, or use --pull)" >&2; exit 1; }
    ROOTFS=$(mktemp -d /tmp/paddock-rootfs.XXXXXX)
    trap 'rm -rf "$ROOTFS"' EXIT
    echo "build-images: making $BASE with debootstrap from $MIRROR"
    debootstrap --variant=minbase --include=git,ca-certificates bookworm "$ROOTFS" "$MIRROR" >/dev/null
    tar -C "$ROOTFS" -c . | docker import - "$BASE" >/dev/null
  fi
fi

docker build --quiet --build-arg "BASE=$BASE" -t "$IMAGE" -f sandbox-images/base/Dockerfile dist/ >/dev/null
# Each rebuild leaves the previous image untagged; drop those (tagged snapshots stay).
docker image prune --force --filter label=paddock.image=sandbox >/dev/null
echo "build-images: $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
