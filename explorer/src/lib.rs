//! MedLedger's explorer: a web server showing one channel as one identity sees it — blocks and
//! transactions (live, from the peer's Deliver service), a record's trail, a patient's records,
//! consents and access log, and certificate verification with the document hashed in the
//! browser. It is a client like any other: it signs as the configured identity (an MSP folder,
//! as `CORE_PEER_*` configure the peer CLI) and asks the peer through the Gateway's Evaluate
//! and Deliver, so the chaincode's own rules decide what it shows.
//!
//! Modules: `chain` (blocks and transactions read for people), `peer` (the connection),
//! `feed` (the live channel), `html` (escaping, layout, charts), `pages` (one function per
//! page), `web` (routes, security headers, Server-Sent Events).

pub mod chain;
pub mod feed;
pub mod html;
pub mod pages;
pub mod peer;
pub mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;

/// Why the explorer could not do something.
#[derive(Debug, thiserror::Error)]
pub enum ExplorerError {
    /// The chaincode or the peer refused this identity's request (its words).
    #[error("{0}")]
    Refused(String),
    /// The peer could not be reached or the call failed in transport.
    #[error("{0}")]
    Unavailable(String),
    /// The peer answered something that does not decode.
    #[error("{0}")]
    Decode(String),
    /// The explorer's own set-up: identity, TLS root, listen address.
    #[error("{0}")]
    Setup(String),
}

/// `medledger-explorer`'s options.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "medledger-explorer",
    about = "MedLedger explorer: a channel, its records, consents, accesses and certificates in the browser, as one identity sees them",
    after_help = "Example:\n  CORE_PEER_LOCALMSPID=Hospital1MSP CORE_PEER_MSPCONFIGPATH=network/organizations/hospital1/users/doctor1/msp \\\n  \
    medledger-explorer --listen 127.0.0.1:7080 -C medchannel -n medical \\\n    \
    --peerAddresses localhost:7051 --tlsRootCertFiles network/organizations/hospital1/tlsca/tlsca-cert.pem"
)]
pub struct Config {
    /// Where the web server listens (host:port). Keep it on loopback unless a proxy in front
    /// authenticates users: the explorer shows what its identity may see to anyone who reaches it.
    #[arg(
        long,
        env = "MEDLEDGER_EXPLORER_LISTEN",
        default_value = "127.0.0.1:7080"
    )]
    pub listen: SocketAddr,
    /// The channel.
    #[arg(short = 'C', long = "channelID", default_value = "medchannel")]
    pub channel: String,
    /// The medical chaincode's name on the channel.
    #[arg(short = 'n', long = "name", default_value = "medical")]
    pub chaincode: String,
    /// The peer (host:port).
    #[arg(long = "peerAddresses", env = "CORE_PEER_ADDRESS")]
    pub peer_address: String,
    /// The TLS CA certificate of the peer; without it the connection is plain TCP.
    #[arg(long = "tlsRootCertFiles", env = "CORE_PEER_TLS_ROOTCERT_FILE")]
    pub tls_root: Option<PathBuf>,
    /// MSP folder of the identity the explorer runs as.
    #[arg(long, env = "CORE_PEER_MSPCONFIGPATH")]
    pub mspdir: PathBuf,
    /// MSP id of that identity.
    #[arg(long, env = "CORE_PEER_LOCALMSPID")]
    pub mspid: String,
}

/// How long a stopping explorer lets open requests finish.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// A running explorer.
pub struct RunningExplorer {
    pub address: SocketAddr,
    pub feed: Arc<feed::Feed>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    follower: tokio::task::JoinHandle<()>,
}

impl RunningExplorer {
    /// Stops the web server and the live feed.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.follower.abort();
        // Live pages hold their event streams open: give requests a moment, then end them.
        if tokio::time::timeout(STOP_GRACE, &mut self.server)
            .await
            .is_err()
        {
            self.server.abort();
        }
    }
}

/// Connects to the peer, starts following the channel and serves the pages.
pub async fn start(config: Config) -> Result<RunningExplorer, ExplorerError> {
    let session = medledger_peer::node::cli::Session::connect(
        &config.peer_address,
        config.tls_root.as_deref(),
        &config.mspdir,
        &config.mspid,
    )
    .await
    .map_err(|e| ExplorerError::Setup(e.to_string()))?;
    let cert = session.signer().certificate().clone();
    let viewer = html::Viewer {
        msp: config.mspid.clone(),
        subject: cert.subject.clone(),
        role: cert.attributes.get("role").cloned(),
        patient_id: cert.attributes.get("patientId").cloned(),
        peer: config.peer_address.clone(),
        channel: config.channel.clone(),
    };
    let peer = peer::Peer::new(session, config.channel.clone(), config.chaincode.clone());
    let feed = Arc::new(feed::Feed::default());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ExplorerError::Setup(format!("cannot listen on {}: {e}", config.listen)))?;
    let address = listener
        .local_addr()
        .map_err(|e| ExplorerError::Setup(e.to_string()))?;
    let follower = tokio::spawn(feed::follow(peer.clone(), feed.clone()));
    let form_token = hex::encode(rand::random::<[u8; 32]>());
    let app = web::router(Arc::new(web::AppState {
        peer,
        feed: feed.clone(),
        viewer,
        form_token,
        allowed_hosts: web::allowed_hosts(address),
    }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .await;
        if let Err(e) = served {
            tracing::error!("explorer: the web server stopped: {e}");
        }
    });
    Ok(RunningExplorer {
        address,
        feed,
        stop: Some(stop),
        server,
        follower,
    })
}

/// Runs the explorer until Ctrl-C or SIGTERM.
pub async fn run(config: Config) -> Result<(), ExplorerError> {
    let explorer = start(config).await?;
    println!(
        "explorer on http://{} (peer feed: {})",
        explorer.address,
        explorer.feed.status()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| ExplorerError::Setup(format!("signal handler: {e}")))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    explorer.stop().await;
    Ok(())
}
