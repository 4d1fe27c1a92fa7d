#!/usr/bin/env bash
# Builds kustomize (the Go module sigs.k8s.io/kustomize/kustomize/v5, pinned) into .cache/bin,
# once: the k8s tests render the overlays with it. Idempotent; prints the binary's path.
# v5.8.1 is the newest release that builds with Go 1.26 (v5.8.2+ need Go 1.27).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=v5.8.1
BIN="$PWD/.cache/bin/kustomize"
if [ -x "$BIN" ] && "$BIN" version 2>/dev/null | grep -qx "$VERSION"; then
  echo "$BIN"; exit 0
fi
GO=$(command -v go || true)
[ -z "$GO" ] && [ -x /usr/local/go/bin/go ] && GO=/usr/local/go/bin/go
if [ -z "$GO" ]; then
  echo "[kustomize] Go is needed to build kustomize $VERSION (apt-get install golang-go)" >&2
  exit 1
fi
mkdir -p "$(dirname "$BIN")"
echo "[kustomize] go install sigs.k8s.io/kustomize/kustomize/v5@$VERSION (about 30 s once)" >&2
GOTOOLCHAIN=local GOFLAGS=-mod=mod GOBIN="$(dirname "$BIN")" \
  "$GO" install "sigs.k8s.io/kustomize/kustomize/v5@$VERSION" >&2
echo "$BIN"
