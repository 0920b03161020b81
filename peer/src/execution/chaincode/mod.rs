//! Chaincode support: the peer dials chaincode servers (chaincode-as-a-service, Fabric's
//! `protos.Chaincode/Connect`), completes the REGISTER / REGISTERED / READY handshake, and runs
//! transactions over the stream, answering the chaincode's state calls from a [`TxSimulator`].
//! One stream per chaincode carries all its concurrent transactions, keyed by channel and txid.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use medledger_common::config::MessageLimits;
use medledger_common::refusal::log_refusal;
use medledger_proto::protos::chaincode_client::ChaincodeClient;
use medledger_proto::protos::chaincode_message::Type as Msg;
use medledger_proto::protos::{
    ChaincodeEvent, ChaincodeId, ChaincodeInput, ChaincodeMessage, DelState, GetHistoryForKey,
    GetState, GetStateByRange, GetStateMetadata, PutState, PutStateMetadata, QueryMetadata,
    QueryResponse, QueryResponseMetadata, QueryResultBytes, QueryStateClose, QueryStateNext,
    Response, SignedProposal, StateMetadata, StateMetadataResult,
};
use medledger_proto::queryresult::{KeyModification, Kv};
use prost::Message;
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::channel::definition::ChaincodeEndpoint;
use crate::execution::simulator::{SimulationError, TxSimulator};

mod handler;

/// Results per QueryResponse batch, as Fabric sends them.
const QUERY_BATCH: usize = 100;

/// Unfinished query iterators one transaction may hold: each keeps up to the simulator's
/// `TOTAL_QUERY_LIMIT` rows in memory until exhausted or closed, and the chaincode (a remote
/// server) decides how many it opens.
const MAX_OPEN_QUERY_ITERATORS: usize = 64;

/// Why a chaincode execution failed (the proposal then gets status 500, no endorsement).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("chaincode {name} is unavailable at {address}: {reason}")]
    Unavailable {
        name: String,
        address: String,
        reason: String,
    },
    #[error("chaincode registration failed: {0}")]
    Registration(String),
    #[error("timeout expired while executing transaction")]
    Timeout,
    #[error("chaincode stream terminated")]
    StreamTerminated,
    #[error("transaction returned with failure: {0}")]
    Failed(String),
    #[error("transaction {0} is already executing on this chaincode")]
    Duplicate(String),
}

struct Connection {
    outbound: mpsc::Sender<ChaincodeMessage>,
    pending: Mutex<HashMap<String, mpsc::Sender<ChaincodeMessage>>>,
    alive: AtomicBool,
}

/// How long dialling a chaincode server, opening its `Connect` stream and its REGISTER may take
/// together: a server that accepts and then says nothing must not hold its callers forever.
const CONNECT_DEADLINE: Duration = Duration::from_secs(15);

/// One package's connection, behind its own lock: dialling one chaincode never waits for
/// another's dial.
type ConnectionSlot = Arc<Mutex<Option<Arc<Connection>>>>;

/// The peer's connections to chaincode servers.
pub struct ChaincodeSupport {
    /// By package id; the packages come from the peer's configuration and its installed
    /// packages, which bounds the map.
    conns: Mutex<HashMap<String, ConnectionSlot>>,
    execute_timeout: Duration,
    next_iterator: AtomicU64,
    limits: MessageLimits,
}

fn key(channel: &str, txid: &str) -> String {
    format!("{channel}\u{0}{txid}")
}

impl ChaincodeSupport {
    pub fn new(execute_timeout: Duration, limits: MessageLimits) -> Self {
        Self {
            conns: Mutex::new(HashMap::new()),
            execute_timeout,
            limits,
            next_iterator: AtomicU64::new(1),
        }
    }

