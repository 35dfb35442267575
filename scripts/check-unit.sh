#!/usr/bin/env bash
# Checks dist/mob-agent.service with `systemd-analyze verify`.
# Usage: scripts/check-unit.sh [MOB_AGENT_BINARY]   (default target/debug/mob-agent)
# The unit names /usr/bin/mob-agent, which need not exist here, so a copy of
# the unit with ExecStart pointing at the given binary is verified instead.
# Exit 0: verified clean (or systemd-analyze absent); 1: verify complained.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
unit=$root/dist/mob-agent.service
bin=$(realpath -m "${1:-$root/target/debug/mob-agent}")

if ! command -v systemd-analyze >/dev/null; then
  echo "systemd-analyze not found: unit not verified"
  exit 0
fi
[ -x "$bin" ] || { echo "check-unit.sh: $bin is not an executable" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Same file name: verify takes the unit name from it.
sed "s|/usr/bin/mob-agent|$bin|g" "$unit" > "$tmp/mob-agent.service"

# Documentation=man:mob-agent(1) is checked by running man(1); the page is not
# installed on a build machine, so serve the binary's own page from a temp
# MANPATH (that also checks the page exists). No man(1): skip that check.
man_opt=()
if command -v man >/dev/null; then
  mkdir -p "$tmp/man/man1"
  "$bin" man > "$tmp/man/man1/mob-agent.1"
  export MANPATH=$tmp/man
else
  man_opt=(--man=no)
fi

set +e
out=$(systemd-analyze verify "${man_opt[@]}" "$tmp/mob-agent.service" 2>&1)
rc=$?
set -e
# Unknown keys and bad values are warnings with exit status 0, so judge the
# output too: any line about our unit fails. Lines about other units (e.g. a
# host's own broken unit files pulled in as dependencies) are shown, not fatal.
ours=$(grep -F 'mob-agent.service' <<<"$out" || true)
if [ "$rc" -ne 0 ] || [ -n "$ours" ]; then
  echo "$out" | sed "s|$tmp/|dist/|g" >&2
  echo "check-unit.sh: systemd-analyze verify failed (exit $rc)" >&2
  exit 1
fi
[ -z "$out" ] || { echo "systemd-analyze verify, about other units:"; echo "$out"; }
echo "dist/mob-agent.service: verified ($(systemd-analyze --version | head -1))"
