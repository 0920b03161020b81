#!/usr/bin/env bash
# MedLedger test network on local processes (no container engine): the equivalent of Fabric's
# test-network. One CA and one TLS CA per organisation (Hospital1, Hospital2, Orderer), 4 BFT
# orderers (ORDERERS=5..7 for more) and one peer per hospital, all over TLS, channel `medchannel`.
#
#   ./network/network.sh up         build if needed, start CAs, enroll everyone, genesis, nodes,
#                                   join the peers to the channel (peer channel join)
#   ./network/network.sh deployCC   the medical chaincode and the kv example through the Fabric 2
#                                   lifecycle (package, install on both peers, approve per
#                                   organisation, commit with policy and collections), then a smoke
#                                   invoke (a medical record, its content private) and query
#   ./network/network.sh addOrg Hospital3
#                                   a third hospital joins the running channel: its CAs, enrollments,
#                                   the channel update signed by a majority of the hospitals'
#                                   admins, its peer joined (replaying every block), the chaincodes
#                                   installed and approved, kv's policy widened to two of three,
#                                   an invoke Hospital3 endorses
#   ./network/network.sh revoke hospital1 nurse1
#                                   the organisation's CA revokes the user and writes a CRL; its
#                                   admin puts the CRL on the channel (fetch config, add the CRL,
#                                   compute the update, channel update); waits until both peers
#                                   have the new configuration in force
#   ./network/network.sh down       stop everything started (by PID) and remove generated files
#
# Ports (override with the environment): CAs 7054/8054/9054, TLS CAs 7154/8154/9154,
# orderers 7050/8050/9050/10050 (then 11050/12050/13050), peers 7051/9051, chaincode servers 9999
# (kv) and 9998 (medical), operations 9443-9448 (orderers 5-7: 9458-9460), explorers
# http://localhost:7080 (Hospital1) and :9080 (Hospital2).
# Logs: network/logs/<node>.log. Binaries: $MEDLEDGER_BIN or $CARGO_TARGET_DIR/release.
set -euo pipefail

NET="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$NET")"
ORGS="$NET/organizations"
LOGS="$NET/logs"
DATA="$NET/data"
PIDS="$NET/pids"
ART="$NET/channel-artifacts"
CHANNEL="${CHANNEL:-medchannel}"
CC_NAME="${CC_NAME:-kv}"
CC_LABEL="kvstore_1.0"
MED_LABEL="medical_1.0"

# Index 3 is Hospital3, which joins later (addOrg).
CA_PORTS=(${CA_PORTS:-7054 8054 9054 10054})
TLSCA_PORTS=(${TLSCA_PORTS:-7154 8154 9154 10154})
ORDERER_PORTS=(${ORDERER_PORTS:-7050 8050 9050 10050 11050 12050 13050})
# How many BFT orderers `up` starts (3f+1 tolerates f faulty ones: 4 -> 1, 7 -> 2).
ORDERERS="${ORDERERS:-4}"
PEER_PORTS=(${PEER_PORTS:-7051 9051})
EXPLORER_PORTS=(${EXPLORER_PORTS:-7080 9080})
HOSPITAL3_PEER_PORT="${HOSPITAL3_PEER_PORT:-11051}"
CC_PORT="${CC_PORT:-9999}"
MED_CC_PORT="${MED_CC_PORT:-9998}"
OPS_BASE="${OPS_BASE:-9443}"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/medledger-target}"
BIN="${MEDLEDGER_BIN:-$CARGO_TARGET_DIR/release}"
# shellcheck source=../scripts/lib/deps.sh
source "$ROOT/scripts/lib/deps.sh"

ORG_NAMES=(hospital1 hospital2 orderer hospital3)
ORG_MSPS=(Hospital1MSP Hospital2MSP OrdererMSP Hospital3MSP)

peer_port() { # org-index
  if [ "$1" = 3 ]; then echo "$HOSPITAL3_PEER_PORT"; else echo "${PEER_PORTS[$1]}"; fi
}

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'Error: %s\n' "$*" >&2; exit 1; }

is_up() { [ -d "$PIDS" ] && [ -n "$(ls -A "$PIDS" 2>/dev/null)" ]; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # name port
  for _ in $(seq 1 150); do
    if ! port_free "$2"; then return 0; fi
    if [ -f "$PIDS/$1.pid" ] && ! kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; then break; fi
    sleep 0.2
  done
  echo "--- last lines of $LOGS/$1.log ---" >&2
  tail -n 20 "$LOGS/$1.log" >&2 || true
  down_quiet
  die "$1 did not start on port $2"
}

start() { # name command...
  local name=$1; shift
  "$@" >"$LOGS/$name.log" 2>&1 &
  echo $! >"$PIDS/$name.pid"
}

