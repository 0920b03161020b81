//! The audit feed (IHE ATNA) on the real stack: a Hospital1 peer running the medical chaincode
//! sends an AuditEvent (IHE BALP) for every Evaluate and Endorse of it to a local TLS syslog
//! receiver (RFC 5425 framing, mutual TLS) and a local FHIR HTTP receiver; events wait on disk
//! while the receivers are down and arrive in order when they come back (at-least-once: the test
//! checks every call's event arrives, in the peer's order, and none twice in these outages); a
//! full queue keeps what it holds, refuses the rest loudly and reports the gap; a receiver that
//! accepts and never reads does not slow endorsement.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use medledger_peer::services::audit::syslog::{body_of, read_frame};
use medledger_peer::services::audit::{AuditConfig, FhirConfig, SyslogConfig};
use medledger_tests::LogCapture;
use medledger_tests::ordernet::free_port;
use medledger_tests::peernet::{PeerNet, start_medical};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CONTENT: &str = r#"{"resourceType":"Observation","status":"final","code":{"text":"HbA1c"},"valueString":"7.9 percent"}"#;

/// One log capture for the whole test process: the audit writer logs from its own thread.
fn log() -> &'static LogCapture {
    static LOG: OnceLock<LogCapture> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = LogCapture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(log.clone())
            .with_ansi(false)
            .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        log
    })
}

/// A receiver's events and the tasks serving it (aborted to take it down).
#[derive(Clone, Default)]
struct Received {
    events: Arc<Mutex<Vec<Value>>>,
    /// (path, content type) of each HTTP request.
    requests: Arc<Mutex<Vec<(String, String)>>>,
    /// Syslog headers (before the body).
    headers: Arc<Mutex<Vec<String>>>,
}

impl Received {
    fn events(&self) -> Vec<Value> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    async fn wait_for(&self, n: usize) -> anyhow::Result<Vec<Value>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let events = self.events();
            if events.len() >= n {
                return Ok(events);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} of {n} events arrived: {events:?}",
                events.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

struct Server {
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Server {
    /// Takes the receiver down: the listener and every connection close.
    fn stop(&self) {
        for t in self
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
        {
            t.abort();
        }
    }
}

async fn bind(port: u16) -> anyhow::Result<TcpListener> {
    // The port may linger a moment after a stopped receiver.
    for _ in 0..50 {
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)).await {
            return Ok(l);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("port {port} stays taken")
}

/// A TLS syslog receiver (the organisation's TLS certificate; peers must present one of its TLS
/// CA's certificates) reading RFC 5425 frames.
async fn syslog_receiver(net: &PeerNet, port: u16, into: &Received) -> anyhow::Result<Server> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let org = &net.orgs[0];
    let (cert, key) = org.tls_pair("audit.hospital1")?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(
        org.tls_ca.cert_pem().as_bytes(),
    )?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            CertificateDer::pem_slice_iter(&cert).collect::<Result<Vec<_>, _>>()?,
            PrivateKeyDer::from_pem_slice(&key)?,
        )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = bind(port).await?;
    let tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
    let (into, conns) = (into.clone(), tasks.clone());
    let accept = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, into) = (acceptor.clone(), into.clone());
            let conn = tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                while let Ok(Some(msg)) = read_frame(&mut tls).await {
                    let Some(body) = body_of(&msg) else {
                        continue;
                    };
                    let header = String::from_utf8_lossy(&msg[..msg.len() - body.len()]);
                    if let Ok(v) = serde_json::from_slice::<Value>(body) {
                        if let Ok(mut h) = into.headers.lock() {
                            h.push(header.into_owned());
                        }
                        if let Ok(mut e) = into.events.lock() {
                            e.push(v);
                        }
                    }
                }
            });
            if let Ok(mut c) = conns.lock() {
                c.push(conn.abort_handle());
            }
        }
    });
    tasks
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .push(accept.abort_handle());
    Ok(Server { tasks })
}

