//! Fabric CA's REST API (`/api/v1/...`) over HTTPS, answering in cfssl's JSON envelope so that
//! `fabric-ca-client` and Fabric's Go client work unchanged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use medledger_common::ops::Metric;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::authority::{Authority, Caller, EnrollRequest, RegisterRequest, RevokeRequest};
use crate::error::{CaError, code};
use crate::manage::{AffiliationRequest, CertificateFilter, ModifyIdentityRequest, bool_query};

/// The largest request body accepted (CSRs and registrations are a few KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Connections served at once; further clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 1024;
/// Time a client has to finish the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a request's headers (also an idle keep-alive connection's limit).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a request's body.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Enrollment secrets checked at once. A check costs ~19 MiB and tens of milliseconds of CPU
/// (Argon2): a flood of enrollments waits here instead of exhausting memory and every core.
pub const MAX_CONCURRENT_SECRET_CHECKS: usize = 4;

/// The CAs one server process serves (`--cafiles`), by name; a request that names none goes to
/// the default (the first). Also counts the answers given, for the operations endpoint.
#[derive(Clone)]
pub struct CaSet {
    default: String,
    cas: Arc<BTreeMap<String, Arc<Authority>>>,
    /// Answers by endpoint and HTTP status (bounded: both come from fixed sets).
    answers: Arc<Mutex<BTreeMap<(String, u16), u64>>>,
    secret_checks: Arc<Semaphore>,
}

impl From<Arc<Authority>> for CaSet {
    fn from(ca: Arc<Authority>) -> Self {
        Self {
            default: ca.name().to_owned(),
            cas: Arc::new(BTreeMap::from([(ca.name().to_owned(), ca)])),
            answers: Arc::default(),
            secret_checks: Arc::new(Semaphore::new(MAX_CONCURRENT_SECRET_CHECKS)),
        }
    }
}

impl CaSet {
    /// The CAs of one server; the first is the default. Names must differ.
    pub fn new(cas: Vec<Arc<Authority>>) -> Result<Self, CaError> {
        let mut iter = cas.into_iter();
        let first = iter
            .next()
            .ok_or_else(|| CaError::internal("a server needs at least one CA"))?;
        let mut set = Self::from(first);
        let map = Arc::make_mut(&mut set.cas);
        for ca in iter {
            let name = ca.name().to_owned();
            if map.insert(name.clone(), ca).is_some() {
                return Err(CaError::internal(format!(
                    "two CAs are named '{name}': CA names must be unique in a server"
                )));
            }
        }
        Ok(set)
    }

    /// The CA a request names (`ca` query parameter, else `caname` in the body, else the
    /// default), as Fabric CA's `getCAName`.
    pub fn get(&self, name: &str) -> Result<Arc<Authority>, CaError> {
        let name = if name.is_empty() { &self.default } else { name };
        self.cas.get(name).cloned().ok_or_else(|| {
            CaError::new(
                404,
                code::CA_NOT_FOUND,
                format!("CA '{name}' does not exist"),
            )
        })
    }

    /// The names of the CAs served.
    pub fn names(&self) -> Vec<String> {
        self.cas.keys().cloned().collect()
    }

    fn count(&self, endpoint: String, status: u16) {
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        *answers.entry((endpoint, status)).or_default() += 1;
    }

    /// Prometheus figures: Fabric CA's `api_request_count` (by endpoint and HTTP status) and, per
    /// CA, certificates enrolled and revoked.
    pub fn metrics(&self) -> Vec<Metric> {
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Metric> = answers
            .iter()
            .map(|((endpoint, status), n)| Metric {
                name: "api_request_count".into(),
                help: "Number of requests made to an API".into(),
                kind: "counter",
                labels: vec![
                    ("api_name".into(), endpoint.clone()),
                    ("status_code".into(), status.to_string()),
                ],
                value: *n as f64,
            })
            .collect();
        for (i, (name, help)) in [
            (
                "ca_enrollments_total",
                "Certificates issued by enroll and reenroll",
            ),
            ("ca_revocations_total", "Certificates revoked"),
        ]
        .into_iter()
        .enumerate()
        {
            for (ca_name, ca) in self.cas.iter() {
                let (enrolled, revoked) = ca.counts();
                out.push(Metric {
                    name: name.into(),
                    help: help.into(),
                    kind: "counter",
                    labels: vec![("ca_name".into(), ca_name.clone())],
                    value: if i == 0 { enrolled } else { revoked } as f64,
                });
            }
        }
        out
    }
}

#[derive(Clone)]
struct AppState {
    cas: CaSet,
}

