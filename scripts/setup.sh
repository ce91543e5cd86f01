#!/bin/bash
# Installs what building, the tests and the benchmarks need on a Debian machine, then the npm packages
# (npm ci builds the native addon with node-gyp: g++, make and Node's headers).
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null; then
  SUDO=$( [ "$(id -u)" = 0 ] || echo sudo )
  need=()
  # curl drives the control API in tests; iproute2 and nftables the namespace tests; python3 runs the
  # second implementation of the services protocol; dig (dnsutils) the DNS test; nginx and haproxy are the
  # real servers behind proxy mode; prlimit (util-linux) the flood test; wrk the benchmarks; etcd (etcd-server)
  # the store-in-etcd test.
  for pair in curl:curl ip:iproute2 nft:nftables python3:python3 dig:dnsutils nginx:nginx haproxy:haproxy prlimit:util-linux wrk:wrk etcd:etcd-server; do
    command -v "${pair%%:*}" >/dev/null || [ -x "/usr/sbin/${pair%%:*}" ] || need+=("${pair#*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # Installed, not started: a policy that tells the packages' scripts not to start services.
    policy=/usr/sbin/policy-rc.d
    added=
    [ -e $policy ] || { printf '#!/bin/sh\nexit 101\n' | $SUDO tee $policy >/dev/null; $SUDO chmod +x $policy; added=1; }
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    [ -z "$added" ] || $SUDO rm -f $policy
  fi
fi

npm ci --no-audit --no-fund
