#!/bin/bash
# Kernel steering, worked: ./examples/kernel-demo.sh (as root: network namespaces and nftables).
# A host namespace runs the daemon (--mode kernel) and two services; a client namespace dials
# 198.51.100.0/24, which the host holds as AnyIP (scripts/netns.sh draws both). The kernel steers each
# connection to its label's own socket, held by the service: the daemon hands nothing off, and killing it
# stops nothing. Everything is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "kernel steering needs root (namespaces, nftables TPROXY)" >&2; exit 2; }
for c in nft ip curl; do command -v $c >/dev/null || { echo "needs $c: apt-get install nftables iproute2 curl" >&2; exit 2; }; done
[ -d node_modules ] && [ -f native/build/Release/dispatcher.node ] || npm ci --no-audit --no-fund
npm run --silent build

ID=demo$$
HOST=disp-h-$ID CLIENT=disp-c-$ID
RUN=$(mktemp -d /tmp/dispatcher-kernel.XXXXXX)
export DISPATCHER_CONTROL=$RUN/control.sock
daemon() { ip netns exec $HOST node bin/dispatcher daemon --mode kernel --state-dir "$RUN/state" --services "$RUN/services.sock" 2>>"$RUN/daemon.log" & }
dispatcher() { ip netns exec $HOST node bin/dispatcher "$@"; }
cleanup() {
  pkill -TERM -f "state-dir $RUN/state" 2>/dev/null || true
  sleep 0.5
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  scripts/netns.sh down $ID
  rm -rf "$RUN"
}
trap cleanup EXIT
scripts/netns.sh up $ID

daemon
until dispatcher status >/dev/null 2>&1; do sleep 0.1; done
ip netns exec $HOST node examples/hello-service.mjs web "$RUN/services.sock" &
ip netns exec $HOST node examples/hello-service.mjs api "$RUN/services.sock" &

run() { echo "\$ $*"; "$@" || true; echo; }
from_client() { echo "\$ (client) curl -s http://$1/"; ip netns exec $CLIENT curl -s --max-time 3 "http://$1/" || echo "(no answer)"; echo; }
run dispatcher bind add web tcp 198.51.100.0/24 80
run dispatcher bind add api tcp 198.51.100.200/32
sleep 0.5
from_client 198.51.100.7
from_client 198.51.100.200
from_client 198.51.100.200:8443
echo "# the rules the table compiled to, and the label sockets the services hold:"
run ip netns exec $HOST nft list map inet dispatcher_steer tcp4
run dispatcher status
echo "# SIGKILL the daemon: the rules and the services' sockets stay, traffic keeps flowing"
pkill -KILL -f "state-dir $RUN/state"
sleep 0.3
from_client 198.51.100.7
from_client 198.51.100.200
echo "# a new daemon binds beside the services' sockets (same ports) and takes over the rules"
daemon
until dispatcher status >/dev/null 2>&1; do sleep 0.1; done
run dispatcher bind rm api tcp 198.51.100.200/32
from_client 198.51.100.200
run dispatcher status
echo "Kernel steering demo done: see README, Kernel steering."
