#!/usr/bin/env bash
# Hosts in network namespaces on one bridge, for partition tests (root only).
#
#   netns.sh up   PREFIX N    hosts PREFIX-h1..hN with 10.99.0.1..N/24 on a
#                             bridge that lives in its own namespace PREFIX-br
#   netns.sh cut  PREFIX I    unplug host I from the bridge (a partition)
#   netns.sh heal PREFIX I    plug it back
#   netns.sh block   PREFIX I J   host I drops what it sends to host J
#   netns.sh unblock PREFIX I J   undo it (block both ways: a partition
#                                 between groups of hosts)
#   netns.sh down PREFIX      delete every namespace of PREFIX
#   netns.sh ip   I           print host I's address
#   netns.sh exec PREFIX I CMD...   run CMD on host I
#
# PREFIX keeps parallel runs apart; keep it short (interface names <= 15).
set -euo pipefail

cmd=${1:-}; prefix=${2:-}
[ -n "$cmd" ] || { sed -n '2,15p' "$0"; exit 2; }

host_ip() { echo "10.99.0.$1"; }

case "$cmd" in
  up)
    n=${3:?count}
    ip netns add "$prefix-br"
    ip -n "$prefix-br" link add br0 type bridge
    ip -n "$prefix-br" link set br0 up
    ip -n "$prefix-br" link set lo up
    for i in $(seq 1 "$n"); do
      ns="$prefix-h$i"
      ip netns add "$ns"
      ip -n "$ns" link set lo up
      # veth pair created inside the host namespace, peer moved to the bridge.
      ip -n "$ns" link add eth0 type veth peer name "p$i" netns "$prefix-br"
      ip -n "$ns" addr add "$(host_ip "$i")/24" dev eth0
      ip -n "$ns" link set eth0 up
      ip -n "$prefix-br" link set "p$i" master br0
      ip -n "$prefix-br" link set "p$i" up
    done
    ;;
  cut)
    ip -n "$prefix-br" link set "p${3:?host}" down
    ;;
  heal)
    ip -n "$prefix-br" link set "p${3:?host}" up
    ;;
  block)
    ip -n "$prefix-h${3:?host}" route add blackhole "$(host_ip "${4:?peer}")/32"
    ;;
  unblock)
    ip -n "$prefix-h${3:?host}" route del blackhole "$(host_ip "${4:?peer}")/32"
    ;;
  down)
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^$prefix-(br|h[0-9]+)$" || true); do
      ip netns del "$ns"
    done
    ;;
  ip)
    host_ip "${2:?host}"
    ;;
  exec)
    i=${3:?host}; shift 3
    exec ip netns exec "$prefix-h$i" "$@"
    ;;
  *)
    echo "netns.sh: unknown command $cmd" >&2; exit 2
    ;;
esac
