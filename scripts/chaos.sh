#!/usr/bin/env bash
# The long chaos run (root: network namespaces, tmpfs mounts):
#   scripts/chaos.sh [--seed S] [--minutes M | --rounds N] [--hosts H] [--fault-secs S]
# 5 agents (default) on namespace hosts; faults drawn from the seed (kill -9,
# graceful stop, wiped data dir, SIGSTOP 0.5-3 s, partition, one-way loss,
# clock skew, disk full, CPU saturation, floods), writes during them, and
# every promise checked after each heal. Prints what it injected and found;
# exits 1 if a promise broke. Defaults: seed 1, 30 minutes, 30 s saturations.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "chaos.sh: needs root (network namespaces, tmpfs)" >&2; exit 2; }
command -v ip >/dev/null || { echo "chaos.sh: needs iproute2" >&2; exit 2; }
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] \
  || { echo "chaos.sh: needs libfaketime (apt-get install faketime)" >&2; exit 2; }
args=("$@")
[[ " ${args[*]} " == *" --minutes "* || " ${args[*]} " == *" --rounds "* ]] || args+=(--minutes 30)
[[ " ${args[*]} " == *" --fault-secs "* ]] || args+=(--fault-secs 30)
cargo build -q -p mob-agent -p mob-integration --bin mob-agent --bin mob-chaos
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
MOB_AGENT_BIN="$PWD/target/debug/mob-agent" target/debug/mob-chaos "${args[@]}"
