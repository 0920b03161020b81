//! The audit feed (IHE ATNA) as an audit plugin: every Evaluate and Endorse of the configured
//! chaincodes becomes a FHIR R4 `AuditEvent` shaped as IHE BALP (`balp`), sent as RFC 5424
//! syslog over TLS (`syslog`, ITI-20) and/or POSTed to a FHIR server (`http`).
//!
//! Nothing here waits on the endorsement path: [`AtnaPlugin::record`] copies the call's facts
//! and hands them to a bounded in-memory channel. A writer thread turns them into AuditEvents and
//! makes each durable in every destination's disk queue (`queue`) before the destination's
//! sender may send it; a sender deletes an event once delivered (written and flushed on the
//! syslog connection; a 2xx answer from the FHIR server) and retries with backoff otherwise.
//! Delivery is at-least-once, in queue order per peer: an event whose send failed midway is sent
//! again, with the same `id` and `meta.source` (which carries the peer's sequence number).
//!
//! A full queue refuses new events, never drops accepted ones: events the repository has not
//! yet received are the evidence of what happened while it was unreachable, and deleting stored
//! audit records is what audit controls forbid. Each refusal is counted, logged at ERROR, and
//! once there is room again a "Audit Recording Stopped" AuditEvent saying how many calls went
//! unrecorded, and when, is queued ahead of the next event, so the gap is in the trail itself.

pub mod balp;
mod http;
pub mod queue;
pub mod syslog;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::execution::plugins::{AuditCall, AuditPlugin};
use balp::{AuditRecord, AuditSource};
use queue::DiskQueue;

/// Events each destination's disk queue holds at most (`audit.queueMaxEvents` by default): at
/// a few KiB each, a day of a busy hospital's calls in well under a GiB.
pub const DEFAULT_MAX_QUEUED_EVENTS: usize = 100_000;
/// Calls waiting in memory for the writer thread; more are refused (and counted as a gap) only
/// if the disk stalls for this many calls.
pub const MAX_PENDING_EVENTS: usize = 4096;
/// Events the writer makes durable with one folder fsync.
const WRITE_BATCH: usize = 256;
/// Dial plus TLS handshake, and one send, each take at most this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Retry delays after a failed send: doubling from the first to the last.
pub const MIN_RETRY: Duration = Duration::from_millis(200);
pub const MAX_RETRY: Duration = Duration::from_secs(5);
/// Refused events between two ERROR lines while a gap lasts.
const LOSS_LOG_EVERY: u64 = 1000;

/// Why the audit feed could not start or write.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit configuration: {0}")]
    Config(String),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("audit queue {dir}: {reason}")]
    Queue { dir: PathBuf, reason: String },
}

/// The peer YAML's `audit:` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditConfig {
    /// Chaincodes whose Evaluate and Endorse calls are audited.
    pub chaincodes: Vec<String>,
    /// Where undelivered events wait (default `<dataDir>/audit`), one folder per destination.
    #[serde(default)]
    pub queue_dir: Option<PathBuf>,
    /// Events each destination's queue holds at most ([`DEFAULT_MAX_QUEUED_EVENTS`]).
    #[serde(default = "default_max_queued")]
    pub queue_max_events: usize,
    #[serde(default)]
    pub syslog: Option<SyslogConfig>,
    #[serde(default)]
    pub fhir: Option<FhirConfig>,
}

fn default_max_queued() -> usize {
    DEFAULT_MAX_QUEUED_EVENTS
}

/// An audit record repository taking RFC 5425 syslog over TLS.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyslogConfig {
    /// `host:port` (6514 is syslog over TLS's port); the host must match its certificate.
    pub address: String,
    /// PEM CA certificate(s) the repository's TLS certificate chains to.
    pub tls_root_cert_file: PathBuf,
    /// The peer's TLS client certificate and key (PEM), for a repository that authenticates
    /// nodes (ATNA's Secure Node); both or neither.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// HOSTNAME in the syslog header (default: the peer's `id`).
    #[serde(default)]
    pub hostname: Option<String>,
}

