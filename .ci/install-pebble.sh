#!/usr/bin/env bash
# Installs the Pebble ACME test CA and its companion challenge/DNS test server
# into $(go env GOPATH)/bin, where the edge/certs tests look for them
# (besides $PATH). Idempotent: skips the build when the wanted version is
# already installed. Both come from the same pebble module, so one version pin
# covers both binaries.
set -euo pipefail

PEBBLE_VERSION="${PEBBLE_VERSION:-v2.10.1}"
bin="$(go env GOPATH)/bin"
stamp="$bin/.pebble-version"

if [[ -x "$bin/pebble" && -x "$bin/pebble-challtestsrv" && -f "$stamp" \
      && "$(cat "$stamp")" == "$PEBBLE_VERSION" ]]; then
  echo "pebble $PEBBLE_VERSION already installed in $bin"
  exit 0
fi

# GOFLAGS from the caller (e.g. -mod=vendor) must not leak into a
# module-mode install of a foreign module.
GOFLAGS= go install "github.com/letsencrypt/pebble/v2/cmd/pebble@${PEBBLE_VERSION}"
GOFLAGS= go install "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv@${PEBBLE_VERSION}"
mkdir -p "$bin"
echo "$PEBBLE_VERSION" > "$stamp"
echo "installed pebble and pebble-challtestsrv $PEBBLE_VERSION into $bin"