build() {
  if [ -z "${MEDLEDGER_BIN:-}" ]; then
    # Always let cargo decide: a no-op when up to date, and never a stale binary after a pull.
    ensure_libclang || die "cannot install libclang, which the RocksDB build needs"
    [ -x "$BIN/medledger-peer" ] || say "building release binaries (the first build compiles RocksDB: about 10-15 minutes)"
    (cd "$ROOT" && cargo build --release -p medledger-ca -p medledger-orderer -p medledger-peer -p medledger-shim -p medledger-medical-chaincode -p medledger-explorer --bins)
  fi
  for b in medledger-ca medledger-orderer medledger-peer kvstore-chaincode medical-chaincode medledger-explorer; do
    [ -x "$BIN/$b" ] || die "missing binary $BIN/$b"
  done
}

ca() { "$BIN/medledger-ca" "$@"; }

enroll() { # ca-port tls-cert id secret mspdir mspid [extra...]
  local port=$1 tls=$2 id=$3 secret=$4 msp=$5 mspid=$6; shift 6
  ca enroll -u "https://$id:$secret@localhost:$port" --tls-certfiles "$tls" --mspdir "$msp" --mspid "$mspid" "$@" >/dev/null
}

register() { # ca-port tls-cert admin-msp mspid name secret type affiliation [attrs]
  ca register -u "https://localhost:$1" --tls-certfiles "$2" --mspdir "$3" --mspid "$4" \
    --id.name "$5" --id.secret "$6" --id.type "$7" --id.affiliation "$8" ${9:+--id.attrs "$9"} >/dev/null
}

node_ous() { # msp dir
  cat >"$1/config.yaml" <<'EOF'
NodeOUs:
  Enable: true
  ClientOUIdentifier:
    Certificate: cacerts/ca.pem
    OrganizationalUnitIdentifier: client
  PeerOUIdentifier:
    Certificate: cacerts/ca.pem
    OrganizationalUnitIdentifier: peer
  AdminOUIdentifier:
    Certificate: cacerts/ca.pem
    OrganizationalUnitIdentifier: admin
  OrdererOUIdentifier:
    Certificate: cacerts/ca.pem
    OrganizationalUnitIdentifier: orderer
EOF
}

peer_cli() { # org-index identity command... : medledger-peer as an identity of hospital <org-index>
  local i=$1 who=$2; shift 2
  CORE_PEER_LOCALMSPID=${ORG_MSPS[$i]} CORE_PEER_MSPCONFIGPATH="$ORGS/${ORG_NAMES[$i]}/users/$who/msp" \
    "$BIN/medledger-peer" "$@" --peerAddresses "localhost:$(peer_port "$i")" \
    --tlsRootCertFiles "$ORGS/${ORG_NAMES[$i]}/tlsca/tlsca-cert.pem"
}

tls_files() { # tls msp dir -> writes server.crt/server.key/ca.crt beside it
  local d=$1
  cp "$d/signcerts/cert.pem" "$d/server.crt"
  cp "$(ls "$d"/keystore/* | head -n 1)" "$d/server.key"
  cp "$d/tlscacerts/tls-ca.pem" "$d/ca.crt"
}

