#!/usr/bin/env bash
# Failover demo: three mob agents in containers (dist/docker-compose.yml),
# one service, kill the agent that runs it, watch it move.
# Usage: scripts/docker-demo.sh [--debug]   (--debug: image from the debug
# build, nothing compiled; see scripts/docker-image.sh). Needs docker,
# docker-compose (v1) and jq. MOB_NET=a.b.c moves the demo's /24 network.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
image_args=()
case ${1-} in
  --debug) image_args=(--debug) ;;
  "") ;;
  *) echo "usage: $0 [--debug]" >&2; exit 2 ;;
esac
for tool in docker docker-compose jq; do
  command -v "$tool" >/dev/null || { echo "docker-demo.sh: needs $tool" >&2; exit 1; }
done

start=$(date +%s%N)
ms() { echo $(( ($(date +%s%N) - start) / 1000000 )); }
say() { printf '[%6d ms] %s\n' "$(ms)" "$*"; }
tmp=$(mktemp -d)
# Read by the compose file (the key's bind mount); set before any compose call.
export MOB_KEY_FILE=$tmp/cluster.key
# Fixed project name: the network has fixed addresses anyway, so two demos
# can't run at once; a fixed name lets a rerun clean up after a killed one.
compose() { docker-compose -f "$root/dist/docker-compose.yml" -p mobdemo "$@"; }
cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ]; then # 130: interrupted, no logs
    echo "--- demo failed (exit $rc); last agent logs:" >&2
    compose logs --no-color --tail 20 >&2 2>&1 || true
  fi
  # -v: the agents' anonymous /var/lib/mob volumes too.
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
compose down -v --remove-orphans >/dev/null 2>&1 || true

# Container ids by service, filled once after `up` (docker-compose ps costs
# ~0.5 s, too slow inside the polling loops).
declare -A ids=()
cid() { echo "${ids[$1]}"; }
# ctl SERVICE ARGS...: the mob-agent CLI inside that agent's container (it
# finds the agent's socket at /var/lib/mob/mob.sock, root's default).
ctl() { local c; c=$(cid "$1"); shift; docker exec -i "$c" mob-agent "$@"; }
# until_ok SECONDS WHAT CMD...: poll CMD every 0.2 s until it succeeds.
until_ok() {
  local limit=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$limit" ] || { echo "timed out waiting for $what" >&2; return 1; }
    sleep 0.2
  done
}

say "building the image"
"$root/scripts/docker-image.sh" "${image_args[@]}"
# The key from the image itself: no host binary needed.
docker run --rm mob-agent:local keygen > "$MOB_KEY_FILE"
say "starting agent1 (seed), agent2, agent3"
out=$(compose up -d 2>&1) || { echo "$out" >&2; exit 1; }
for a in agent1 agent2 agent3; do ids[$a]=$(compose ps -q "$a"); done

alive3() { [ "$(ctl agent1 members --json | jq '[.[] | select(.state == "alive")] | length')" = 3 ]; }
until_ok 30 "3 alive members" alive3
say "cluster formed:"
ctl agent1 members

say "deploying sleeper: 1 replica, exec provider, sleep 3600"
ctl agent1 deploy - <<'SPEC'
name = "sleeper"
provider = "exec"
replicas = 1
params = { command = ["sleep", "3600"] }
SPEC
# slot AGENT: "node state" of sleeper's slot 0 as AGENT sees it.
slot() { ctl "$1" services --json | jq -r '.[] | select(.name == "sleeper") | .slots[0] | "\(.node) \(.state)"'; }
running() { [[ "$(slot agent1)" == *" running" ]]; }
until_ok 30 "sleeper running" running
ctl agent1 services
owner=$(slot agent1); owner=${owner%% *}
survivor=agent1; [ "$owner" = agent1 ] && survivor=agent2
say "sleeper runs on $owner; killing its container (docker kill: SIGKILL, no graceful leave)"

killed=$(date +%s%N)
docker kill "$(cid "$owner")" >/dev/null
say "$owner killed; watching from $survivor"
# Print every state the slot goes through, with the time since the kill.
last="" now=""
moved() {
  now=$(slot "$survivor") || return 1
  if [ "$now" != "$last" ]; then
    printf '  +%5d ms  sleeper/0: %s\n' $(( ($(date +%s%N) - killed) / 1000000 )) "$now"
    last=$now
  fi
  [[ "$now" != "$owner "* && "$now" == *" running" ]]
}
deadline=$(( $(date +%s) + 30 ))
until moved; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "timed out waiting for sleeper to move" >&2; exit 1; }
  sleep 0.2
done
say "sleeper moved $owner -> ${now%% *} in $(( ($(date +%s%N) - killed) / 1000000 )) ms after the kill"
ctl "$survivor" services
ctl "$survivor" members
say "done; tearing down"