/// A FHIR server taking AuditEvents (RESTful ATNA).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FhirConfig {
    /// The server's base, e.g. `https://audit.hospital1.example/fhir`; events go to
    /// `<baseUrl>/AuditEvent`.
    pub base_url: String,
    /// PEM CA certificate(s) for an `https` base.
    #[serde(default)]
    pub tls_root_cert_file: Option<PathBuf>,
}

impl AuditConfig {
    /// Makes relative paths relative to the configuration file's folder.
    pub fn resolve_paths(&mut self, base: &Path) {
        use medledger_common::config::resolve;
        for p in [&mut self.queue_dir]
            .into_iter()
            .chain(
                self.syslog
                    .iter_mut()
                    .flat_map(|s| [&mut s.client_cert_file, &mut s.client_key_file]),
            )
            .chain(self.fhir.iter_mut().map(|f| &mut f.tls_root_cert_file))
            .flatten()
        {
            resolve(base, p);
        }
        if let Some(s) = &mut self.syslog {
            resolve(base, &mut s.tls_root_cert_file);
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, AuditError> {
    std::fs::read(path).map_err(|e| AuditError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The host part of `host:port` (or `[v6]:port`).
pub(crate) fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A TLS client configuration trusting `roots_pem`, presenting `client` (cert, key PEM) if given.
fn tls_config(
    roots_pem: &[u8],
    client: Option<(Vec<u8>, Vec<u8>)>,
) -> Result<Arc<rustls::ClientConfig>, AuditError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let tls = |e: &dyn std::fmt::Display| AuditError::Config(format!("TLS: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots_pem) {
        roots.add(cert.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    if roots.is_empty() {
        return Err(AuditError::Config(
            "TLS: no CA certificate in the root file".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls(&e))?;
            let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| tls(&e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls(&e))?
        }
    };
    Ok(Arc::new(config))
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Calls not recorded, and over which time.
#[derive(Debug, Clone, Copy)]
struct Gap {
    lost: u64,
    first_millis: i64,
    last_millis: i64,
}

impl Gap {
    fn add(gap: &mut Option<Gap>, lost: u64, first: i64, last: i64) {
        match gap {
            Some(g) => {
                g.lost += lost;
                g.first_millis = g.first_millis.min(first);
                g.last_millis = g.last_millis.max(last);
            }
            None => {
                *gap = Some(Gap {
                    lost,
                    first_millis: first,
                    last_millis: last,
                })
            }
        }
    }
}

/// The ATNA audit plugin (registered as `atna`).
pub struct AtnaPlugin {
    chaincodes: BTreeSet<String>,
    pending: mpsc::Sender<AuditRecord>,
    /// Calls refused because the writer fell [`MAX_PENDING_EVENTS`] behind.
    overflow: Arc<Mutex<Option<Gap>>>,
    overflow_count: AtomicU64,
}

impl AuditPlugin for AtnaPlugin {
    fn audits(&self, chaincode: &str) -> bool {
        self.chaincodes.contains(chaincode)
    }

    fn record(&self, call: &AuditCall<'_>) {
        let at = now_millis();
        match self.pending.try_send(AuditRecord::of(call, at)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                Gap::add(
                    &mut self.overflow.lock().unwrap_or_else(|e| e.into_inner()),
                    1,
                    at,
                    at,
                );
                let n = self.overflow_count.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(LOSS_LOG_EVERY) {
                    tracing::error!(
                        tx_id = call.tx_id,
                        refused_so_far = n + 1,
                        "AUDIT EVENT NOT RECORDED: the audit writer is {MAX_PENDING_EVENTS} events behind (disk stalled?); the gap will be reported to the audit repository"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!(
                    tx_id = call.tx_id,
                    "AUDIT EVENT NOT RECORDED: the audit writer has stopped"
                );
            }
        }
    }
}

/// One destination: its queue and how it is reached.
struct Destination {
    name: &'static str,
    /// A FHIR create must not carry an `id` (servers refuse one, or replace it).
    strip_id: bool,
    queue: Arc<DiskQueue>,
    client: Client,
    /// Calls refused because this queue was full, not yet reported.
    gap: Option<Gap>,
}

enum Client {
    /// Boxed: a TLS stream is large, and one lives per destination.
    Syslog(Box<syslog::SyslogClient>),
    Fhir(http::FhirClient),
}

impl Client {
    async fn send(&mut self, event: &[u8]) -> Result<(), String> {
        match self {
            Self::Syslog(c) => c.send(event).await,
            Self::Fhir(c) => c.send(event).await,
        }
    }
    fn reset(&mut self) {
        match self {
            Self::Syslog(c) => c.reset(),
            Self::Fhir(c) => c.reset(),
        }
    }
}

/// A started audit feed: the plugin to register and the senders' tasks (they end on shutdown).
pub struct AuditFeed {
    pub plugin: Arc<AtnaPlugin>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts the feed `cfg` describes for the peer `source`; `default_dir` is `<dataDir>/audit`.
pub fn start(
    cfg: &AuditConfig,
    source: AuditSource,
    default_dir: &Path,
    shutdown: watch::Receiver<bool>,
) -> Result<AuditFeed, AuditError> {
    if cfg.syslog.is_none() && cfg.fhir.is_none() {
        return Err(AuditError::Config(
            "audit needs a destination: give syslog, fhir or both".into(),
        ));
    }
    let dir = cfg
        .queue_dir
        .clone()
        .unwrap_or_else(|| default_dir.to_path_buf());
    let mut destinations = Vec::new();
    if let Some(s) = &cfg.syslog {
        let client = match (&s.client_cert_file, &s.client_key_file) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            (None, None) => None,
            _ => {
                return Err(AuditError::Config(
                    "audit.syslog: give clientCertFile and clientKeyFile together".into(),
                ));
            }
        };
        let tls = tls_config(&read(&s.tls_root_cert_file)?, client)?;
        let hostname = s.hostname.clone().unwrap_or_else(|| source.peer_id.clone());
        destinations.push(Destination {
            name: "syslog",
            strip_id: false,
            queue: Arc::new(DiskQueue::open(&dir.join("syslog"), cfg.queue_max_events)?),
            client: Client::Syslog(Box::new(syslog::SyslogClient::new(
                &s.address, &hostname, tls,
            ))),
            gap: None,
        });
    }
    if let Some(f) = &cfg.fhir {
        let target = http::FhirTarget::parse(&f.base_url)?;
        let tls = match (&f.tls_root_cert_file, target.https) {
            (Some(root), true) => Some(tls_config(&read(root)?, None)?),
            (None, true) => {
                return Err(AuditError::Config(
                    "audit.fhir: an https baseUrl needs tlsRootCertFile".into(),
                ));
            }
            (_, false) => {
                tracing::warn!(url = f.base_url, "audit events are POSTed without TLS");
                None
            }
        };
        destinations.push(Destination {
            name: "fhir",
            strip_id: true,
            queue: Arc::new(DiskQueue::open(&dir.join("fhir"), cfg.queue_max_events)?),
            client: Client::Fhir(http::FhirClient::new(target, tls)),
            gap: None,
        });
    }
    // Sequence numbers keep increasing across restarts: after the last one queued, and never
    // below the clock in microseconds (an emptied queue remembers nothing).
    let micros = u64::try_from(now_millis())
        .unwrap_or(0)
        .saturating_mul(1000);
    let next_seq = destinations
        .iter()
        .filter_map(|d| d.queue.last_seq())
        .max()
        .map_or(micros, |s| s.saturating_add(1).max(micros));

    let (tx, rx) = mpsc::channel(MAX_PENDING_EVENTS);
    let overflow = Arc::new(Mutex::new(None));
    let mut tasks = Vec::new();
    let mut queues = Vec::new();
    for d in destinations {
        queues.push(WriterQueue {
            name: d.name,
            strip_id: d.strip_id,
            queue: d.queue.clone(),
            gap: d.gap,
        });
        tasks.push(tokio::spawn(send_loop(
            d.name,
            d.queue,
            d.client,
            shutdown.clone(),
        )));
    }
    let writer = Writer {
        source,
        queues,
        next_seq,
        overflow: overflow.clone(),
    };
    std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| AuditError::Config(format!("cannot start the audit writer: {e}")))?;
    Ok(AuditFeed {
        plugin: Arc::new(AtnaPlugin {
            chaincodes: cfg.chaincodes.iter().cloned().collect(),
            pending: tx,
            overflow,
            overflow_count: AtomicU64::new(0),
        }),
        tasks,
    })
}

struct WriterQueue {
    name: &'static str,
    strip_id: bool,
    queue: Arc<DiskQueue>,
    gap: Option<Gap>,
}

/// An event's JSON as a destination takes it.
fn body(event: &serde_json::Value, strip_id: bool) -> String {
    if !strip_id {
        return event.to_string();
    }
    let mut e = event.clone();
    if let Some(o) = e.as_object_mut() {
        o.remove("id");
    }
    e.to_string()
}

/// Turns records into AuditEvents and makes them durable in every destination's queue, on a
/// thread of its own (file writes and fsyncs block).
struct Writer {
    source: AuditSource,
    queues: Vec<WriterQueue>,
    next_seq: u64,
    overflow: Arc<Mutex<Option<Gap>>>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<AuditRecord>) {
        // Ends when the plugin (every sender) is gone.
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < WRITE_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.write(&batch);
        }
    }

    fn seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    fn write(&mut self, batch: &[AuditRecord]) {
        // Calls the in-memory channel refused are missing from every destination.
        if let Some(g) = self
            .overflow
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            for q in &mut self.queues {
                Gap::add(&mut q.gap, g.lost, g.first_millis, g.last_millis);
            }
        }
        // A gap is reported ahead of the events that follow it, as soon as there is room.
        for i in 0..self.queues.len() {
            let Some(g) = self.queues[i].gap else {
                continue;
            };
            if self.queues[i].queue.is_full() {
                continue;
            }
            let seq = self.seq();
            let q = &mut self.queues[i];
            let event = balp::gap_event(
                &self.source,
                seq,
                g.lost,
                g.first_millis,
                g.last_millis,
                q.queue.max_events(),
            );
            match q.queue.stage(seq, body(&event, q.strip_id).as_bytes()) {
                Ok(()) => {
                    tracing::error!(
                        destination = q.name,
                        lost = g.lost,
                        "audit queue has room again: {} audited call(s) were not recorded; an Audit Recording Stopped event says so to the repository",
                        g.lost
                    );
                    q.gap = None;
                }
                Err(e) => {
                    tracing::error!(destination = q.name, error = %e, "cannot queue the audit gap event")
                }
            }
        }
        for r in batch {
            let seq = self.seq();
            let event = balp::audit_event(r, &self.source, seq);
            let (with_id, without_id) = (body(&event, false), body(&event, true));
            for q in &mut self.queues {
                if q.queue.is_full() {
                    let first = q.gap.is_none();
                    Gap::add(&mut q.gap, 1, r.at_millis, r.at_millis);
                    let lost = q.gap.map_or(1, |g| g.lost);
                    if first || lost.is_multiple_of(LOSS_LOG_EVERY) {
                        tracing::error!(
                            destination = q.name,
                            bound = q.queue.max_events(),
                            tx_id = r.tx_id,
                            lost,
                            "AUDIT QUEUE FULL: refusing new audit events (the {} undelivered ones are kept); the repository is unreachable or refusing them",
                            q.queue.max_events()
                        );
                    }
                    continue;
                }
                let bytes = if q.strip_id { &without_id } else { &with_id };
                if let Err(e) = q.queue.stage(seq, bytes.as_bytes()) {
                    Gap::add(&mut q.gap, 1, r.at_millis, r.at_millis);
                    tracing::error!(destination = q.name, tx_id = r.tx_id, error = %e, "AUDIT EVENT NOT RECORDED: cannot write the audit queue");
                }
            }
        }
        for q in &self.queues {
            if let Err(e) = q.queue.sync() {
                tracing::error!(destination = q.name, error = %e, "cannot sync the audit queue");
            }
        }
    }
}

/// Resolves once the peer stops (or its stop signal is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Sends a destination's events in order, each until it is delivered.
async fn send_loop(
    name: &'static str,
    queue: Arc<DiskQueue>,
    mut client: Client,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut retry = MIN_RETRY;
    let mut failing_since: Option<SystemTime> = None;
    loop {
        let next = tokio::select! {
            n = queue.next() => n,
            _ = stopped(&mut shutdown) => return,
        };
        let failure = match next {
            Ok((seq, event)) => {
                let sent = tokio::select! {
                    r = tokio::time::timeout(SEND_TIMEOUT, client.send(&event)) => r,
                    _ = stopped(&mut shutdown) => return,
                };
                match sent {
                    Ok(Ok(())) => match queue.remove(seq).await {
                        Ok(()) => None,
                        Err(e) => Some(e.to_string()),
                    },
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some(format!("no answer within {SEND_TIMEOUT:?}")),
                }
            }
            Err(e) => Some(e.to_string()),
        };
        match failure {
            None => {
                if let Some(since) = failing_since.take() {
                    tracing::info!(
                        destination = name,
                        down_for = ?since.elapsed().unwrap_or_default(),
                        waiting = queue.len(),
                        "audit repository reachable again; delivering the queued events"
                    );
                }
                retry = MIN_RETRY;
            }
            Some(reason) => {
                client.reset();
                // One WARN per outage; the retries in between are DEBUG.
                if failing_since.is_none() {
                    failing_since = Some(SystemTime::now());
                    tracing::warn!(
                        destination = name,
                        reason,
                        waiting = queue.len(),
                        "audit event not delivered; queued and retried"
                    );
                } else {
                    tracing::debug!(destination = name, reason, "audit delivery retry failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = stopped(&mut shutdown) => return,
                }
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_reads_and_resolves() {
        let yaml = "chaincodes: [medical]\nqueueDir: q\nsyslog:\n  address: audit:6514\n  tlsRootCertFile: ca.pem\nfhir:\n  baseUrl: https://audit/fhir\n  tlsRootCertFile: /abs/ca.pem\n";
        let mut cfg: AuditConfig = serde_yaml::from_str(yaml).expect("config");
        assert_eq!(cfg.queue_max_events, DEFAULT_MAX_QUEUED_EVENTS);
        cfg.resolve_paths(Path::new("/etc/peer"));
        assert_eq!(cfg.queue_dir.as_deref(), Some(Path::new("/etc/peer/q")));
        assert_eq!(
            cfg.syslog.map(|s| s.tls_root_cert_file),
            Some(PathBuf::from("/etc/peer/ca.pem"))
        );
        assert_eq!(
            cfg.fhir.and_then(|f| f.tls_root_cert_file),
            Some(PathBuf::from("/abs/ca.pem"))
        );
        assert!(serde_yaml::from_str::<AuditConfig>("chaincodes: []\nsyslg: {}\n").is_err());
        assert_eq!(host_of("[::1]:6514"), "::1");
        assert_eq!(host_of("audit.example:6514"), "audit.example");
    }
}
