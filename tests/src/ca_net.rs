//! A certificate authority running in the test process, with a client to it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use medledger_ca::authority::{AttrRequest, RegisterRequest};
use medledger_ca::client::{EnrollOptions, enroll_to_msp};
use medledger_ca::server::CaSet;
use medledger_ca::store::Attribute;
use medledger_ca::{Authority, AuthorityConfig, CaClient, CaHome, CaUrl, ClientError, server};
use medledger_common::SigningIdentity;

pub const MSPID: &str = "Hospital1MSP";

/// How to set up a test CA server beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct CaOptions {
    /// `cfg.identities.allowremove` and `cfg.affiliations.allowremove`.
    pub allow_remove: bool,
    /// A second CA in the same server (name; its bootstrap identity is admin2:admin2pw), with its
    /// home in `<home>/<name>`.
    pub second_ca: Option<String>,
}

pub struct RunningCa {
    pub client: CaClient,
    pub port: u16,
    pub home: PathBuf,
    /// The server's CAs (for its operations endpoint).
    pub cas: CaSet,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Opens a CA home, waiting for RocksDB's lock, which may outlive a stopped server for a moment.
async fn open_retrying(
    home: &CaHome,
    cfg: &AuthorityConfig,
    boot: (&str, &str),
) -> anyhow::Result<Arc<Authority>> {
    let mut attempt = 0;
    loop {
        match Authority::open(home, cfg.clone(), Some(boot)) {
            Ok(a) => return Ok(Arc::new(a)),
            Err(_) if attempt < 50 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl RunningCa {
    pub async fn start(home: &Path) -> anyhow::Result<Self> {
        Self::start_with(home, &CaOptions::default()).await
    }

    pub async fn start_with(home: &Path, options: &CaOptions) -> anyhow::Result<Self> {
        let h = CaHome::new(home);
        let mut cfg = AuthorityConfig::new("ca-hospital1");
        cfg.affiliations = ["hospital1", "hospital1.cardiology", "hospital1.nursing"]
            .map(String::from)
            .to_vec();
        cfg.identities_allow_remove = options.allow_remove;
        cfg.affiliations_allow_remove = options.allow_remove;
        Authority::init_root(&h, &cfg)?;
        h.ensure_tls(&h.load_signer()?, &["localhost".into(), "127.0.0.1".into()])?;
        let mut cas = vec![open_retrying(&h, &cfg, ("admin", "adminpw")).await?];
        if let Some(name) = &options.second_ca {
            let h2 = CaHome::new(&home.join(name));
            let mut cfg2 = AuthorityConfig::new(name);
            cfg2.affiliations = vec!["hospital2".into()];
            Authority::init_root(&h2, &cfg2)?;
            cas.push(open_retrying(&h2, &cfg2, ("admin2", "admin2pw")).await?);
        }
        let cas = CaSet::new(cas)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let tls = server::tls_config(&h.tls_cert(), &h.tls_key())?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(server::serve(listener, Some(tls), cas.clone(), async {
            let _ = rx.await;
        }));
        let client = CaClient::new(
            &CaUrl::parse(&format!("https://localhost:{port}"))?,
            Some(&std::fs::read(h.cert())?),
        )?;
        Ok(Self {
            client,
            port,
            home: home.to_path_buf(),
            cas,
            stop: Some(tx),
            task,
        })
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(CaHome::new(&self.home).cert()).expect("CA certificate")
    }

    pub async fn enroll(
        &self,
        dir: &Path,
        id: &str,
        secret: &str,
        attrs: &[&str],
    ) -> Result<SigningIdentity, ClientError> {
        let opts = EnrollOptions {
            attr_reqs: attrs
                .iter()
                .map(|a| AttrRequest {
                    name: a.to_string(),
                    optional: false,
                })
                .collect(),
            ..Default::default()
        };
        let msp = dir.join(id).join("msp");
        enroll_to_msp(&self.client, id, secret, &opts, &msp).await?;
        Ok(SigningIdentity::load(&msp, MSPID).expect("enrolled MSP folder loads"))
    }

    pub async fn register(
        &self,
        registrar: &SigningIdentity,
        id: &str,
        kind: &str,
        aff: &str,
        attrs: &[(&str, &str)],
    ) -> Result<String, ClientError> {
        self.client
            .register(
                registrar,
                &RegisterRequest {
                    id: id.into(),
                    kind: Some(kind.into()),
                    secret: Some(format!("{id}pw")),
                    max_enrollments: 0,
                    affiliation: aff.into(),
                    attrs: attrs
                        .iter()
                        .map(|(n, v)| Attribute {
                            name: n.to_string(),
                            value: v.to_string(),
                            ecert: true,
                        })
                        .collect(),
                },
            )
            .await
    }
}