down_quiet() {
  if [ -d "$PIDS" ]; then
    for f in "$PIDS"/*.pid; do
      [ -e "$f" ] || continue
      kill "$(cat "$f")" 2>/dev/null || true
    done
    sleep 0.5
    for f in "$PIDS"/*.pid; do
      [ -e "$f" ] || continue
      kill -9 "$(cat "$f")" 2>/dev/null || true
    done
  fi
  rm -rf "$ORGS" "$LOGS" "$DATA" "$PIDS" "$ART" "$NET/configtx.yaml"
}

start_cas() { # org-index: the organisation's CA and TLS CA
  local i=$1 org=${ORG_NAMES[$1]}
  local aff="$org,$org.cardiology,$org.nursing,$org.patients"
  start "ca-$org" "$BIN/medledger-ca" server start --home "$ORGS/fabric-ca/$org" --name "ca-$org" \
    -b admin:adminpw --port "${CA_PORTS[$i]}" --affiliation "$aff"
  start "tlsca-$org" "$BIN/medledger-ca" server start --home "$ORGS/fabric-ca/tls-$org" --name "tlsca-$org" \
    -b admin:adminpw --port "${TLSCA_PORTS[$i]}" --affiliation "$aff"
}

wait_cas() { # org-index
  local i=$1
  wait_port "ca-${ORG_NAMES[$i]}" "${CA_PORTS[$i]}"
  wait_port "tlsca-${ORG_NAMES[$i]}" "${TLSCA_PORTS[$i]}"
  echo "    ${ORG_MSPS[$i]}: CA https://localhost:${CA_PORTS[$i]}, TLS CA https://localhost:${TLSCA_PORTS[$i]}"
}

enroll_org() { # org-index: its MSP folder, admin, nodes and users, enrolled at its CAs
  local i=$1
  local org=${ORG_NAMES[$i]} mspid=${ORG_MSPS[$i]}
  local port=${CA_PORTS[$i]} tport=${TLSCA_PORTS[$i]}
  local cacert="$ORGS/fabric-ca/$org/tls-cert.pem" tlscacert="$ORGS/fabric-ca/tls-$org/tls-cert.pem"
  local o="$ORGS/$org"
  enroll "$port" "$cacert" admin adminpw "$o/ca-admin/msp" "$mspid"
  enroll "$tport" "$tlscacert" admin adminpw "$o/tlsca-admin/msp" "$mspid"
  # The organisation's MSP: its CA, its TLS CA, Node OUs.
  mkdir -p "$o/msp/cacerts" "$o/msp/tlscacerts" "$o/tlsca"
  cp "$ORGS/fabric-ca/$org/ca-cert.pem" "$o/msp/cacerts/ca.pem"
  cp "$ORGS/fabric-ca/tls-$org/ca-cert.pem" "$o/msp/tlscacerts/tlsca.pem"
  cp "$ORGS/fabric-ca/tls-$org/ca-cert.pem" "$o/tlsca/tlsca-cert.pem"
  node_ous "$o/msp"
  register "$port" "$cacert" "$o/ca-admin/msp" "$mspid" "${org}admin" adminpw admin "$org"
  enroll "$port" "$cacert" "${org}admin" adminpw "$o/users/admin/msp" "$mspid"
  if [ "$org" = orderer ]; then
    for n in $(seq 1 "$ORDERERS"); do
      register "$port" "$cacert" "$o/ca-admin/msp" "$mspid" "orderer$n" pw "orderer" "$org"
      enroll "$port" "$cacert" "orderer$n" pw "$o/orderers/orderer$n/msp" "$mspid"
      register "$tport" "$tlscacert" "$o/tlsca-admin/msp" "$mspid" "orderer$n" pw "orderer" "$org"
      enroll "$tport" "$tlscacert" "orderer$n" pw "$o/orderers/orderer$n/tls" "$mspid" --enrollment.profile tls --csr.hosts localhost,127.0.0.1
      tls_files "$o/orderers/orderer$n/tls"
    done
  else
    register "$port" "$cacert" "$o/ca-admin/msp" "$mspid" peer0 pw peer "$org"
    enroll "$port" "$cacert" peer0 pw "$o/peers/peer0/msp" "$mspid"
    register "$tport" "$tlscacert" "$o/tlsca-admin/msp" "$mspid" peer0 pw peer "$org"
    enroll "$tport" "$tlscacert" peer0 pw "$o/peers/peer0/tls" "$mspid" --enrollment.profile tls --csr.hosts localhost,127.0.0.1
    tls_files "$o/peers/peer0/tls"
    register "$port" "$cacert" "$o/ca-admin/msp" "$mspid" doctor1 pw client "$org.cardiology" "role=doctor:ecert"
    enroll "$port" "$cacert" doctor1 pw "$o/users/doctor1/msp" "$mspid"
    register "$port" "$cacert" "$o/ca-admin/msp" "$mspid" nurse1 pw client "$org.nursing" "role=nurse:ecert"
    enroll "$port" "$cacert" nurse1 pw "$o/users/nurse1/msp" "$mspid"
    register "$port" "$cacert" "$o/ca-admin/msp" "$mspid" patient1 pw client "$org.patients" "role=patient:ecert,patientId=P-0042:ecert"
    enroll "$port" "$cacert" patient1 pw "$o/users/patient1/msp" "$mspid"
  fi
  echo "    $mspid enrolled"
}

start_peer() { # org-index ops-port gateway-org-index...: peer0 of a hospital, started
  local i=$1 ops=$2; shift 2
  local org=${ORG_NAMES[$i]} port o
  port=$(peer_port "$i")
  local d="$ORGS/$org/peers/peer0"
  {
    echo "id: peer0.$org"
    echo "mspId: ${ORG_MSPS[$i]}"
    echo "mspDir: msp"
    echo "listenAddress: 127.0.0.1:$port"
    echo "dataDir: $DATA/peer0.$org"
    echo "operationsAddress: 127.0.0.1:$ops"
    echo "tls:"
    echo "  certFile: tls/server.crt"
    echo "  keyFile: tls/server.key"
    echo "  clientRootCas: [$ART/all-tls-cas.pem]"
    echo "gatewayPeers:"
    for o in "$@"; do
      echo "  - mspId: ${ORG_MSPS[$o]}"
      echo "    address: localhost:$(peer_port "$o")"
      echo "    tlsRootCertFile: $ORGS/${ORG_NAMES[$o]}/tlsca/tlsca-cert.pem"
    done
  } >"$d/core.yaml"
  start "peer0.$org" "$BIN/medledger-peer" node start --config "$d/core.yaml"
}

orderer_ops_port() { # n: orderer n's operations port (the first four before the peers')
  if [ "$1" -le 4 ]; then echo $((OPS_BASE + $1 - 1)); else echo $((OPS_BASE + 10 + $1)); fi
}

up() {
  is_up && die "the network is already up (run ./network/network.sh down first)"
  case "$ORDERERS" in
    *[!0-9]* | "") die "ORDERERS is a number of orderers, not '$ORDERERS'" ;;
  esac
  [ "$ORDERERS" -ge 4 ] && [ "$ORDERERS" -le "${#ORDERER_PORTS[@]}" ] \
    || die "ORDERERS must be between 4 and ${#ORDERER_PORTS[@]} (the ports in ORDERER_PORTS), not $ORDERERS"
  for p in "${CA_PORTS[@]:0:3}" "${TLSCA_PORTS[@]:0:3}" "${ORDERER_PORTS[@]:0:$ORDERERS}" "${PEER_PORTS[@]}" "${EXPLORER_PORTS[@]}" "$CC_PORT" "$MED_CC_PORT"; do
    port_free "$p" || die "port $p is in use (set CA_PORTS, TLSCA_PORTS, ORDERER_PORTS, PEER_PORTS or EXPLORER_PORTS)"
  done
  build
  mkdir -p "$ORGS" "$LOGS" "$DATA" "$PIDS" "$ART"

  say "starting a CA and a TLS CA per organisation"
  for i in 0 1 2; do start_cas "$i"; done
  for i in 0 1 2; do wait_cas "$i"; done

  say "enrolling nodes, admins and users into $ORGS"
  for i in 0 1 2; do enroll_org "$i"; done

  say "making the genesis block of channel $CHANNEL"
  {
    echo "channel: $CHANNEL"
    echo "organizations:"
    echo "  - name: Hospital1MSP"
    echo "    mspDir: organizations/hospital1/msp"
    echo "    anchorPeers: [{host: localhost, port: ${PEER_PORTS[0]}}]"
    echo "  - name: Hospital2MSP"
    echo "    mspDir: organizations/hospital2/msp"
    echo "    anchorPeers: [{host: localhost, port: ${PEER_PORTS[1]}}]"
    echo "ordererOrganizations:"
    echo "  - name: OrdererMSP"
    echo "    mspDir: organizations/orderer/msp"
    echo "consenters:"
    for n in $(seq 1 "$ORDERERS"); do
      echo "  - {id: $n, host: localhost, port: ${ORDERER_PORTS[$((n-1))]}, mspId: OrdererMSP, identity: organizations/orderer/orderers/orderer$n/msp/signcerts/cert.pem, tlsCert: organizations/orderer/orderers/orderer$n/tls/server.crt}"
    done
    echo "batch: {maxMessageCount: 100, absoluteMaxBytes: 10485760, preferredMaxBytes: 2097152, timeout: 250ms}"
  } >"$NET/configtx.yaml"
  "$BIN/medledger-orderer" genesis --configtx "$NET/configtx.yaml" --output "$ART/$CHANNEL.block" >/dev/null

  # Everyone's TLS CAs, for mutual TLS between nodes.
  cat "$ORGS"/*/tlsca/tlsca-cert.pem >"$ART/all-tls-cas.pem"

  say "starting $ORDERERS BFT orderers"
  for n in $(seq 1 "$ORDERERS"); do
    local d="$ORGS/orderer/orderers/orderer$n"
    cat >"$d/orderer.yaml" <<EOF
consenterId: $n
mspId: OrdererMSP
mspDir: msp
listenAddress: 127.0.0.1:${ORDERER_PORTS[$((n-1))]}
dataDir: $DATA/orderer$n
genesisBlock: $ART/$CHANNEL.block
operationsAddress: 127.0.0.1:$(orderer_ops_port "$n")
tls:
  certFile: tls/server.crt
  keyFile: tls/server.key
  clientRootCas: [$ART/all-tls-cas.pem]
EOF
    start "orderer$n" "$BIN/medledger-orderer" start --config "$d/orderer.yaml"
  done
  for n in $(seq 1 "$ORDERERS"); do
    wait_port "orderer$n" "${ORDERER_PORTS[$((n-1))]}"
    echo "    orderer$n on localhost:${ORDERER_PORTS[$((n-1))]} (operations :$(orderer_ops_port "$n"))"
  done

  say "starting one peer per hospital"
  for i in 0 1; do
    start_peer "$i" $((OPS_BASE + 4 + i)) $((1 - i))
  done
  for i in 0 1; do
    wait_port "peer0.${ORG_NAMES[$i]}" "${PEER_PORTS[$i]}"
    echo "    peer0.${ORG_NAMES[$i]} on localhost:${PEER_PORTS[$i]} (operations :$((OPS_BASE + 4 + i)))"
  done
  for i in 0 1; do
    say "joining peer0.${ORG_NAMES[$i]} to channel $CHANNEL (as the ${ORG_MSPS[$i]} admin)"
    peer_cli "$i" admin channel join -b "$ART/$CHANNEL.block" || { down_quiet; die "peer0.${ORG_NAMES[$i]} could not join $CHANNEL"; }
  done
  say "starting one explorer per hospital (as its doctor1, through its peer)"
  for i in 0 1; do
    start "explorer.${ORG_NAMES[$i]}" env CORE_PEER_LOCALMSPID="${ORG_MSPS[$i]}" \
      CORE_PEER_MSPCONFIGPATH="$ORGS/${ORG_NAMES[$i]}/users/doctor1/msp" \
      "$BIN/medledger-explorer" --listen "127.0.0.1:${EXPLORER_PORTS[$i]}" -C "$CHANNEL" -n medical \
      --peerAddresses "localhost:${PEER_PORTS[$i]}" --tlsRootCertFiles "$ORGS/${ORG_NAMES[$i]}/tlsca/tlsca-cert.pem"
  done
  for i in 0 1; do
    wait_port "explorer.${ORG_NAMES[$i]}" "${EXPLORER_PORTS[$i]}"
    echo "    explorer of ${ORG_MSPS[$i]} on http://localhost:${EXPLORER_PORTS[$i]}"
  done
  say "network is up: channel $CHANNEL, $ORDERERS orderers, 2 peers, 2 explorers, logs in $LOGS"
}

