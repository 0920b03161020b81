//! Refused requests: each logged once at WARN with where it came from, the service, the client's
//! identity where known and the reason, rate-limited so that a flood of bad input cannot fill the
//! disk. Never log private values or secrets in a reason.

use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tonic::{Code, Status, Streaming};

/// Refusal lines written per second at most; the rest are counted and reported in one line.
pub const REFUSAL_LOG_LINES_PER_SECOND: u64 = 20;

/// The second the counters below belong to.
static WINDOW: AtomicU64 = AtomicU64::new(0);
static LOGGED: AtomicU64 = AtomicU64::new(0);
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// Logs one refused request at WARN (rate-limited). `identity` is the client's MSP id and
/// subject where the request got far enough to name one.
pub fn log_refusal(
    service: &str,
    remote: Option<SocketAddr>,
    identity: Option<&str>,
    reason: &dyn Display,
) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if WINDOW.swap(now, Ordering::Relaxed) != now {
        LOGGED.store(0, Ordering::Relaxed);
        let dropped = SUPPRESSED.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "refused requests not logged individually (over {REFUSAL_LOG_LINES_PER_SECOND}/s)"
            );
        }
    }
    if LOGGED.fetch_add(1, Ordering::Relaxed) >= REFUSAL_LOG_LINES_PER_SECOND {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let remote = remote.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    let identity = identity.unwrap_or("unknown");
    tracing::warn!(%remote, service, identity, %reason, "request refused");
}

/// The next message of a client stream whose answers go out through `out`: `None` at the end of
/// the stream, or after a refused frame whose status has been sent to `out` (ending the call).
pub async fn next_or_refuse<T, R>(
    inbound: &mut Streaming<T>,
    service: &str,
    remote: Option<SocketAddr>,
    out: &tokio::sync::mpsc::Sender<Result<R, Status>>,
) -> Option<T> {
    match next_message(inbound, service, remote).await {
        Ok(m) => m,
        Err(refused) => {
            let _ = out.send(Err(refused)).await;
            None
        }
    }
}

/// The next message of a client stream. A frame that does not decode (garbage, a length over the
/// limit, compression without an encoding) is refused: logged, and answered with a non-OK status
/// that ends the stream, as Fabric does (`13 INTERNAL grpc: failed to unmarshal the received
/// message`), never taken for the end of the stream.
pub async fn next_message<T>(
    inbound: &mut Streaming<T>,
    service: &str,
    remote: Option<SocketAddr>,
) -> Result<Option<T>, Status> {
    match inbound.message().await {
        Ok(m) => Ok(m),
        Err(e) if e.code() == Code::Cancelled => Err(e),
        Err(e) => {
            log_refusal(service, remote, None, &e.message());
            let code = match e.code() {
                Code::ResourceExhausted | Code::OutOfRange => Code::ResourceExhausted,
                Code::Unimplemented => Code::Unimplemented,
                _ => Code::Internal,
            };
            Err(Status::new(
                code,
                format!(
                    "grpc: failed to unmarshal the received message: {}",
                    e.message()
                ),
            ))
        }
    }
}
