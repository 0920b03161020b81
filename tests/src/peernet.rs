//! A two-hospital network in one test process: an ordering stand-in, one peer per hospital
//! (TLS, real RocksDB ledgers, real gRPC on loopback), and the example chaincode served by the
//! Rust shim; plus a Gateway client that signs as Fabric clients do.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use medledger_common::SigningIdentity;
use medledger_common::channelconfig::{ChannelProfile, OrgProfile, genesis_block};
use medledger_common::protoutil::{Invocation, build_signed_proposal, unpack_envelope};
use medledger_peer::channel::definition::ConnectionInfo;
use medledger_peer::execution::plugins::PluginRegistry;
use medledger_peer::node::{
    ChaincodeConfig, ChannelJoinConfig, DeliveryClientConfig, PeerConfig, PeerEndpointConfig,
    PrivateDataConfig, RunningPeer, TlsFiles, start,
};
use medledger_proto::common::Envelope;
use medledger_proto::gateway::gateway_client::GatewayClient;
use medledger_proto::gateway::{
    CommitStatusRequest, EndorseRequest, EvaluateRequest, SignedCommitStatusRequest, SubmitRequest,
};
use medledger_proto::orderer::BatchSize;
use medledger_proto::protos::{
    ChaincodeAction, ChaincodeActionPayload, ProposalResponsePayload, Transaction,
};
use prost::Message;
use tonic::transport::Channel;

use crate::TestOrg;
use crate::ordernet::OrdererSet;

pub const CHANNEL: &str = "medchannel";
pub const CHAINCODE: &str = "kv";
pub const PACKAGE_ID: &str = "kvstore_1.0:0f1e2d3c";

/// The running network.
pub struct PeerNet {
    pub dir: tempfile::TempDir,
    pub orgs: Vec<TestOrg>,
    pub orderers: OrdererSet,
    pub running_orderers: Vec<Option<medledger_orderer::node::RunningOrderer>>,
    pub peers: Vec<Option<RunningPeer>>,
    pub configs: Vec<PeerConfig>,
    /// A Hospital1 client whose certificate the channel's MSP lists as revoked.
    pub revoked_client: SigningIdentity,
    chaincode_stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// How to build a [`PeerNet`].
#[derive(Clone)]
pub struct NetOptions {
    /// Number of hospitals (Hospital1MSP, Hospital2MSP, ...), one peer each.
    pub orgs: usize,
    /// The chaincode's endorsement policy.
    pub policy: String,
    pub execute_timeout_ms: u64,
    /// `Some((address, package id))`: use that chaincode server instead of the Rust example.
    pub external: Option<(String, String)>,
    /// Hospital2's peer is not started: the caller runs it from `configs[1]`.
    pub separate_peer2: bool,
    /// Fabric `collections_config.json` for the chaincode.
    pub collections: Option<String>,
    pub private_data: PrivateDataConfig,
    pub delivery_client: DeliveryClientConfig,
    /// Orderers (by consenter id) started with faults.
    pub byzantine_orderers: Vec<(u32, medledger_orderer::byzantine::Misbehaviour)>,
}

impl NetOptions {
    pub fn new(policy: &str) -> Self {
        Self {
            orgs: 2,
            policy: policy.into(),
            execute_timeout_ms: 5_000,
            external: None,
            separate_peer2: false,
            collections: None,
            private_data: PrivateDataConfig::default(),
            delivery_client: DeliveryClientConfig::default(),
            byzantine_orderers: Vec::new(),
        }
    }
}

impl PeerNet {
    /// Starts everything with the Rust example chaincode; `policy` is its endorsement policy.
    pub async fn start(policy: &str, execute_timeout_ms: u64) -> anyhow::Result<Self> {
        Self::start_with(policy, execute_timeout_ms, None).await
    }

    /// Like [`PeerNet::start`], but Hospital2's peer is not started: the caller runs it (as a
    /// process) from `configs[1]`, whose port is already chosen.
    pub async fn start_without_peer2(policy: &str) -> anyhow::Result<Self> {
        Self::build(NetOptions {
            separate_peer2: true,
            ..NetOptions::new(policy)
        })
        .await
    }

