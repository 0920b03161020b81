//! Dialing other nodes over gRPC: TLS with the given roots, presenting the peer's own TLS
//! certificate for mutual TLS, plain TCP only when no roots are given.

use std::time::Duration;

use medledger_common::config::MessageLimits;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// The peer's own TLS identity, presented to orderers and other peers (mutual TLS).
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// Connects to `address` (host:port).
pub async fn dial(
    address: &str,
    tls_roots: &[Vec<u8>],
    client: Option<&ClientTls>,
) -> Result<Channel, String> {
    let scheme = if tls_roots.is_empty() {
        "http"
    } else {
        "https"
    };
    let mut ep = Endpoint::from_shared(format!("{scheme}://{address}"))
        .map_err(|e| format!("bad address {address:?}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .tcp_nodelay(true);
    if !tls_roots.is_empty() {
        let host = address.rsplit_once(':').map(|(h, _)| h).unwrap_or(address);
        let mut tls = ClientTlsConfig::new().domain_name(host);
        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(
            tls_roots.join(&b'\n'),
        ));
        if let Some(id) = client {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                &id.cert_pem,
                &id.key_pem,
            ));
        }
        ep = ep.tls_config(tls).map_err(|e| e.to_string())?;
    }
    ep.connect()
        .await
        .map_err(|e| format!("cannot connect to {address}: {}", error_chain(&e)))
}

/// An error with its causes, `outer: inner: innermost`: tonic's transport errors say only
/// "transport error" at the top, and the cause (refused, TLS certificate) is what a person needs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// Open connections to other nodes by address, dialled once and reused.
/// The addresses come from the peer's configuration and the channels' configs, which bounds it.
pub struct ConnectionPool {
    client_tls: Option<ClientTls>,
    limits: MessageLimits,
    conns: tokio::sync::Mutex<std::collections::HashMap<String, Channel>>,
}

impl ConnectionPool {
    pub fn new(client_tls: Option<ClientTls>, limits: MessageLimits) -> Self {
        Self {
            client_tls,
            limits,
            conns: tokio::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The message limits every client stub on these connections must apply.
    pub fn limits(&self) -> MessageLimits {
        self.limits
    }

    /// A connection to `address`, verified against `tls_roots`.
    pub async fn get(&self, address: &str, tls_roots: &[Vec<u8>]) -> Result<Channel, String> {
        if let Some(c) = self.conns.lock().await.get(address) {
            return Ok(c.clone());
        }
        let ch = dial(address, tls_roots, self.client_tls.as_ref()).await?;
        self.conns
            .lock()
            .await
            .insert(address.to_owned(), ch.clone());
        Ok(ch)
    }
}

/// Another organisation's peer: the gateway asks it for endorsements, private data goes to and
/// from it.
#[derive(Debug, Clone)]
pub struct RemotePeer {
    pub msp_id: String,
    /// host:port
    pub address: String,
    /// PEM of the CA that signed its TLS certificate; `None` for plain TCP.
    pub tls_root_pem: Option<Vec<u8>>,
}
