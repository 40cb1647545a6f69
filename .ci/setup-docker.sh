#!/usr/bin/env bash
# Install (if needed) and start a Docker daemon for the docker-backend tests.
#
# Idempotent and meant for root on Debian 12: CI machines and fresh dev machines have a
# client but no daemon. Debian's docker.io (20.10) puts dockerd in /usr/sbin; the newer
# client at /usr/local/bin/docker may speak a newer API than that daemon, so we always
# talk to it through /usr/bin/docker.
set -euo pipefail

DOCKER=/usr/bin/docker
SOCK=/var/run/docker.sock
LOG=${DOCKERD_LOG:-/tmp/dockerd.log}
WAIT_S=${DOCKERD_WAIT_S:-60}

find_dockerd() {
    local p
    for p in /usr/bin/dockerd /usr/sbin/dockerd "$(command -v dockerd 2>/dev/null || true)"; do
        if [[ -n "$p" && -x "$p" ]]; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

daemon_answers() {
    [[ -S "$SOCK" ]] && "$DOCKER" -H "unix://$SOCK" info >/dev/null 2>&1
}

if [[ $(id -u) -ne 0 ]]; then
    echo "setup-docker: must run as root" >&2
    exit 1
fi

if ! DOCKERD=$(find_dockerd) || [[ ! -x "$DOCKER" ]]; then
    echo "setup-docker: installing docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker.io >/dev/null
    DOCKERD=$(find_dockerd) || { echo "setup-docker: dockerd still missing after install" >&2; exit 1; }
fi

# The VPS tests drive the real OpenSSH client through River's SSH proxy, and the host
# makes VPS keys with ssh-keygen: both come with openssh-client.
if ! command -v ssh >/dev/null 2>&1 || ! command -v ssh-keygen >/dev/null 2>&1; then
    echo "setup-docker: installing openssh-client"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends openssh-client >/dev/null
fi

if daemon_answers; then
    echo "setup-docker: daemon already answers on $SOCK"
    exit 0
fi

# A stale pid file from a daemon that died would make the new one refuse to start.
if [[ -f /var/run/docker.pid ]] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
    echo "setup-docker: starting $DOCKERD --iptables=false (log: $LOG)"
    # setsid + nohup: the daemon must outlive this script and the CI step's shell.
    setsid nohup "$DOCKERD" --iptables=false >>"$LOG" 2>&1 </dev/null &
fi

start=$SECONDS
until daemon_answers; do
    if (( SECONDS - start >= WAIT_S )); then
        echo "setup-docker: dockerd did not answer on $SOCK within ${WAIT_S}s; last log lines:" >&2
        tail -n 30 "$LOG" >&2 || true
        exit 1
    fi
    sleep 0.5
done
echo "setup-docker: daemon up after $((SECONDS - start))s ($("$DOCKER" version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