    /// Starts everything; with `external = Some((address, package id))` the peers use that
    /// chaincode server instead of the Rust example.
    pub async fn start_with(
        policy: &str,
        execute_timeout_ms: u64,
        external: Option<(String, String)>,
    ) -> anyhow::Result<Self> {
        Self::build(NetOptions {
            execute_timeout_ms,
            external,
            ..NetOptions::new(policy)
        })
        .await
    }

    /// Starts a network as `opts` describe.
    pub async fn build(opts: NetOptions) -> anyhow::Result<Self> {
        let NetOptions {
            orgs: org_count,
            policy,
            execute_timeout_ms,
            external,
            separate_peer2,
            collections,
            private_data,
            delivery_client,
            byzantine_orderers,
        } = opts;
        let policy = policy.as_str();
        let dir = tempfile::tempdir()?;
        let orgs = (1..=org_count)
            .map(|i| TestOrg::new(&format!("Hospital{i}MSP")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let collections_path = match collections {
            Some(json) => {
                let p = dir.path().join("collections_config.json");
                std::fs::write(&p, json)?;
                Some(p)
            }
            None => None,
        };

        let (cc_stop, cc_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (cc_address, package_id) = match external {
            Some(e) => e,
            None => {
                let cc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let cc_address = cc_listener.local_addr()?.to_string();
                tokio::spawn(medledger_shim::serve_with_listener(
                    cc_listener,
                    PACKAGE_ID.into(),
                    None,
                    medledger_shim::example::KvStore,
                    async {
                        let _ = cc_stop_rx.await;
                    },
                ));
                (cc_address, PACKAGE_ID.to_owned())
            }
        };

        let revoked_client = orgs[0].identity("revoked", "client", &[])?;
        let crl = orgs[0].ca.crl(
            &[(
                revoked_client.certificate().serial.clone(),
                medledger_common::msp::unix_now() - 10,
            )],
            1,
            3600,
        )?;
        let tls_roots: Vec<String> = orgs
            .iter()
            .map(|o| o.tls_ca.cert_pem().to_owned())
            .collect();
        let tls_roots: Vec<&str> = tls_roots.iter().map(String::as_str).collect();
        let orderers = OrdererSet::prepare(dir.path(), 4, &tls_roots)?;
        let profile = ChannelProfile {
            channel_id: CHANNEL.into(),
            application_orgs: orgs
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    let mut msp = o.msp_config();
                    if i == 0 {
                        msp.revocation_list = vec![crl.clone().into_bytes()];
                    }
                    OrgProfile {
                        msp,
                        anchor_peers: vec![],
                    }
                })
                .collect(),
            orderer_orgs: vec![OrgProfile {
                msp: orderers.org.msp_config(),
                anchor_peers: vec![],
            }],
            consenters: orderers.consenters.clone(),
            batch_size: BatchSize {
                max_message_count: 100,
                absolute_max_bytes: 10 << 20,
                preferred_max_bytes: 2 << 20,
            },
            batch_timeout: Duration::from_millis(200),
        };
        let genesis = genesis_block(&profile)?;
        let genesis_path = orderers.genesis_path.clone();
        std::fs::write(&genesis_path, genesis.encode_to_vec())?;
        let running_orderers = orderers.start_all_with(&byzantine_orderers).await?;

        let mut configs = Vec::new();
        for (i, org) in orgs.iter().enumerate() {
            let home = dir.path().join(format!("peer{i}"));
            let peer_id = org.identity(&format!("peer0.hospital{}", i + 1), "peer", &[])?;
            org.write_msp(&home.join("msp"), &peer_id)?;
            let (cert, key) = org.tls_pair("peer0")?;
            std::fs::create_dir_all(home.join("tls"))?;
            std::fs::write(home.join("tls/server.crt"), cert)?;
            std::fs::write(home.join("tls/server.key"), key)?;
            let mut roots = Vec::new();
            for (j, o) in orgs.iter().enumerate() {
                let p = home.join(format!("tls/ca{j}.pem"));
                std::fs::write(&p, o.tls_ca.cert_pem())?;
                roots.push(p);
            }
            configs.push(PeerConfig {
                id: format!("peer0.hospital{}", i + 1),
                msp_id: org.mspid.clone(),
                msp_dir: home.join("msp"),
                listen_address: "127.0.0.1:0".into(),
                data_dir: home.join("data"),
                tls: Some(TlsFiles {
                    cert_file: home.join("tls/server.crt"),
                    key_file: home.join("tls/server.key"),
                    client_root_cas: roots,
                    client_auth_required: false,
                }),
                gateway_peers: vec![],
                chaincode_execute_timeout_ms: execute_timeout_ms,
                operations_address: Some("127.0.0.1:0".into()),
                max_recv_msg_size: medledger_common::config::DEFAULT_MAX_MESSAGE_BYTES,
                max_send_msg_size: medledger_common::config::DEFAULT_MAX_MESSAGE_BYTES,
                audit: None,
                channels: vec![ChannelJoinConfig {
                    genesis_block: genesis_path.clone(),
                    chaincodes: vec![ChaincodeConfig {
                        name: CHAINCODE.into(),
                        version: "1.0".into(),
                        package_id: package_id.clone(),
                        connection: ConnectionInfo {
                            address: cc_address.clone(),
                            tls_required: false,
                            root_cert: String::new(),
                            domain: String::new(),
                        },
                        endorsement_policy: policy.into(),
                        endorsement_plugin: "escc".into(),
                        validation_plugin: "vscc".into(),
                        collections_config: collections_path.clone(),
                    }],
                }],
                private_data: private_data.clone(),
                delivery_client: delivery_client.clone(),
            });
        }
        // Every peer knows every other (gateway endorsement, private data): ports are fixed first.
        for c in &mut configs {
            let port = crate::ordernet::free_port()?;
            c.listen_address = format!("127.0.0.1:{port}");
        }
        for i in 0..configs.len() {
            let mut others = Vec::new();
            for (j, o) in orgs.iter().enumerate() {
                if j == i {
                    continue;
                }
                let port: std::net::SocketAddr = configs[j].listen_address.parse()?;
                others.push(PeerEndpointConfig {
                    msp_id: o.mspid.clone(),
                    address: format!("localhost:{}", port.port()),
                    tls_root_cert_file: Some(
                        configs[i].tls.as_ref().context("tls")?.client_root_cas[j].clone(),
                    ),
                });
            }
            configs[i].gateway_peers = others;
        }
        let mut net = Self {
            dir,
            orgs,
            orderers,
            running_orderers,
            peers: (0..org_count).map(|_| None).collect(),
            configs,
            revoked_client,
            chaincode_stop: Some(cc_stop),
        };
        for i in (0..org_count).rev() {
            if i == 1 && separate_peer2 {
                continue;
            }
            net.start_peer(i).await?;
        }
        Ok(net)
    }

    /// Starts (or restarts) peer `i` with its configuration; the port is fixed after the first start.
    pub async fn start_peer(&mut self, i: usize) -> anyhow::Result<()> {
        let peer = start(self.configs[i].clone(), PluginRegistry::default()).await?;
        self.configs[i].listen_address = peer.address.to_string();
        self.peers[i] = Some(peer);
        Ok(())
    }

    /// Stops peer `i`.
    pub async fn stop_peer(&mut self, i: usize) {
        if let Some(p) = self.peers[i].take() {
            p.stop().await;
        }
    }

    /// Address of peer `i` as `localhost:port` (its TLS certificate names localhost).
    pub fn address(&self, i: usize) -> String {
        format!(
            "localhost:{}",
            self.configs[i]
                .listen_address
                .rsplit(':')
                .next()
                .unwrap_or("0")
        )
    }

    /// The channel of peer `i`.
    pub async fn channel(
        &self,
        i: usize,
    ) -> anyhow::Result<std::sync::Arc<medledger_peer::channel::Channel>> {
        self.peers[i]
            .as_ref()
            .context("peer stopped")?
            .channel(CHANNEL)
            .await
            .context("channel")
    }

    /// A Gateway client to peer `i` signing as `signer`.
    pub async fn gateway(&self, i: usize, signer: SigningIdentity) -> anyhow::Result<Gateway> {
        let root = self.orgs[i].tls_ca.cert_pem().as_bytes().to_vec();
        let ch = medledger_peer::comm::dial(&self.address(i), &[root], None)
            .await
            .map_err(anyhow::Error::msg)?;
        // As Fabric's clients do, take messages up to the peer's 100 MiB limit.
        let limit = medledger_common::config::DEFAULT_MAX_MESSAGE_BYTES;
        Ok(Gateway {
            client: GatewayClient::new(ch)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            signer,
        })
    }

    /// Waits until every running peer reaches `height`.
    pub async fn wait_height(&self, height: u64) -> anyhow::Result<()> {
        for i in 0..self.peers.len() {
            if self.peers[i].is_none() {
                continue;
            }
            let ch = self.channel(i).await?;
            let mut h = ch.ledger.subscribe();
            tokio::time::timeout(Duration::from_secs(20), async {
                while *h.borrow() < height {
                    if h.changed().await.is_err() {
                        break;
                    }
                }
            })
            .await
            .with_context(|| format!("peer {i} did not reach height {height}"))?;
        }
        Ok(())
    }
}

impl Drop for PeerNet {
    fn drop(&mut self) {
        if let Some(s) = self.chaincode_stop.take() {
            let _ = s.send(());
        }
    }
}

/// A Fabric Gateway client: builds, signs and sends what `@hyperledger/fabric-gateway` sends.
pub struct Gateway {
    pub client: GatewayClient<Channel>,
    pub signer: SigningIdentity,
}

/// The transaction result inside a prepared envelope (where the Node client reads it).
pub fn result_of(env: &Envelope) -> anyhow::Result<Vec<u8>> {
    let u = unpack_envelope(env)?;
    let tx = Transaction::decode(u.payload.data.as_slice())?;
    let action = tx.actions.first().context("no action")?;
    let cap = ChaincodeActionPayload::decode(action.payload.as_slice())?;
    let prp = ProposalResponsePayload::decode(
        cap.action
            .context("no endorsed action")?
            .proposal_response_payload
            .as_slice(),
    )?;
    let ca = ChaincodeAction::decode(prp.extension.as_slice())?;
    Ok(ca.response.context("no response")?.payload)
}

impl Gateway {
    fn invocation(&self, args: &[&str], transient: HashMap<String, Vec<u8>>) -> Invocation {
        Invocation {
            channel: CHANNEL.into(),
            chaincode: CHAINCODE.into(),
            args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            transient,
            is_init: false,
        }
    }

