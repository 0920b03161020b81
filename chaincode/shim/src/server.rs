//! Serving a chaincode: the tonic `protos.Chaincode` service. On each connection from a peer the
//! chaincode speaks first (REGISTER with its package id), waits for REGISTERED and READY, then
//! runs every TRANSACTION / INIT in its own task, routing the peer's replies by channel and txid.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use medledger_common::refusal::{log_refusal, next_or_refuse};
use medledger_proto::protos::chaincode_message::Type as Msg;
use medledger_proto::protos::chaincode_server::{Chaincode as ChaincodeService, ChaincodeServer};
use medledger_proto::protos::{ChaincodeId, ChaincodeMessage};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Status, Streaming};

use crate::{Chaincode, Stub};

/// Errors starting the chaincode server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("chaincode server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
}

/// TLS for the chaincode server (PEM).
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// When set, peers must present a client certificate signed by this CA.
    pub client_ca_pem: Option<Vec<u8>>,
}

struct Service<C> {
    chaincode: Arc<C>,
    package_id: String,
}

/// Transactions one peer stream may run at once. Each holds a task and a routing entry until it
/// completes, so without a bound a peer (or whoever reaches the chaincode's port) could make the
/// chaincode hold any number; a transaction beyond it is answered with ERROR at once.
pub const MAX_CONCURRENT_TRANSACTIONS: usize = 2048;

type Pending = Arc<Mutex<HashMap<String, mpsc::Sender<ChaincodeMessage>>>>;

fn key(m: &ChaincodeMessage) -> String {
    format!("{}\u{0}{}", m.channel_id, m.txid)
}

fn message(kind: Msg, payload: Vec<u8>, of: &ChaincodeMessage) -> ChaincodeMessage {
    ChaincodeMessage {
        r#type: kind as i32,
        payload,
        txid: of.txid.clone(),
        channel_id: of.channel_id.clone(),
        ..Default::default()
    }
}

async fn run_transaction<C: Chaincode>(
    chaincode: Arc<C>,
    msg: ChaincodeMessage,
    outbound: mpsc::Sender<ChaincodeMessage>,
    inbound: mpsc::Receiver<ChaincodeMessage>,
    pending: Pending,
) {
    let reply = match Stub::new(&msg, outbound.clone(), inbound) {
        Err(e) => message(Msg::Error, e.into_bytes(), &msg),
        Ok(mut stub) => {
            let is_init = msg.r#type == Msg::Init as i32;
            let run = async {
                if is_init {
                    chaincode.init(&mut stub).await
                } else {
                    chaincode.invoke(&mut stub).await
                }
            };
            // A panicking chaincode answers with an error instead of leaving the peer waiting.
            let response =
                match futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run)).await {
                    Ok(r) => r,
                    Err(panic) => {
                        let why = panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "unknown panic".into());
                        let _ = outbound
                            .send(message(
                                Msg::Error,
                                format!("chaincode panicked: {why}").into_bytes(),
                                &msg,
                            ))
                            .await;
                        if let Ok(mut p) = pending.lock() {
                            p.remove(&key(&msg));
                        }
                        return;
                    }
                };
            let mut done = message(Msg::Completed, response.encode_to_vec(), &msg);
            done.chaincode_event = stub.take_event();
            done
        }
    };
    if let Ok(mut p) = pending.lock() {
        p.remove(&key(&msg));
    }
    let _ = outbound.send(reply).await;
}

