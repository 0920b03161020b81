//! TLS for the nodes' gRPC servers with client roots that follow the channels' configurations,
//! as Fabric's peers and orderers do: an organisation added to a channel is trusted as a TLS
//! client by every node of the channel from its configuration block on, without a restart, and
//! one removed is no longer trusted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; a connection beyond is closed at once (logged), so the
/// accept loop never stops.
pub const MAX_PENDING_HANDSHAKES: usize = 256;
/// Handshakes in progress from one address: one host holding silent connections cannot take
/// every slot and lock everyone else out.
pub const MAX_HANDSHAKES_PER_ADDRESS: usize = 16;
/// Finished handshakes waiting for the gRPC server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// Why server TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("TLS certificate or key: {0}")]
    Identity(String),
    #[error("trusted client root certificates: {0}")]
    Roots(String),
}

/// The client certificates a server accepts: the node's configured roots plus every TLS CA of
/// the organisations of the channels it serves, swapped whole when a configuration changes.
pub struct ClientRoots {
    provider: Arc<CryptoProvider>,
    required: bool,
    configured: Vec<CertificateDer<'static>>,
    channels: Mutex<BTreeMap<String, Vec<CertificateDer<'static>>>>,
    verifier: RwLock<Arc<dyn ClientCertVerifier>>,
}

impl std::fmt::Debug for ClientRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRoots")
            .field("required", &self.required)
            .field("configured", &self.configured.len())
            .finish_non_exhaustive()
    }
}

fn parse_pems(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError::Roots(e.to_string()))
}

impl ClientRoots {
    /// Roots from the node's configuration (a PEM bundle, possibly empty); `required`: a client
    /// without a certificate is refused.
    pub fn new(configured_pem: &[u8], required: bool) -> Result<Arc<Self>, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let configured = parse_pems(configured_pem)?;
        let verifier = Self::build(&provider, required, configured.iter())?;
        Ok(Arc::new(Self {
            provider,
            required,
            configured,
            channels: Mutex::new(BTreeMap::new()),
            verifier: RwLock::new(verifier),
        }))
    }

    fn build<'a>(
        provider: &Arc<CryptoProvider>,
        required: bool,
        certs: impl Iterator<Item = &'a CertificateDer<'static>>,
    ) -> Result<Arc<dyn ClientCertVerifier>, TlsSetupError> {
        let mut store = rustls::RootCertStore::empty();
        for c in certs {
            // A certificate the TLS library cannot use as an anchor is skipped rather than
            // stopping the node: the others still work, and the MSP checks its own.
            if let Err(e) = store.add(c.clone()) {
                tracing::warn!(error = %e, "a TLS CA certificate cannot be a client root; skipped");
            }
        }
        if store.is_empty() {
            return Ok(WebPkiClientVerifier::no_client_auth());
        }
        let builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone());
        let builder = if required {
            builder
        } else {
            builder.allow_unauthenticated()
        };
        builder
            .build()
            .map_err(|e| TlsSetupError::Roots(e.to_string()))
    }

    /// Trusts the TLS CAs (DER) of `channel`'s organisations instead of the ones before.
    pub fn set_channel(&self, channel: &str, tls_cas: Vec<Vec<u8>>) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.insert(
            channel.to_owned(),
            tls_cas.into_iter().map(CertificateDer::from).collect(),
        );
        let all = self
            .configured
            .iter()
            .chain(channels.values().flat_map(|v| v.iter()));
        match Self::build(&self.provider, self.required, all) {
            Ok(v) => *self.verifier.write().unwrap_or_else(|e| e.into_inner()) = v,
            Err(e) => tracing::warn!(channel, error = %e, "TLS client roots not updated"),
        }
    }

    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        self.verifier
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ClientCertVerifier for ClientRoots {
    fn offer_client_auth(&self) -> bool {
        self.current().offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.current().client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The roots change under a running server; clients present their one certificate
        // without hints (as Fabric's do).
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

/// A gRPC server's TLS settings: its certificate and key (PEM), HTTP/2, and `roots`.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    roots: Arc<ClientRoots>,
) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError::Identity(format!("certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsSetupError::Identity(format!("key: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(roots.provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Identity(e.to_string()))?
        .with_client_cert_verifier(roots)
        .with_single_cert(chain, key)
        .map_err(|e| TlsSetupError::Identity(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    // A resumed session restores the client certificate without asking the verifier: an
    // organisation removed from the channel could keep reconnecting on an old session.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The TLS connections `listener` accepts, handshakes run concurrently (a slow or silent client
/// holds up no other), each within [`HANDSHAKE_TIMEOUT`]. For `Server::serve_with_incoming*`.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE);
    let acceptor = TlsAcceptor::from(config);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    let per_address: Arc<Mutex<std::collections::HashMap<std::net::IpAddr, usize>>> =
        Arc::default();
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let Some(slot) = HandshakeSlot::take(&slots, &per_address, remote.ip()) else {
                crate::refusal::log_refusal(
                    "TLS",
                    Some(remote),
                    None,
                    &"too many handshakes in progress (from this address or in all): closed",
                );
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => crate::refusal::log_refusal(
                        "TLS",
                        Some(remote),
                        None,
                        &format_args!("handshake failed: {e}"),
                    ),
                    Err(_) => crate::refusal::log_refusal(
                        "TLS",
                        Some(remote),
                        None,
                        &"handshake not finished in time",
                    ),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// One handshake's place: a global slot and one of its address's, both given back on drop.
struct HandshakeSlot {
    _global: tokio::sync::OwnedSemaphorePermit,
    per_address: Arc<Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl HandshakeSlot {
    fn take(
        global: &Arc<tokio::sync::Semaphore>,
        per_address: &Arc<Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
        ip: std::net::IpAddr,
    ) -> Option<Self> {
        let permit = global.clone().try_acquire_owned().ok()?;
        let mut counts = per_address.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= MAX_HANDSHAKES_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(Self {
            _global: permit,
            per_address: per_address.clone(),
            ip,
        })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut counts = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_cannot_take_every_handshake_slot() {
        let global = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
        let per: Arc<Mutex<std::collections::HashMap<std::net::IpAddr, usize>>> = Arc::default();
        let attacker: std::net::IpAddr = [10, 0, 0, 1].into();
        let held: Vec<_> = (0..MAX_HANDSHAKES_PER_ADDRESS)
            .map(|_| HandshakeSlot::take(&global, &per, attacker).expect("a slot"))
            .collect();
        assert!(HandshakeSlot::take(&global, &per, attacker).is_none());
        let honest = HandshakeSlot::take(&global, &per, [10, 0, 0, 2].into());
        assert!(honest.is_some(), "another address still gets a slot");
        drop(held);
        assert!(HandshakeSlot::take(&global, &per, attacker).is_some());
        assert_eq!(
            global.available_permits(),
            MAX_PENDING_HANDSHAKES - 1,
            "the honest slot is still held, the attacker's were given back"
        );
    }
}