deploy_chaincode() { # name label port binary policy [collections-config]
  local name=$1 label=$2 port=$3 binary=$4 policy=$5 collections=${6:-} out pkg_id
  say "packaging chaincode $name (chaincode as a service on 127.0.0.1:$port)"
  out=$("$BIN/medledger-peer" lifecycle chaincode package "$ART/$name.tar.gz" --label "$label" \
    --address "127.0.0.1:$port")
  pkg_id=${out##*package ID: }
  echo "$pkg_id" >"$ART/$name.package-id"
  echo "    $pkg_id"
  start "chaincode-$name" "$BIN/$binary" --address "127.0.0.1:$port" --package-id "$pkg_id"
  wait_port "chaincode-$name" "$port"
  local def=(-C "$CHANNEL" -n "$name" -v 1.0 --sequence 1 --signature-policy "$policy")
  [ -n "$collections" ] && def+=(--collections-config "$collections")
  for i in 0 1; do
    say "installing and approving $name for ${ORG_MSPS[$i]} (as its admin)"
    peer_cli "$i" admin lifecycle chaincode install "$ART/$name.tar.gz"
    peer_cli "$i" admin lifecycle chaincode approveformyorg "${def[@]}" --package-id "$pkg_id"
  done
  peer_cli 0 admin lifecycle chaincode checkcommitreadiness "${def[@]}"
  say "committing the $name definition (LifecycleEndorsement: a majority of organisations)"
  peer_cli 0 admin lifecycle chaincode commit "${def[@]}"
  peer_cli 1 admin lifecycle chaincode querycommitted -C "$CHANNEL" -n "$name"
}

deploy_cc() {
  is_up || die "the network is not up (run ./network/network.sh up first)"
  [ -f "$PIDS/chaincode-medical.pid" ] && die "the chaincodes are already deployed"
  port_free "$CC_PORT" || die "port $CC_PORT is in use (set CC_PORT before up)"
  port_free "$MED_CC_PORT" || die "port $MED_CC_PORT is in use (set MED_CC_PORT before up)"
  # Either hospital may endorse medical transactions; key-level policies make a record's
  # custodian (and a consent's patient organisation) endorse every change of it.
  deploy_chaincode medical "$MED_LABEL" "$MED_CC_PORT" medical-chaincode \
    "$MED_POLICY" "$NET/collections_config.json"
  deploy_chaincode "$CC_NAME" "$CC_LABEL" "$CC_PORT" kvstore-chaincode "$KV_POLICY"

  say "smoke invoke: doctor1@Hospital1MSP creates medical record R-0001 (content in the transient map)"
  local content
  content=$(printf '%s' '{"resourceType":"Observation","status":"final","code":{"text":"blood pressure"},"valueString":"128/82"}' | base64 | tr -d '\n')
  CORE_PEER_LOCALMSPID=Hospital1MSP CORE_PEER_MSPCONFIGPATH="$ORGS/hospital1/users/doctor1/msp" \
  "$BIN/medledger-peer" chaincode invoke -C "$CHANNEL" -n medical \
    -c '{"function":"CreateRecord","Args":["{\"id\":\"R-0001\",\"patientId\":\"P-0042\",\"resourceType\":\"Observation\"}"]}' \
    --transient "{\"content\":\"$content\",\"salt\":\"$(head -c 32 /dev/urandom | base64 | tr -d '\n')\"}" \
    --peerAddresses "localhost:${PEER_PORTS[0]}" --tlsRootCertFiles "$ORGS/hospital1/tlsca/tlsca-cert.pem"
  say "smoke query on Hospital2's peer as doctor1@Hospital2MSP: the record's public entry"
  CORE_PEER_LOCALMSPID=Hospital2MSP CORE_PEER_MSPCONFIGPATH="$ORGS/hospital2/users/doctor1/msp" \
  "$BIN/medledger-peer" chaincode query -C "$CHANNEL" -n medical -c '{"Args":["GetRecord","R-0001"]}' \
    --peerAddresses "localhost:${PEER_PORTS[1]}" --tlsRootCertFiles "$ORGS/hospital2/tlsca/tlsca-cert.pem"
  say "smoke invoke of $CC_NAME (endorsed by both hospitals, ordered by BFT)"
  CORE_PEER_LOCALMSPID=Hospital1MSP CORE_PEER_MSPCONFIGPATH="$ORGS/hospital1/users/doctor1/msp" \
  "$BIN/medledger-peer" chaincode invoke -C "$CHANNEL" -n "$CC_NAME" \
    -c '{"function":"Put","Args":["record-1","{\"resourceType\":\"Observation\",\"status\":\"final\"}"]}' \
    --peerAddresses "localhost:${PEER_PORTS[0]}" --tlsRootCertFiles "$ORGS/hospital1/tlsca/tlsca-cert.pem"
  CORE_PEER_LOCALMSPID=Hospital2MSP CORE_PEER_MSPCONFIGPATH="$ORGS/hospital2/users/doctor1/msp" \
  "$BIN/medledger-peer" chaincode query -C "$CHANNEL" -n "$CC_NAME" -c '{"Args":["Get","record-1"]}' \
    --peerAddresses "localhost:${PEER_PORTS[1]}" --tlsRootCertFiles "$ORGS/hospital2/tlsca/tlsca-cert.pem"
  say "chaincodes deployed: medical (records, consent, certificates) and $CC_NAME"
}

admin_cli() { # org-index command... : medledger-peer as the admin of hospital <org-index>
  local i=$1; shift
  CORE_PEER_LOCALMSPID=${ORG_MSPS[$i]} CORE_PEER_MSPCONFIGPATH="$ORGS/${ORG_NAMES[$i]}/users/admin/msp" \
    "$BIN/medledger-peer" "$@"
}

metric() { # ops-port name -> the metric's value for the channel (empty if absent)
  local reply
  reply=$(exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3 && cat <&3) || return 0
  printf '%s\n' "$reply" | awk -v m="$2{channel=\"$CHANNEL\"}" '$1 == m { print $2 }'
}

revoke() { # org user: the organisation's CA revokes the user; its admin puts the CRL on the channel
  is_up || die "the network is not up (run ./network/network.sh up first)"
  local i
  case "${1:-}" in
    hospital1|Hospital1MSP) i=0 ;;
    hospital2|Hospital2MSP) i=1 ;;
    *) die "usage: $0 revoke hospital1|hospital2 <user>" ;;
  esac
  local user=${2:-} org=${ORG_NAMES[$i]} mspid=${ORG_MSPS[$i]}
  [ -n "$user" ] || die "usage: $0 revoke hospital1|hospital2 <user>"
  [ -d "$ORGS/$org/users/$user" ] || die "$mspid has no user $user"
  local o="$ORGS/$org" work="$ART/revoke-$org-$user" before
  local ord=(-o "localhost:${ORDERER_PORTS[0]}" -c "$CHANNEL" --cafile "$ORGS/orderer/tlsca/tlsca-cert.pem")
  mkdir -p "$work" "$o/msp/crls"
  say "revoking $user at the $mspid CA and generating its CRL"
  ca revoke -u "https://localhost:${CA_PORTS[$i]}" --tls-certfiles "$ORGS/fabric-ca/$org/tls-cert.pem" \
    --mspdir "$o/ca-admin/msp" --mspid "$mspid" --revoke.name "$user" --revoke.reason keycompromise --gencrl >/dev/null
  cp "$o/ca-admin/msp/crls/crl.pem" "$o/msp/crls/crl.pem"
  say "updating channel $CHANNEL: $mspid's MSP gets the CRL (the update signed by the $mspid admin)"
  before=$(metric $((OPS_BASE + 4)) channel_config_sequence)
  admin_cli "$i" channel fetch config "$work/config_block.pb" "${ord[@]}"
  "$BIN/medledger-peer" config from-block --block "$work/config_block.pb" --output "$work/config.pb"
  "$BIN/medledger-peer" config add-crl --config "$work/config.pb" --org "$mspid" \
    --crl "$o/msp/crls/crl.pem" --output "$work/modified_config.pb"
  "$BIN/medledger-peer" config compute-update --channel_id "$CHANNEL" --original "$work/config.pb" \
    --updated "$work/modified_config.pb" --output "$work/update.pb"
  admin_cli "$i" channel update -f "$work/update.pb" "${ord[@]}"
  local p n
  for p in 0 1; do
    for n in $(seq 1 100); do
      [ "$(metric $((OPS_BASE + 4 + p)) channel_config_sequence)" != "${before:-0}" ] && break
      [ "$n" = 100 ] && die "peer0.${ORG_NAMES[$p]} did not take the new configuration"
      sleep 0.1
    done
  done
  echo "    $user@$mspid is revoked on every node of $CHANNEL (configuration $(metric $((OPS_BASE + 4)) channel_config_sequence))"
}