#[tonic::async_trait]
impl<C: Chaincode> ChaincodeService for Service<C> {
    type ConnectStream = ReceiverStream<Result<ChaincodeMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<ChaincodeMessage>>,
    ) -> Result<tonic::Response<Self::ConnectStream>, Status> {
        let remote = request.remote_addr();
        let mut inbound = request.into_inner();
        let (out_tx, out_rx) = mpsc::channel::<Result<ChaincodeMessage, Status>>(1024);
        let (msg_tx, mut msg_rx) = mpsc::channel::<ChaincodeMessage>(1024);
        let refusals = out_tx.clone();
        tokio::spawn(async move {
            while let Some(m) = msg_rx.recv().await {
                if out_tx.send(Ok(m)).await.is_err() {
                    break;
                }
            }
        });
        let register = ChaincodeMessage {
            r#type: Msg::Register as i32,
            payload: ChaincodeId {
                path: String::new(),
                name: self.package_id.clone(),
                version: String::new(),
            }
            .encode_to_vec(),
            ..Default::default()
        };
        msg_tx
            .send(register)
            .await
            .map_err(|_| Status::internal("stream closed"))?;
        let chaincode = self.chaincode.clone();
        tokio::spawn(async move {
            let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
            let mut ready = false;
            // A frame that does not decode ends the call with an error status, never a clean end.
            let service = "protos.Chaincode/Connect";
            while let Some(msg) = next_or_refuse(&mut inbound, service, remote, &refusals).await {
                match Msg::try_from(msg.r#type) {
                    Ok(Msg::Registered) => {}
                    Ok(Msg::Ready) => ready = true,
                    Ok(Msg::Transaction) | Ok(Msg::Init) if ready => {
                        let (tx, rx) = mpsc::channel(16);
                        let refused = match pending.lock() {
                            Ok(p) if p.contains_key(&key(&msg)) => {
                                Some("duplicate transaction id on this stream".to_owned())
                            }
                            Ok(p) if p.len() >= MAX_CONCURRENT_TRANSACTIONS => Some(format!(
                                "too many transactions running on this stream (at most \
                                 {MAX_CONCURRENT_TRANSACTIONS})"
                            )),
                            Ok(mut p) => {
                                p.insert(key(&msg), tx);
                                None
                            }
                            Err(_) => Some("the chaincode's transaction table is broken".into()),
                        };
                        if let Some(reason) = refused {
                            log_refusal(service, remote, None, &reason);
                            let _ = msg_tx
                                .send(message(Msg::Error, reason.into_bytes(), &msg))
                                .await;
                            continue;
                        }
                        tokio::spawn(run_transaction(
                            chaincode.clone(),
                            msg,
                            msg_tx.clone(),
                            rx,
                            pending.clone(),
                        ));
                    }
                    Ok(Msg::Response) | Ok(Msg::Error) => {
                        let target = pending.lock().ok().and_then(|p| p.get(&key(&msg)).cloned());
                        if let Some(t) = target {
                            let _ = t.send(msg).await;
                        }
                    }
                    _ => {
                        let _ = msg_tx
                            .send(message(
                                Msg::Error,
                                format!("unexpected message type {}", msg.r#type).into_bytes(),
                                &msg,
                            ))
                            .await;
                    }
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(out_rx)))
    }
}

fn builder(tls: Option<ServerTls>) -> Result<tonic::transport::Server, ServeError> {
    let mut b = tonic::transport::Server::builder().tcp_nodelay(true);
    if let Some(t) = tls {
        let mut cfg = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(t.cert_pem, t.key_pem));
        if let Some(ca) = t.client_ca_pem {
            cfg = cfg.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        b = b.tls_config(cfg)?;
    }
    Ok(b)
}

/// Serves `chaincode` on `addr`, registering with the peer as `package_id`.
pub async fn serve<C: Chaincode>(
    addr: SocketAddr,
    package_id: String,
    tls: Option<ServerTls>,
    chaincode: C,
) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_with_listener(listener, package_id, tls, chaincode, std::future::pending()).await
}

/// Serves on an already bound listener until `shutdown` resolves (tests use ephemeral ports).
pub async fn serve_with_listener<C: Chaincode>(
    listener: tokio::net::TcpListener,
    package_id: String,
    tls: Option<ServerTls>,
    chaincode: C,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let service = Service {
        chaincode: Arc::new(chaincode),
        package_id,
    };
    builder(tls)?
        .add_service(ChaincodeServer::new(service).max_decoding_message_size(100 * 1024 * 1024))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}

/// A chaincode binary's whole `main`: serves `chaincode` on `--address HOST:PORT` as
/// `--package-id LABEL:HASH` (or `CHAINCODE_SERVER_ADDRESS` / `CHAINCODE_ID`, the fabric-samples
/// convention), printing a clear error and exiting non-zero on bad arguments or failure.
pub async fn run_from_args<C: Chaincode>(program: &str, chaincode: C) -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, env: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
            .or_else(|| std::env::var(env).ok())
    };
    let (Some(address), Some(package_id)) = (
        arg("--address", "CHAINCODE_SERVER_ADDRESS"),
        arg("--package-id", "CHAINCODE_ID"),
    ) else {
        eprintln!("usage: {program} --address HOST:PORT --package-id LABEL:HASH");
        return std::process::ExitCode::from(2);
    };
    let Ok(addr) = address.parse() else {
        eprintln!("Error: invalid address {address:?}");
        return std::process::ExitCode::from(2);
    };
    println!("{program} {package_id} listening on {address}");
    match serve(addr, package_id, None, chaincode).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use medledger_proto::protos::chaincode_client::ChaincodeClient;
    use medledger_proto::protos::{ChaincodeInput, SignedProposal};

    use super::*;
    use crate::example::KvStore;

    fn transaction(txid: &str) -> ChaincodeMessage {
        ChaincodeMessage {
            r#type: Msg::Transaction as i32,
            payload: ChaincodeInput {
                args: vec![b"Get".to_vec(), b"k".to_vec()],
                ..Default::default()
            }
            .encode_to_vec(),
            txid: txid.into(),
            channel_id: "ch".into(),
            proposal: Some(SignedProposal::default()),
            ..Default::default()
        }
    }

    /// A peer that starts transactions and never answers their state calls can make the
    /// chaincode hold at most `MAX_CONCURRENT_TRANSACTIONS`; the next is refused with ERROR and a
    /// finished one frees its place.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn running_transactions_per_stream_are_bounded() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_with_listener(
            listener,
            "kv:0".into(),
            None,
            KvStore,
            std::future::pending(),
        ));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(MAX_CONCURRENT_TRANSACTIONS + 16);
        let mut inbound = ChaincodeClient::new(channel)
            .connect(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        for t in [Msg::Registered, Msg::Ready] {
            tx.send(ChaincodeMessage {
                r#type: t as i32,
                ..Default::default()
            })
            .await
            .unwrap();
        }
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(30), inbound.message())
                .await
                .expect("the chaincode answers")
                .unwrap()
                .unwrap()
        };
        assert_eq!(next().await.r#type, Msg::Register as i32);
        // Every one of these waits for its GET_STATE answer.
        let overflow = format!("t{MAX_CONCURRENT_TRANSACTIONS}");
        for i in 0..=MAX_CONCURRENT_TRANSACTIONS {
            tx.send(transaction(&format!("t{i}"))).await.unwrap();
        }
        let mut waiting = 0;
        loop {
            let m = next().await;
            if m.r#type == Msg::GetState as i32 {
                waiting += 1;
                continue;
            }
            assert_eq!(m.r#type, Msg::Error as i32, "{m:?}");
            assert_eq!(m.txid, overflow);
            assert!(String::from_utf8_lossy(&m.payload).contains("too many transactions"));
            break;
        }
        while waiting < MAX_CONCURRENT_TRANSACTIONS {
            assert_eq!(next().await.r#type, Msg::GetState as i32);
            waiting += 1;
        }
        // One answered: it completes and the overflowing txid is taken again.
        tx.send(ChaincodeMessage {
            r#type: Msg::Response as i32,
            payload: b"v".to_vec(),
            txid: "t0".into(),
            channel_id: "ch".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let done = next().await;
        assert_eq!(
            (done.r#type, done.txid.as_str()),
            (Msg::Completed as i32, "t0")
        );
        tx.send(transaction(&overflow)).await.unwrap();
        let m = next().await;
        assert_eq!((m.r#type, m.txid), (Msg::GetState as i32, overflow));
    }
}
