#!/bin/bash
# Sets up and runs the daemon with a working example: ./examples/demo.sh
# Two services, web and api; 127.0.0.0/8 port 8080 goes to web, 127.0.0.2 (every port) to api.
# Everything lives in a temporary directory and stops on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v curl >/dev/null || { echo "the demo shows traffic with curl: apt-get install curl" >&2; exit 2; }
[ -d node_modules ] && [ -f native/build/Release/dispatcher.node ] || npm ci --no-audit --no-fund
npm run --silent build

RUN=$(mktemp -d /tmp/dispatcher-demo.XXXXXX)
export DISPATCHER_CONTROL=$RUN/control.sock DISPATCHER_SERVICES=$RUN/services.sock
dispatcher() { node bin/dispatcher "$@"; }
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$RUN"; }
trap cleanup EXIT

# The daemon itself, not the function around it, is the job: the cleanup kills jobs by their pid.
node bin/dispatcher daemon --state-dir "$RUN/state" --services "$DISPATCHER_SERVICES" 2>"$RUN/daemon.log" &
until dispatcher status >/dev/null 2>&1; do sleep 0.1; done
node examples/hello-service.mjs web &
node examples/hello-service.mjs api &

run() { echo "\$ $*"; "$@" || true; echo; }
run dispatcher bind add web tcp 127.0.0.0/8 8080
run dispatcher bind add api tcp 127.0.0.2
run dispatcher bind list
sleep 0.5
run curl -s http://127.0.0.1:8080/
run curl -s http://127.0.0.2:8080/
run curl -s http://127.0.0.3:8080/
echo "# move 127.0.0.2 back to web, live: no restart of anything"
run dispatcher bind rm api tcp 127.0.0.2
run curl -s http://127.0.0.2:8080/
run dispatcher bind add api tcp 127.0.0.2
run curl -s http://127.0.0.2:8080/
run dispatcher lookup tcp 192.0.2.1 8080
run dispatcher services
run dispatcher status
echo "The daemon is running: try the curl lines above, or dispatcher bind ... (DISPATCHER_CONTROL=$DISPATCHER_CONTROL)."
echo "Ctrl-C stops it."
wait
