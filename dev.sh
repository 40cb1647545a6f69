#!/usr/bin/env bash
# One entry point for a fresh machine:
#   ./dev.sh up     install everything, start the embedded cluster, run the quickstart notebook
#   ./dev.sh test   install everything and run the whole test suite
set -euo pipefail
cd "$(dirname "$0")"

VENV=${RIVER_VENV:-.venv}
# What `./dev.sh test` runs a second time with --db postgresql (about 5 minutes on 2 cores).
POSTGRES_MODULES="tests/integration/test_migrations.py tests/integration/test_db_bounds.py
 tests/integration/test_cluster_basics.py
 tests/integration/test_failures.py tests/integration/test_resilience.py
 tests/integration/test_kill_races.py tests/integration/test_paging.py
 tests/integration/test_accounts.py tests/integration/test_policy.py
 tests/integration/test_standby.py"
PY=${PYTHON:-python3}

install() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PY" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q -e ".[test]"
}

case "${1:-}" in
    up)
        install
        shift
        # The Hub's proxy, for a site that runs River behind JupyterHub (docs/jupyterhub.md).
        bash .ci/setup-hub.sh || echo "dev.sh: no configurable-http-proxy; JupyterHub unavailable"
        # First run the quickstart headlessly to prove the cluster works, then serve JupyterLab.
        "$VENV/bin/river" up --check notebooks/quickstart.ipynb
        exec "$VENV/bin/river" up "$@"
        ;;
    test)
        install
        shift
        if [ "$(id -u)" = "0" ]; then
            # Docker (and later the overlay tests) need root services set up first.
            bash .ci/setup-docker.sh || echo "dev.sh: no Docker daemon; docker tests will be skipped"
            bash .ci/setup-netns.sh || echo "dev.sh: no iproute2; overlay (netns) tests will be skipped"
            bash .ci/setup-task-user.sh || echo "dev.sh: process tasks (run as nobody) may not reach Python"
            bash .ci/build-images.sh || echo "dev.sh: test images not built; docker tests will be skipped"
            bash .ci/setup-browser.sh || echo "dev.sh: no chromium; browser tests will be skipped"
            bash .ci/setup-qemu.sh "$VENV" || echo "dev.sh: no QEMU; VM tests will be skipped"
            bash .ci/build-vm-image.sh || echo "dev.sh: no VM base image; VM tests will be skipped"
            bash .ci/setup-postgres.sh || echo "dev.sh: no PostgreSQL; its pass will be skipped"
        fi
        bash .ci/setup-hub.sh || echo "dev.sh: no configurable-http-proxy; Hub tests will be skipped"
        "$VENV/bin/ruff" check .
        if [ "$#" -gt 0 ]; then  # a chosen selection: as asked, on the database asked
            exec "$VENV/bin/python" -m pytest "$@"
        fi
        # The slowest 40 (setup, call and teardown apart) end the log: where CI's time goes.
        "$VENV/bin/python" -m pytest --durations=40
        # The same host code on PostgreSQL (docs/database.md): the modules that exercise the
        # database hardest, again, each Cluster on a fresh database of a throwaway server.
        if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
            exec "$VENV/bin/python" -m pytest --db postgresql $POSTGRES_MODULES
        fi
        echo "dev.sh: no PostgreSQL server programs; the PostgreSQL pass was skipped" >&2
        ;;
    *)
        echo "usage: ./dev.sh up | test [pytest args]" >&2
        exit 2
        ;;
esac
