#!/usr/bin/env bash
# PostgreSQL server programs for `--db postgresql` (tests/pg.py starts a throwaway cluster
# with initdb in a temp dir, on a unix socket only). No system service is started or needed.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q postgresql >/dev/null || {
        apt-get update -q >/dev/null
        apt-get install -y -q postgresql >/dev/null
    }
fi
id postgres >/dev/null  # the account tests/pg.py runs the server as under root
