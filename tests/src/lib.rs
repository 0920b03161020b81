//! Helpers shared by the end-to-end and interop tests: the real npm Fabric clients (installed
//! once from `tests/node/package-lock.json`), and organisations whose certificates are made
//! in-process by the issuing code the CA uses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub mod browser;
pub mod ca_net;
pub mod ordernet;
pub mod peernet;
pub mod raw_grpc;
use medledger_common::issue::{CaSigner, IssueRequest, Usage, random_serial};
use medledger_common::msp::{MspFolderContents, unix_now, write_msp_folder};
use medledger_common::{PrivateKey, SigningIdentity};

/// `tests/node`, where the npm packages live.
pub fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("node")
}

/// Installs the npm packages from the lockfile once, across test processes (a lock directory
/// serialises concurrent installs).
pub fn ensure_node_modules() -> anyhow::Result<PathBuf> {
    let dir = node_dir();
    let marker = dir.join("node_modules/.package-lock.json");
    if marker.exists() {
        return Ok(dir);
    }
    let lock = dir.join(".install-lock");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match std::fs::create_dir(&lock) {
            Ok(()) => break,
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500));
                if marker.exists() {
                    return Ok(dir);
                }
            }
            Err(e) => bail!("waiting for npm install lock {}: {e}", lock.display()),
        }
    }
    let result = if marker.exists() {
        Ok(())
    } else {
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .context("running npm ci (is Node 20 installed?)")
            .and_then(|s| {
                if s.success() {
                    Ok(())
                } else {
                    bail!("npm ci failed: {s}")
                }
            })
    };
    let _ = std::fs::remove_dir(&lock);
    result.map(|()| dir)
}

/// Runs a script in `tests/node` and returns its stdout; fails with its stderr.
pub fn run_node(script: &str, args: &[&str]) -> anyhow::Result<String> {
    let dir = ensure_node_modules()?;
    let out = Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(&dir)
        .output()
        .context("running node")?;
    if !out.status.success() {
        bail!(
            "node {script} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The path of a workspace binary, built on demand with the cargo running the tests (so
/// process tests run the real binaries, whatever order cargo built things in). All binaries are
/// built in one `cargo build --workspace --bins --tests`, once per test process, so features unify as in
/// `cargo test --workspace` and nothing is rebuilt.
pub fn workspace_binary(_package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let dir = BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .ok_or("test binary is not in <target>/<profile>/deps")?
                .to_path_buf();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--quiet", "--workspace", "--bins", "--tests"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .map_err(|e| format!("running cargo build: {e}"))?;
            if !status.success() {
                return Err("cargo build --workspace --bins failed".to_owned());
            }
            Ok(profile_dir)
        })
        .clone()
        .map_err(anyhow::Error::msg)?;
    Ok(dir.join(bin))
}

/// An organisation with a root CA, issuing identities for tests.
pub struct TestOrg {
    pub mspid: String,
    pub ca: CaSigner,
    pub tls_ca: CaSigner,
}

impl TestOrg {
    /// A new organisation with fresh signing and TLS CAs.
    pub fn new(mspid: &str) -> anyhow::Result<Self> {
        Ok(Self {
            mspid: mspid.to_owned(),
            ca: CaSigner::new_root(&format!("ca.{mspid}"), mspid, 5)?,
            tls_ca: CaSigner::new_root(&format!("tlsca.{mspid}"), mspid, 5)?,
        })
    }

    /// Issues an identity of type `ou` (client, peer, admin, orderer) with CA attributes.
    pub fn identity(
        &self,
        name: &str,
        ou: &str,
        attrs: &[(&str, &str)],
    ) -> anyhow::Result<SigningIdentity> {
        self.identity_until(name, ou, attrs, unix_now() + 24 * 3600)
    }

    /// Like [`TestOrg::identity`], with a certificate that expires at `not_after` (seconds).
    pub fn identity_until(
        &self,
        name: &str,
        ou: &str,
        attrs: &[(&str, &str)],
        not_after: i64,
    ) -> anyhow::Result<SigningIdentity> {
        let key = PrivateKey::generate();
        let now = unix_now();
        let pem = self.ca.issue(&IssueRequest {
            public_key: key.public_key(),
            common_name: name.to_owned(),
            organization: Some(self.mspid.clone()),
            organizational_units: vec![ou.to_owned()],
            hosts: vec!["localhost".into(), "127.0.0.1".into()],
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            serial: random_serial(),
            not_before: now - 60,
            not_after,
            usage: Usage::Signing,
        })?;
        Ok(SigningIdentity::new(&self.mspid, pem.into_bytes(), key)?)
    }

    /// A TLS certificate and key (PEM) from the organisation's TLS CA for localhost / 127.0.0.1.
    pub fn tls_pair(&self, name: &str) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let key = PrivateKey::generate();
        let now = unix_now();
        let pem = self.tls_ca.issue(&IssueRequest {
            public_key: key.public_key(),
            common_name: name.to_owned(),
            organization: Some(self.mspid.clone()),
            organizational_units: vec![],
            hosts: vec!["localhost".into(), "127.0.0.1".into()],
            attributes: BTreeMap::new(),
            serial: random_serial(),
            not_before: now - 60,
            not_after: now + 24 * 3600,
            usage: Usage::Tls,
        })?;
        Ok((pem.into_bytes(), key.to_pkcs8_pem()?.into_bytes()))
    }

    /// The organisation as a channel profile names it (no anchor peers).
    pub fn profile(&self) -> medledger_common::channelconfig::OrgProfile {
        medledger_common::channelconfig::OrgProfile {
            msp: self.msp_config(),
            anchor_peers: vec![],
        }
    }

    /// The organisation's MSP as channel configuration carries it.
    pub fn msp_config(&self) -> medledger_proto::msp::FabricMspConfig {
        medledger_common::msp::org_msp_config(
            &self.mspid,
            self.ca.cert_pem().as_bytes(),
            Some(self.tls_ca.cert_pem().as_bytes()),
        )
    }

    /// Writes an MSP folder for `id` under `dir` (with keystore and Node OUs).
    pub fn write_msp(&self, dir: &Path, id: &SigningIdentity) -> anyhow::Result<()> {
        write_msp_folder(
            dir,
            &MspFolderContents {
                signcert_pem: String::from_utf8(id.cert_pem().to_vec())?,
                key_pem: Some(id.private_key().to_pkcs8_pem()?),
                cacert_pem: self.ca.cert_pem().to_owned(),
                tlscacert_pem: Some(self.tls_ca.cert_pem().to_owned()),
                node_ous: true,
                ..Default::default()
            },
        )?;
        Ok(())
    }
}

