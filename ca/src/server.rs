//! Fabric CA's REST API (`/api/v1/...`) over HTTPS, answering in cfssl's JSON envelope so that
//! `fabric-ca-client` and Fabric's Go client work unchanged.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

use crate::authority::{Authority, Caller, EnrollRequest, RegisterRequest, RevokeRequest};
use crate::error::{CaError, code};

/// The largest request body accepted (CSRs and registrations are a few KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone)]
struct AppState {
    authority: Arc<Authority>,
}

fn ok(result: serde_json::Value) -> Response {
    let body = serde_json::json!({"success": true, "result": result, "errors": [], "messages": []});
    (StatusCode::OK, axum::Json(body)).into_response()
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
/// reason, rate-limited like every node's refusals (`log_refusal`).
async fn log_refusals(req: Request, next: axum::middleware::Next) -> Response {
    let remote = req.extensions().get::<Remote>().map(|r| r.0);
    let service = format!("ca {} {}", req.method(), req.uri().path());
    let response = next.run(req).await;
    if response.status().is_client_error() {
        let reason = response
            .extensions()
            .get::<Refusal>()
            .map_or_else(|| response.status().to_string(), |r| r.0.clone());
        medledger_common::refusal::log_refusal(&service, remote, None, &reason);
    }
    response
}

/// The request pieces the handlers need, with the body read under the size limit.
struct Raw {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

async fn read(req: Request) -> Result<Raw, CaError> {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| parts.uri.path().to_owned());
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
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
        headers: parts.headers,
        body: body.to_vec(),
    })
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

async fn authenticated(
    state: &AppState,
    raw: Raw,
    one_time: bool,
) -> Result<(Caller, Raw), CaError> {
    let token = header(&raw, "authorization")
        .ok_or_else(|| CaError::unauthorized(code::NO_AUTH_HEADER, "no Authorization header"))?
        .to_owned();
    let authority = state.authority.clone();
    blocking(move || {
        let caller =
            authority.authenticate(&token, raw.method.as_str(), &raw.path, &raw.body, one_time)?;
        Ok((caller, raw))
    })
    .await
}

async fn cainfo(State(state): State<AppState>) -> Response {
    ok(state.authority.cainfo())
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
        let authority = state.authority.clone();
        blocking(move || authority.enroll(&id, &secret, &body)).await
    };
    run.await.map(ok).unwrap_or_else(fail)
}

async fn reenroll(State(state): State<AppState>, req: Request) -> Response {
    let run = async {
        let (caller, raw) = authenticated(&state, read(req).await?, true).await?;
        let body: EnrollRequest = parse(&raw)?;
        let authority = state.authority.clone();
        blocking(move || authority.reenroll(&caller, &body)).await
    };
    run.await.map(ok).unwrap_or_else(fail)
}

async fn register(State(state): State<AppState>, req: Request) -> Response {
    let run = async {
        let (caller, raw) = authenticated(&state, read(req).await?, true).await?;
        let body: RegisterRequest = parse(&raw)?;
        let authority = state.authority.clone();
        let secret = blocking(move || authority.register(&caller, &body)).await?;
        Ok(serde_json::json!({ "secret": secret }))
    };
    run.await.map(ok).unwrap_or_else(fail)
}

async fn revoke(State(state): State<AppState>, req: Request) -> Response {
    let run = async {
        let (caller, raw) = authenticated(&state, read(req).await?, true).await?;
        let body: RevokeRequest = parse(&raw)?;
        let authority = state.authority.clone();
        let result = blocking(move || authority.revoke(&caller, &body)).await?;
        serde_json::to_value(result).map_err(CaError::internal)
    };
    run.await.map(ok).unwrap_or_else(fail)
}

async fn gencrl(State(state): State<AppState>, req: Request) -> Response {
    let run = async {
        let (caller, _) = authenticated(&state, read(req).await?, true).await?;
        let authority = state.authority.clone();
        let pem = blocking(move || authority.gencrl(&caller)).await?;
        Ok(serde_json::json!({ "CRL": B64.encode(pem) }))
    };
    run.await.map(ok).unwrap_or_else(fail)
}

async fn identities(State(state): State<AppState>, req: Request) -> Response {
    let run = async {
        let (caller, _) = authenticated(&state, read(req).await?, false).await?;
        let authority = state.authority.clone();
        blocking(move || authority.identities(&caller)).await
    };
    run.await.map(ok).unwrap_or_else(fail)
}

async fn identity(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    req: Request,
) -> Response {
    let run = async {
        let (caller, _) = authenticated(&state, read(req).await?, false).await?;
        let authority = state.authority.clone();
        blocking(move || authority.identity(&caller, &id)).await
    };
    run.await.map(ok).unwrap_or_else(fail)
}

async fn not_found() -> Response {
    fail(CaError::new(404, code::UNKNOWN, "no such endpoint"))
}

/// The REST API's routes.
pub fn router(authority: Arc<Authority>) -> Router {
    Router::new()
        .route("/api/v1/cainfo", get(cainfo).post(cainfo))
        .route("/api/v1/enroll", post(enroll))
        .route("/api/v1/reenroll", post(reenroll))
        .route("/api/v1/register", post(register))
        .route("/api/v1/revoke", post(revoke))
        .route("/api/v1/gencrl", post(gencrl))
        .route("/api/v1/identities", get(identities))
        .route("/api/v1/identities/{id}", get(identity))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(log_refusals))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(AppState { authority })
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

/// Serves the API on `listener` (HTTPS when `tls` is given) until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    authority: Arc<Authority>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let app = router(authority);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
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
            let service = TowerToHyperService::new(app);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let result = match acceptor {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => builder.serve_connection(TokioIo::new(tls), service).await,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                },
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
