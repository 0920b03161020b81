//! A set of real BFT orderers for tests: identities, TLS material, configurations on free
//! loopback ports, the consenter entries for a genesis block, and starting them in-process.

use std::path::Path;

use medledger_orderer::byzantine::Misbehaviour;
use medledger_orderer::node::{OrdererConfig, RunningOrderer, TlsFiles, start_byzantine};
use medledger_proto::common::Consenter;
use medledger_proto::orderer::{BroadcastResponse, atomic_broadcast_client::AtomicBroadcastClient};

use crate::TestOrg;

/// Orderers ready to start once the genesis block is written to `genesis_path`.
pub struct OrdererSet {
    pub org: TestOrg,
    pub configs: Vec<OrdererConfig>,
    pub consenters: Vec<Consenter>,
    pub genesis_path: std::path::PathBuf,
}

/// A port for a node that binds it later. Ports the kernel hands out for `:0` come from the
/// ephemeral range, which every outgoing connection also draws its source port from: between
/// choosing and binding, another test's client can take it ("Address already in use"). Ports
/// below that range are only taken by listeners.
/// A port is handed out once per test process: tests run in parallel threads, and two of them
/// picking the same free port before either binds it collided ("Address already in use").
pub fn free_port() -> anyhow::Result<u16> {
    const BELOW_EPHEMERAL: std::ops::Range<u16> = 20_000..32_000;
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    for _ in 0..200 {
        let port = rand::Rng::gen_range(&mut rand::thread_rng(), BELOW_EPHEMERAL);
        let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port);
            return Ok(port);
        }
    }
    anyhow::bail!("no free port below the ephemeral range")
}

impl OrdererSet {
    /// `n` orderers of `OrdererMSP` under `dir`; `client_tls_cas` are the TLS CAs (PEM) of the
    /// organisations whose nodes connect with client certificates (peers).
    pub fn prepare(dir: &Path, n: u32, client_tls_cas: &[&str]) -> anyhow::Result<Self> {
        let org = TestOrg::new("OrdererMSP")?;
        let genesis_path = dir.join("genesis.block");
        let mut configs = Vec::new();
        let mut consenters = Vec::new();
        for id in 1..=n {
            let home = dir.join(format!("orderer{id}"));
            let ident = org.identity(&format!("orderer{id}"), "orderer", &[])?;
            org.write_msp(&home.join("msp"), &ident)?;
            let (cert, key) = org.tls_pair(&format!("orderer{id}"))?;
            std::fs::create_dir_all(home.join("tls"))?;
            std::fs::write(home.join("tls/server.crt"), &cert)?;
            std::fs::write(home.join("tls/server.key"), &key)?;
            let mut cas = vec![org.tls_ca.cert_pem().to_owned()];
            cas.extend(client_tls_cas.iter().map(|c| c.to_string()));
            std::fs::write(home.join("tls/client-cas.pem"), cas.join("\n"))?;
            let port = free_port()?;
            configs.push(OrdererConfig {
                consenter_id: id,
                msp_id: "OrdererMSP".into(),
                msp_dir: home.join("msp"),
                listen_address: format!("127.0.0.1:{port}"),
                data_dir: home.join("data"),
                genesis_block: genesis_path.clone(),
                tls: Some(TlsFiles {
                    cert_file: home.join("tls/server.crt"),
                    key_file: home.join("tls/server.key"),
                    client_root_cas: vec![home.join("tls/client-cas.pem")],
                    client_auth_required: false,
                }),
                tick_ms: 20,
                operations_address: Some("127.0.0.1:0".into()),
                max_recv_msg_size: medledger_common::config::DEFAULT_MAX_MESSAGE_BYTES,
                max_send_msg_size: medledger_common::config::DEFAULT_MAX_MESSAGE_BYTES,
            });
            consenters.push(Consenter {
                id,
                host: "127.0.0.1".into(),
                port: u32::from(port),
                msp_id: "OrdererMSP".into(),
                identity: ident.cert_pem().to_vec(),
                client_tls_cert: cert.clone(),
                server_tls_cert: cert,
            });
        }
        Ok(Self {
            org,
            configs,
            consenters,
            genesis_path,
        })
    }

    /// Starts all orderers in this process.
    pub async fn start_all(&self) -> anyhow::Result<Vec<Option<RunningOrderer>>> {
        self.start_all_with(&[]).await
    }

    /// Starts all orderers in this process, orderer `id` with the faults `byzantine` gives it.
    pub async fn start_all_with(
        &self,
        byzantine: &[(u32, Misbehaviour)],
    ) -> anyhow::Result<Vec<Option<RunningOrderer>>> {
        let mut out = Vec::new();
        for c in &self.configs {
            let faults = byzantine
                .iter()
                .find(|(id, _)| *id == c.consenter_id)
                .map(|(_, m)| *m)
                .unwrap_or_default();
            out.push(Some(start_byzantine(c.clone(), faults).await?));
        }
        Ok(out)
    }

