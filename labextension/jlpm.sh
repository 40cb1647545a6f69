#!/bin/sh
# jlpm (Yarn 3) against the npm registry this machine is configured with.
#
# Yarn does not read npm's configuration, and without a registry setting it would use its
# own default; the repository names no registry host (docs/security.md). So the registry
# comes from the environment: YARN_NPM_REGISTRY_SERVER if set, else whatever
# `npm config get registry` answers here (.npmrc, NPM_CONFIG_REGISTRY, ...). The wheel
# build (pyproject.toml) runs every jlpm command through this script; run it yourself as
# `sh jlpm.sh install` / `sh jlpm.sh build:prod` in labextension/.
if [ -z "${YARN_NPM_REGISTRY_SERVER:-}" ] && command -v npm >/dev/null 2>&1; then
    registry=$(npm config get registry 2>/dev/null) || registry=""
    if [ -n "$registry" ] && [ "$registry" != "undefined" ]; then
        YARN_NPM_REGISTRY_SERVER=$registry
        export YARN_NPM_REGISTRY_SERVER
    fi
fi
exec jlpm "$@"