    pub async fn evaluate(&mut self, args: &[&str]) -> Result<Vec<u8>, tonic::Status> {
        self.evaluate_with(args, HashMap::new()).await
    }

    /// Evaluates with a transient map.
    pub async fn evaluate_with(
        &mut self,
        args: &[&str],
        transient: HashMap<String, Vec<u8>>,
    ) -> Result<Vec<u8>, tonic::Status> {
        let (sp, tx_id) = build_signed_proposal(&self.invocation(args, transient), &self.signer)
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        let r = self
            .client
            .evaluate(EvaluateRequest {
                transaction_id: tx_id,
                channel_id: CHANNEL.into(),
                proposed_transaction: Some(sp),
                target_organizations: vec![],
            })
            .await?;
        Ok(r.into_inner().result.unwrap_or_default().payload)
    }

    /// Endorse only: the transaction id and the unsigned prepared envelope.
    pub async fn endorse(&mut self, args: &[&str]) -> Result<(String, Envelope), tonic::Status> {
        self.endorse_with(args, HashMap::new()).await
    }

    /// Endorse with a transient map (private inputs).
    pub async fn endorse_with(
        &mut self,
        args: &[&str],
        transient: HashMap<String, Vec<u8>>,
    ) -> Result<(String, Envelope), tonic::Status> {
        let (sp, tx_id) = build_signed_proposal(&self.invocation(args, transient), &self.signer)
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        let r = self
            .client
            .endorse(EndorseRequest {
                transaction_id: tx_id.clone(),
                channel_id: CHANNEL.into(),
                proposed_transaction: Some(sp),
                endorsing_organizations: vec![],
            })
            .await?;
        Ok((
            tx_id,
            r.into_inner().prepared_transaction.unwrap_or_default(),
        ))
    }

