//! Node configuration files: YAML whose top-level fields an environment variable may override
//! (`<PREFIX><FIELD>`, e.g. `MEDLEDGER_PEER_LISTENADDRESS=127.0.0.1:7051`), and logging setup.

use std::path::Path;

use serde::de::DeserializeOwned;

/// Reads a YAML configuration and applies `<prefix><FIELD>` overrides of its top-level fields
/// (the value is parsed as YAML, so numbers and lists work too).
pub fn load_yaml<T: DeserializeOwned>(path: &Path, env_prefix: &str) -> Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut value: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if let serde_yaml::Value::Mapping(map) = &mut value {
        let keys: Vec<String> = map
            .keys()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect();
        for k in keys {
            if let Ok(v) = std::env::var(format!("{env_prefix}{}", k.to_ascii_uppercase())) {
                map.insert(
                    k.into(),
                    serde_yaml::from_str(&v).unwrap_or(serde_yaml::Value::String(v)),
                );
            }
        }
    }
    serde_yaml::from_value(value).map_err(|e| format!("{}: {e}", path.display()))
}

/// Fabric's default for both gRPC message limits (`peer.maxRecvMsgSize` / `maxSendMsgSize`,
/// the orderer's `General.MaxRecvMsgSize` / `MaxSendMsgSize`): 100 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 100 * 1024 * 1024;

/// Serde default of the message limit fields.
pub fn default_max_message_bytes() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}

/// The largest gRPC message a node receives and sends, applied to every server and client it
/// builds, so that what one node may send another accepts. What gets ordered is still bounded
/// by the channel's AbsoluteMaxBytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    pub max_recv: usize,
    pub max_send: usize,
}

impl Default for MessageLimits {
    fn default() -> Self {
        Self {
            max_recv: DEFAULT_MAX_MESSAGE_BYTES,
            max_send: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// Makes a relative path relative to `base` (the configuration file's folder).
pub fn resolve(base: &Path, p: &mut std::path::PathBuf) {
    if p.is_relative() {
        *p = base.join(&*p);
    }
}

/// A node's TLS material (PEM files), as `core.yaml` / `orderer.yaml` give it.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsFiles {
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
    /// CAs whose client certificates the server accepts (every organisation's TLS CA).
    #[serde(default)]
    pub client_root_cas: Vec<std::path::PathBuf>,
    /// Refuse clients without a certificate (otherwise a certificate is optional, as Fabric's
    /// clients often connect with server-side TLS only).
    #[serde(default)]
    pub client_auth_required: bool,
}

/// The contents of [`TlsFiles`].
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// All client CAs in one PEM bundle (tonic keeps a single client-CA set); empty if none.
    pub client_ca_bundle: Vec<u8>,
}

impl TlsFiles {
    /// Makes the paths relative to `base` (the configuration file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        resolve(base, &mut self.cert_file);
        resolve(base, &mut self.key_file);
        for p in &mut self.client_root_cas {
            resolve(base, p);
        }
    }

    /// Reads the files.
    pub fn read(&self) -> Result<TlsMaterial, String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let mut client_ca_bundle = Vec::new();
        for ca in &self.client_root_cas {
            client_ca_bundle.extend(read(ca)?);
            client_ca_bundle.push(b'\n');
        }
        Ok(TlsMaterial {
            cert_pem: read(&self.cert_file)?,
            key_pem: read(&self.key_file)?,
            client_ca_bundle,
        })
    }
}

/// Logs to stderr with `tracing`, levels per module from `MEDLEDGER_LOG` (default `info`),
/// e.g. `MEDLEDGER_LOG=info,medledger_orderer::consensus=debug`.
/// The exit code of a node stopped by a panic (BSD's EX_SOFTWARE: an internal software error).
pub const FAIL_STOP_EXIT_CODE: i32 = 70;

/// Makes any panic, on any thread or task, stop the whole process after logging it. A node whose
/// consensus or commit task died must not live on as a zombie that still answers `/healthz`:
/// stopped, it is replaced or restarted, and BFT tolerates it; half alive, it misleads everyone.
pub fn fail_stop_on_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        tracing::error!(panic = %info, "internal error: stopping the node (fail-stop)");
        std::process::exit(FAIL_STOP_EXIT_CODE);
    }));
}

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MEDLEDGER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Sample {
        listen_address: String,
        tick_ms: u64,
        #[serde(default)]
        peers: Vec<String>,
    }

    #[test]
    fn environment_overrides_top_level_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.yaml");
        std::fs::write(
            &path,
            "listenAddress: 127.0.0.1:7051\ntickMs: 20\npeers: [a]\n",
        )
        .unwrap();
        // SAFETY: the variable names are unique to this test; no other thread reads them.
        unsafe {
            std::env::set_var("MEDLEDGER_CFGTEST_TICKMS", "5");
            std::env::set_var("MEDLEDGER_CFGTEST_PEERS", "[b, c]");
        }
        let s: Sample = load_yaml(&path, "MEDLEDGER_CFGTEST_").unwrap();
        assert_eq!(
            s,
            Sample {
                listen_address: "127.0.0.1:7051".into(),
                tick_ms: 5,
                peers: vec!["b".into(), "c".into()]
            }
        );
        std::fs::write(&path, "listenAddress: [unterminated").unwrap();
        assert!(load_yaml::<Sample>(&path, "MEDLEDGER_CFGTEST_").is_err());
        assert!(load_yaml::<Sample>(&dir.path().join("missing.yaml"), "X_").is_err());
    }
}
