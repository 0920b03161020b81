//! Routes, security headers on every answer, refusals logged (rate-limited, as the nodes log
//! theirs), the live block feed as Server-Sent Events, and the two static files.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use crate::feed::Feed;
use crate::html::Viewer;
use crate::pages;
use crate::peer::Peer;

/// What every handler shares.
pub struct AppState {
    pub peer: Peer,
    pub feed: Arc<Feed>,
    pub viewer: Viewer,
    /// A random value each form that changes the ledger carries and each such request must
    /// return (with `Sec-Fetch-Site` same-origin where the browser sends it): another site
    /// cannot make a patient's browser grant or revoke.
    pub form_token: String,
    /// The `Host` values requests may carry (`None`: listening on every interface, any): a page
    /// of another site whose name is made to resolve to this address (DNS rebinding) is then
    /// not answered.
    pub allowed_hosts: Option<Vec<String>>,
}

/// The names a browser reaching `address` calls it by.
pub fn allowed_hosts(address: SocketAddr) -> Option<Vec<String>> {
    let ip = address.ip();
    if ip.is_unspecified() {
        return None;
    }
    let port = address.port();
    let mut hosts = vec![address.to_string()];
    if ip.is_loopback() {
        hosts.extend([
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ]);
    }
    Some(hosts)
}

/// The largest form body accepted (a consent's fields).
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// Why a request was answered with an error, for the refusal log.
#[derive(Clone)]
pub struct Refusal(pub String);

const CSP: &str = "default-src 'self'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'; object-src 'none'";

const SCRIPT: &str = include_str!("../static/explorer.js");
const STYLE: &str = include_str!("../static/explorer.css");

/// The explorer's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(pages::channel))
        .route("/block/{number}", get(pages::block))
        .route("/tx/{tx_id}", get(pages::transaction))
        .route("/tx/{tx_id}/proof.json", get(pages::tx_proof))
        .route("/record", get(pages::record_form))
        .route("/record/{id}", get(pages::record))
        .route("/record/{id}/proof.json", get(pages::record_proof))
        .route("/patient", get(pages::patient_own))
        .route("/patient/{id}", get(pages::patient))
        .route(
            "/patient/consents",
            post(pages::grant_consent).layer(DefaultBodyLimit::max(MAX_FORM_BYTES)),
        )
        .route(
            "/patient/consents/{id}/revoke",
            post(pages::revoke_consent).layer(DefaultBodyLimit::max(MAX_FORM_BYTES)),
        )
        .route("/certificate", get(pages::certificate))
        .route("/events", get(events))
        .route("/static/explorer.js", get(script))
        .route("/static/explorer.css", get(style))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            check_host,
        ))
        .layer(axum::middleware::from_fn(log_refusals))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Headers every answer carries: nothing from elsewhere, no framing, no sniffing, no referrer
/// (record and patient ids are in URLs), no caching of medical data.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "Cross-Origin-Opener-Policy",
        HeaderValue::from_static("same-origin"),
    );
    r
}

/// Refuses a request for another host name (421), before any page or form is served.
async fn check_host(
    State(s): State<Arc<AppState>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(allowed) = &s.allowed_hosts {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if !allowed.contains(&host) {
            let mut r = (
                StatusCode::MISDIRECTED_REQUEST,
                "this explorer answers only to the address it listens on",
            )
                .into_response();
            r.extensions_mut()
                .insert(Refusal(format!("request for another host {host:?}")));
            return r;
        }
    }
    next.run(req).await
}

/// One WARN line per refused request (rate-limited with the nodes' refusal log).
async fn log_refusals(req: Request, next: axum::middleware::Next) -> Response {
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let service = format!("explorer {} {}", req.method(), req.uri().path());
    let response = next.run(req).await;
    if response.status().is_client_error() || response.status().is_server_error() {
        let reason = response
            .extensions()
            .get::<Refusal>()
            .map_or_else(|| response.status().to_string(), |r| r.0.clone());
        medledger_common::refusal::log_refusal(&service, remote, None, &reason);
    }
    response
}

async fn not_found(State(s): State<Arc<AppState>>) -> Response {
    pages::respond(
        &s.viewer,
        StatusCode::NOT_FOUND,
        "Not found",
        crate::html::refusal("No such page", "The explorer has no page at this address."),
        Some("no such page".into()),
    )
}

async fn script() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/css; charset=utf-8"),
        )],
        STYLE,
    )
        .into_response()
}

/// New blocks as Server-Sent Events (`event: block`, data: the summary as JSON with the
/// signers' names), for at most `MAX_SSE_SUBSCRIBERS` pages at once.
async fn events(State(s): State<Arc<AppState>>) -> Response {
    let Ok(permit) = s.feed.subscribers.clone().try_acquire_owned() else {
        let mut r = (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live pages are open; reload later",
        )
            .into_response();
        r.extensions_mut().insert(Refusal(format!(
            "live subscribers at their bound ({})",
            crate::feed::MAX_SSE_SUBSCRIBERS
        )));
        return r;
    };
    let feed = s.feed.clone();
    let stream = BroadcastStream::new(s.feed.subscribe())
        // A lagging page skips blocks; it reloads to see them.
        .filter_map(|b| async move { b.ok() })
        .map(move |b| {
            // The permit lives as long as the stream: one subscriber slot per open page.
            let _slot = &permit;
            let names: Vec<String> = b
                .signers
                .iter()
                .map(|id| {
                    feed.consenter(*id)
                        .unwrap_or_else(|| format!("consenter {id}"))
                })
                .collect();
            let mut data = serde_json::to_value(&b).unwrap_or_default();
            data["signerNames"] = serde_json::json!(names);
            data["timeText"] = serde_json::json!(crate::html::time_opt(b.time));
            Ok::<_, std::convert::Infallible>(
                Event::default().event("block").data(data.to_string()),
            )
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