    /// Signs a prepared envelope and submits it.
    pub async fn submit_prepared(
        &mut self,
        tx_id: &str,
        mut env: Envelope,
    ) -> Result<(), tonic::Status> {
        env.signature = self
            .signer
            .sign(&env.payload)
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        self.client
            .submit(SubmitRequest {
                transaction_id: tx_id.into(),
                channel_id: CHANNEL.into(),
                prepared_transaction: Some(env),
            })
            .await?;
        Ok(())
    }

    /// Waits for the commit and returns (validation code, block number).
    pub async fn commit_status(&mut self, tx_id: &str) -> Result<(i32, u64), tonic::Status> {
        let request = CommitStatusRequest {
            transaction_id: tx_id.into(),
            channel_id: CHANNEL.into(),
            identity: self.signer.serialized().to_vec(),
        }
        .encode_to_vec();
        let signature = self
            .signer
            .sign(&request)
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            self.client
                .commit_status(SignedCommitStatusRequest { request, signature }),
        )
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("commit status wait"))??
        .into_inner();
        Ok((r.result, r.block_number))
    }

    /// Endorse, submit, wait: returns (txid, code, block, result).
    pub async fn submit(&mut self, args: &[&str]) -> anyhow::Result<(String, i32, u64, Vec<u8>)> {
        self.submit_with(args, HashMap::new()).await
    }

