#!/usr/bin/env bash
# One entry point for a fresh machine:
#   ./dev.sh up     install everything, start the embedded cluster, run the quickstart notebook
#   ./dev.sh test   install everything and run the whole test suite
set -euo pipefail
cd "$(dirname "$0")"

VENV=${RIVER_VENV:-.venv}
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
        fi
        "$VENV/bin/ruff" check .
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: ./dev.sh up | test [pytest args]" >&2
        exit 2
        ;;
esac
