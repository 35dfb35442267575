#!/usr/bin/env bash
# Builds mob-agent (release) and runs a local cluster of N agents (default 3)
# on 127.0.0.1, sharing one key, each with its own data dir under a temp dir.
# Waits until every agent lists all N alive, deploys a 2-replica service and
# waits until it runs, prints how to talk to each agent, and stops them all
# on Ctrl-C.
#
#   scripts/local-cluster.sh [N] [--once]     --once: stop after the check
#   MOB_BASE_PORT=17946                       first gossip port
#   MOB_DNS_BASE_PORT=8600                    first DNS port
#   MOB_HTTP_BASE_PORT=7947                   first HTTP port (status page, API)
#   MOB_AGENT_BIN=PATH                        use this binary, build nothing
#   MOB_KEEP=1                                keep the temp dir (logs, data) at the end
set -euo pipefail

n=3; once=0
for arg in "$@"; do
  case "$arg" in
    --once) once=1 ;;
    ''|*[!0-9]*) echo "usage: $0 [N] [--once]" >&2; exit 2 ;;
    *) n=$arg ;;
  esac
done
base=${MOB_BASE_PORT:-17946}
dns_base=${MOB_DNS_BASE_PORT:-8600}
http_base=${MOB_HTTP_BASE_PORT:-7947}
root=$(cd "$(dirname "$0")/.." && pwd)

if [ -n "${MOB_AGENT_BIN:-}" ]; then
  bin=$MOB_AGENT_BIN
else
  echo "building mob-agent (release; the first build takes a minute or two)..."
  # Cargo's progress lines show how far the build is.
  cargo build --release -p mob-agent --manifest-path "$root/Cargo.toml" 2>&1 \
    | grep --line-buffered -E '^(error|warning)|Compiling|Finished' || true
  [ -x "$root/target/release/mob-agent" ] || { echo "the build failed" >&2; exit 1; }
  bin="$root/target/release/mob-agent"
fi
dir=$(mktemp -d -t mob-cluster.XXXXXX)
"$bin" keygen > "$dir/cluster.key"

pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "stopping ${#pids[@]} agents"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  if [ "${MOB_KEEP:-0}" = 1 ]; then
    echo "logs and data kept in $dir"
  else
    rm -rf "$dir"
  fi
}
trap stop INT TERM EXIT

for i in $(seq 1 "$n"); do
  port=$((base + i - 1))
  join=()
  [ "$i" -gt 1 ] && join=(--join "127.0.0.1:$base")
  "$bin" run --name "node$i" --bind "127.0.0.1:$port" --data-dir "$dir/node$i" \
    --dns "127.0.0.1:$((dns_base + i - 1))" --http "127.0.0.1:$((http_base + i - 1))" \
    --key-file "$dir/cluster.key" "${join[@]}" > "$dir/node$i.log" 2>&1 &
  pids+=($!)
done

# An agent that exits at once (a port taken, say) is reported with its
# last log lines, rather than waited for.
check_alive() {
  for i in $(seq 1 "$n"); do
    if ! kill -0 "${pids[$((i - 1))]}" 2>/dev/null; then
      echo "agent node$i exited; the end of $dir/node$i.log:" >&2
      tail -n 5 "$dir/node$i.log" >&2
      echo "(other ports: MOB_BASE_PORT=27946 MOB_DNS_BASE_PORT=28600 MOB_HTTP_BASE_PORT=28947 $0)" >&2
      exit 1
    fi
  done
}

echo "waiting for $n agents to see each other..."
deadline=$((SECONDS + 30))
for i in $(seq 1 "$n"); do
  sock="$dir/node$i/mob.sock"
  until [ -S "$sock" ] && [ "$("$bin" members --json --agent "$sock" 2>/dev/null | grep -o '"state":"alive"' | wc -l)" -eq "$n" ]; do
    check_alive
    if [ $SECONDS -ge $deadline ]; then
      echo "agents did not converge within 30 s; see $dir/node*.log" >&2
      exit 1
    fi
    sleep 0.2
  done
done

"$bin" members --detail --agent "$dir/node1/mob.sock"
echo
echo "deploying a service with 2 replicas from node1:"
cat > "$dir/hello.toml" <<'SPEC'
name = "hello"
provider = "shell"
replicas = 2
ports = { http = 0 }
params = { command = "while true; do echo hello from $MOB_NODE slot $MOB_SLOT port $MOB_PORT_HTTP; sleep 5; done" }
SPEC
"$bin" deploy "$dir/hello.toml" --agent "$dir/node1/mob.sock"
until [ "$("$bin" services --json --agent "$dir/node$n/mob.sock" | grep -o '"state":"running"' | wc -l)" -eq 2 ]; do
  if [ $SECONDS -ge $deadline ]; then
    echo "the service did not start within 30 s; see $dir/node*.log" >&2
    exit 1
  fi
  sleep 0.2
done
"$bin" services --agent "$dir/node$n/mob.sock"
echo
echo "cluster of $n agents is up (data and logs in $dir). Talk to one with:"
echo "  export MOB_AGENT=$dir/node1/mob.sock PATH=\"$(dirname "$bin"):\$PATH\"   # then: mob-agent services"
for i in $(seq 1 "$n"); do
  echo "  $bin members --agent $dir/node$i/mob.sock      # log: $dir/node$i.log"
done
echo "  $bin logs hello --agent $dir/node1/mob.sock      # from any node"
echo "  $bin resolve hello --agent $dir/node1/mob.sock   # ip:port of each instance"
echo "  $bin events --agent $dir/node1/mob.sock          # events as they happen"
echo "  status page: http://127.0.0.1:$http_base/   metrics: http://127.0.0.1:$http_base/metrics"
if command -v dig >/dev/null; then
  echo "  dig @127.0.0.1 -p $dns_base +short SRV _http._tcp.hello.service.mob"
  dig @127.0.0.1 -p "$dns_base" +short +tries=1 +time=2 SRV _http._tcp.hello.service.mob | sed 's/^/    /'
else
  echo "  dig @127.0.0.1 -p $dns_base +short SRV _http._tcp.hello.service.mob   # (dig: apt-get install dnsutils)"
fi
echo "try: kill -9 ${pids[1]:-${pids[0]}}  and watch its slot move (services) and the others log it down"
[ "$once" = 1 ] && exit 0
echo "Ctrl-C stops them all."
wait