    async fn connect(&self, ep: &ChaincodeEndpoint) -> Result<Arc<Connection>, ExecError> {
        let unavailable = |reason: String| ExecError::Unavailable {
            name: ep.name.clone(),
            address: ep.connection.address.clone(),
            reason,
        };
        let scheme = if ep.connection.tls_required {
            "https"
        } else {
            "http"
        };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!(
            "{scheme}://{}",
            ep.connection.address
        ))
        .map_err(|e| unavailable(e.to_string()))?
        .connect_timeout(Duration::from_secs(3));
        if ep.connection.tls_required {
            let host = if ep.connection.domain.is_empty() {
                ep.connection
                    .address
                    .rsplit_once(':')
                    .map(|(h, _)| h)
                    .unwrap_or("localhost")
                    .to_owned()
            } else {
                ep.connection.domain.clone()
            };
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(
                    &ep.connection.root_cert,
                ))
                .domain_name(host);
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| unavailable(e.to_string()))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let (tx, rx) = mpsc::channel::<ChaincodeMessage>(1024);
        let mut inbound = ChaincodeClient::new(channel)
            .max_decoding_message_size(self.limits.max_recv)
            .max_encoding_message_size(self.limits.max_send)
            .connect(ReceiverStream::new(rx))
            .await
            .map_err(|e| unavailable(e.message().to_owned()))?
            .into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .map_err(|_| {
                ExecError::Registration("no REGISTER from the chaincode within 10s".into())
            })?
            .map_err(|e| ExecError::Registration(e.message().to_owned()))?
            .ok_or_else(|| ExecError::Registration("stream closed before REGISTER".into()))?;
        if first.r#type != Msg::Register as i32 {
            return Err(ExecError::Registration(format!(
                "expected REGISTER, got message type {}",
                first.r#type
            )));
        }
        let id = ChaincodeId::decode(first.payload.as_slice())
            .map_err(|e| ExecError::Registration(format!("bad REGISTER payload: {e}")))?;
        if id.name != ep.package_id {
            return Err(ExecError::Registration(format!(
                "chaincode registered as {:?}, expected package id {:?}",
                id.name, ep.package_id
            )));
        }
        for t in [Msg::Registered, Msg::Ready] {
            tx.send(ChaincodeMessage {
                r#type: t as i32,
                ..Default::default()
            })
            .await
            .map_err(|_| ExecError::StreamTerminated)?;
        }
        let conn = Arc::new(Connection {
            outbound: tx,
            pending: Mutex::new(HashMap::new()),
            alive: AtomicBool::new(true),
        });
        let c = conn.clone();
        let name = ep.name.clone();
        tokio::spawn(async move {
            // What the chaincode server sends is refused input like any client's: logged through
            // the rate-limited refusal log, so a chaincode flooding the stream cannot fill the
            // peer's disk.
            let service = format!("chaincode {name}");
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(msg)) => msg,
                    Ok(None) => break,
                    Err(e) => {
                        log_refusal(&service, None, None, &e.message());
                        break;
                    }
                };
                let k = key(&msg.channel_id, &msg.txid);
                let target = c.pending.lock().await.get(&k).cloned();
                match target {
                    Some(t) => {
                        let _ = t.send(msg).await;
                    }
                    None => log_refusal(
                        &service,
                        None,
                        None,
                        &format!("message for no running transaction {:?} dropped", msg.txid),
                    ),
                }
            }
            c.alive.store(false, Ordering::SeqCst);
            // Dropping the senders wakes every waiting transaction with "stream terminated".
            c.pending.lock().await.clear();
            tracing::info!(chaincode = %name, "chaincode stream closed");
        });
        Ok(conn)
    }

    async fn connection(&self, ep: &ChaincodeEndpoint) -> Result<Arc<Connection>, ExecError> {
        let slot = self
            .conns
            .lock()
            .await
            .entry(ep.package_id.clone())
            .or_default()
            .clone();
        // Callers of this package wait for one dial; callers of others do not.
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref()
            && c.alive.load(Ordering::SeqCst)
        {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(CONNECT_DEADLINE, self.connect(ep))
            .await
            .map_err(|_| ExecError::Unavailable {
                name: ep.name.clone(),
                address: ep.connection.address.clone(),
                reason: format!(
                    "no registered chaincode stream within {}s",
                    CONNECT_DEADLINE.as_secs()
                ),
            })??;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs one transaction of `ep` on `channel` and returns the chaincode's response and event.
    pub async fn execute(
        &self,
        ep: &ChaincodeEndpoint,
        channel: &str,
        txid: &str,
        proposal: &SignedProposal,
        input: ChaincodeInput,
        sim: &mut TxSimulator,
    ) -> Result<(Response, Option<ChaincodeEvent>), ExecError> {
        let conn = self.connection(ep).await?;
        let k = key(channel, txid);
        let (tx, mut rx) = mpsc::channel(64);
        {
            let mut pending = conn.pending.lock().await;
            if pending.contains_key(&k) {
                return Err(ExecError::Duplicate(txid.to_owned()));
            }
            pending.insert(k.clone(), tx);
        }
        let kind = if input.is_init {
            Msg::Init
        } else {
            Msg::Transaction
        };
        let start = ChaincodeMessage {
            r#type: kind as i32,
            payload: input.encode_to_vec(),
            txid: txid.to_owned(),
            proposal: Some(proposal.clone()),
            channel_id: channel.to_owned(),
            ..Default::default()
        };
        // The deadline covers sends too: a chaincode that stops reading fills the stream's buffer.
        let deadline = tokio::time::Instant::now() + self.execute_timeout;
        let send = |msg: ChaincodeMessage| {
            let outbound = conn.outbound.clone();
            async move {
                tokio::time::timeout_at(deadline, outbound.send(msg))
                    .await
                    .map_err(|_| ExecError::Timeout)?
                    .map_err(|_| ExecError::StreamTerminated)
            }
        };
        let result = async {
            send(start).await?;
            let mut iterators: HashMap<String, VecDeque<Vec<u8>>> = HashMap::new();
            loop {
                let msg = tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .map_err(|_| ExecError::Timeout)?
                    .ok_or(ExecError::StreamTerminated)?;
                match Msg::try_from(msg.r#type) {
                    Ok(Msg::Completed) => {
                        let resp = Response::decode(msg.payload.as_slice())
                            .map_err(|e| ExecError::Failed(format!("undecodable response: {e}")))?;
                        let event = msg.chaincode_event.map(|mut e| {
                            e.chaincode_id = ep.name.clone();
                            e.tx_id = txid.to_owned();
                            e
                        });
                        return Ok((resp, event));
                    }
                    Ok(Msg::Error) => {
                        return Err(ExecError::Failed(
                            String::from_utf8_lossy(&msg.payload).into_owned(),
                        ));
                    }
                    _ => {
                        let reply = self.serve(&ep.name, &msg, sim, &mut iterators);
                        send(reply).await?;
                    }
                }
            }
        }
        .await;
        conn.pending.lock().await.remove(&k);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::definition::ConnectionInfo;

    fn endpoint(name: &str, address: String) -> ChaincodeEndpoint {
        ChaincodeEndpoint {
            name: name.into(),
            version: "1".into(),
            package_id: format!("{name}:0"),
            connection: ConnectionInfo {
                address,
                tls_required: false,
                root_cert: String::new(),
                domain: String::new(),
            },
        }
    }

    /// Counts WARN events (the refusal log's lines) of the thread it is the default on.
    #[derive(Clone, Default)]
    struct WarnCounter(Arc<std::sync::atomic::AtomicUsize>);

    impl tracing::Subscriber for WarnCounter {
        fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
            *m.level() == tracing::Level::WARN
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, _: &tracing::Event<'_>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    /// A chaincode server that registers and then floods the stream with messages for no
    /// transaction.
    struct Flooder(usize);

    #[tonic::async_trait]
    impl medledger_proto::protos::chaincode_server::Chaincode for Flooder {
        type ConnectStream = ReceiverStream<Result<ChaincodeMessage, tonic::Status>>;

        async fn connect(
            &self,
            _: tonic::Request<tonic::Streaming<ChaincodeMessage>>,
        ) -> Result<tonic::Response<Self::ConnectStream>, tonic::Status> {
            let (tx, rx) = mpsc::channel(self.0 + 1);
            let register = ChaincodeMessage {
                r#type: Msg::Register as i32,
                payload: ChaincodeId {
                    name: "flood:0".into(),
                    ..Default::default()
                }
                .encode_to_vec(),
                ..Default::default()
            };
            let _ = tx.send(Ok(register)).await;
            for i in 0..self.0 {
                let stray = ChaincodeMessage {
                    r#type: Msg::GetState as i32,
                    txid: format!("stray-{i}"),
                    ..Default::default()
                };
                let _ = tx.send(Ok(stray)).await;
            }
            // Held open: the stream stays up, silent, after the flood.
            tokio::spawn(async move {
                tx.closed().await;
            });
            Ok(tonic::Response::new(ReceiverStream::new(rx)))
        }
    }

    /// A chaincode that floods its stream with messages for no running transaction gets at most
    /// `REFUSAL_LOG_LINES_PER_SECOND` log lines a second (one WARN per message before).
    #[tokio::test(flavor = "current_thread")]
    async fn a_chaincode_flooding_its_stream_cannot_flood_the_log() {
        use medledger_common::refusal::REFUSAL_LOG_LINES_PER_SECOND;
        const FLOOD: usize = 2_000;
        let warns = WarnCounter::default();
        let _guard = tracing::subscriber::set_default(warns.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(
                    medledger_proto::protos::chaincode_server::ChaincodeServer::new(Flooder(FLOOD)),
                )
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let support = ChaincodeSupport::new(Duration::from_secs(5), MessageLimits::default());
        let started = std::time::Instant::now();
        support.connection(&endpoint("flood", addr)).await.unwrap();
        // Let the reader drain the flood.
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seconds = started.elapsed().as_secs() + 1;
        let lines = warns.0.load(Ordering::SeqCst);
        // Each second: its budget, plus one line counting what it suppressed.
        let budget = (REFUSAL_LOG_LINES_PER_SECOND as usize + 1) * (seconds as usize + 1);
        assert!(lines > 0, "the stray messages were not logged at all");
        assert!(
            lines <= budget,
            "{lines} WARN lines for {FLOOD} stray messages in {seconds}s (budget {budget})"
        );
    }

    /// A chaincode server that accepts connections and never answers must hold neither the
    /// other chaincodes' callers nor its own callers past the connect deadline.
    #[tokio::test]
    async fn a_silent_chaincode_server_does_not_block_other_chaincodes() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap().to_string();
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                sockets.push(s);
            }
        });
        // A port nobody listens on: dialling it fails at once.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_addr = closed.local_addr().unwrap().to_string();
        drop(closed);

        let support = Arc::new(ChaincodeSupport::new(
            Duration::from_secs(5),
            MessageLimits::default(),
        ));
        let s = support.clone();
        let hung = tokio::spawn(async move {
            let ep = endpoint("silent", silent_addr);
            s.connection(&ep).await.map(|_| ())
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let other = tokio::time::timeout(
            Duration::from_secs(5),
            support.connection(&endpoint("other", closed_addr)),
        )
        .await
        .expect("another chaincode's dial must not wait for the silent one");
        assert!(matches!(other, Err(ExecError::Unavailable { .. })));
        assert!(
            !hung.is_finished(),
            "the silent server is still being waited for"
        );
        let hung = tokio::time::timeout(CONNECT_DEADLINE + Duration::from_secs(5), hung)
            .await
            .expect("the silent chaincode's caller must get an answer by the connect deadline")
            .unwrap();
        assert!(
            matches!(hung, Err(ExecError::Unavailable { .. })),
            "{hung:?}"
        );
        held.abort();
    }
}
