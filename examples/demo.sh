#!/bin/bash
# Sets up and runs the daemon with a working example: ./examples/demo.sh
# Everything lives in a temporary directory and stops on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || npm ci --no-audit --no-fund
npm run --silent build

RUN=$(mktemp -d /tmp/dispatcher-demo.XXXXXX)
export DISPATCHER_CONTROL=$RUN/control.sock
dispatcher() { node bin/dispatcher "$@"; }
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$RUN"; }
trap cleanup EXIT

dispatcher daemon --state-dir "$RUN/state" 2>"$RUN/daemon.log" &
until dispatcher status >/dev/null 2>&1; do sleep 0.1; done

show() { echo "\$ dispatcher $*"; dispatcher "$@" || true; echo; }
show bind load examples/bindings.json
show bind list
show lookup tcp 192.0.2.10 443
show lookup tcp 192.0.2.10 80
show lookup tcp 192.0.2.130 443
show lookup tcp 192.0.2.200 443
show lookup tcp 198.51.100.1 443
show status
echo "The daemon is running (control socket $DISPATCHER_CONTROL). Ctrl-C stops it."
wait
