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
        if line.starts_with("CA ca-hospital1")
            && let Some((_, addr)) = line.split_once(" listening on ")
        {
            break addr.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    (Server(child), port)
}

/// Checks an MSP folder as Fabric's tools read it: every certificate in `cacerts/`,
/// `intermediatecerts/`, `tlscacerts/` and `tlsintermediatecerts/` is a CA, and the signing
/// certificate was issued by one of the folder's CAs (the TLS ones for a TLS folder).
fn assert_fabric_msp(dir: &Path) {
    use medledger_common::Certificate;
    let certs = |sub: &str| -> Vec<Certificate> {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            return vec![];
        };
        entries
            .flat_map(|e| {
                let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
                text.split_inclusive("-----END CERTIFICATE-----\n")
                    .filter(|b| b.contains("BEGIN CERTIFICATE"))
                    .map(|b| Certificate::from_pem(b.as_bytes()).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let signcert = &certs("signcerts")[0];
    let mut issuers = Vec::new();
    for sub in [
        "cacerts",
        "intermediatecerts",
        "tlscacerts",
        "tlsintermediatecerts",
    ] {
        for c in certs(sub) {
            assert!(
                c.is_ca,
                "{}: {sub} holds a non-CA ({})",
                dir.display(),
                c.subject
            );
            issuers.push(c);
        }
    }
    assert!(
        issuers.iter().any(|ca| signcert.is_signed_by(ca)),
        "{}: the signing certificate chains to none of the folder's CAs",
        dir.display()
    );
    #[cfg(unix)]
    for key in std::fs::read_dir(dir.join("keystore")).unwrap() {
        use std::os::unix::fs::PermissionsExt;
        let mode = key.unwrap().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}: key mode {mode:o}", dir.display());
    }
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
    // As Fabric CA's client: an enrollment certificate's folder has the CA in cacerts/ and no
    // TLS CA (it used to get the server's TLS leaf there); a TLS one has it in tlscacerts/.
    assert!(!msp("doctor1").join("tlscacerts").exists());
    let peer_tls = dir.path().join("peer0/tls");
    ca(&[
        "enroll",
        "-u",
        &format!("https://peer0:p@localhost:{port}"),
        "--tls-certfiles",
        tls,
        "--mspdir",
        peer_tls.to_str().unwrap(),
        "--mspid",
        "Hospital1MSP",
        "--enrollment.profile",
        "tls",
        "--csr.hosts",
        "localhost",
    ]);
    assert!(peer_tls.join("tlscacerts/tls-ca.pem").exists());
    assert!(!peer_tls.join("cacerts").exists());
    for folder in [msp("admin"), msp("doctor1"), msp("peer0"), peer_tls] {
        assert_fabric_msp(&folder);
    }
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

/// Identity, affiliation and certificate management from the command line, a second CA in the
/// same server (`--cafiles`, `--caname`), and the operations endpoint.
#[test]
fn management_commands_several_cas_and_operations() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("ca");
    let ca2_file = dir.path().join("ca2/ca.yaml");
    std::fs::create_dir_all(ca2_file.parent().unwrap()).unwrap();
    std::fs::write(
        &ca2_file,
        "ca:\n  name: ca-hospital2\nregistry:\n  identities:\n    - name: admin2\n      pass: admin2pw\n\
         affiliations:\n  hospital2:\n    - cardiology\n",
    )
    .unwrap();
    let ops_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ops = format!("127.0.0.1:{ops_port}");
    let (_server, port) = start_server_with(
        &home,
        &[
            "--cfg.identities.allowremove",
            "--cfg.affiliations.allowremove",
            "--cafiles",
            ca2_file.to_str().unwrap(),
            "--operations.listenaddress",
            &ops,
        ],
    );
    let tls = home.join("tls-cert.pem");
    let tls = tls.to_str().unwrap();
    let url = format!("https://localhost:{port}");
    let admin = dir.path().join("admin/msp");
    let admin = admin.to_str().unwrap();
    let client = |cmd: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        v.extend(
            [
                "-u",
                &url,
                "--tls-certfiles",
                tls,
                "--mspdir",
                admin,
                "--mspid",
                "Hospital1MSP",
            ]
            .map(String::from),
        );
        v
    };
    let run = |cmd: &[&str]| {
        let args = client(cmd);
        ca(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let run_fails = |cmd: &[&str]| {
        let args = client(cmd);
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(!out.status.success(), "{cmd:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    ca(&[
        "enroll",
        "-u",
        &format!("https://admin:adminpw@localhost:{port}"),
        "--tls-certfiles",
        tls,
        "--mspdir",
        admin,
    ]);

    // Identities.
    let out = run(&[
        "identity",
        "add",
        "nurse2",
        "--affiliation",
        "hospital1",
        "--attrs",
        "role=nurse:ecert",
        "--secret",
        "pw2",
        "--maxenrollments",
        "-1",
    ]);
    assert!(out.contains("Password: pw2"), "{out}");
    let out = run(&[
        "identity",
        "modify",
        "nurse2",
        "--attrs",
        "role=headnurse:ecert",
    ]);
    assert!(out.contains("headnurse"), "{out}");
    let out = run(&["identity", "list", "--id", "nurse2"]);
    assert!(
        out.contains("Name: nurse2") && out.contains("headnurse"),
        "{out}"
    );

    // Affiliations.
    run(&["affiliation", "add", "hospital1.radiology"]);
    let out = run(&["affiliation", "list"]);
    assert!(out.contains("affiliation: hospital1.radiology"), "{out}");
    run(&[
        "affiliation",
        "modify",
        "hospital1.radiology",
        "--name",
        "hospital1.imaging",
    ]);
    let err = run_fails(&["affiliation", "add", "hospital1.imaging"]);
    assert!(err.contains("already exists"), "{err}");
    run(&["affiliation", "remove", "hospital1.imaging"]);
    let out = run(&["affiliation", "list", "--affiliation", "hospital1"]);
    assert!(!out.contains("imaging"), "{out}");

    // Certificates into a folder, named by enrollment id.
    let store = dir.path().join("certs");
    run(&[
        "certificate",
        "list",
        "--id",
        "admin",
        "--notrevoked",
        "--store",
        store.to_str().unwrap(),
    ]);
    let admin_pem = std::fs::read(store.join("admin.pem")).unwrap();
    assert!(String::from_utf8_lossy(&admin_pem).contains("BEGIN CERTIFICATE"));
    let err = run_fails(&[
        "certificate",
        "list",
        "--notexpired",
        "--expiration",
        "-1d::",
    ]);
    assert!(err.contains("67"), "{err}");

    // Remove: the identity is gone.
    run(&["identity", "remove", "nurse2"]);
    let err = run_fails(&["identity", "list", "--id", "nurse2"]);
    assert!(err.contains("63"), "{err}");

    // The second CA of the server, chosen by name; an unknown name is refused.
    let m2 = dir.path().join("admin2/msp");
    ca(&[
        "enroll",
        "-u",
        &format!("https://admin2:admin2pw@localhost:{port}"),
        "--tls-certfiles",
        tls,
        "--mspdir",
        m2.to_str().unwrap(),
        "--caname",
        "ca-hospital2",
    ]);
    let ca2 = medledger_common::Certificate::from_pem(
        &std::fs::read(dir.path().join("ca2/ca-cert.pem")).unwrap(),
    )
    .unwrap();
    let admin2 = SigningIdentity::load(&m2, "Hospital2MSP").unwrap();
    assert!(admin2.certificate().is_signed_by(&ca2));
    assert_fabric_msp(&m2);
    let out = Command::new(BIN)
        .args([
            "enroll",
            "-u",
            &format!("https://admin:adminpw@localhost:{port}"),
            "--tls-certfiles",
            tls,
            "--mspdir",
            dir.path().join("x").to_str().unwrap(),
            "--caname",
            "nope",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CA 'nope' does not exist"), "{err}");

    // The operations endpoint.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(&ops).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut metrics = String::new();
    s.read_to_string(&mut metrics).unwrap();
    assert!(
        metrics.contains("api_request_count{api_name=\"identities\",status_code=\"201\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ca_enrollments_total{ca_name=\"ca-hospital2\"} 1"),
        "{metrics}"
    );
}
