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
        if let Some(addr) = line.strip_prefix("CA ca-hospital1 listening on https://") {
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
