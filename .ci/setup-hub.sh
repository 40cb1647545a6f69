#!/usr/bin/env bash
# configurable-http-proxy (JupyterHub's proxy, an npm package) for the Hub tests
# (tests/hub) and docs/jupyterhub.md, into a cached, git-ignored directory.
#
# Idempotent and fast when present: nothing is fetched if the proxy's binary already
# answers. Uses the machine's npm configuration as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${RIVER_HUB_PROXY_DIR:-.cache/hub-proxy}
BIN="$DIR/node_modules/.bin/configurable-http-proxy"

if [[ -x "$BIN" ]] && "$BIN" --version >/dev/null 2>&1; then
    echo "setup-hub: configurable-http-proxy $("$BIN" --version) already in $DIR"
    exit 0
fi
if ! command -v npm >/dev/null; then
    echo "setup-hub: npm is missing (install Node.js >= 18); the Hub tests will be skipped" >&2
    exit 1
fi
start=$SECONDS
mkdir -p "$DIR"
npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error configurable-http-proxy@5 >/dev/null
echo "setup-hub: configurable-http-proxy $("$BIN" --version) installed in $DIR in $((SECONDS - start))s"
