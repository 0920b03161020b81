//! The `medledger-ca` binary as a user runs it: a server process on a loopback port, and the
//! client commands writing MSP folders that the MSP code then loads.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use medledger_common::SigningIdentity;
use medledger_common::msp::{Expiry, Msp, MspError, MspManager, NodeRole, load_msp_folder};

const BIN: &str = env!("CARGO_BIN_EXE_medledger-ca");

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(home: &Path) -> (Server, u16) {
    start_server_with(home, &[])
}

fn start_server_with(home: &Path, extra: &[&str]) -> (Server, u16) {
    let mut child = Command::new(BIN)
        .args([
            "server",
            "start",
            "--name",
            "ca-hospital1",
            "-b",
            "admin:adminpw",
            "--port",
            "0",
        ])
        .args(["--affiliation", "hospital1,hospital1.cardiology"])
        .args(extra)
        .arg("--home")
        .arg(home)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let port = loop {
        let line = lines
            .next()
            .expect("server printed its address")
            .expect("readable");
        if let Some(addr) = line.strip_prefix("CA ca-hospital1 listening on ") {
            break addr.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    (Server(child), port)
}

fn ca(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().expect("runs");
    assert!(
        out.status.success(),
        "medledger-ca {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn server_and_client_commands() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("ca");
    let (_server, port) = start_server(&home);
    let tls = home.join("tls-cert.pem");
    let tls = tls.to_str().unwrap();
    let url = format!("https://localhost:{port}");
    let msp = |name: &str| dir.path().join(name).join("msp");
    let m = |name: &str| msp(name).to_str().unwrap().to_owned();

    ca(&[
        "enroll",
        "-u",
        &format!("https://admin:adminpw@localhost:{port}"),
        "--tls-certfiles",
        tls,
        "--mspdir",
        &m("admin"),
        "--mspid",
        "Hospital1MSP",
    ]);
    let out = ca(&[
        "register",
        "-u",
        &url,
        "--tls-certfiles",
        tls,
        "--mspdir",
        &m("admin"),
        "--mspid",
        "Hospital1MSP",
        "--id.name",
        "doctor1",
        "--id.secret",
        "doc",
        "--id.type",
        "client",
        "--id.affiliation",
        "hospital1.cardiology",
        "--id.attrs",
        "role=doctor:ecert",
    ]);
    assert!(out.contains("Password: doc"), "{out}");
    ca(&[
        "register",
        "-u",
        &url,
        "--tls-certfiles",
        tls,
        "--mspdir",
        &m("admin"),
        "--mspid",
        "Hospital1MSP",
        "--id.name",
        "peer0",
        "--id.secret",
        "p",
        "--id.type",
        "peer",
        "--id.affiliation",
        "hospital1",
    ]);
    ca(&[
        "enroll",
        "-u",
        &format!("https://doctor1:doc@localhost:{port}"),
        "--tls-certfiles",
        tls,
        "--mspdir",
        &m("doctor1"),
        "--mspid",
        "Hospital1MSP",
    ]);
    ca(&[
        "enroll",
        "-u",
        &format!("https://peer0:p@localhost:{port}"),
        "--tls-certfiles",
        tls,
        "--mspdir",
        &m("peer0"),
        "--mspid",
        "Hospital1MSP",
    ]);
    let list = ca(&[
        "identity",
        "list",
        "-u",
        &url,
        "--tls-certfiles",
        tls,
        "--mspdir",
        &m("admin"),
        "--mspid",
        "Hospital1MSP",
    ]);
    assert!(
        list.contains("Name: doctor1") && list.contains("Name: peer0"),
        "{list}"
    );

    assert!(msp("doctor1").join("config.yaml").exists());
    assert!(msp("doctor1").join("tlscacerts/tls-ca.pem").exists());
    let manager = |admin_msp: &Path| {
        MspManager::new([Msp::new(&load_msp_folder(admin_msp, "Hospital1MSP").unwrap()).unwrap()])
    };
    let doctor = SigningIdentity::load(&msp("doctor1"), "Hospital1MSP").unwrap();
    let peer = SigningIdentity::load(&msp("peer0"), "Hospital1MSP").unwrap();
    let msps = manager(&msp("admin"));
    let d = msps
        .deserialize(doctor.serialized(), Expiry::now())
        .unwrap();
    assert_eq!(
        (d.role, d.attribute("role")),
        (NodeRole::Client, Some("doctor"))
    );
    assert_eq!(
        msps.deserialize(peer.serialized(), Expiry::now())
            .unwrap()
            .role,
        NodeRole::Peer
    );

    let out = ca(&[
        "revoke",
        "-u",
        &url,
        "--tls-certfiles",
        tls,
        "--mspdir",
        &m("admin"),
        "--mspid",
        "Hospital1MSP",
        "--revoke.name",
        "doctor1",
        "--revoke.reason",
        "keycompromise",
        "--gencrl",
    ]);
    assert!(out.contains("revoked certificate serial="), "{out}");
    assert!(msp("admin").join("crls/crl.pem").exists());
    let msps = manager(&msp("admin"));
    assert!(matches!(
        msps.deserialize(doctor.serialized(), Expiry::now()),
        Err(MspError::Revoked { .. })
    ));
    assert!(msps.deserialize(peer.serialized(), Expiry::now()).is_ok());

    // A bad command gets a clear error and a non-zero exit.
    let out = Command::new(BIN)
        .args([
            "enroll",
            "-u",
            &format!("https://doctor1:wrong@localhost:{port}"),
            "--tls-certfiles",
            tls,
            "--mspdir",
            &m("x"),
            "--mspid",
            "Hospital1MSP",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Error:"));
}

/// Runs a command expected to fail and returns its stderr, checked not to blame the
/// configuration or name only a transport.
fn ca_fails(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().expect("runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "medledger-ca {args:?} succeeded");
    assert!(err.starts_with("Error: "), "{err}");
    assert!(!err.contains("configuration:"), "{err}");
    assert!(!err.contains("transport error"), "{err}");
    err
}

/// Client errors say what failed and what to try: no server at the address, https without
/// --tls.certfiles, another CA's TLS certificate, http to an HTTPS CA and https to an HTTP one,
/// a wrong secret, a missing MSP folder, an identity of another CA.
#[test]
fn client_errors_say_what_failed_and_what_to_try() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("ca");
    let (_server, port) = start_server(&home);
    let (_plain, plain_port) = start_server_with(&dir.path().join("plain"), &["--no-tls"]);
    let other = dir.path().join("other");
    ca(&["server", "init", "--home", other.to_str().unwrap()]);
    let tls = home.join("tls-cert.pem");
    let tls = tls.to_str().unwrap();
    let other_tls = other.join("tls-cert.pem");
    let other_tls = other_tls.to_str().unwrap();
    let admin = dir.path().join("admin");
    let admin = admin.to_str().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let enroll = |url: &str, roots: Option<&str>, msp: &str| {
        let mut args = vec![
            "enroll",
            "-u",
            url,
            "--mspdir",
            msp,
            "--mspid",
            "Hospital1MSP",
        ];
        if let Some(r) = roots {
            args.extend(["--tls-certfiles", r]);
        }
        args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>()
    };
    let fails = |args: Vec<String>| ca_fails(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let err = fails(enroll(
        &format!("https://admin:adminpw@localhost:{closed_port}"),
        Some(tls),
        admin,
    ));
    assert!(
        err.contains(&format!("cannot reach the CA at localhost:{closed_port}")),
        "{err}"
    );
    assert!(err.contains("is the CA running at"), "{err}");

    let err = fails(enroll(
        &format!("https://admin:adminpw@localhost:{port}"),
        None,
        admin,
    ));
    assert!(
        err.contains("pass --tls.certfiles with the CA's TLS certificate"),
        "{err}"
    );

    let err = fails(enroll(
        &format!("https://admin:adminpw@localhost:{port}"),
        Some(other_tls),
        admin,
    ));
    assert!(err.contains("TLS handshake with the CA"), "{err}");
    assert!(
        err.contains(&format!("is not signed by a certificate in {other_tls}")),
        "{err}"
    );

    let err = fails(enroll(
        &format!("http://admin:adminpw@localhost:{port}"),
        None,
        admin,
    ));
    assert!(err.contains("did not answer plain HTTP"), "{err}");
    assert!(err.contains("use https:// and --tls.certfiles"), "{err}");

    let err = fails(enroll(
        &format!("https://admin:adminpw@localhost:{plain_port}"),
        Some(tls),
        admin,
    ));
    assert!(
        err.contains("does not speak TLS: use an http:// URL"),
        "{err}"
    );

    let err = fails(enroll(
        &format!("https://admin:wrong@localhost:{port}"),
        Some(tls),
        admin,
    ));
    assert!(err.contains("authentication failure"), "{err}");
    assert!(err.contains("check the enrollment id and secret"), "{err}");

    let register = |url: String, roots: Option<&str>, msp: &str| {
        let mut args: Vec<String> = ["register", "-u", &url, "--mspdir", msp]
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
        args.extend(["--mspid", "Hospital1MSP", "--id.name", "x"].map(str::to_owned));
        if let Some(r) = roots {
            args.extend(["--tls-certfiles".to_owned(), r.to_owned()]);
        }
        args
    };
    let missing = dir.path().join("missing");
    let err = fails(register(
        format!("https://localhost:{port}"),
        Some(tls),
        missing.to_str().unwrap(),
    ));
    assert!(
        err.contains("must be the MSP folder of an enrolled identity"),
        "{err}"
    );
    assert!(err.contains("medledger-ca enroll"), "{err}");

    // An identity of the HTTPS CA signing a request to the plain one.
    ca(&enroll(
        &format!("https://admin:adminpw@localhost:{port}"),
        Some(tls),
        admin,
    )
    .iter()
    .map(String::as_str)
    .collect::<Vec<_>>());
    let err = fails(register(
        format!("http://localhost:{plain_port}"),
        None,
        admin,
    ));
    assert!(err.contains("was not issued by this CA"), "{err}");
    assert!(err.contains("enroll it there first"), "{err}");
}