/// A FHIR server stand-in: answers each POST with 201 and keeps the body.
async fn http_receiver(port: u16, into: &Received) -> anyhow::Result<Server> {
    let listener = bind(port).await?;
    let tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
    let (into, conns) = (into.clone(), tasks.clone());
    let accept = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let into = into.clone();
            let conn = tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                            })
                            .unwrap_or_default()
                    };
                    let len: usize = header("content-length").parse().unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        let mut chunk = [0u8; 4096];
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body: Vec<u8> = buf.drain(..end + 4 + len).skip(end + 4).collect();
                    let path = head
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_owned();
                    if let Ok(mut r) = into.requests.lock() {
                        r.push((path, header("content-type")));
                    }
                    if let (Ok(v), Ok(mut e)) =
                        (serde_json::from_slice::<Value>(&body), into.events.lock())
                    {
                        e.push(v);
                    }
                    let answer = b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n";
                    if tcp.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
            if let Ok(mut c) = conns.lock() {
                c.push(conn.abort_handle());
            }
        }
    });
    tasks
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .push(accept.abort_handle());
    Ok(Server { tasks })
}

/// A receiver that accepts connections and never reads from them.
async fn hung_receiver(port: u16) -> anyhow::Result<Server> {
    let listener = bind(port).await?;
    let accept = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    Ok(Server {
        tasks: Arc::new(Mutex::new(vec![accept.abort_handle()])),
    })
}

/// The audit section for peer 0: the medical chaincode (`kv` in the test network) to syslog
/// and/or the FHIR receiver.
fn audit_config(
    net: &PeerNet,
    syslog_port: Option<u16>,
    fhir_port: Option<u16>,
    max: usize,
) -> anyhow::Result<AuditConfig> {
    let tls = net.configs[0]
        .tls
        .clone()
        .ok_or_else(|| anyhow::anyhow!("tls"))?;
    Ok(AuditConfig {
        chaincodes: vec![medledger_tests::peernet::CHAINCODE.into()],
        queue_dir: Some(net.dir.path().join("audit-queue")),
        queue_max_events: max,
        syslog: syslog_port.map(|p| SyslogConfig {
            address: format!("localhost:{p}"),
            tls_root_cert_file: tls.client_root_cas[0].clone(),
            client_cert_file: Some(tls.cert_file.clone()),
            client_key_file: Some(tls.key_file.clone()),
            hostname: None,
        }),
        fhir: fhir_port.map(|p| FhirConfig {
            base_url: format!("http://127.0.0.1:{p}/fhir"),
            tls_root_cert_file: None,
        }),
    })
}

async fn restart_with_audit(net: &mut PeerNet, audit: Option<AuditConfig>) -> anyhow::Result<()> {
    net.stop_peer(0).await;
    net.configs[0].audit = audit;
    net.start_peer(0).await
}

fn strict(event: &Value) -> anyhow::Result<()> {
    let config = fhirbolt::serde::DeserializationConfig {
        mode: fhirbolt::serde::DeserializationMode::Strict,
    };
    let _: fhirbolt::model::r4::Resource =
        fhirbolt::json::from_str(&event.to_string(), Some(config))
            .map_err(|e| anyhow::anyhow!("not FHIR R4: {e}: {event}"))?;
    Ok(())
}

