//! The RESTful ATNA feed: each AuditEvent POSTed as `application/fhir+json` to
//! `<base>/AuditEvent`; a 2xx answer is the acknowledgement. One kept-alive HTTP/1.1 connection,
//! over TLS for an `https` base.

use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{AuditError, CONNECT_TIMEOUT};

/// Largest answer body read (and thrown away) from the FHIR server.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirTarget {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// `<base path>/AuditEvent`.
    pub path: String,
}

impl FhirTarget {
    pub fn parse(base_url: &str) -> Result<Self, AuditError> {
        let bad = |why: &str| AuditError::Config(format!("audit.fhir.baseUrl {base_url:?}: {why}"));
        let uri: hyper::Uri = base_url.parse().map_err(|_| bad("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let host = uri.host().ok_or_else(|| bad("no host"))?.to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if uri.query().is_some() {
            return Err(bad("a base URL has no query"));
        }
        Ok(Self {
            https,
            host,
            port,
            path: format!("{}/AuditEvent", uri.path().trim_end_matches('/')),
        })
    }

    fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// POSTs events over one connection, redialled after a failure.
pub struct FhirClient {
    target: FhirTarget,
    tls: Option<Arc<rustls::ClientConfig>>,
    conn: Option<SendRequest<Full<Bytes>>>,
}

async fn http1<I>(io: I) -> Result<SendRequest<Full<Bytes>>, String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    // The connection's I/O runs on its own; it ends when the sender is dropped.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

impl FhirClient {
    pub fn new(target: FhirTarget, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Self {
            target,
            tls,
            conn: None,
        }
    }

    async fn dial(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let dial = async {
            let tcp = TcpStream::connect(self.target.authority())
                .await
                .map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                Some(config) => {
                    let name = rustls_pki_types::ServerName::try_from(self.target.host.clone())
                        .map_err(|e| e.to_string())?;
                    let tls = tokio_rustls::TlsConnector::from(config.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| format!("TLS: {e}"))?;
                    http1(tls).await
                }
                None => http1(tcp).await,
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, dial)
            .await
            .map_err(|_| "connection or TLS handshake timed out".to_owned())?
    }

    /// POSTs one AuditEvent; done on a 2xx answer.
    pub async fn send(&mut self, event_json: &[u8]) -> Result<(), String> {
        if self.conn.as_ref().is_none_or(SendRequest::is_closed) {
            self.conn = Some(self.dial().await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("not connected".into());
        };
        let request = hyper::Request::post(self.target.path.as_str())
            .header(hyper::header::HOST, self.target.authority())
            .header(hyper::header::CONTENT_TYPE, "application/fhir+json")
            .header(hyper::header::ACCEPT, "application/fhir+json")
            .body(Full::new(Bytes::copy_from_slice(event_json)))
            .map_err(|e| e.to_string())?;
        let answer = async {
            conn.ready().await.map_err(|e| e.to_string())?;
            let resp = conn
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status();
            // The body is read so the connection can carry the next request.
            let _ = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("the FHIR server answered {status}"))
            }
        };
        let result = answer.await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    pub fn reset(&mut self) {
        self.conn = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let t = FhirTarget::parse("https://audit.example:8443/fhir/").expect("url");
        assert_eq!(
            t,
            FhirTarget {
                https: true,
                host: "audit.example".into(),
                port: 8443,
                path: "/fhir/AuditEvent".into()
            }
        );
        assert_eq!(
            FhirTarget::parse("http://h").expect("url").path,
            "/AuditEvent"
        );
        assert!(FhirTarget::parse("ftp://h/fhir").is_err());
        assert!(FhirTarget::parse("https://h/fhir?x=1").is_err());
    }
}