    /// `host:port` of orderer `id` as its TLS certificate names it.
    pub fn address(&self, id: u32) -> String {
        let port = self.configs[id as usize - 1]
            .listen_address
            .rsplit(':')
            .next()
            .unwrap_or("0")
            .to_owned();
        format!("localhost:{port}")
    }

    /// Every block orderer `id` has, oldest to newest, as a Deliver of them returns them (whole
    /// blocks or HEADER_WITH_SIG attestations), read as `reader`.
    pub async fn deliver(
        &self,
        id: u32,
        reader: &medledger_common::SigningIdentity,
        content: medledger_proto::orderer::seek_info::SeekContentType,
    ) -> anyhow::Result<Vec<medledger_proto::common::Block>> {
        use medledger_proto::orderer::seek_position::Type as Seek;
        use medledger_proto::orderer::{
            SeekInfo, SeekNewest, SeekOldest, SeekPosition, deliver_response,
            seek_info::SeekBehavior,
        };
        let root = self.org.tls_ca.cert_pem().as_bytes().to_vec();
        let ch = medledger_peer::comm::dial(&self.address(id), &[root], None)
            .await
            .map_err(anyhow::Error::msg)?;
        let seek = SeekInfo {
            start: Some(SeekPosition {
                r#type: Some(Seek::Oldest(SeekOldest {})),
            }),
            stop: Some(SeekPosition {
                r#type: Some(Seek::Newest(SeekNewest {})),
            }),
            behavior: SeekBehavior::FailIfNotReady as i32,
            content_type: content as i32,
            ..Default::default()
        };
        let env = medledger_common::protoutil::signed_envelope(
            medledger_proto::common::HeaderType::DeliverSeekInfo,
            &self.channel_id()?,
            prost::Message::encode_to_vec(&seek),
            reader,
        )?;
        let mut stream = AtomicBroadcastClient::new(ch)
            .deliver(tokio_stream::once(env))
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(m) = stream.message().await? {
            match m.r#type {
                Some(deliver_response::Type::Block(b)) => out.push(b),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The channel the genesis block at `genesis_path` is for.
    fn channel_id(&self) -> anyhow::Result<String> {
        let block = <medledger_proto::common::Block as prost::Message>::decode(
            std::fs::read(&self.genesis_path)?.as_slice(),
        )?;
        Ok(medledger_common::channelconfig::ChannelConfig::from_block(&block)?.channel_id)
    }

    /// A Broadcast of one envelope to orderer `id`; its single answer.
    pub async fn broadcast(
        &self,
        id: u32,
        env: medledger_proto::common::Envelope,
    ) -> anyhow::Result<BroadcastResponse> {
        let root = self.org.tls_ca.cert_pem().as_bytes().to_vec();
        let ch = medledger_peer::comm::dial(&self.address(id), &[root], None)
            .await
            .map_err(anyhow::Error::msg)?;
        let mut stream = AtomicBroadcastClient::new(ch)
            .broadcast(tokio_stream::once(env))
            .await?
            .into_inner();
        stream
            .message()
            .await?
            .ok_or_else(|| anyhow::anyhow!("no broadcast answer"))
    }
}

/// Two hospitals and four orderers on one channel, its genesis block made but not written:
/// the fixture of the configuration-update tests.
pub struct HospitalChannel {
    pub h1: TestOrg,
    pub h2: TestOrg,
    pub orderers: OrdererSet,
    pub genesis: medledger_proto::common::Block,
    /// The genesis block's configuration.
    pub config: medledger_common::channelconfig::ChannelConfig,
    _dir: tempfile::TempDir,
}

impl HospitalChannel {
    pub fn prepare(channel: &str) -> anyhow::Result<Self> {
        use medledger_common::channelconfig::{ChannelConfig, ChannelProfile, genesis_block};
        let dir = tempfile::tempdir()?;
        let (h1, h2) = (TestOrg::new("Hospital1MSP")?, TestOrg::new("Hospital2MSP")?);
        let orderers = OrdererSet::prepare(dir.path(), 4, &[])?;
        let genesis = genesis_block(&ChannelProfile {
            channel_id: channel.into(),
            application_orgs: vec![h1.profile(), h2.profile()],
            orderer_orgs: vec![orderers.org.profile()],
            consenters: orderers.consenters.clone(),
            batch_size: medledger_proto::orderer::BatchSize {
                max_message_count: 10,
                absolute_max_bytes: 1 << 20,
                preferred_max_bytes: 512 << 10,
            },
            batch_timeout: std::time::Duration::from_millis(200),
        })?;
        Ok(Self {
            config: ChannelConfig::from_block(&genesis)?,
            h1,
            h2,
            orderers,
            genesis,
            _dir: dir,
        })
    }
}
