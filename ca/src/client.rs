//! A Fabric CA client: signs Fabric CA's auth tokens, calls the REST API over HTTPS, and writes
//! enrolled identities as Fabric MSP folders.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use medledger_common::issue::certificate_request_pem;
use medledger_common::msp::{MspFolderContents, write_msp_folder};
use medledger_common::{PrivateKey, SigningIdentity};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::Serialize;

use crate::authority::{AttrRequest, EnrollRequest, RegisterRequest, RevokeRequest, RevokeResult};
use crate::error::CaError;
use crate::manage::{AffiliationRequest, ModifyIdentityRequest};

/// Errors talking to a CA.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid CA URL {0:?}: expected http(s)://[id:secret@]host:port")]
    Url(String),
    #[error("cannot reach the CA at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the CA's URL is https but no TLS root certificates were given")]
    NoTlsRoots,
    #[error("TLS handshake with the CA at {addr} failed: {reason}")]
    Handshake {
        addr: String,
        failure: TlsFailure,
        reason: String,
    },
    #[error("HTTP: {0}")]
    Http(String),
    #[error("the CA refused the request: {0}")]
    Ca(CaError),
    #[error("unexpected answer from the CA: {0}")]
    Decode(String),
    #[error("local files: {0}")]
    Local(String),
}

/// Why a TLS handshake with the CA failed, as far as the client can tell: what a person can fix
/// differs (another root certificate, another host name, or no TLS at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The server's certificate does not chain to the given roots.
    Untrusted,
    /// The server's certificate does not name the host in the URL.
    WrongHostName,
    /// The server did not answer in TLS (a plain HTTP server).
    NotTls,
    Other,
}

impl TlsFailure {
    fn of(e: &std::io::Error) -> Self {
        use rustls::{CertificateError, Error};
        match e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
            Some(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Self::WrongHostName,
            Some(Error::InvalidCertificate(_)) => Self::Untrusted,
            Some(Error::InvalidMessage(_) | Error::InappropriateMessage { .. }) => Self::NotTls,
            _ => Self::Other,
        }
    }
}

/// Where a CA is and how to trust it.
#[derive(Clone)]
pub struct CaClient {
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The CA of the server to talk to (`?ca=`); the server's default when None.
    ca_name: Option<String>,
}

/// Parsed `https://id:secret@host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaUrl {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub user: Option<(String, String)>,
}

impl CaUrl {
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = || ClientError::Url(url.to_owned());
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let rest = rest.trim_end_matches('/');
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => {
                let (id, secret) = u.split_once(':').ok_or_else(bad)?;
                (Some((id.to_owned(), secret.to_owned())), h)
            }
            None => (None, rest),
        };
        let (host, port) = hostport.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse().map_err(|_| bad())?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            https,
            host: host.to_owned(),
            port,
            user,
        })
    }
}

