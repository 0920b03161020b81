//! Watching the orderers that are not the block source: their HEADER_WITH_SIG streams prove which
//! blocks exist, so a block source that withholds or falls behind is found and replaced (what
//! Fabric 3's BFT censorship monitor does).

use std::sync::Mutex;
use std::time::Instant;

use medledger_proto::orderer::seek_info::SeekContentType;

use super::puller::{OrdererLink, retry_delay};
use super::*;

/// How block delivery watches its orderers (Fabric's `peer.deliveryclient` settings).
#[derive(Debug, Clone, Copy)]
pub struct DeliveryTimeouts {
    /// How long a block attested by another orderer may be missing from the block source before
    /// the source is replaced (Fabric's `blockCensorshipTimeoutKey`).
    pub censorship: Duration,
    /// The first reconnection delay; it doubles on each consecutive failure.
    pub min_retry: Duration,
    /// The longest reconnection delay.
    pub max_retry: Duration,
}

impl DeliveryTimeouts {
    /// How long a header may stay ahead of the ledger before its signatures are checked: an
    /// honest block source delivers well within it, so attestations cost no signature checks
    /// while all is well.
    fn grace(&self) -> Duration {
        self.censorship / 10
    }

    /// How often the monitor looks at the attestations.
    fn tick(&self) -> Duration {
        (self.censorship / 100).max(Duration::from_millis(10))
    }
}

/// A header received from an orderer, with when it arrived.
#[derive(Debug, Clone)]
struct Attestation {
    block: Block,
    number: u64,
    received: Instant,
    verified: bool,
}

/// What one header receiver has seen. Holds at most two headers whatever the orderer sends.
#[derive(Debug, Default)]
struct ReceiverState {
    /// The oldest header ahead of the ledger not yet resolved: the censorship suspicion.
    pending: Option<Attestation>,
    /// The newest header received.
    latest: Option<Attestation>,
    /// The orderer sent an attestation that does not verify: its stream is dropped.
    lying: bool,
}

/// A block source found withholding a block that another orderer attests.
#[derive(Debug)]
pub(super) struct Censorship {
    pub(super) block: u64,
    pub(super) attested_by: String,
}

/// The header receivers of one round of block delivery: one task per orderer other than the
/// block source. Dropping it stops them.
pub(super) struct AttestationMonitor {
    endpoints: Vec<String>,
    states: Arc<Vec<Mutex<ReceiverState>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    timeouts: DeliveryTimeouts,
}

impl Drop for AttestationMonitor {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl AttestationMonitor {
    /// Stops the header receivers and waits until they are gone (they hold the channel, and so
    /// its ledger, until then).
    pub(super) async fn stop(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Starts a header receiver for each of `endpoints`.
    pub(super) fn start(
        link: &Arc<OrdererLink>,
        endpoints: Vec<String>,
        timeouts: DeliveryTimeouts,
    ) -> Self {
        let states: Arc<Vec<Mutex<ReceiverState>>> = Arc::new(
            endpoints
                .iter()
                .map(|_| Mutex::new(ReceiverState::default()))
                .collect(),
        );
        let tasks = endpoints
            .iter()
            .enumerate()
            .map(|(i, address)| {
                tokio::spawn(receive_headers(
                    link.clone(),
                    address.clone(),
                    states.clone(),
                    i,
                    timeouts,
                ))
            })
            .collect();
        Self {
            endpoints,
            states,
            tasks,
            timeouts,
        }
    }

    /// Resolves when an attested block has been missing from the ledger for longer than the
    /// censorship timeout.
    pub(super) async fn censorship(&self, channel: &Channel) -> Censorship {
        loop {
            tokio::time::sleep(self.timeouts.tick()).await;
            if let Some(c) = self.check(channel, Instant::now()) {
                return c;
            }
        }
    }

    fn check(&self, channel: &Channel, now: Instant) -> Option<Censorship> {
        let height = channel.ledger.height();
        for (i, state) in self.states.iter().enumerate() {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            if s.pending.as_ref().is_some_and(|p| p.number < height) {
                s.pending = s.latest.clone().filter(|l| l.number >= height);
            }
            let Some(p) = s.pending.as_mut() else {
                continue;
            };
            let waited = now.saturating_duration_since(p.received);
            if waited < self.timeouts.grace() {
                continue;
            }
            if !p.verified {
                match channel.config().verify_block_attestation(&p.block) {
                    Ok(_) => p.verified = true,
                    Err(e) => {
                        channel
                            .delivery
                            .invalid_attestations
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(channel = %channel.id(), orderer = %self.endpoints[i], block = p.number, error = %e,
                            "orderer sent a block attestation that does not verify: ignoring its headers");
                        *s = ReceiverState {
                            lying: true,
                            ..Default::default()
                        };
                        continue;
                    }
                }
            }
            if waited >= self.timeouts.censorship {
                return Some(Censorship {
                    block: p.number,
                    attested_by: self.endpoints[i].clone(),
                });
            }
        }
        None
    }
}

/// Streams headers with signatures from one orderer into `states[i]`, reconnecting with backoff.
async fn receive_headers(
    link: Arc<OrdererLink>,
    address: String,
    states: Arc<Vec<Mutex<ReceiverState>>>,
    i: usize,
    timeouts: DeliveryTimeouts,
) {
    let mut failures = 0u32;
    loop {
        let start = {
            let s = states[i].lock().unwrap_or_else(|p| p.into_inner());
            let after_latest = s.latest.as_ref().map_or(0, |l| l.number.saturating_add(1));
            link.channel.ledger.height().max(after_latest)
        };
        let run = async {
            let mut stream: tonic::Streaming<medledger_proto::orderer::DeliverResponse> = link
                .open(&address, start, SeekContentType::HeaderWithSig)
                .await?;
            loop {
                let msg = stream.message().await.map_err(|s| s.message().to_owned())?;
                let block = match msg.and_then(|m| m.r#type) {
                    Some(deliver_response::Type::Block(b)) => b,
                    Some(deliver_response::Type::Status(s)) => {
                        return Err(format!("orderer ended the header stream with status {s}"));
                    }
                    None => return Err("orderer closed the header stream".to_owned()),
                };
                let Some(number) = block.header.as_ref().map(|h| h.number) else {
                    return Err("orderer sent a header attestation without a header".to_owned());
                };
                let mut s = states[i].lock().unwrap_or_else(|p| p.into_inner());
                if s.lying {
                    return Err("orderer sent an attestation that does not verify".to_owned());
                }
                if s.latest.as_ref().is_some_and(|l| number <= l.number) {
                    return Err(format!("orderer sent header {number} out of order"));
                }
                let a = Attestation {
                    block,
                    number,
                    received: Instant::now(),
                    verified: false,
                };
                if s.pending.is_none() && number >= link.channel.ledger.height() {
                    s.pending = Some(a.clone());
                }
                s.latest = Some(a);
                failures = 0;
            }
        };
        let ended: Result<(), String> = run.await;
        let e = ended.err().unwrap_or_default();
        tracing::debug!(channel = %link.channel.id(), orderer = %address, error = %e, "header stream interrupted");
        tokio::time::sleep(retry_delay(&timeouts, failures)).await;
        failures = failures.saturating_add(1);
        states[i].lock().unwrap_or_else(|p| p.into_inner()).lying = false;
    }
}
