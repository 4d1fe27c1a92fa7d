#!/usr/bin/env bash
# System packages the tests need, installed only when missing (CI runs as root on Debian).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
NPM_DIR="$ROOT/.cache/npm"
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# npm only to install newman below (Debian's npm brings Node.js, which newman runs on).
if [ ! -x "$NPM_DIR/node_modules/.bin/newman" ] && ! command -v npm >/dev/null 2>&1; then
  need+=(npm)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "[install] missing: ${need[*]} (run as root, or: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "[install] apt-get install ${need[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# newman (Postman's CLI runner) for the API's collection test, project-local in .cache/npm.
NEWMAN_VERSION=6.2.2
if [ ! -x "$NPM_DIR/node_modules/.bin/newman" ]; then
  command -v npm >/dev/null 2>&1 || { echo "[install] npm is missing (apt-get install npm)" >&2; exit 1; }
  echo "[install] npm install newman@$NEWMAN_VERSION into .cache/npm"
  mkdir -p "$NPM_DIR"
  npm install --prefix "$NPM_DIR" --no-audit --no-fund --silent "newman@$NEWMAN_VERSION" >/dev/null
fi
