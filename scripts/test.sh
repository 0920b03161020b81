#!/usr/bin/env bash
# Runs MedLedger's whole test suite on a fresh machine: installs what the build needs (libclang
# for RocksDB's bindings, the npm Fabric clients the interop tests drive), then cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/medledger-target}"

if ! ldconfig -p 2>/dev/null | grep -q 'libclang'; then
  echo "==> installing libclang-dev (RocksDB's bindgen needs it)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev >/dev/null
fi

echo "==> installing the npm Fabric clients for the interop tests"
(cd tests/node && npm ci --no-audit --no-fund --loglevel=error)

echo "==> cargo test (target dir: $CARGO_TARGET_DIR)"
cargo test --workspace "$@"
