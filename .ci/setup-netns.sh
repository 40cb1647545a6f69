#!/usr/bin/env bash
# What the overlay tests (tests/netns/) need from the system, as root on Debian 12:
# iproute2 (`ip netns`, veth, bridge, vxlan) to build their namespaces. pyroute2, which
# River itself uses, comes with the Python install. Idempotent; the tests skip (with the
# reason) where this could not be done.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "setup-netns: not root; the network namespace tests will be skipped" >&2
    exit 1
fi
if ! command -v ip >/dev/null 2>&1; then
    echo "setup-netns: installing iproute2"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
fi
echo "setup-netns: $(ip -V)"
