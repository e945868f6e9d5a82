#!/usr/bin/env bash
# Installs the workspace's dependencies (extra arguments go to `pnpm install`, e.g. --frozen-lockfile).
# better-sqlite3 compiles from source where its prebuilt binary cannot be downloaded, and node-gyp would then
# try to download Node's headers as well: point it at the installed headers when they exist. pnpm 12 reads
# this only from the environment, not from .npmrc or pnpm-workspace.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${npm_config_nodedir:-}" ] && [ -f /usr/include/node/node.h ]; then
  export npm_config_nodedir=/usr
fi
exec pnpm install "$@"
