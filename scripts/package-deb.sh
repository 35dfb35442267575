#!/usr/bin/env bash
# Builds a .deb of mob-agent with cargo-deb: the binary, the systemd unit
# (dist/mob-agent.service) and the man page (generated here from the binary).
#   scripts/package-deb.sh              release build, then the package
#   scripts/package-deb.sh --debug      package the debug build as it is (CI: checks the packaging)
# Prints the package's path and size. Installs cargo-deb if it is missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
profile=release
case ${1-} in
  --debug) profile=dev ;;
  "") ;;
  *) echo "usage: $0 [--debug]" >&2; exit 2 ;;
esac
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
dir=release; [ "$profile" = dev ] && dir=debug
[ "$profile" = release ] && cargo build --release -p mob-agent
bin=target/$dir/mob-agent
[ -x "$bin" ] || { echo "package-deb.sh: $bin is missing (cargo build first)" >&2; exit 1; }
mkdir -p target/man
"$bin" man | gzip -9n > target/man/mob-agent.1.gz
deb=$(cargo deb -p mob-agent --no-build --profile "$profile" --fast 2>/dev/null | tail -n 1)
[ -f "$deb" ] || { echo "package-deb.sh: cargo deb made no package" >&2; exit 1; }
# What a package must hold.
contents=$(dpkg-deb --contents "$deb")
for path in ./usr/bin/mob-agent ./lib/systemd/system/mob-agent.service ./usr/share/man/man1/mob-agent.1.gz; do
  grep -q " $path\$" <<<"$contents" || { echo "package-deb.sh: $deb lacks $path" >&2; exit 1; }
done
echo "$deb ($(stat -c %s "$deb") bytes)"
