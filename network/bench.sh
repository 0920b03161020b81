#!/usr/bin/env bash
# End-to-end benchmark of the running test network: CLIENTS concurrent clients submit COUNT medical
# CreateRecord transactions (private data) and COUNT plain key writes (kv Put) through Hospital1's
# Gateway, each endorsed by both hospitals, ordered by the network's BFT orderers (4, or ORDERERS
# given to network.sh up), and checked VALID.
# Prints committed tx/s and p50/p95/p99 submit-to-commit latency per kind, the CPU each role's
# processes used per committed transaction (from /proc/<pid>/stat), and its ratio to the crypto
# floor measured on this machine in the same run (verify_bench: 8 verifications plus one per
# orderer, and 4 signatures per transaction across the network); writes all of it as JSON to
# network/bench-results/.
#
#   ./network/network.sh up && ./network/network.sh deployCC
#   ./network/bench.sh light             # 16 clients, 400 transactions per kind
#   ./network/bench.sh saturate          # 256 clients, 1500 transactions per kind
#   ./network/bench.sh [CLIENTS] [COUNT] # any other load
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/medledger-target}"
case "${1:-light}" in
  light) clients=16; count=${2:-400}; mode=light ;;
  saturate) clients=256; count=${2:-1500}; mode=saturate ;;
  *[!0-9]*) echo "Error: the first argument is light, saturate or a number of clients, not '$1'" >&2; exit 2 ;;
  *) clients=$1; count=${2:-400}; mode=custom ;;
esac
[ -d "$ROOT/network/pids" ] && [ -n "$(ls -A "$ROOT/network/pids" 2>/dev/null)" ] \
  || { echo "Error: the network is not up (run ./network/network.sh up && ./network/network.sh deployCC)" >&2; exit 1; }
[ -f "$ROOT/network/pids/chaincode-medical.pid" ] \
  || { echo "Error: the chaincodes are not deployed (run ./network/network.sh deployCC)" >&2; exit 1; }
cd "$ROOT"
cargo build --release -q -p medledger-tests --example network_bench
cargo build --release -q -p medledger-common --example verify_bench

# The crypto floor of this machine, now: the fastest P-256 verify and sign.
floor_json=$("$CARGO_TARGET_DIR/release/examples/verify_bench" 5 | tail -n 1)
verify_us=$(sed -E 's/.*"verify_us":([0-9.]+).*/\1/' <<<"$floor_json")
sign_us=$(sed -E 's/.*"sign_us":([0-9.]+).*/\1/' <<<"$floor_json")
# Per transaction: every orderer checks the creator's signature; each peer checks the proposal it
# endorses, and at commit the creator's and both endorsements; the commit status request is
# checked once; the client signs twice and each endorser once.
orderers=$(find "$ROOT/network/pids" -name 'orderer*.pid' | wc -l)
verifies=$(( 8 + orderers ))
floor_ms=$(awk -v v="$verify_us" -v s="$sign_us" -v n="$verifies" 'BEGIN { printf "%.3f", (n * v + 4 * s) / 1000 }')

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
# Bytes on disk of each node's data folder, by role (orderers, peers), averaged per node.
disk_by_role() {
  local d
  for d in "$ROOT"/network/data/*/; do
    case "$(basename "$d")" in
      orderer*) echo "orderers $(du -sb "$d" | cut -f1)" ;;
      peer*) echo "peers $(du -sb "$d" | cut -f1)" ;;
    esac
  done | awk '{t[$1] += $2; n[$1]++} END {for (r in t) print r, t[r] / n[r]}' | sort
}
kinds=$(mktemp)
trap 'rm -f "$kinds"' EXIT
before=$(cpu_by_role)
disk_before=$(disk_by_role)
BENCH_JSON="$kinds" MEDLEDGER_ROOT="$ROOT" "$CARGO_TARGET_DIR/release/examples/network_bench" "$clients" "$count"
after=$(cpu_by_role)
disk_after=$(disk_by_role)
# Both kinds run COUNT transactions each.
txs=$(( 2 * count ))
hz=$(getconf CLK_TCK)
cpu=$(join <(echo "$before") <(echo "$after") | awk -v n="$txs" -v hz="$hz" '
  { ms = ($3 - $2) * 1000 / hz / n; if ($1 != "other") total += ms; printf "%s %.3f\n", $1, ms }
  END { printf "all %.3f\n", total }')
echo "CPU per committed transaction (all processes of a role together, $txs transactions):"
awk -v floor="$floor_ms" -v v="$verify_us" -v s="$sign_us" -v n="$verifies" '
  $1 == "all" { printf "  %-10s %6.2f ms  (orderers, peers, chaincodes; other = CAs and explorers)\n", "all nodes", $2;
                printf "  crypto floor %.2f ms (%d verifies x %s us + 4 signs x %s us): all nodes use %.1fx it\n", floor, n, v, s, $2 / floor; next }
  { printf "  %-10s %6.2f ms\n", $1, $2 }' <<<"$cpu"

# Disk growth per transaction of one node of each role (RocksDB's WAL and compactions make one
# run's figure rough: compare medians).
disk=$(join <(echo "$disk_before") <(echo "$disk_after") | awk -v n="$txs" '{ printf "%s %.0f\n", $1, ($3 - $2) / n }')
awk '{ printf "  disk per transaction, one %-8s %6d bytes\n", substr($1, 1, length($1) - 1), $2 }' <<<"$disk"

mkdir -p "$ROOT/network/bench-results"
out="$ROOT/network/bench-results/$(date -u +%Y%m%dT%H%M%SZ)-$mode-${clients}c.json"
{
  printf '{\n  "date": "%s",\n  "mode": "%s",\n  "clients": %s,\n  "orderers": %s,\n  "transactions_per_kind": %s,\n' \
    "$(date -u +%FT%TZ)" "$mode" "$clients" "$orderers" "$count"
  printf '  "machine": {"cpus": %s, "model": "%s"},\n' "$(nproc)" \
    "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo | tr -d '"')"
  printf '  "kinds": [\n%s\n  ],\n' "$(sed 's/^/    /; $!s/$/,/' "$kinds")"
  printf '  "cpu_ms_per_tx": {%s},\n' "$(awk '{printf "%s\"%s\": %s", (NR > 1 ? ", " : ""), $1, $2}' <<<"$cpu")"
  printf '  "disk_bytes_per_tx_per_node": {%s},\n' "$(awk '{printf "%s\"%s\": %s", (NR > 1 ? ", " : ""), $1, $2}' <<<"$disk")"
  printf '  "crypto_floor": {"verify_us": %s, "sign_us": %s, "ms_per_tx": %s},\n' "$verify_us" "$sign_us" "$floor_ms"
  printf '  "ratio_to_floor": %s\n}\n' "$(awk -v f="$floor_ms" '$1 == "all" {printf "%.2f", $2 / f}' <<<"$cpu")"
} > "$out"
echo "Results: $out"
