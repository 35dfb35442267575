#!/usr/bin/env bash
# Builds the docker image mob-agent:local FROM scratch (no registry needed).
# Usage: scripts/docker-image.sh [--debug] [--tag IMAGE]
#   default:  cargo build --release -p mob-agent, then that binary
#   --debug:  target/debug/mob-agent as it is (nothing is built)
# Stages a context in a temp dir (see Dockerfile): the binary, its shared
# libraries, static busybox and its applets, a minimal /etc.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
profile=release image=mob-agent:local
while [ $# -gt 0 ]; do
  case $1 in
    --debug) profile=debug ;;
    --tag) image=$2; shift ;;
    *) echo "usage: $0 [--debug] [--tag IMAGE]" >&2; exit 2 ;;
  esac
  shift
done

if [ "$profile" = release ]; then
  (cd "$root" && cargo build --release -p mob-agent)
fi
bin=$target/$profile/mob-agent
[ -x "$bin" ] || { echo "docker-image.sh: no $bin (build it first)" >&2; exit 1; }
busybox=/bin/busybox
if [ ! -x "$busybox" ] || [[ "$(ldd "$busybox" 2>&1 || true)" != *"not a dynamic"* ]]; then
  echo "docker-image.sh: needs a static /bin/busybox (apt-get install busybox-static)" >&2
  exit 1
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
fs=$ctx/rootfs
mkdir -p "$fs/usr/bin" "$fs/bin" "$fs/etc" "$fs/var/lib/mob" "$fs/tmp"
chmod 1777 "$fs/tmp"
chmod 0700 "$fs/var/lib/mob"
# A copy, not a link: the binary may be rebuilt while docker reads it. Debug
# info is dropped (the debug build carries >100 MiB of it); the symbol table
# stays, so a backtrace still names functions.
objcopy --strip-debug "$bin" "$fs/usr/bin/mob-agent"

# Every library ldd resolves, at the path it resolves to (the loader searches
# the multiarch dirs without an ld.so.cache), plus the loader (the line
# without "=>") at the path the binary names as its interpreter.
ldd "$bin" | while read -r first second third _; do
  if [ "$second" = "=>" ] && [ -n "$third" ] && [ "${third#/}" != "$third" ]; then
    lib=$third
  elif [ "${first#/}" != "$first" ]; then
    lib=$first
  else
    continue # linux-vdso: provided by the kernel
  fi
  mkdir -p "$fs$(dirname "$lib")"
  cp -L "$lib" "$fs$lib"
done

# busybox and its applets at their usual paths (--list-full: bin/sh,
# usr/bin/env, ...), as symlinks made here: scratch has no shell to RUN
# `busybox --install`. An applet never shadows a file staged above.
cp "$busybox" "$fs/bin/busybox"
"$busybox" --list-full | while read -r applet; do
  [ -e "$fs/$applet" ] || [ -L "$fs/$applet" ] && continue
  mkdir -p "$fs/$(dirname "$applet")"
  ln -s /bin/busybox "$fs/$applet"
done

# Names for uid 0 (params.user = "root", whoami, ls -l) and an explicit NSS
# order (glibc's default without the file tries DNS before /etc/hosts).
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$fs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$fs/etc/group"
printf 'hosts: files dns\n' > "$fs/etc/nsswitch.conf"
mkdir -p "$fs/root" && chmod 0700 "$fs/root"

cp "$root/Dockerfile" "$ctx/Dockerfile"
old=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
docker build -q -t "$image" "$ctx" >/dev/null
# Each new binary makes a new image; drop the one the tag left behind rather
# than pile up <none> images (kept if a container still uses it).
new=$(docker image inspect -f '{{.Id}}' "$image")
if [ -n "$old" ] && [ "$old" != "$new" ]; then
  docker rmi "$old" >/dev/null 2>&1 || true
fi
size=$(docker image inspect -f '{{.Size}}' "$image")
echo "$image: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }') MiB), $profile build"