    /// [`Gateway::submit`] with a transient map.
    pub async fn submit_with(
        &mut self,
        args: &[&str],
        transient: HashMap<String, Vec<u8>>,
    ) -> anyhow::Result<(String, i32, u64, Vec<u8>)> {
        let (tx_id, env) = self.endorse_with(args, transient).await?;
        let result = result_of(&env)?;
        self.submit_prepared(&tx_id, env).await?;
        let (code, block) = self.commit_status(&tx_id).await?;
        if code != 0 && code != 11 {
            bail!("transaction {tx_id} committed with code {code}");
        }
        Ok((tx_id, code, block, result))
    }
}

/// Data directory of a peer in the network.
pub fn data_dir(net: &PeerNet, i: usize) -> PathBuf {
    net.configs[i].data_dir.clone()
}

/// The collections the medical chaincode uses: one shared collection per pair of hospitals
/// (each hospital's implicit collection holds its own records).
pub fn medical_collections(orgs: usize) -> String {
    let mut entries = Vec::new();
    for a in 1..=orgs {
        for b in a + 1..=orgs {
            let (x, y) = (format!("Hospital{a}MSP"), format!("Hospital{b}MSP"));
            entries.push(serde_json::json!({
                "name": format!("shared_{x}_{y}"),
                "policy": format!("OR('{x}.member', '{y}.member')"),
                "requiredPeerCount": 1, "maxPeerCount": 1, "blockToLive": 0,
                "memberOnlyRead": true, "memberOnlyWrite": true
            }));
        }
    }
    serde_json::Value::Array(entries).to_string()
}

/// A network of `orgs` hospitals running the medical chaincode (as chaincode [`CHAINCODE`]),
/// endorsed by any one hospital's peer.
pub async fn start_medical(orgs: usize) -> anyhow::Result<PeerNet> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let package = "medical_0.1:5e1f";
    tokio::spawn(medledger_shim::serve_with_listener(
        listener,
        package.into(),
        None,
        medledger_medical_chaincode::MedicalChaincode,
        std::future::pending(),
    ));
    let policy = (1..=orgs)
        .map(|i| format!("'Hospital{i}MSP.peer'"))
        .collect::<Vec<_>>()
        .join(", ");
    PeerNet::build(NetOptions {
        orgs,
        external: Some((address, package.into())),
        collections: Some(medical_collections(orgs)),
        execute_timeout_ms: 10_000,
        ..NetOptions::new(&format!("OR({policy})"))
    })
    .await
}
