#!/bin/bash
# The tests, from a fresh machine: ./scripts/test.sh
# Run it as root: the tests create network namespaces and nftables rules, and run a worker as nobody.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
npm test