fn ok(result: serde_json::Value) -> Response {
    ok_with(StatusCode::OK, result)
}

fn ok_with(status: StatusCode, result: serde_json::Value) -> Response {
    let body = serde_json::json!({"success": true, "result": result, "errors": [], "messages": []});
    (status, axum::Json(body)).into_response()
}

fn fail(e: CaError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::error!(error = %e, "request failed");
    }
    let mut response = (status, axum::Json(e.to_json())).into_response();
    response.extensions_mut().insert(Refusal(e.to_string()));
    response
}

/// Where a request came from (set per connection).
#[derive(Clone, Copy)]
struct Remote(SocketAddr);

/// Why a request was refused, for the refusal log.
#[derive(Clone)]
struct Refusal(String);

/// Logs every refused request (4xx) at WARN with the remote address, the endpoint and the
/// reason, rate-limited like every node's refusals (`log_refusal`), and counts every answer by
/// endpoint and status for the operations endpoint.
async fn log_refusals(
    State(state): State<AppState>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let remote = req.extensions().get::<Remote>().map(|r| r.0);
    let service = format!("ca {} {}", req.method(), req.uri().path());
    // The route's pattern, not the path: ids in paths must not become metric labels.
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().trim_start_matches("/api/v1/").to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let response = next.run(req).await;
    state.cas.count(endpoint, response.status().as_u16());
    if response.status().is_client_error() {
        let reason = response
            .extensions()
            .get::<Refusal>()
            .map_or_else(|| response.status().to_string(), |r| r.0.clone());
        medledger_common::refusal::log_refusal(&service, remote, None, &reason);
    }
    response
}

/// The request pieces the handlers need, with the body read under the size and time limits.
struct Raw {
    method: Method,
    /// Path and query, as the client signed it.
    path: String,
    query: BTreeMap<String, String>,
    headers: HeaderMap,
    body: Vec<u8>,
}

fn query_of(uri: &Uri) -> Result<BTreeMap<String, String>, CaError> {
    Query::<BTreeMap<String, String>>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| CaError::bad_request(code::BAD_BODY, format!("malformed query string: {e}")))
}

async fn read(req: Request) -> Result<Raw, CaError> {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| parts.uri.path().to_owned());
    let query = query_of(&parts.uri)?;
    let body = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        axum::body::to_bytes(body, MAX_BODY_BYTES),
    )
    .await
    .map_err(|_| {
        CaError::new(
            408,
            code::READING_BODY,
            format!("request body not received within {BODY_READ_TIMEOUT:?}"),
        )
    })?
    .map_err(|_| {
        CaError::new(
            413,
            code::READING_BODY,
            format!("request body is larger than {MAX_BODY_BYTES} bytes"),
        )
    })?;
    Ok(Raw {
        method: parts.method,
        path,
        query,
        headers: parts.headers,
        body: body.to_vec(),
    })
}

impl Raw {
    /// The CA this request is for (`getCAName`).
    fn ca(&self, cas: &CaSet) -> Result<Arc<Authority>, CaError> {
        if let Some(name) = self.query.get("ca").filter(|n| !n.is_empty()) {
            return cas.get(name);
        }
        #[derive(serde::Deserialize)]
        struct Named {
            #[serde(default)]
            caname: Option<String>,
        }
        let named = serde_json::from_slice::<Named>(&self.body)
            .ok()
            .and_then(|n| n.caname)
            .unwrap_or_default();
        cas.get(&named)
    }

    fn force(&self) -> Result<bool, CaError> {
        bool_query(&self.query, "force", code::UPDATE_CONFIG_REMOVE_AFF)
    }
}

fn parse<T: DeserializeOwned>(raw: &Raw) -> Result<T, CaError> {
    if raw.body.is_empty() {
        return Err(CaError::bad_request(
            code::EMPTY_BODY,
            "request body is empty",
        ));
    }
    serde_json::from_slice(&raw.body)
        .map_err(|e| CaError::bad_request(code::BAD_BODY, format!("malformed request body: {e}")))
}

fn header<'a>(raw: &'a Raw, name: &str) -> Option<&'a str> {
    raw.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Runs blocking CA work (password hashing, synced RocksDB writes) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CaError> + Send + 'static,
) -> Result<T, CaError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(CaError::internal(e)))
}

/// Reads a request, finds its CA, checks its token and runs `work` with the caller off the
/// async workers.
async fn as_caller<T: Send + 'static>(
    state: &AppState,
    req: Request,
    work: impl FnOnce(&Authority, Caller, Raw) -> Result<T, CaError> + Send + 'static,
) -> Result<T, CaError> {
    let raw = read(req).await?;
    let authority = raw.ca(&state.cas)?;
    let token = header(&raw, "authorization")
        .ok_or_else(|| CaError::unauthorized(code::NO_AUTH_HEADER, "no Authorization header"))?
        .to_owned();
    blocking(move || {
        let caller = authority.authenticate(&token, raw.method.as_str(), &raw.path, &raw.body)?;
        work(&authority, caller, raw)
    })
    .await
}

