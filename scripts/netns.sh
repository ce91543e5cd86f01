#!/bin/sh
# Two network namespaces for tests and benchmarks, joined by a veth pair:
#
#   client ns  veth 192.0.2.2/24, 2001:db8::2/64 ──── veth 192.0.2.1/24, 2001:db8::1/64  host ns
#              routes to the prefixes via the host         AnyIP: 198.51.100.0/24, 203.0.113.0/24 and
#                                                          2001:db8:1::/64 are local (dev lo)
#
# The daemon runs in the host namespace and clients in the client namespace, so their packets arrive
# from outside and pass nftables' prerouting hook, as real traffic does. Documentation ranges only.
#
#   scripts/netns.sh up ID      creates disp-h-ID and disp-c-ID
#   scripts/netns.sh down ID    removes them (and the veth pair with them)
set -eu
id=$2
host=disp-h-$id
client=disp-c-$id
case $1 in
down)
  ip netns del "$host" 2>/dev/null || true
  ip netns del "$client" 2>/dev/null || true
  ;;
up)
  trap '"$0" down "$id"' EXIT
  ip netns add "$host"
  ip netns add "$client"
  vh=$(echo "vh$id" | cut -c1-15)
  vc=$(echo "vc$id" | cut -c1-15)
  ip link add "$vh" netns "$host" type veth peer name "$vc" netns "$client"
  h() { ip netns exec "$host" "$@"; }
  c() { ip netns exec "$client" "$@"; }
  h ip link set lo up
  c ip link set lo up
  h ip addr add 192.0.2.1/24 dev "$vh"
  c ip addr add 192.0.2.2/24 dev "$vc"
  h ip -6 addr add 2001:db8::1/64 dev "$vh" nodad
  c ip -6 addr add 2001:db8::2/64 dev "$vc" nodad
  h ip link set "$vh" up
  c ip link set "$vc" up
  for prefix in 198.51.100.0/24 203.0.113.0/24; do
    h ip route add local "$prefix" dev lo
    c ip route add "$prefix" via 192.0.2.1
  done
  h ip -6 route add local 2001:db8:1::/64 dev lo
  c ip -6 route add 2001:db8:1::/64 via 2001:db8::1
  # Load generators open tens of thousands of connections: all the ephemeral ports, reused when safe.
  c sysctl -qw net.ipv4.ip_local_port_range="1024 65535" net.ipv4.tcp_tw_reuse=1
  trap - EXIT
  ;;
*)
  echo "usage: $0 up|down ID" >&2
  exit 2
  ;;
esac
