//! IHE ITI-20 over syslog: RFC 5424 messages whose body is the AuditEvent's JSON, sent over TLS
//! with RFC 5425's octet-counting framing (`MSG-LEN SP SYSLOG-MSG`), one long-lived connection.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{CONNECT_TIMEOUT, host_of};

/// PRI: facility 10 (security/authorization messages, as ITI-20 asks) × 8 + severity 5 (notice).
pub const PRI: u8 = 10 * 8 + 5;
pub const APP_NAME: &str = "medledger-peer";
/// MSGID of an AuditEvent in FHIR JSON (ITI-20's `IHE+RFC-3881` names the DICOM XML format).
pub const MSGID: &str = "IHE+FHIR";
/// RFC 5424 §6.4: a UTF-8 MSG starts with the byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";
/// The longest frame a receiver reading with [`read_frame`] accepts.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("MSG-LEN is not a number without leading zeros followed by a space")]
    Length,
    #[error("frame of {0} bytes is larger than {MAX_FRAME_BYTES}")]
    TooLarge(usize),
    #[error("connection ended inside a frame")]
    Truncated,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// RFC 5424's HOSTNAME: printable ASCII without spaces, at most 255 characters, `-` when none.
fn header_token(s: &str, max: usize) -> String {
    let t: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if t.is_empty() { "-".into() } else { t }
}

/// One RFC 5424 message: `<85>1 TIMESTAMP HOSTNAME medledger-peer PROCID IHE+FHIR - BOM body`.
pub fn message(timestamp: &str, hostname: &str, procid: u32, body: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "<{PRI}>1 {} {} {APP_NAME} {procid} {MSGID} - ",
        header_token(timestamp, 64),
        header_token(hostname, 255)
    )
    .into_bytes();
    m.extend_from_slice(BOM);
    m.extend_from_slice(body);
    m
}

/// RFC 5425 octet counting: the message's length in decimal, a space, the message.
pub fn frame(msg: &[u8]) -> Vec<u8> {
    let mut f = format!("{} ", msg.len()).into_bytes();
    f.extend_from_slice(msg);
    f
}

/// Reads one octet-counted frame; `None` at a clean end between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len: usize = 0;
    let mut digits = 0;
    loop {
        let mut b = [0u8; 1];
        if r.read(&mut b).await? == 0 {
            return if digits == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        match b[0] {
            b' ' if digits > 0 => break,
            d @ b'0'..=b'9' if !(digits == 0 && d == b'0') && digits < 10 => {
                len = len * 10 + usize::from(d - b'0');
                digits += 1;
            }
            _ => return Err(FrameError::Length),
        }
    }
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    let mut msg = vec![0u8; len];
    r.read_exact(&mut msg).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    Ok(Some(msg))
}

/// The MSG part of a message [`message`] wrote (after the header and the BOM).
pub fn body_of(msg: &[u8]) -> Option<&[u8]> {
    let at = msg.windows(BOM.len()).position(|w| w == BOM)?;
    Some(&msg[at + BOM.len()..])
}

/// A TLS connection to the audit record repository, opened when needed.
pub struct SyslogClient {
    address: String,
    hostname: String,
    tls: Arc<rustls::ClientConfig>,
    conn: Option<TlsStream<TcpStream>>,
}

impl SyslogClient {
    pub fn new(address: &str, hostname: &str, tls: Arc<rustls::ClientConfig>) -> Self {
        Self {
            address: address.to_owned(),
            hostname: hostname.to_owned(),
            tls,
            conn: None,
        }
    }

    async fn connect(&self) -> Result<TlsStream<TcpStream>, String> {
        let name = rustls_pki_types::ServerName::try_from(host_of(&self.address).to_owned())
            .map_err(|e| format!("{}: {e}", self.address))?;
        let dial = async {
            let tcp = TcpStream::connect(&self.address)
                .await
                .map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))
        };
        tokio::time::timeout(CONNECT_TIMEOUT, dial)
            .await
            .map_err(|_| "connection or TLS handshake timed out".to_owned())?
    }

    /// Sends one AuditEvent (its JSON); done once the frame is written and flushed. RFC 5425
    /// has no acknowledgement, so a connection the receiver closed is noticed before writing
    /// (it never sends anything, so anything readable is the end of the connection).
    pub async fn send(&mut self, event_json: &[u8]) -> Result<(), String> {
        if let Some(conn) = &mut self.conn {
            let mut probe = [0u8; 1];
            if let Some(r) = futures::FutureExt::now_or_never(conn.read(&mut probe)) {
                let _ = r;
                self.conn = None;
            }
        }
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let timestamp = serde_json::from_slice::<serde_json::Value>(event_json)
            .ok()
            .and_then(|v| v["recorded"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "-".into());
        let bytes = frame(&message(
            &timestamp,
            &self.hostname,
            std::process::id(),
            event_json,
        ));
        let Some(conn) = self.conn.as_mut() else {
            return Err("not connected".into());
        };
        let written = async {
            conn.write_all(&bytes).await?;
            conn.flush().await
        };
        if let Err(e) = written.await {
            self.conn = None;
            return Err(e.to_string());
        }
        Ok(())
    }

    /// Drops the connection (after a failure or a timeout).
    pub fn reset(&mut self) {
        self.conn = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_has_the_rfc5424_header_and_the_body_after_a_bom() {
        let m = message(
            "2024-01-02T03:04:05.678Z",
            "peer0 hospital1",
            42,
            b"{\"a\":1}",
        );
        let text = String::from_utf8_lossy(&m);
        assert!(
            text.starts_with(
                "<85>1 2024-01-02T03:04:05.678Z peer0hospital1 medledger-peer 42 IHE+FHIR - \u{FEFF}"
            ),
            "{text}"
        );
        assert_eq!(body_of(&m), Some(b"{\"a\":1}".as_slice()));
        assert!(String::from_utf8_lossy(&message("", "", 1, b"")).contains(" - - medledger-peer "));
    }

    #[tokio::test]
    async fn frames_are_octet_counted_and_read_back() {
        let a = frame(b"hello");
        assert_eq!(a, b"5 hello");
        let body = "é".repeat(300);
        let mut stream = [a.clone(), frame(body.as_bytes())].concat();
        let mut r = stream.as_slice();
        assert_eq!(
            read_frame(&mut r).await.ok().flatten(),
            Some(b"hello".to_vec())
        );
        assert_eq!(
            read_frame(&mut r).await.ok().flatten(),
            Some(body.as_bytes().to_vec()),
            "the length counts octets, not characters"
        );
        assert!(matches!(read_frame(&mut r).await, Ok(None)));
        stream.truncate(stream.len() - 1);
        let mut r = &stream[a.len()..];
        assert!(matches!(
            read_frame(&mut r).await,
            Err(FrameError::Truncated)
        ));
        for bad in [&b"05 hello"[..], b"x hello", b" hello", b"12345678901 x"] {
            let mut r = bad;
            assert!(
                matches!(read_frame(&mut r).await, Err(FrameError::Length)),
                "{bad:?}"
            );
        }
        let mut r = &b"9999999 x"[..];
        assert!(matches!(
            read_frame(&mut r).await,
            Err(FrameError::TooLarge(9999999))
        ));
    }
}
