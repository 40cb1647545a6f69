#!/usr/bin/env bash
# Install Debian's chromium for the Playwright browser tests (tests/browser), if missing.
#
# Idempotent; meant for root on Debian 12 (CI and fresh dev machines). Playwright itself is
# a Python package from the `test` extra; its own browser download (`playwright install`)
# does not work here and is never used: the tests launch /usr/bin/chromium.
set -euo pipefail

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

if [[ -x "$CHROMIUM" ]]; then
    echo "setup-browser: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM") already installed"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "setup-browser: chromium is missing and installing it needs root" >&2
    exit 1
fi

start=$SECONDS
echo "setup-browser: installing chromium (Debian package)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "setup-browser: $("$CHROMIUM" --version) installed in $((SECONDS - start))s"