async fn cainfo(State(state): State<AppState>, req: Request) -> Response {
    let run = async {
        let raw = read(req).await?;
        Ok(raw.ca(&state.cas)?.cainfo())
    };
    run.await.map(ok).unwrap_or_else(fail)
}

async fn enroll(State(state): State<AppState>, req: Request) -> Response {
    let run = async {
        let raw = read(req).await?;
        let auth = header(&raw, "authorization")
            .and_then(|h| h.strip_prefix("Basic "))
            .and_then(|b| B64.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                CaError::unauthorized(
                    code::NO_USER_PASS,
                    "enroll needs basic authentication (id:secret)",
                )
            })?;
        let (id, secret) = auth.split_once(':').ok_or_else(|| {
            CaError::unauthorized(code::NO_USER_PASS, "basic authentication is not id:secret")
        })?;
        let (id, secret) = (id.to_owned(), secret.to_owned());
        let body: EnrollRequest = parse(&raw)?;
        let authority = raw.ca(&state.cas)?;
        // Secret checks are bounded (memory and CPU); waiting for a slot holds nothing else.
        let _slot = state
            .cas
            .secret_checks
            .clone()
            .acquire_owned()
            .await
            .map_err(CaError::internal)?;
        blocking(move || authority.enroll(&id, &secret, &body)).await
    };
    run.await.map(ok).unwrap_or_else(fail)
}

async fn reenroll(State(state): State<AppState>, req: Request) -> Response {
    as_caller(&state, req, |ca, caller, raw| {
        ca.reenroll(&caller, &parse::<EnrollRequest>(&raw)?)
    })
    .await
    .map(ok)
    .unwrap_or_else(fail)
}

async fn register(State(state): State<AppState>, req: Request) -> Response {
    as_caller(&state, req, |ca, caller, raw| {
        let secret = ca.register(&caller, &parse::<RegisterRequest>(&raw)?)?;
        Ok(serde_json::json!({ "secret": secret }))
    })
    .await
    .map(ok)
    .unwrap_or_else(fail)
}

async fn revoke(State(state): State<AppState>, req: Request) -> Response {
    as_caller(&state, req, |ca, caller, raw| {
        let result = ca.revoke(&caller, &parse::<RevokeRequest>(&raw)?)?;
        serde_json::to_value(result).map_err(CaError::internal)
    })
    .await
    .map(ok)
    .unwrap_or_else(fail)
}

async fn gencrl(State(state): State<AppState>, req: Request) -> Response {
    as_caller(&state, req, |ca, caller, _| {
        let pem = ca.gencrl(&caller)?;
        Ok(serde_json::json!({ "CRL": B64.encode(pem) }))
    })
    .await
    .map(ok)
    .unwrap_or_else(fail)
}

/// `/identities`: GET lists, POST adds (201).
async fn identities(State(state): State<AppState>, req: Request) -> Response {
    if req.method() == Method::POST {
        return as_caller(&state, req, |ca, caller, raw| {
            ca.add_identity(&caller, &parse::<RegisterRequest>(&raw)?)
        })
        .await
        .map(|v| ok_with(StatusCode::CREATED, v))
        .unwrap_or_else(fail);
    }
    as_caller(&state, req, |ca, caller, _| ca.identities(&caller))
        .await
        .map(ok)
        .unwrap_or_else(fail)
}

/// `/identities/{id}`: GET, PUT (modify), DELETE (remove).
async fn identity(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    req: Request,
) -> Response {
    let method = req.method().clone();
    as_caller(&state, req, move |ca, caller, raw| match method {
        Method::PUT => ca.modify_identity(&caller, &id, &parse::<ModifyIdentityRequest>(&raw)?),
        Method::DELETE => ca.remove_identity(&caller, &id, raw.force()?),
        _ => ca.identity(&caller, &id),
    })
    .await
    .map(ok)
    .unwrap_or_else(fail)
}

/// `/affiliations`: GET the tree, POST adds (201).
async fn affiliations(State(state): State<AppState>, req: Request) -> Response {
    if req.method() == Method::POST {
        return as_caller(&state, req, |ca, caller, raw| {
            let body: AffiliationRequest = parse(&raw)?;
            ca.add_affiliation(&caller, &body.name, raw.force()?)
        })
        .await
        .map(|v| ok_with(StatusCode::CREATED, v))
        .unwrap_or_else(fail);
    }
    as_caller(&state, req, |ca, caller, _| ca.affiliations(&caller))
        .await
        .map(ok)
        .unwrap_or_else(fail)
}

