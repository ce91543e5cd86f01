#!/bin/bash
# Two hosts, one store, on one machine: ./examples/fleet-demo.sh
# One etcd, two daemons (hosts "east" on 127.0.0.1 and "west" on 127.0.0.2), a web service on each. Bindings
# are written once, to the store, and both hosts serve them; a host's own set layers over the global one;
# etcd stops and both keep serving. Everything lives in a temporary directory and stops on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v curl >/dev/null || { echo "the demo shows traffic with curl: apt-get install curl" >&2; exit 2; }
ETCD=$(command -v etcd || echo /usr/bin/etcd)
[ -x "$ETCD" ] || { echo "the demo needs etcd: ./scripts/setup.sh installs it (Debian: apt-get install etcd-server)" >&2; exit 2; }
[ -d node_modules ] && [ -f native/build/Release/dispatcher.node ] || npm ci --no-audit --no-fund
npm run --silent build

RUN=$(mktemp -d /tmp/dispatcher-fleet.XXXXXX)
dispatcher() { node bin/dispatcher "$@"; }
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$RUN"; }
trap cleanup EXIT

PORT=$((23000 + RANDOM % 2000))
start_etcd() {
  "$ETCD" --name demo --data-dir "$RUN/etcd" --listen-client-urls "http://127.0.0.1:$PORT" \
    --advertise-client-urls "http://127.0.0.1:$PORT" --listen-peer-urls "http://127.0.0.1:$((PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((PORT + 1))" --initial-cluster "demo=http://127.0.0.1:$((PORT + 1))" \
    --log-level error 2>>"$RUN/etcd.log" &
  ETCD_PID=$!
  until curl -s "http://127.0.0.1:$PORT/health" >/dev/null; do sleep 0.1; done
}
start_etcd
export DISPATCHER_STORE=etcd://127.0.0.1:$PORT/dispatcher/demo

host() { # NAME ADDRESS: a daemon following the store, and a web service registered with it
  # The daemon itself, not the function around it, is the job: the cleanup kills jobs by their pid.
  node bin/dispatcher daemon --store "$DISPATCHER_STORE" --host-name "$1" --listen-address "$2" --state-dir "$RUN/$1" \
    --control "$RUN/$1.sock" --services "$RUN/$1-services.sock" 2>"$RUN/$1.log" &
  until dispatcher status --control "$RUN/$1.sock" >/dev/null 2>&1; do sleep 0.1; done
  node examples/hello-service.mjs web "$RUN/$1-services.sock" >/dev/null &
  node examples/hello-service.mjs api "$RUN/$1-services.sock" >/dev/null &
}
host east 127.0.0.1
host west 127.0.0.2

run() { echo "\$ $*"; "$@" || true; echo; }
echo "# one write, to the store (no daemon involved): every host serves it"
run dispatcher bind add web tcp 127.0.0.0/8 8080
run dispatcher fleet wait --timeout 10
run curl -s http://127.0.0.1:8080/
run curl -s http://127.0.0.2:8080/
echo "# west's own set, layered over the global one: on the same key the host's label wins"
run dispatcher bind add api tcp 127.0.0.0/8 8080 --host west
run dispatcher fleet wait --timeout 10
run curl -s http://127.0.0.1:8080/
run curl -s http://127.0.0.2:8080/
run dispatcher fleet
echo "# etcd stops: both hosts keep serving their last revision, and say so"
kill "$ETCD_PID"; wait "$ETCD_PID" 2>/dev/null || true
run curl -s http://127.0.0.1:8080/
run dispatcher bind add web tcp 127.0.0.9 --control "$RUN/east.sock"
dispatcher status --control "$RUN/east.sock" | grep -E '^store|etcd' || true
echo
echo "# etcd is back: the hosts reconnect and catch up"
start_etcd
run dispatcher bind rm api tcp 127.0.0.0/8 8080 --host west
run dispatcher fleet wait --timeout 15
run curl -s http://127.0.0.2:8080/
run dispatcher fleet
echo "Running: try dispatcher fleet, dispatcher bind ... (DISPATCHER_STORE=$DISPATCHER_STORE), or"
echo "dispatcher status --control $RUN/east.sock. Ctrl-C stops it."
wait
