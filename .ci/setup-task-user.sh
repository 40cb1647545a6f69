#!/usr/bin/env bash
# Process-backend tasks of a runner running as root run as unprivileged uids (one per
# user, --task-uid-range; or river runner --task-user NAME): they must be able to run the
# Python the runner uses for `python` tasks. When the interpreter lives under a private
# home (pyenv in /root, 0700), give others search (x) permission on the directories
# above it: enough to reach the file, not to list anything. Idempotent.
set -euo pipefail

VENV=${RIVER_VENV:-.venv}
if [[ $(id -u) -ne 0 ]]; then
    echo "setup-task-user: not root; tasks run as this user, nothing to do"
    exit 0
fi
python=$(readlink -f "$VENV/bin/python")
dir=$(dirname "$python")
while [[ "$dir" != "/" ]]; do
    if [[ $(( 0$(stat -c %a "$dir") & 1 )) -eq 0 ]]; then
        echo "setup-task-user: o+x on $dir (so task accounts can reach $python)"
        chmod o+x "$dir"
    fi
    dir=$(dirname "$dir")
done
if command -v runuser >/dev/null 2>&1; then
    runuser -u nobody -- "$VENV/bin/python" -c 'import sys' \
        && echo "setup-task-user: nobody can run $python"
fi