/// `/affiliations/{name}`: GET, PUT (rename), DELETE.
async fn affiliation(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    req: Request,
) -> Response {
    let method = req.method().clone();
    as_caller(&state, req, move |ca, caller, raw| match method {
        Method::PUT => {
            let body: AffiliationRequest = parse(&raw)?;
            let force = bool_query(&raw.query, "force", code::UPDATE_CONFIG_ADD_AFF)?;
            ca.modify_affiliation(&caller, &name, &body.name, force)
        }
        Method::DELETE => ca.remove_affiliation(&caller, &name, raw.force()?),
        _ => ca.affiliation(&caller, &name),
    })
    .await
    .map(ok)
    .unwrap_or_else(fail)
}

/// `GET /certificates` with Fabric CA's filters.
async fn certificates(State(state): State<AppState>, req: Request) -> Response {
    as_caller(&state, req, |ca, caller, raw| {
        let filter = CertificateFilter::from_query(&raw.query)?;
        let certs = ca.certificates(&caller, &filter)?;
        let certs: Vec<serde_json::Value> = certs
            .into_iter()
            .map(|pem| serde_json::json!({ "PEM": pem }))
            .collect();
        // As Fabric CA: the name echoed is the `ca` query parameter's.
        let caname = raw.query.get("ca").cloned().unwrap_or_default();
        Ok(serde_json::json!({ "certs": certs, "caname": caname }))
    })
    .await
    .map(ok)
    .unwrap_or_else(fail)
}

async fn not_found() -> Response {
    fail(CaError::new(404, code::UNKNOWN, "no such endpoint"))
}

/// Fabric CA's answer to a method an endpoint does not take.
async fn method_not_allowed(method: Method) -> Response {
    fail(CaError::new(
        405,
        code::METHOD_NOT_ALLOWED,
        format!("Method {method} is not allowed"),
    ))
}

/// The REST API's routes for one CA.
pub fn router(authority: Arc<Authority>) -> Router {
    router_for(CaSet::from(authority))
}

/// The REST API's routes for the CAs of a server.
pub fn router_for(cas: CaSet) -> Router {
    let state = AppState { cas };
    Router::new()
        .route("/api/v1/cainfo", get(cainfo).post(cainfo))
        .route("/api/v1/enroll", post(enroll))
        .route("/api/v1/reenroll", post(reenroll))
        .route("/api/v1/register", post(register))
        .route("/api/v1/revoke", post(revoke))
        .route("/api/v1/gencrl", post(gencrl))
        .route("/api/v1/identities", get(identities).post(identities))
        .route(
            "/api/v1/identities/{id}",
            get(identity).put(identity).delete(identity),
        )
        .route("/api/v1/affiliations", get(affiliations).post(affiliations))
        .route(
            "/api/v1/affiliations/{name}",
            get(affiliation).put(affiliation).delete(affiliation),
        )
        .route("/api/v1/certificates", get(certificates))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            log_refusals,
        ))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// Serves `/healthz` and Prometheus `/metrics` (see `CaSet::metrics`) on `listener` until
/// `shutdown` resolves, as the peer and orderer do.
pub async fn serve_operations(
    listener: TcpListener,
    cas: CaSet,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    medledger_common::ops::serve(listener, Arc::new(move || cas.metrics()), shutdown).await
}

/// A rustls server configuration from PEM files (certificate chain and PKCS#8 key).
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, CaError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect())
        .map_err(|e| CaError::internal(format!("TLS certificate {}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| CaError::internal(format!("TLS key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(CaError::internal)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(CaError::internal)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the API of `cas` (one CA, or a `CaSet`) on `listener` (HTTPS when `tls` is given)
/// until `shutdown` resolves. At most `MAX_CONNECTIONS` at once; a client gets
/// `TLS_HANDSHAKE_TIMEOUT` for its handshake and `HEADER_READ_TIMEOUT` for each request's headers.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    cas: impl Into<CaSet>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let app = router_for(cas.into());
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        // A slot before accepting: beyond the cap, clients wait in the backlog.
        let slot = tokio::select! {
            _ = &mut shutdown => return,
            slot = connections.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => return,
            },
        };
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let app = app.clone().layer(axum::Extension(Remote(peer)));
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = TowerToHyperService::new(app);
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let result = match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls)) => builder.serve_connection(TokioIo::new(tls), service).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
