#!/usr/bin/env bash
# Builds the docker test image mob-test/busybox from Debian's busybox-static
# (FROM scratch; no registry needed). No-op when the image exists.
set -euo pipefail
image=${1:-mob-test/busybox}
if docker image inspect "$image" >/dev/null 2>&1; then exit 0; fi
busybox=$(command -v busybox || true)
[ -x /bin/busybox ] && busybox=/bin/busybox
linkage=$( [ -n "$busybox" ] && ldd "$busybox" 2>&1 || true)
if [ -z "$busybox" ] || [[ "$linkage" != *"not a dynamic"* ]]; then
  echo "build-test-image.sh: needs a static busybox (apt-get install busybox-static)" >&2
  exit 1
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$(dirname "$0")/../integration/docker/busybox/Dockerfile" "$ctx/"
cp "$busybox" "$ctx/busybox"
docker build -q -t "$image" "$ctx" >/dev/null