/// A plain HTTP GET on loopback (the nodes' operations endpoints): the whole response.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// POSTs an `application/x-www-form-urlencoded` body to `path`; the raw answer.
pub async fn http_post_form(
    addr: std::net::SocketAddr,
    path: &str,
    form: &str,
) -> anyhow::Result<String> {
    http_request(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    )
    .await
}

/// Sends `request` (a whole HTTP/1.1 request) to `addr`; the whole response.
pub async fn http_request(addr: std::net::SocketAddr, request: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(request.as_bytes()).await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    Ok(body)
}

/// Runs `medledger-peer <args>` against the peer at `address` (TLS root `tls`) as the identity
/// `mspid` / `msp`, as a Fabric user runs `peer`: whether it succeeded, and stdout + stderr.
pub fn peer_cli(
    bin: &Path,
    address: &str,
    tls: &Path,
    mspid: &str,
    msp: &Path,
    args: &[&str],
) -> (bool, String) {
    let tls = tls.to_string_lossy();
    let mut all = args.to_vec();
    all.extend(["--peerAddresses", address, "--tlsRootCertFiles", &tls]);
    run_cli(bin, mspid, msp, &all)
}

/// Like [`run_cli`], an error with the output when the command fails.
pub fn run_cli_ok(bin: &Path, mspid: &str, msp: &Path, args: &[&str]) -> anyhow::Result<String> {
    let (ok, text) = run_cli(bin, mspid, msp, args);
    anyhow::ensure!(ok, "{} {args:?}: {text}", bin.display());
    Ok(text)
}

/// Runs a MedLedger binary with `args` as the identity `mspid` / `msp` (the `CORE_PEER_*`
/// settings): whether it succeeded, and stdout + stderr.
pub fn run_cli(bin: &Path, mspid: &str, msp: &Path, args: &[&str]) -> (bool, String) {
    match Command::new(bin)
        .args(args)
        .env("CORE_PEER_LOCALMSPID", mspid)
        .env("CORE_PEER_MSPCONFIGPATH", msp)
        .output()
    {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, format!("cannot run {}: {e}", bin.display())),
    }
}

/// The log lines nodes running in this test process write (a `tracing` writer).
#[derive(Clone, Default)]
pub struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> LogCapture {
        self.clone()
    }
}

impl LogCapture {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        self.0
            .lock()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}
