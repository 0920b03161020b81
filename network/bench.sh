#!/usr/bin/env bash
# End-to-end benchmark of the running test network: CLIENTS concurrent clients submit COUNT medical
# CreateRecord transactions (private data) and COUNT plain key writes through Hospital1's Gateway,
# each endorsed by both hospitals, ordered by the 4 BFT orderers; prints committed tx/s and
# p50/p95/p99 submit-to-commit latency, with a progress bar.
#
#   ./network/network.sh up && ./network/network.sh deployCC
#   ./network/bench.sh [CLIENTS=16] [COUNT=400]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/medledger-target}"
[ -d "$ROOT/network/pids" ] && [ -n "$(ls -A "$ROOT/network/pids" 2>/dev/null)" ] \
  || { echo "Error: the network is not up (run ./network/network.sh up && ./network/network.sh deployCC)" >&2; exit 1; }
[ -f "$ROOT/network/pids/chaincode-medical.pid" ] \
  || { echo "Error: the chaincodes are not deployed (run ./network/network.sh deployCC)" >&2; exit 1; }
cd "$ROOT"
cargo build --release -q -p medledger-tests --example network_bench
MEDLEDGER_ROOT="$ROOT" "$CARGO_TARGET_DIR/release/examples/network_bench" "${1:-16}" "${2:-400}"