wait_height() { # ops-port height: until the peer's chain is that high
  local n
  for n in $(seq 1 300); do
    [ "$(metric "$1" ledger_blockchain_height)" -ge "$2" ] 2>/dev/null && return 0
    sleep 0.1
  done
  die "the peer with operations port $1 did not reach height $2"
}

MED_POLICY="OR('Hospital1MSP.peer', 'Hospital2MSP.peer')"
KV_POLICY="AND('Hospital1MSP.peer', 'Hospital2MSP.peer')"
# After Hospital3 joins: any two of the three hospitals endorse the kv chaincode.
KV_POLICY_3="OutOf(2, 'Hospital1MSP.peer', 'Hospital2MSP.peer', 'Hospital3MSP.peer')"

add_org() { # Hospital3: its CAs and enrollments, the channel update signed by a majority of the
            # hospitals' admins, its peer joined, the chaincodes installed and approved, the kv
            # endorsement policy widened to two of three, an invoke Hospital3 endorses
  is_up || die "the network is not up (run ./network/network.sh up first)"
  case "${1:-}" in
    Hospital3|hospital3|Hospital3MSP) ;;
    *) die "usage: $0 addOrg Hospital3" ;;
  esac
  [ -f "$PIDS/chaincode-medical.pid" ] || die "deploy the chaincodes first (./network/network.sh deployCC)"
  [ -f "$PIDS/peer0.hospital3.pid" ] && die "Hospital3 has already joined"
  local p
  for p in "${CA_PORTS[3]}" "${TLSCA_PORTS[3]}" "$HOSPITAL3_PEER_PORT"; do
    port_free "$p" || die "port $p is in use (set CA_PORTS, TLSCA_PORTS or HOSPITAL3_PEER_PORT before up)"
  done
  local work="$ART/addorg-hospital3" before height
  local ord=(-o "localhost:${ORDERER_PORTS[0]}" -c "$CHANNEL" --cafile "$ORGS/orderer/tlsca/tlsca-cert.pem")
  mkdir -p "$work"
  say "starting Hospital3's CA and TLS CA"
  start_cas 3
  wait_cas 3
  say "enrolling Hospital3's admin, peer and users"
  enroll_org 3
  # For Hospital3's own peer. The running nodes are not told: they trust Hospital3's TLS CA
  # from the configuration block that adds it on.
  cat "$ORGS/hospital3/tlsca/tlsca-cert.pem" >>"$ART/all-tls-cas.pem"

  say "updating channel $CHANNEL: Hospital3MSP joins (signed by Hospital1's and Hospital2's admins: a MAJORITY of Admins)"
  before=$(metric $((OPS_BASE + 4)) channel_config_sequence)
  admin_cli 0 channel fetch config "$work/config_block.pb" "${ord[@]}"
  "$BIN/medledger-peer" config from-block --block "$work/config_block.pb" --output "$work/config.pb"
  "$BIN/medledger-peer" config add-org --config "$work/config.pb" --mspid Hospital3MSP \
    --msp-dir "$ORGS/hospital3/msp" --anchor-peer "localhost:$HOSPITAL3_PEER_PORT" --output "$work/modified_config.pb"
  "$BIN/medledger-peer" config compute-update --channel_id "$CHANNEL" --original "$work/config.pb" \
    --updated "$work/modified_config.pb" --output "$work/update.pb"
  admin_cli 0 channel signconfigtx -f "$work/update.pb"
  admin_cli 1 channel update -f "$work/update.pb" "${ord[@]}"
  local n
  for p in 0 1; do
    for n in $(seq 1 100); do
      [ "$(metric $((OPS_BASE + 4 + p)) channel_config_sequence)" != "${before:-0}" ] && break
      [ "$n" = 100 ] && die "peer0.${ORG_NAMES[$p]} did not take the new configuration"
      sleep 0.1
    done
  done

  say "starting peer0.hospital3 (localhost:$HOSPITAL3_PEER_PORT) and joining it to $CHANNEL: it replays every block"
  start_peer 3 $((OPS_BASE + 6)) 0 1
  wait_port peer0.hospital3 "$HOSPITAL3_PEER_PORT"
  peer_cli 3 admin channel join -b "$ART/$CHANNEL.block"
  height=$(metric $((OPS_BASE + 4)) ledger_blockchain_height)
  wait_height $((OPS_BASE + 6)) "$height"
  echo "    peer0.hospital3 at height $(metric $((OPS_BASE + 6)) ledger_blockchain_height), configuration $(metric $((OPS_BASE + 6)) channel_config_sequence) (the others: $(metric $((OPS_BASE + 4)) channel_config_sequence))"

  say "installing the chaincodes on peer0.hospital3; Hospital3 approves their definitions"
  local med=(-C "$CHANNEL" -n medical -v 1.0 --sequence 1 --signature-policy "$MED_POLICY" --collections-config "$NET/collections_config.json")
  peer_cli 3 admin lifecycle chaincode install "$ART/medical.tar.gz"
  peer_cli 3 admin lifecycle chaincode approveformyorg "${med[@]}" --package-id "$(cat "$ART/medical.package-id")"
  peer_cli 3 admin lifecycle chaincode install "$ART/$CC_NAME.tar.gz"
  say "widening $CC_NAME's endorsement policy to two of the three hospitals (sequence 2, approved by all three)"
  local kv=(-C "$CHANNEL" -n "$CC_NAME" -v 1.0 --sequence 2 --signature-policy "$KV_POLICY_3")
  for p in 0 1 3; do
    peer_cli "$p" admin lifecycle chaincode approveformyorg "${kv[@]}" --package-id "$(cat "$ART/$CC_NAME.package-id")"
  done
  peer_cli 0 admin lifecycle chaincode checkcommitreadiness "${kv[@]}"
  peer_cli 0 admin lifecycle chaincode commit "${kv[@]}"
  wait_height $((OPS_BASE + 6)) "$(metric $((OPS_BASE + 4)) ledger_blockchain_height)"

  say "doctor1@Hospital3MSP invokes $CC_NAME through peer0.hospital3: endorsed by Hospital3 and one other hospital"
  CORE_PEER_LOCALMSPID=Hospital3MSP CORE_PEER_MSPCONFIGPATH="$ORGS/hospital3/users/doctor1/msp" \
  "$BIN/medledger-peer" chaincode invoke -C "$CHANNEL" -n "$CC_NAME" \
    -c '{"function":"Put","Args":["hospital3-record","{\"resourceType\":\"Observation\",\"status\":\"final\"}"]}' \
    --peerAddresses "localhost:$HOSPITAL3_PEER_PORT" --tlsRootCertFiles "$ORGS/hospital3/tlsca/tlsca-cert.pem"
  CORE_PEER_LOCALMSPID=Hospital1MSP CORE_PEER_MSPCONFIGPATH="$ORGS/hospital1/users/doctor1/msp" \
  "$BIN/medledger-peer" chaincode query -C "$CHANNEL" -n "$CC_NAME" -c '{"Args":["Get","hospital3-record"]}' \
    --peerAddresses "localhost:${PEER_PORTS[0]}" --tlsRootCertFiles "$ORGS/hospital1/tlsca/tlsca-cert.pem"
  echo "    Hospital3MSP is a member of $CHANNEL: peer0.hospital3 on localhost:$HOSPITAL3_PEER_PORT (operations :$((OPS_BASE + 6)))"
}

case "${1:-}" in
  up) up ;;
  deployCC) deploy_cc ;;
  addOrg) shift; add_org "$@" ;;
  revoke) shift; revoke "$@" ;;
  down) say "stopping the network"; down_quiet; echo "    stopped and cleaned" ;;
  *) echo "usage: $0 up|deployCC|addOrg Hospital3|revoke <org> <user>|down"; exit 2 ;;
esac
