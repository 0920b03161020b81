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

# CPU time (user + system, clock ticks) of each running node, by role, from /proc.
cpu_by_role() {
  local f name pid ticks
  for f in "$ROOT"/network/pids/*.pid; do
    name=$(basename "$f" .pid)
    pid=$(cat "$f")
    ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
    case "$name" in
      orderer*) echo "orderers $ticks" ;;
      peer*) echo "peers $ticks" ;;
      chaincode-*) echo "chaincodes $ticks" ;;
      *) echo "other $ticks" ;;
    esac
  done | awk '{t[$1] += $2} END {for (r in t) print r, t[r]}' | sort
}
before=$(cpu_by_role)
MEDLEDGER_ROOT="$ROOT" "$CARGO_TARGET_DIR/release/examples/network_bench" "${1:-16}" "${2:-400}"
after=$(cpu_by_role)
# Both kinds run COUNT transactions each.
txs=$(( 2 * ${2:-400} ))
hz=$(getconf CLK_TCK)
echo "CPU per committed transaction (all processes of a role together, $txs transactions):"
join <(echo "$before") <(echo "$after") | awk -v n="$txs" -v hz="$hz" '
  { ms = ($3 - $2) * 1000 / hz / n; if ($1 != "other") total += ms; printf "  %-10s %6.2f ms\n", $1, ms }
  END { printf "  %-10s %6.2f ms  (orderers, peers, chaincodes; other = CAs and explorers)\n", "all nodes", total }'

