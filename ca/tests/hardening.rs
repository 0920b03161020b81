//! The CA under abuse: floods of wrong secrets, probing which ids exist, and clients that open
//! connections and say nothing. Timings are printed (`--nocapture`) as well as checked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use medledger_ca::authority::{EnrollRequest, RegisterRequest};
use medledger_ca::client::{EnrollOptions, enroll_to_msp};
use medledger_ca::{Authority, AuthorityConfig, CaClient, CaHome, CaUrl, server};
use medledger_common::SigningIdentity;
use medledger_common::issue::certificate_request_pem;

/// Wrong-secret enrollments sent at once for one id.
const FLOOD: usize = 200;
/// Registrations of other ids timed during the flood.
const REGISTRATIONS: usize = 5;

fn open(dir: &std::path::Path) -> Arc<Authority> {
    let home = CaHome::new(dir);
    let mut cfg = AuthorityConfig::new("ca-hardening");
    cfg.affiliations = vec!["hospital1".into()];
    Authority::init_root(&home, &cfg).unwrap();
    Arc::new(Authority::open(&home, cfg, Some(("admin", "adminpw"))).unwrap())
}

fn enroll_request() -> EnrollRequest {
    let key = medledger_common::PrivateKey::generate();
    EnrollRequest {
        certificate_request: certificate_request_pem(&key, "x", &[]).unwrap(),
        ..Default::default()
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Checking a secret takes tens of milliseconds (Argon2). It used to happen under the CA's one
/// lock, so a flood of wrong secrets for one id queued every registration behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_secrets_does_not_stall_registrations() {
    let dir = tempfile::tempdir().unwrap();
    let authority = open(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(server::serve(
        listener,
        None,
        authority,
        std::future::pending(),
    ));
    let client = CaClient::new(
        &CaUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
        None,
    )
    .unwrap();
    let msp = dir.path().join("admin");
    enroll_to_msp(&client, "admin", "adminpw", &EnrollOptions::default(), &msp)
        .await
        .unwrap();
    let admin = SigningIdentity::load(&msp, "M").unwrap();
    let register = |n: String| {
        let client = client.clone();
        let admin = admin.clone();
        async move {
            let started = Instant::now();
            client
                .register(
                    &admin,
                    &RegisterRequest {
                        id: n,
                        affiliation: "hospital1".into(),
                        secret: Some("pw".into()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            started.elapsed()
        }
    };
    let mut quiet = Vec::new();
    for i in 0..REGISTRATIONS {
        quiet.push(register(format!("quiet{i}")).await);
    }

    let flood_started = Instant::now();
    let flood: Vec<_> = (0..FLOOD)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.enroll("admin", "wrong", &enroll_request()).await })
        })
        .collect();
    // Let the flood queue up before registering.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut during = Vec::new();
    for i in 0..REGISTRATIONS {
        during.push(register(format!("busy{i}")).await);
    }
    for f in flood {
        assert!(f.await.unwrap().is_err(), "a wrong secret never enrolls");
    }
    let flood_took = flood_started.elapsed();
    let worst = *during.iter().max().unwrap();
    eprintln!(
        "registration alone: median {:?}; during {FLOOD} wrong-secret enrolls: median {:?}, \
         worst {worst:?}; the flood took {flood_took:?}",
        median(quiet.clone()),
        median(during.clone()),
    );
    assert!(
        worst < flood_took / 2,
        "a registration waited {worst:?}, the flood took {flood_took:?}"
    );
}

/// An unknown id used to be answered at once and a known one only after hashing: timing told
/// which ids exist.
#[test]
fn known_and_unknown_ids_take_the_same_time() {
    const ROUNDS: usize = 15;
    let dir = tempfile::tempdir().unwrap();
    let authority = open(dir.path());
    let req = enroll_request();
    let time = |id: &str| {
        let started = Instant::now();
        assert!(authority.enroll(id, "wrong", &req).is_err());
        started.elapsed()
    };
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        known.push(time("admin"));
        unknown.push(time("nobody-has-this-id"));
    }
    let (k, u) = (median(known), median(unknown));
    eprintln!("wrong secret: known id median {k:?}, unknown id median {u:?}");
    let ratio = u.as_secs_f64() / k.as_secs_f64();
    assert!(
        (0.5..2.0).contains(&ratio),
        "known {k:?} vs unknown {u:?}: an observer can tell them apart"
    );
}

/// A client that connects and never finishes a TLS handshake, or never sends its request's
/// headers, is cut off instead of holding a connection for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let authority = open(dir.path());
    let home = CaHome::new(dir.path());
    home.ensure_tls(&home.load_signer().unwrap(), &["localhost".into()])
        .unwrap();
    let tls = server::tls_config(&home.tls_cert(), &home.tls_key()).unwrap();
    let tls_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_addr = tls_listener.local_addr().unwrap();
    tokio::spawn(server::serve(
        tls_listener,
        Some(tls),
        authority.clone(),
        std::future::pending(),
    ));
    let plain_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_addr = plain_listener.local_addr().unwrap();
    tokio::spawn(server::serve(
        plain_listener,
        None,
        authority,
        std::future::pending(),
    ));
    let slack = Duration::from_secs(5);

    // No handshake at all.
    let mut silent = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(server::TLS_HANDSHAKE_TIMEOUT + slack, silent.read(&mut buf))
        .await
        .expect("the server closes a connection without a handshake");
    assert!(matches!(n, Ok(0) | Err(_)));
    eprintln!("no handshake: closed after {:?}", started.elapsed());

    // Headers started and never finished.
    let mut slow = tokio::net::TcpStream::connect(plain_addr).await.unwrap();
    slow.write_all(b"GET /api/v1/cainfo HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(
        server::HEADER_READ_TIMEOUT + slack,
        slow.read_to_end(&mut rest),
    )
    .await
    .expect("the server closes a connection whose headers never end")
    .ok();
    eprintln!("unfinished headers: closed after {:?}", started.elapsed());
}
