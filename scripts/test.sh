#!/usr/bin/env bash
# Runs MedLedger's whole test suite on a fresh machine: installs what the build needs (libclang
# for RocksDB's bindings, the npm Fabric clients the interop tests drive, Chromium for the
# explorer's browser test), then cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/medledger-target}"

# shellcheck source=lib/deps.sh
source scripts/lib/deps.sh
ensure_libclang
ensure_chromium

echo "==> installing the npm Fabric clients for the interop tests"
(cd tests/node && npm ci --no-audit --no-fund --loglevel=error)

echo "==> cargo test (target dir: $CARGO_TARGET_DIR)"
cargo test --workspace "$@"
