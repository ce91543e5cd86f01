#!/bin/bash
# The tests, from a fresh machine: ./scripts/test.sh
# Run it as root: the tests create network namespaces and nftables rules, and run a worker as nobody.
# Type checks (src, test, bench) and lint come first: a change that breaks them fails here as in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
npm run typecheck
npm run lint
npm test
