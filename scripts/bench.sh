#!/usr/bin/env bash
# Benchmarks, release build, mob next to Serf, supervisord and runit in the
# same run on this machine:
#   scripts/bench.sh all            every part; rewrites BENCHMARKS.md
#   scripts/bench.sh PART           one part; rewrites its section of BENCHMARKS.md
#   scripts/bench.sh all --smoke    one trial of each part, nothing written
#   scripts/bench.sh --list         the parts
# Older single measurements print their table only:
#   scripts/bench.sh idle|idle-big|dns|spread|big|deploy-run|rss|failover|graceful|bulk|join|ack [N...]
# Installs the peers it compares with (apt-get, as root) and stops with a
# clear message when one is missing. Progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v serf >/dev/null || need+=(serf)
command -v supervisord >/dev/null || need+=(supervisor)
command -v runsv >/dev/null || need+=(runit)
command -v nft >/dev/null || need+=(nftables)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "bench: missing ${need[*]}: install them (apt-get install ${need[*]}) and run again" >&2
    exit 1
  fi
fi

if [ "${1:-}" = "--list" ]; then
  set -- list
fi
cargo build --release -q -p mob-agent -p mob-integration --bin mob-agent --bin mob-bench
# (The parts write their sections there unless --smoke or --write says otherwise.)
MOB_BENCH_WRITE=BENCHMARKS.md MOB_AGENT_BIN="$PWD/target/release/mob-agent" target/release/mob-bench "$@"