fn tx_of(e: &Value) -> String {
    e["entity"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["type"]["code"] == "XrequestId")
        .and_then(|x| x["what"]["identifier"]["value"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn seq_of(e: &Value) -> u64 {
    e["meta"]["source"]
        .as_str()
        .and_then(|s| s.rsplit(':').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn entity_values(e: &Value) -> Vec<String> {
    e["entity"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["what"]["identifier"]["value"].as_str())
        .map(str::to_owned)
        .collect()
}

/// `function first-entity` of an event (`GetRecord R-0`).
fn call_of(e: &Value) -> String {
    let function = e["entity"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|x| x["detail"].as_array().cloned().unwrap_or_default())
        .find(|d| d["type"] == "function")
        .and_then(|d| d["valueString"].as_str().map(str::to_owned))
        .unwrap_or_default();
    format!(
        "{function} {}",
        entity_values(e).first().cloned().unwrap_or_default()
    )
}

fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Each event of `events` in order, checked to be FHIR R4 and to increase in the peer's sequence.
fn in_peer_order(events: &[Value]) -> anyhow::Result<Vec<String>> {
    let mut last = 0;
    let mut txs = Vec::new();
    for e in events {
        strict(e)?;
        let seq = seq_of(e);
        anyhow::ensure!(
            seq > last,
            "out of order or repeated: {seq} after {last}: {events:?}"
        );
        last = seq;
        txs.push(tx_of(e));
    }
    Ok(txs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_read_and_query_become_balp_audit_events_on_syslog_and_fhir() -> anyhow::Result<()> {
    let mut net = start_medical(1).await?;
    let (syslog_port, fhir_port) = (free_port()?, free_port()?);
    let (by_syslog, by_fhir) = (Received::default(), Received::default());
    let _syslog = syslog_receiver(&net, syslog_port, &by_syslog).await?;
    let _fhir = http_receiver(fhir_port, &by_fhir).await?;
    let audit = audit_config(&net, Some(syslog_port), Some(fhir_port), 1000)?;
    restart_with_audit(&mut net, Some(audit)).await?;

    let doctor = net.orgs[0].identity("doctor1", "client", &[("role", "doctor")])?;
    let nurse = net.orgs[0].identity("nurse1", "client", &[("role", "nurse")])?;
    let mut gw = net.gateway(0, doctor.clone()).await?;
    let salt: [u8; 32] = rand::random();
    let transient = HashMap::from([
        ("content".to_owned(), CONTENT.as_bytes().to_vec()),
        ("salt".to_owned(), salt.to_vec()),
    ]);
    let record = r#"{"id":"R-1","patientId":"P-0042","resourceType":"Observation"}"#;
    let (create_tx, _, _, _) = gw.submit_with(&["CreateRecord", record], transient).await?;
    let (ticket, _, block, _) = gw.submit(&["RequestAccess", "R-1", "TREAT"]).await?;
    net.wait_height(block + 1).await?;
    let read = gw.evaluate(&["ReadRecord", "R-1", &ticket]).await?;
    assert!(String::from_utf8_lossy(&read).contains("HbA1c"));
    gw.evaluate(&["ListRecordsByPatient", "P-0042", "20", ""])
        .await?;
    // Another member with the doctor's ticket: the chaincode says no (ticket is personal).
    let mut as_nurse = net.gateway(0, nurse.clone()).await?;
    assert!(
        as_nurse
            .evaluate(&["ReadRecord", "R-1", &ticket])
            .await
            .is_err()
    );
    // A revoked certificate: the peer refuses before running anything.
    let mut revoked = net.gateway(0, net.revoked_client.clone()).await?;
    assert!(revoked.evaluate(&["GetRecord", "R-1"]).await.is_err());

    // A proposal naming the doctor but signed by someone else: refused, and not written into
    // the audit trail under the doctor's name (anyone could claim any identity).
    let (mut forged, forged_tx) = medledger_common::protoutil::build_signed_proposal(
        &medledger_common::protoutil::Invocation {
            channel: medledger_tests::peernet::CHANNEL.into(),
            chaincode: medledger_tests::peernet::CHAINCODE.into(),
            args: vec![b"GetRecord".to_vec(), b"R-1".to_vec()],
            transient: HashMap::new(),
            is_init: false,
        },
        &doctor,
    )?;
    forged.signature = nurse.sign(&forged.proposal_bytes)?;
    let ch = medledger_peer::comm::dial(
        &net.address(0),
        &[net.orgs[0].tls_ca.cert_pem().as_bytes().to_vec()],
        None,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let refused = medledger_proto::protos::endorser_client::EndorserClient::new(ch)
        .process_proposal(forged)
        .await;
    assert!(refused.map_or(true, |r| r.into_inner().endorsement.is_none()));

    // Another peer's gateway (or an old-style client) asking through protos.Endorser.
    let (sp, _) = medledger_common::protoutil::build_signed_proposal(
        &medledger_common::protoutil::Invocation {
            channel: medledger_tests::peernet::CHANNEL.into(),
            chaincode: medledger_tests::peernet::CHAINCODE.into(),
            args: vec![b"GetRecord".to_vec(), b"R-1".to_vec()],
            transient: HashMap::new(),
            is_init: false,
        },
        &doctor,
    )?;
    let root = net.orgs[0].tls_ca.cert_pem().as_bytes().to_vec();
    let ch = medledger_peer::comm::dial(&net.address(0), &[root], None)
        .await
        .map_err(anyhow::Error::msg)?;
    let answer = medledger_proto::protos::endorser_client::EndorserClient::new(ch)
        .process_proposal(sp)
        .await?
        .into_inner();
    assert!(answer.endorsement.is_some());

    for (how, received) in [("syslog", &by_syslog), ("fhir", &by_fhir)] {
        let events = received.wait_for(7).await?;
        assert!(
            events.iter().all(|e| !e.to_string().contains(&forged_tx)),
            "{how}: a forged proposal is in the audit trail"
        );
        let txs = in_peer_order(&events)?;
        assert_eq!(txs.len(), 7, "{how}: {events:?}");
        assert_eq!(call_of(&events[6]), "GetRecord P-0042", "{how}");
        assert!(
            events[6]
                .to_string()
                .contains("protos.Endorser/ProcessProposal")
        );
        assert_eq!(events[6]["outcome"], "0");
        assert_eq!(&txs[0], &create_tx, "{how}");
        assert_eq!(&txs[1], &ticket, "{how}");
        let field = |i: usize, f: &str| events[i][f].as_str().unwrap_or_default().to_owned();
        let requestor = |i: usize| events[i]["agent"][0]["who"]["identifier"]["value"].clone();
        let code = |i: usize| {
            events[i]["subtype"][0]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };

        // CreateRecord: BALP PatientCreate, by the doctor of Hospital1MSP, about R-1 and P-0042.
        assert_eq!(
            (field(0, "action"), code(0), field(0, "outcome")),
            ("C".into(), "create".into(), "0".into()),
            "{how}"
        );
        assert!(
            requestor(0).as_str().is_some_and(|s| s.contains("doctor1")),
            "{how} {}",
            events[0]
        );
        assert_eq!(
            events[0]["agent"][0]["who"]["identifier"]["system"],
            "urn:medledger:msp:Hospital1MSP"
        );
        assert_eq!(events[0]["agent"][0]["requestor"], true);
        assert_eq!(entity_values(&events[0])[..2], ["P-0042", "R-1"], "{how}");
        assert!(
            events[0]["meta"]["profile"][0]
                .as_str()
                .is_some_and(|p| p.ends_with("PatientCreate"))
        );
        assert!(
            events[0]["source"]["observer"]["identifier"]["value"]
                .as_str()
                .is_some_and(|s| s.contains("peer0.hospital1"))
        );
        // RequestAccess carries the purpose.
        assert_eq!(
            events[1]["purposeOfEvent"][0]["coding"][0]["code"], "TREAT",
            "{how}"
        );
        // ReadRecord: a read of R-1, the patient taken from the answer, never its content.
        assert_eq!(
            (field(2, "action"), code(2), field(2, "outcome")),
            ("R".into(), "read".into(), "0".into()),
            "{how}"
        );
        assert_eq!(entity_values(&events[2])[..2], ["P-0042", "R-1"], "{how}");
        assert!(
            !events.iter().any(|e| e.to_string().contains("HbA1c")),
            "content leaked"
        );
        // ListRecordsByPatient: a query for the patient.
        assert_eq!(
            (field(3, "action"), code(3)),
            ("E".into(), "search-type".into()),
            "{how}"
        );
        assert_eq!(entity_values(&events[3])[0], "P-0042");
        // The nurse's read: the chaincode refused (outcome 4), the nurse is the requestor.
        assert_eq!(field(4, "outcome"), "4", "{how}");
        assert!(requestor(4).as_str().is_some_and(|s| s.contains("nurse1")));
        assert!(field(4, "outcomeDesc").contains("ticket"), "{}", events[4]);
        // The revoked client: refused by the peer (outcome 8), under the identity it claimed.
        assert_eq!(field(5, "outcome"), "8", "{how}");
        assert!(requestor(5).as_str().is_some_and(|s| s.contains("revoked")));
    }
    let headers = by_syslog
        .headers
        .lock()
        .map(|h| h.clone())
        .unwrap_or_default();
    assert!(
        headers.iter().all(|h| h.starts_with("<85>1 ")
            && h.contains(" peer0.hospital1 medledger-peer ")
            && h.contains(" IHE+FHIR - ")),
        "{headers:?}"
    );
    let requests = by_fhir
        .requests
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    assert!(
        requests
            .iter()
            .all(|(path, ct)| path == "/fhir/AuditEvent" && ct == "application/fhir+json"),
        "{requests:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_wait_out_a_repository_outage_and_arrive_in_order() -> anyhow::Result<()> {
    let mut net = start_medical(1).await?;
    let (syslog_port, fhir_port) = (free_port()?, free_port()?);
    let audit = audit_config(&net, Some(syslog_port), Some(fhir_port), 1000)?;
    let queue = audit.queue_dir.clone().unwrap_or_default();
    restart_with_audit(&mut net, Some(audit)).await?;
    let doctor = net.orgs[0].identity("doctor1", "client", &[("role", "doctor")])?;
    let mut gw = net.gateway(0, doctor).await?;

    // Both repositories down from the start: the events wait on disk, calls go on.
    let mut expected = Vec::new();
    for i in 0..5 {
        // Not found: a chaincode error, audited like a success.
        assert!(gw.endorse(&["GetRecord", &format!("R-{i}")]).await.is_err());
        let before = Instant::now();
        gw.evaluate(&["ListRecordsByPatient", &format!("P-{i}")])
            .await?;
        assert!(before.elapsed() < Duration::from_secs(2));
        expected.push(format!("GetRecord R-{i}"));
        expected.push(format!("ListRecordsByPatient P-{i}"));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while files_in(&queue.join("syslog")) < 10 || files_in(&queue.join("fhir")) < 10 {
        anyhow::ensure!(Instant::now() < deadline, "events not queued on disk");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (by_syslog, by_fhir) = (Received::default(), Received::default());
    let syslog = syslog_receiver(&net, syslog_port, &by_syslog).await?;
    let fhir = http_receiver(fhir_port, &by_fhir).await?;
    for received in [&by_syslog, &by_fhir] {
        let events = received.wait_for(10).await?;
        in_peer_order(&events)?;
        assert_eq!(events.iter().map(call_of).collect::<Vec<_>>(), expected);
    }

    // Down again while the peer keeps working, then back: the rest follows, once each, in order.
    syslog.stop();
    fhir.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..3 {
        let _ = gw
            .evaluate(&["GetRecordProvenance", &format!("R-{i}")])
            .await;
        expected.push(format!("GetRecordProvenance R-{i}"));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while files_in(&queue.join("fhir")) < 3 {
        anyhow::ensure!(Instant::now() < deadline, "events not queued on disk");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _syslog = syslog_receiver(&net, syslog_port, &by_syslog).await?;
    let _fhir = http_receiver(fhir_port, &by_fhir).await?;
    for (how, received) in [("syslog", &by_syslog), ("fhir", &by_fhir)] {
        let events = received.wait_for(13).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let events = if received.events().len() > events.len() {
            received.events()
        } else {
            events
        };
        in_peer_order(&events)?;
        let calls: Vec<String> = events.iter().map(call_of).collect();
        assert_eq!(calls, expected, "{how}: every event once, in order");
    }
    assert_eq!(
        files_in(&queue.join("syslog")) + files_in(&queue.join("fhir")),
        0,
        "delivered events are deleted"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_keeps_its_events_refuses_new_ones_loudly_and_reports_the_gap()
-> anyhow::Result<()> {
    let log = log();
    let mut net = start_medical(1).await?;
    let syslog_port = free_port()?;
    let audit = audit_config(&net, Some(syslog_port), None, 3)?;
    let queue = audit.queue_dir.clone().unwrap_or_default().join("syslog");
    restart_with_audit(&mut net, Some(audit)).await?;
    let doctor = net.orgs[0].identity("doctor1", "client", &[("role", "doctor")])?;
    let mut gw = net.gateway(0, doctor).await?;
    for i in 0..5 {
        // Calls go on: a full audit queue refuses events, not endorsements.
        gw.evaluate(&["ListRecordsByPatient", &format!("P-{i}")])
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.text().contains("AUDIT QUEUE FULL") {
        anyhow::ensure!(Instant::now() < deadline, "no loud log: {}", log.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        files_in(&queue),
        3,
        "the bound holds, the oldest events are kept"
    );

    let received = Received::default();
    let _syslog = syslog_receiver(&net, syslog_port, &received).await?;
    let first = received.wait_for(3).await?;
    let patients: Vec<String> = first.iter().map(|e| entity_values(e)[0].clone()).collect();
    assert_eq!(patients, ["P-0", "P-1", "P-2"], "the oldest were kept");
    // The next call finds room: the gap is reported ahead of it.
    gw.evaluate(&["ListRecordsByPatient", "P-5"]).await?;
    let events = received.wait_for(5).await?;
    in_peer_order(&events)?;
    let gap = &events[3];
    assert_eq!(gap["subtype"][0]["code"], "110133", "{gap}");
    assert!(
        gap["outcomeDesc"]
            .as_str()
            .is_some_and(|d| d.starts_with("2 audited call(s)")),
        "{gap}"
    );
    assert_eq!(entity_values(&events[4])[0], "P-5");
    assert!(log.text().contains("were not recorded"), "{}", log.text());
    Ok(())
}

/// Each call's time for 30 Evaluates (and 10 failing Endorses) as `doctor` on peer 0.
async fn measure(
    net: &PeerNet,
    doctor: &medledger_common::SigningIdentity,
) -> anyhow::Result<Vec<Duration>> {
    let mut gw = net.gateway(0, doctor.clone()).await?;
    let mut took = Vec::new();
    for i in 0..30 {
        let start = Instant::now();
        gw.evaluate(&["ListRecordsByPatient", &format!("P-{i}")])
            .await?;
        if i % 3 == 0 {
            let _ = gw.endorse(&["GetRecord", "R-none"]).await;
        }
        took.push(start.elapsed());
    }
    Ok(took)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_repository_does_not_slow_endorsement() -> anyhow::Result<()> {
    let mut net = start_medical(1).await?;
    let doctor = net.orgs[0].identity("doctor1", "client", &[("role", "doctor")])?;
    let _ = measure(&net, &doctor).await?; // warm-up
    let without = measure(&net, &doctor).await?;

    let (syslog_port, fhir_port) = (free_port()?, free_port()?);
    let _s = hung_receiver(syslog_port).await?;
    let _f = hung_receiver(fhir_port).await?;
    let audit = audit_config(&net, Some(syslog_port), Some(fhir_port), 1000)?;
    restart_with_audit(&mut net, Some(audit)).await?;
    let _ = measure(&net, &doctor).await?; // warm-up
    let with = measure(&net, &doctor).await?;
    let (m0, m1) = (median(without.clone()), median(with.clone()));
    let (x0, x1) = (
        without.iter().max().copied().unwrap_or_default(),
        with.iter().max().copied().unwrap_or_default(),
    );
    println!(
        "audit to a hung repository: median {m1:?} (max {x1:?}) vs without audit {m0:?} (max {x0:?})"
    );
    assert!(
        m1 < m0 * 3 + Duration::from_millis(20),
        "median {m1:?} vs {m0:?}"
    );
    assert!(
        x1 < Duration::from_secs(2),
        "a call waited on the repository: {x1:?}"
    );
    Ok(())
}
