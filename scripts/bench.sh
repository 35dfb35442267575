#!/usr/bin/env bash
# Measures membership figures on real agents, release build:
#   scripts/bench.sh detection [TRIALS]   kill -9 / SIGTERM detection times
#   scripts/bench.sh idle [SECS]          RSS, CPU, gossip bytes of idle agents
#   scripts/bench.sh dns [SERVICES] [N]   DNS latency, table change to answer, RSS with DNS on/off
# Prints a markdown table (progress on stderr) and the machine it ran on.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p mob-agent -p mob-integration --bin mob-agent --bin mob-bench
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
MOB_AGENT_BIN="$PWD/target/release/mob-agent" target/release/mob-bench "$@"