impl CaClient {
    /// A client for `url`; HTTPS trusts the PEM certificates in `tls_roots_pem`.
    pub fn new(url: &CaUrl, tls_roots_pem: Option<&[u8]>) -> Result<Self, ClientError> {
        let tls = if url.https {
            let pem = tls_roots_pem.ok_or(ClientError::NoTlsRoots)?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| ClientError::Tls(e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| ClientError::Tls(e.to_string()))?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| ClientError::Tls(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(Arc::new(config))
        } else {
            None
        };
        Ok(Self {
            host: url.host.clone(),
            port: url.port,
            tls,
            ca_name: None,
        })
    }

    /// Talks to the CA named `name` of a server serving several (Fabric CA's `caname`).
    pub fn with_ca_name(mut self, name: &str) -> Self {
        self.ca_name = (!name.is_empty()).then(|| name.to_owned());
        self
    }

    /// `api` with the CA's name added as the `ca` query parameter, when one is set.
    fn at_ca(&self, api: &str) -> String {
        match &self.ca_name {
            None => api.to_owned(),
            Some(name) => {
                let sep = if api.contains('?') { '&' } else { '?' };
                format!("{api}{sep}ca={}", escape(name))
            }
        }
    }

    /// Sends one request and returns the HTTP status and the JSON envelope, whatever it says.
    pub async fn raw(
        &self,
        method: &str,
        api: &str,
        body: Option<Vec<u8>>,
        authorization: Option<String>,
    ) -> Result<(u16, serde_json::Value), ClientError> {
        let addr = format!("{}:{}", self.host, self.port);
        let tcp =
            tokio::net::TcpStream::connect(&addr)
                .await
                .map_err(|e| ClientError::Connect {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
        let path = format!("/api/v1/{api}");
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(&path)
            .header("host", &addr)
            .header("content-type", "application/json");
        if let Some(a) = authorization {
            builder = builder.header("authorization", a);
        }
        let req = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = match &self.tls {
            Some(config) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| ClientError::Tls(e.to_string()))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ClientError::Handshake {
                        addr: addr.clone(),
                        failure: TlsFailure::of(&e),
                        reason: e.to_string(),
                    })?;
                roundtrip(TokioIo::new(tls), req).await?
            }
            None => roundtrip(TokioIo::new(tcp), req).await?,
        };
        let (status, body) = resp;
        let parsed: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            ClientError::Decode(format!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            ))
        })?;
        Ok((status, parsed))
    }

    async fn send(
        &self,
        method: &str,
        api: &str,
        body: Option<Vec<u8>>,
        authorization: Option<String>,
    ) -> Result<serde_json::Value, ClientError> {
        let (status, parsed) = self
            .raw(method, &self.at_ca(api), body, authorization)
            .await?;
        if parsed["success"] == true {
            return Ok(parsed["result"].clone());
        }
        let err = &parsed["errors"][0];
        Err(ClientError::Ca(CaError {
            status,
            code: err["code"].as_u64().unwrap_or(0) as u32,
            message: err["message"]
                .as_str()
                .unwrap_or("unknown error")
                .to_owned(),
        }))
    }

    async fn signed(
        &self,
        method: &str,
        api: &str,
        body: Option<&impl Serialize>,
        signer: &SigningIdentity,
    ) -> Result<serde_json::Value, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        let token = auth_token(
            signer,
            method,
            &format!("/api/v1/{}", self.at_ca(api)),
            body.as_deref().unwrap_or(b""),
        )?;
        self.send(method, api, body, Some(token)).await
    }

    /// `cainfo`: the CA's name and chain (PEM).
    pub async fn cainfo(&self) -> Result<(String, String), ClientError> {
        let r = self.send("GET", "cainfo", None, None).await?;
        Ok((
            r["CAName"].as_str().unwrap_or_default().to_owned(),
            decode_b64(&r["CAChain"])?,
        ))
    }

    /// `enroll` with id and secret; returns (certificate PEM, CA chain PEM).
    pub async fn enroll(
        &self,
        id: &str,
        secret: &str,
        req: &EnrollRequest,
    ) -> Result<(String, String), ClientError> {
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Decode(e.to_string()))?;
        let basic = format!("Basic {}", B64.encode(format!("{id}:{secret}")));
        let r = self.send("POST", "enroll", Some(body), Some(basic)).await?;
        Ok((
            decode_b64(&r["Cert"])?,
            decode_b64(&r["ServerInfo"]["CAChain"])?,
        ))
    }

    /// `reenroll` as `signer`.
    pub async fn reenroll(
        &self,
        signer: &SigningIdentity,
        req: &EnrollRequest,
    ) -> Result<(String, String), ClientError> {
        let r = self.signed("POST", "reenroll", Some(req), signer).await?;
        Ok((
            decode_b64(&r["Cert"])?,
            decode_b64(&r["ServerInfo"]["CAChain"])?,
        ))
    }

    /// `register` as registrar `signer`; returns the enrollment secret.
    pub async fn register(
        &self,
        signer: &SigningIdentity,
        req: &RegisterRequest,
    ) -> Result<String, ClientError> {
        let r = self.signed("POST", "register", Some(req), signer).await?;
        r["secret"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Decode("no secret in register result".into()))
    }

    /// `revoke` as `signer`.
    pub async fn revoke(
        &self,
        signer: &SigningIdentity,
        req: &RevokeRequest,
    ) -> Result<RevokeResult, ClientError> {
        let r = self.signed("POST", "revoke", Some(req), signer).await?;
        serde_json::from_value(r).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `gencrl` as `signer`; returns the CRL PEM.
    pub async fn gencrl(&self, signer: &SigningIdentity) -> Result<String, ClientError> {
        let r = self
            .signed("POST", "gencrl", Some(&serde_json::json!({})), signer)
            .await?;
        decode_b64(&r["CRL"])
    }

    /// `GET identities` as registrar `signer`.
    pub async fn identities(
        &self,
        signer: &SigningIdentity,
    ) -> Result<serde_json::Value, ClientError> {
        self.signed("GET", "identities", None::<&()>, signer).await
    }

    /// `GET identities/{id}`.
    pub async fn identity(
        &self,
        signer: &SigningIdentity,
        id: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let api = format!("identities/{}", escape(id));
        self.signed("GET", &api, None::<&()>, signer).await
    }

    /// `POST identities`: adds an identity; the answer carries its secret.
    pub async fn add_identity(
        &self,
        signer: &SigningIdentity,
        req: &RegisterRequest,
    ) -> Result<serde_json::Value, ClientError> {
        self.signed("POST", "identities", Some(req), signer).await
    }

    /// `PUT identities/{id}`.
    pub async fn modify_identity(
        &self,
        signer: &SigningIdentity,
        id: &str,
        req: &ModifyIdentityRequest,
    ) -> Result<serde_json::Value, ClientError> {
        let api = format!("identities/{}", escape(id));
        self.signed("PUT", &api, Some(req), signer).await
    }

    /// `DELETE identities/{id}` (`force` to delete one's own).
    pub async fn remove_identity(
        &self,
        signer: &SigningIdentity,
        id: &str,
        force: bool,
    ) -> Result<serde_json::Value, ClientError> {
        let api = with_force(format!("identities/{}", escape(id)), force);
        self.signed("DELETE", &api, None::<&()>, signer).await
    }

    /// `GET affiliations` (all under the caller's) or `GET affiliations/{name}`.
    pub async fn affiliations(
        &self,
        signer: &SigningIdentity,
        name: Option<&str>,
    ) -> Result<serde_json::Value, ClientError> {
        let api = match name {
            Some(n) => format!("affiliations/{}", escape(n)),
            None => "affiliations".to_owned(),
        };
        self.signed("GET", &api, None::<&()>, signer).await
    }

    /// `POST affiliations` (`force` also adds the missing parents).
    pub async fn add_affiliation(
        &self,
        signer: &SigningIdentity,
        name: &str,
        force: bool,
    ) -> Result<serde_json::Value, ClientError> {
        let body = AffiliationRequest { name: name.into() };
        let api = with_force("affiliations".to_owned(), force);
        self.signed("POST", &api, Some(&body), signer).await
    }

    /// `PUT affiliations/{name}`: renames it to `new_name` (`force` moves its identities too).
    pub async fn modify_affiliation(
        &self,
        signer: &SigningIdentity,
        name: &str,
        new_name: &str,
        force: bool,
    ) -> Result<serde_json::Value, ClientError> {
        let body = AffiliationRequest {
            name: new_name.into(),
        };
        let api = with_force(format!("affiliations/{}", escape(name)), force);
        self.signed("PUT", &api, Some(&body), signer).await
    }

    /// `DELETE affiliations/{name}`.
    pub async fn remove_affiliation(
        &self,
        signer: &SigningIdentity,
        name: &str,
        force: bool,
    ) -> Result<serde_json::Value, ClientError> {
        let api = with_force(format!("affiliations/{}", escape(name)), force);
        self.signed("DELETE", &api, None::<&()>, signer).await
    }

    /// `GET certificates` with Fabric CA's filters (`id`, `serial`, `aki`, `notexpired`,
    /// `notrevoked`, `expired_start`...); returns the PEMs.
    pub async fn certificates(
        &self,
        signer: &SigningIdentity,
        filters: &[(&str, String)],
    ) -> Result<Vec<String>, ClientError> {
        let query: Vec<String> = filters
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={}", escape(v)))
            .collect();
        let api = if query.is_empty() {
            "certificates".to_owned()
        } else {
            format!("certificates?{}", query.join("&"))
        };
        let r = self.signed("GET", &api, None::<&()>, signer).await?;
        Ok(r["certs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["PEM"].as_str().map(str::to_owned))
            .collect())
    }
}

fn with_force(api: String, force: bool) -> String {
    if force {
        format!("{api}?force=true")
    } else {
        api
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for path segments (identity
/// and affiliation names) and query values.
fn escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn roundtrip<S>(
    io: TokioIo<S>,
    req: hyper::Request<Full<Bytes>>,
) -> Result<(u16, Vec<u8>), ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    Ok((status, body.to_bytes().to_vec()))
}

fn decode_b64(v: &serde_json::Value) -> Result<String, ClientError> {
    let s = v.as_str().unwrap_or_default();
    let bytes = B64
        .decode(s)
        .map_err(|e| ClientError::Decode(format!("bad base64: {e}")))?;
    String::from_utf8(bytes).map_err(|e| ClientError::Decode(e.to_string()))
}

/// Fabric CA's token: `b64(cert PEM).b64(signature)`, the signature over
/// `METHOD.b64(path).b64(body).b64(cert PEM)`.
pub fn auth_token(
    signer: &SigningIdentity,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<String, ClientError> {
    let cert = B64.encode(signer.cert_pem());
    let msg = format!("{method}.{}.{}.{cert}", B64.encode(path), B64.encode(body));
    let sig = signer
        .sign(msg.as_bytes())
        .map_err(|e| ClientError::Local(e.to_string()))?;
    Ok(format!("{cert}.{}", B64.encode(sig)))
}

/// What to ask for when enrolling into an MSP folder.
#[derive(Debug, Clone, Default)]
pub struct EnrollOptions {
    /// `tls` for a TLS certificate; empty for an enrollment certificate.
    pub profile: Option<String>,
    pub attr_reqs: Vec<AttrRequest>,
    pub hosts: Vec<String>,
}

/// Enrolls `id` with a fresh P-256 key and writes the MSP folder as Fabric CA's client does (see
/// `write_enrollment`).
pub async fn enroll_to_msp(
    client: &CaClient,
    id: &str,
    secret: &str,
    opts: &EnrollOptions,
    msp_dir: &Path,
) -> Result<(), ClientError> {
    let key = PrivateKey::generate();
    let csr = certificate_request_pem(&key, id, &opts.hosts)
        .map_err(|e| ClientError::Local(e.to_string()))?;
    let req = EnrollRequest {
        certificate_request: csr,
        profile: opts.profile.clone(),
        attr_reqs: if opts.attr_reqs.is_empty() {
            None
        } else {
            Some(opts.attr_reqs.clone())
        },
        hosts: if opts.hosts.is_empty() {
            None
        } else {
            Some(opts.hosts.clone())
        },
    };
    let (cert, chain) = client.enroll(id, secret, &req).await?;
    let tls = opts.profile.as_deref() == Some("tls");
    write_enrollment(msp_dir, &cert, &key, &chain, tls)
}

/// The CA chain a CA sent split as Fabric CA's client does: roots (no AKI, or AKI = SKI) and
/// intermediates; every certificate must be a CA.
fn split_chain(chain_pem: &str) -> Result<(String, String), ClientError> {
    let (mut roots, mut intermediates) = (String::new(), String::new());
    for block in pem_blocks(chain_pem) {
        let cert = medledger_common::Certificate::from_pem(block.as_bytes())
            .map_err(|e| ClientError::Decode(format!("a certificate in the CA chain: {e}")))?;
        if !cert.is_ca {
            return Err(ClientError::Decode(
                "A certificate in the CA chain is not a CA certificate".into(),
            ));
        }
        let root = cert.authority_key_id.is_none() || cert.authority_key_id == cert.subject_key_id;
        if root { &mut roots } else { &mut intermediates }.push_str(&block);
    }
    if roots.is_empty() {
        return Err(ClientError::Decode(
            "the CA sent a chain without a root certificate".into(),
        ));
    }
    Ok((roots, intermediates))
}

fn local(path: &Path, e: impl std::fmt::Display) -> ClientError {
    ClientError::Local(format!("{}: {e}", path.display()))
}

/// Writes an enrolled certificate, its key and the CA chain as Fabric CA's client lays out an
/// MSP folder: the chain's root in `cacerts/` and the rest in `intermediatecerts/`, or for a TLS
/// certificate (`tls`) in `tlscacerts/` and `tlsintermediatecerts/`; an enrollment certificate's
/// folder also gets `config.yaml` with Node OUs. The key is created owner-only (never readable by
/// others, even for a moment) and written durably.
pub fn write_enrollment(
    msp_dir: &Path,
    cert_pem: &str,
    key: &PrivateKey,
    chain_pem: &str,
    tls: bool,
) -> Result<(), ClientError> {
    let (roots, intermediates) = split_chain(chain_pem)?;
    let write = |rel: &str, text: &str, mode: Option<u32>| {
        let path = msp_dir.join(rel);
        medledger_common::durable::write_file_durably(&path, text.as_bytes(), mode)
            .map_err(|e| local(&path, e))
    };
    let cert = medledger_common::Certificate::from_pem(cert_pem.as_bytes())
        .map_err(|e| ClientError::Decode(format!("the enrolled certificate: {e}")))?;
    // Named as Fabric's BCCSP names a key: its SKI, then `_sk`.
    let key_name = match &cert.subject_key_id {
        Some(ski) => format!("keystore/{}_sk", hex::encode(ski)),
        None => "keystore/priv_sk".to_owned(),
    };
    let key_pem = key
        .to_pkcs8_pem()
        .map_err(|e| ClientError::Local(e.to_string()))?;
    write(&key_name, &key_pem, Some(KEY_FILE_MODE))?;
    if tls {
        write("signcerts/cert.pem", cert_pem, None)?;
        write("tlscacerts/tls-ca.pem", &roots, None)?;
        if !intermediates.is_empty() {
            write(
                "tlsintermediatecerts/tls-ca-chain.pem",
                &intermediates,
                None,
            )?;
        }
        return Ok(());
    }
    write_msp_folder(
        msp_dir,
        &MspFolderContents {
            signcert_pem: cert_pem.to_owned(),
            key_pem: None,
            cacert_pem: roots,
            intermediate_pem: (!intermediates.is_empty()).then_some(intermediates),
            tlscacert_pem: None,
            crl_pems: vec![],
            node_ous: true,
        },
    )
    .map_err(|e| local(msp_dir, e))
}

/// Private keys are readable by their owner only.
const KEY_FILE_MODE: u32 = 0o600;

fn pem_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        current.push_str(line);
        current.push('\n');
        if line.starts_with("-----END") {
            out.push(std::mem::take(&mut current));
        }
    }
    out
}
