//! The `medledger-ca` command line: `server init|start` and the client commands
//! `enroll | register | reenroll | revoke | gencrl | identity | affiliation | certificate`,
//! named as Fabric CA's are.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use medledger_common::{PrivateKey, SigningIdentity};

use crate::authority::{
    AttrRequest, Authority, AuthorityConfig, CaHome, EnrollRequest, RegisterRequest, RevokeRequest,
};
use crate::client::{
    CaClient, CaUrl, ClientError, EnrollOptions, TlsFailure, enroll_to_msp, write_enrollment,
};
use crate::error::CaError;
use crate::manage::ModifyIdentityRequest;
use crate::server::CaSet;
use crate::store::Attribute;

/// Errors the CLI reports.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A call to a CA failed; `hint` says what to try where the failure tells.
    #[error("{source}{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Client {
        source: ClientError,
        hint: Option<String>,
    },
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
}

impl From<ClientError> for CliError {
    fn from(source: ClientError) -> Self {
        Self::Client { source, hint: None }
    }
}

/// What to try after `e`, a failed call to the CA at `url` (as given with -u, or as the parent
/// of an intermediate CA) trusting `tls_roots`: the failures a person can fix from the command
/// line, named with the option that fixes them.
fn hint(e: &ClientError, url: &str, tls_roots: Option<&Path>) -> Option<String> {
    let parsed = CaUrl::parse(url).ok()?;
    let at = format!("{}:{}", parsed.host, parsed.port);
    let roots = tls_roots.map_or_else(|| "--tls.certfiles".to_owned(), |p| p.display().to_string());
    Some(match e {
        ClientError::Connect { .. } => {
            format!("is the CA running at {at}? Check the host and port in -u")
        }
        ClientError::NoTlsRoots => format!(
            "the CA at {at} is addressed with https: pass --tls.certfiles with the CA's TLS \
             certificate, tls-cert.pem in the CA server's home folder"
        ),
        ClientError::Handshake { failure, .. } => match failure {
            TlsFailure::Untrusted => format!(
                "the TLS certificate of the CA at {at} is not signed by a certificate in \
                 {roots}: pass this CA's TLS certificate, tls-cert.pem in its home folder"
            ),
            TlsFailure::WrongHostName => format!(
                "the CA's TLS certificate does not name {}: use a host name it was made for, \
                 one of the server's --csr.hosts (localhost by default)",
                parsed.host
            ),
            TlsFailure::NotTls => format!(
                "the CA at {at} does not speak TLS: use an http:// URL, or start the server \
                 without --no-tls"
            ),
            TlsFailure::Other => return None,
        },
        ClientError::Http(_) if !parsed.https => format!(
            "the CA at {at} did not answer plain HTTP; a CA serves HTTPS unless started with \
             --no-tls: use https:// and --tls.certfiles"
        ),
        ClientError::Ca(ca)
            if ca.code == crate::error::code::AUTHENTICATION_FAILURE && parsed.user.is_some() =>
        {
            "check the enrollment id and secret in -u https://ID:SECRET@host:port; the secret \
             is the one register printed"
                .to_owned()
        }
        ClientError::Ca(ca)
            if [
                crate::error::code::UNTRUSTED_CERT,
                crate::error::code::INVALID_TOKEN,
            ]
            .contains(&ca.code) =>
        {
            format!(
                "the identity in --mspdir must be one enrolled at the CA at {at}: enroll it \
                 there first, or pass the MSP folder of one that is"
            )
        }
        _ => return None,
    })
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "medledger-ca",
    about = "MedLedger certificate authority: a Fabric-CA-compatible server and its client",
    after_help = "Example:\n  medledger-ca server start --home ca-hospital1 -b admin:adminpw --port 7054\n  \
                  medledger-ca enroll -u https://admin:adminpw@localhost:7054 --tls-certfiles ca-hospital1/tls-cert.pem \\\n      \
                  --mspdir admin/msp --mspid Hospital1MSP"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run or initialise a CA server.
    #[command(subcommand)]
    Server(ServerCommand),
    /// Enroll an identity and write its MSP folder.
    #[command(
        after_help = "Example:\n  medledger-ca enroll -u https://doctor1:pw@localhost:7054 --tls-certfiles tls-cert.pem \\\n      --mspdir doctor1/msp --mspid Hospital1MSP --enrollment.attrs role,patientId:opt"
    )]
    Enroll(EnrollArgs),
    /// Register a new identity (as a registrar); prints its secret.
    #[command(
        after_help = "Example:\n  medledger-ca register -u https://localhost:7054 --tls-certfiles tls-cert.pem --mspdir admin/msp \\\n      --mspid Hospital1MSP --id.name doctor1 --id.secret pw --id.type client \\\n      --id.affiliation hospital1.cardiology --id.attrs 'role=doctor:ecert'"
    )]
    Register(RegisterArgs),
    /// Get a new certificate for an enrolled identity (rewrites its MSP folder).
    #[command(
        after_help = "Example:\n  medledger-ca reenroll -u https://localhost:7054 --tls-certfiles tls-cert.pem --mspdir doctor1/msp --mspid Hospital1MSP"
    )]
    Reenroll(ClientArgs),
    /// Revoke an identity (all its certificates) or one certificate.
    #[command(
        after_help = "Example:\n  medledger-ca revoke -u https://localhost:7054 --tls-certfiles tls-cert.pem --mspdir admin/msp \\\n      --mspid Hospital1MSP --revoke.name nurse1 --revoke.reason keycompromise --gencrl"
    )]
    Revoke(RevokeArgs),
    /// Generate a CRL and write it to <mspdir>/crls/crl.pem.
    #[command(
        after_help = "Example:\n  medledger-ca gencrl -u https://localhost:7054 --tls-certfiles tls-cert.pem --mspdir admin/msp --mspid Hospital1MSP"
    )]
    Gencrl(ClientArgs),
    /// Manage identities (as a registrar).
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Manage affiliations (needs hf.AffiliationMgr).
    #[command(subcommand)]
    Affiliation(AffiliationCommand),
    /// Issued certificates.
    #[command(subcommand)]
    Certificate(CertificateCommand),
}

#[derive(Subcommand, Debug)]
enum ServerCommand {
    /// Create the CA's key and self-signed certificate (or an intermediate, with --parent).
    #[command(
        after_help = "Example:\n  medledger-ca server init --home ca-hospital1 --name ca-hospital1 -b admin:adminpw"
    )]
    Init(ServerArgs),
    /// Start the CA server (initialising it first if needed).
    #[command(
        after_help = "Example:\n  medledger-ca server start --home ca-hospital1 --name ca-hospital1 -b admin:adminpw --port 7054"
    )]
    Start(ServerArgs),
}

#[derive(Args, Debug)]
struct ServerArgs {
    /// The CA's home folder (keys, certificates, database).
    #[arg(long, env = "FABRIC_CA_SERVER_HOME", default_value = ".")]
    home: PathBuf,
    /// The CA's name.
    #[arg(
        long = "name",
        alias = "ca.name",
        env = "FABRIC_CA_SERVER_CA_NAME",
        default_value = "ca"
    )]
    name: String,
    /// Bootstrap identity as id:secret, registered on first start with every registrar right.
    #[arg(short = 'b', long = "boot", env = "FABRIC_CA_SERVER_BOOT")]
    boot: Option<String>,
    /// Address to listen on.
    #[arg(long, env = "FABRIC_CA_SERVER_ADDRESS", default_value = "127.0.0.1")]
    address: String,
    /// Port to listen on (0 picks a free one and prints it).
    #[arg(long, env = "FABRIC_CA_SERVER_PORT", default_value_t = 7054)]
    port: u16,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    no_tls: bool,
    /// Host names and IPs for the server's TLS certificate.
    #[arg(
        long = "csr.hosts",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1"
    )]
    hosts: Vec<String>,
    /// Affiliations identities may be registered under (e.g. hospital1.cardiology).
    #[arg(long = "affiliation", value_delimiter = ',')]
    affiliations: Vec<String>,
    /// Default maximum enrollments per identity (-1 = unlimited).
    #[arg(long = "registry.maxenrollments", default_value_t = -1)]
    max_enrollments: i32,
    /// Become an intermediate CA: enroll at this parent (https://id:secret@host:port, profile ca).
    #[arg(long = "intermediate.parentserver.url")]
    parent_url: Option<String>,
    /// TLS root certificates of the parent CA.
    #[arg(long = "intermediate.tls.certfiles")]
    parent_tls: Option<PathBuf>,
    /// Allow identities to be removed (`identity remove`).
    #[arg(long = "cfg.identities.allowremove")]
    identities_allow_remove: bool,
    /// Allow affiliations to be removed (`affiliation remove`).
    #[arg(long = "cfg.affiliations.allowremove")]
    affiliations_allow_remove: bool,
    /// More CAs in this server: their configuration files (YAML: ca.name, registry.identities
    /// (the first is the bootstrap identity), registry.maxenrollments, affiliations,
    /// cfg.identities.allowremove, cfg.affiliations.allowremove); each CA's home is its file's
    /// folder. Requests name one with `caname`; the others go to this command's CA.
    #[arg(long = "cafiles", value_delimiter = ',')]
    cafiles: Vec<PathBuf>,
    /// Serve /healthz and Prometheus /metrics here (e.g. 127.0.0.1:9443).
    #[arg(long = "operations.listenaddress")]
    operations_address: Option<String>,
}

#[derive(Args, Debug, Clone)]
struct ClientArgs {
    /// The CA's URL: https://[id:secret@]host:port.
    #[arg(short = 'u', long = "url", env = "FABRIC_CA_CLIENT_URL")]
    url: String,
    /// The CA's TLS root certificate (PEM).
    #[arg(
        long = "tls-certfiles",
        alias = "tls.certfiles",
        env = "FABRIC_CA_CLIENT_TLS_CERTFILES"
    )]
    tls_certfiles: Option<PathBuf>,
    /// The MSP folder of the identity that signs the request (or receives the enrollment).
    #[arg(short = 'M', long = "mspdir", env = "FABRIC_CA_CLIENT_MSPDIR")]
    mspdir: PathBuf,
    /// The MSP id of that identity.
    #[arg(long = "mspid", env = "FABRIC_CA_CLIENT_MSPID", default_value = "")]
    mspid: String,
    /// The CA to talk to in a server serving several (its default when empty).
    #[arg(long = "caname", env = "FABRIC_CA_CLIENT_CANAME", default_value = "")]
    caname: String,
}

#[derive(Args, Debug)]
struct EnrollArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// `tls` for a TLS certificate.
    #[arg(long = "enrollment.profile")]
    profile: Option<String>,
    /// Attributes to put in the certificate: name or name:opt, comma separated.
    #[arg(long = "enrollment.attrs", value_delimiter = ',')]
    attrs: Vec<String>,
    /// Host names for the certificate's SANs.
    #[arg(long = "csr.hosts", value_delimiter = ',')]
    hosts: Vec<String>,
}

#[derive(Args, Debug)]
struct RegisterArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[arg(long = "id.name")]
    name: String,
    #[arg(long = "id.secret")]
    secret: Option<String>,
    /// client, peer, orderer, admin or user.
    #[arg(long = "id.type", default_value = "client")]
    kind: String,
    #[arg(long = "id.affiliation", default_value = "")]
    affiliation: String,
    /// name=value[:ecert], comma separated.
    #[arg(long = "id.attrs", value_delimiter = ',')]
    attrs: Vec<String>,
    #[arg(long = "id.maxenrollments", default_value_t = 0)]
    max_enrollments: i32,
}

#[derive(Args, Debug)]
struct RevokeArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[arg(long = "revoke.name", default_value = "")]
    name: String,
    #[arg(long = "revoke.serial", default_value = "")]
    serial: String,
    #[arg(long = "revoke.aki", default_value = "")]
    aki: String,
    #[arg(long = "revoke.reason", default_value = "")]
    reason: String,
    /// Also write a fresh CRL to <mspdir>/crls/crl.pem.
    #[arg(long)]
    gencrl: bool,
}

#[derive(Subcommand, Debug)]
enum IdentityCommand {
    /// List the identities the registrar may act on (or one, with --id).
    #[command(
        after_help = "Example:\n  medledger-ca identity list -u https://localhost:7054 --tls-certfiles ca-hospital1/tls-cert.pem \\\n    \
        --mspdir admin/msp --mspid Hospital1MSP"
    )]
    List(IdentityListArgs),
    /// Add an identity; prints its secret.
    #[command(
        after_help = "Example:\n  medledger-ca identity add nurse2 --type client --affiliation hospital1.nursing \\\n    \
        --attrs 'role=nurse:ecert' --secret pw -u https://localhost:7054 --tls-certfiles tls-cert.pem --mspdir admin/msp"
    )]
    Add(IdentityArgs),
    /// Change an identity's type, affiliation, attributes, max enrollments or secret.
    #[command(
        after_help = "Example:\n  medledger-ca identity modify nurse2 --attrs 'role=headnurse:ecert' \\\n    \
        -u https://localhost:7054 --tls-certfiles tls-cert.pem --mspdir admin/msp"
    )]
    Modify(IdentityArgs),
    /// Remove an identity and revoke its certificates (the server needs
    /// --cfg.identities.allowremove).
    #[command(
        after_help = "Example:\n  medledger-ca identity remove nurse2 -u https://localhost:7054 --tls-certfiles tls-cert.pem --mspdir admin/msp"
    )]
    Remove(RemoveArgs),
}

#[derive(Args, Debug)]
struct IdentityListArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Only this identity.
    #[arg(long = "id")]
    id: Option<String>,
}

#[derive(Args, Debug)]
struct IdentityArgs {
    /// The identity's enrollment id.
    id: String,
    #[command(flatten)]
    client: ClientArgs,
    /// client, peer, orderer, admin or user.
    #[arg(long = "type", default_value = "")]
    kind: String,
    /// The affiliation ("." for the root).
    #[arg(long = "affiliation", default_value = "")]
    affiliation: String,
    /// name=value[:ecert], comma separated; an empty value removes the attribute (modify).
    #[arg(long = "attrs", value_delimiter = ',')]
    attrs: Vec<String>,
    /// Maximum enrollments (0: the CA's default; -2 in modify: back to the default).
    #[arg(
        long = "maxenrollments",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    max_enrollments: i32,
    #[arg(long = "secret", default_value = "")]
    secret: String,
}

#[derive(Args, Debug)]
struct RemoveArgs {
    /// The identity or affiliation.
    name: String,
    #[command(flatten)]
    client: ClientArgs,
    /// Remove one's own identity; remove an affiliation with what is under it.
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand, Debug)]
enum AffiliationCommand {
    /// Show the affiliations under the caller's (or one, with --affiliation).
    #[command(
        after_help = "Example:\n  medledger-ca affiliation list -u https://localhost:7054 --tls-certfiles tls-cert.pem --mspdir admin/msp"
    )]
    List(AffiliationListArgs),
    /// Add an affiliation (--force also adds missing parents).
    #[command(
        after_help = "Example:\n  medledger-ca affiliation add hospital1.radiology -u https://localhost:7054 --tls-certfiles tls-cert.pem --mspdir admin/msp"
    )]
    Add(AffiliationAddArgs),
    /// Rename an affiliation (--force also moves its identities).
    #[command(
        after_help = "Example:\n  medledger-ca affiliation modify hospital1.radiology --name hospital1.imaging \\\n    \
        -u https://localhost:7054 --tls-certfiles tls-cert.pem --mspdir admin/msp"
    )]
    Modify(AffiliationModifyArgs),
    /// Remove an affiliation (the server needs --cfg.affiliations.allowremove).
    #[command(
        after_help = "Example:\n  medledger-ca affiliation remove hospital1.imaging -u https://localhost:7054 --tls-certfiles tls-cert.pem --mspdir admin/msp"
    )]
    Remove(RemoveArgs),
}

#[derive(Args, Debug)]
struct AffiliationListArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Only this affiliation (with its identities).
    #[arg(long = "affiliation")]
    affiliation: Option<String>,
}

#[derive(Args, Debug)]
struct AffiliationAddArgs {
    name: String,
    #[command(flatten)]
    client: ClientArgs,
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct AffiliationModifyArgs {
    name: String,
    #[command(flatten)]
    client: ClientArgs,
    /// The new name.
    #[arg(long = "name")]
    new_name: String,
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand, Debug)]
enum CertificateCommand {
    /// List the certificates the caller may see that match the filters; --store writes them as
    /// <id>.pem (<id>-1.pem, <id>-2.pem... when one identity has several).
    #[command(
        after_help = "Example:\n  medledger-ca certificate list --id doctor1 --notrevoked --store certs \\\n    \
        -u https://localhost:7054 --tls-certfiles tls-cert.pem --mspdir admin/msp\n  \
        medledger-ca certificate list --expiration 2026-01-01::+30d --revocation -7d::now ..."
    )]
    List(CertificateListArgs),
}

#[derive(Args, Debug)]
struct CertificateListArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[arg(long = "id", default_value = "")]
    id: String,
    #[arg(long = "serial", default_value = "")]
    serial: String,
    #[arg(long = "aki", default_value = "")]
    aki: String,
    /// start::end (RFC 3339, a date, or a duration from now like -30d); either side may be empty.
    #[arg(long = "expiration", default_value = "", allow_hyphen_values = true)]
    expiration: String,
    /// start::end, as --expiration.
    #[arg(long = "revocation", default_value = "", allow_hyphen_values = true)]
    revocation: String,
    #[arg(long)]
    notexpired: bool,
    #[arg(long)]
    notrevoked: bool,
    /// Write the certificates into this folder.
    #[arg(long = "store")]
    store: Option<PathBuf>,
}

/// Splits Fabric CA's `start::end` time range (`now` meaning the current time).
fn time_range(range: &str) -> Result<(String, String), CliError> {
    if range.is_empty() {
        return Ok((String::new(), String::new()));
    }
    let (start, end) = range
        .split_once("::")
        .ok_or_else(|| CliError::Usage(format!("time range {range:?} is not start::end")))?;
    let now = |t: &str| {
        if t == "now" {
            "+0s".to_owned()
        } else {
            t.to_owned()
        }
    };
    Ok((now(start), now(end)))
}

/// Writes certificates as Fabric CA's client does: `<id>.pem`, or `<id>-1.pem`, `<id>-2.pem`...
/// for an identity with several.
fn store_certificates(dir: &Path, pems: &[String]) -> Result<Vec<PathBuf>, CliError> {
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let mut by_id: std::collections::BTreeMap<String, Vec<&String>> = Default::default();
    for pem in pems {
        let cert = medledger_common::Certificate::from_pem(pem.as_bytes()).map_err(|e| {
            CliError::Usage(format!(
                "the CA sent a certificate that does not parse: {e}"
            ))
        })?;
        // The enrollment id is the subject's CN.
        let id = cert
            .subject
            .split(',')
            .find_map(|part| part.trim().strip_prefix("CN="))
            .unwrap_or("unknown")
            .to_owned();
        by_id.entry(id).or_default().push(pem);
    }
    let mut written = Vec::new();
    for (id, pems) in by_id {
        for (i, pem) in pems.iter().enumerate() {
            let name = if pems.len() == 1 {
                format!("{id}.pem")
            } else {
                format!("{id}-{}.pem", i + 1)
            };
            let path = dir.join(name);
            std::fs::write(&path, pem).map_err(|e| file_err(&path, e))?;
            written.push(path);
        }
    }
    Ok(written)
}

/// Prints an identity as Fabric CA's client does.
fn print_identity(id: &serde_json::Value) {
    println!(
        "Name: {}, Type: {}, Affiliation: {}, Max Enrollments: {}, Attributes: {}",
        id["id"].as_str().unwrap_or_default(),
        id["type"].as_str().unwrap_or_default(),
        id["affiliation"].as_str().unwrap_or_default(),
        id["max_enrollments"],
        id["attrs"]
    );
}

/// Prints an affiliation tree, one per line, with its identities.
fn print_affiliation(aff: &serde_json::Value, depth: usize) {
    println!(
        "{}affiliation: {}",
        "   ".repeat(depth),
        aff["name"].as_str().unwrap_or_default()
    );
    for id in aff["identities"].as_array().into_iter().flatten() {
        println!(
            "{}identity: {}",
            "   ".repeat(depth + 1),
            id["id"].as_str().unwrap_or_default()
        );
    }
    for child in aff["affiliations"].as_array().into_iter().flatten() {
        print_affiliation(child, depth + 1);
    }
}

fn parse_attrs(list: &[String]) -> Result<Vec<Attribute>, CliError> {
    list.iter()
        .map(|a| {
            let (name, rest) = a.split_once('=').ok_or_else(|| {
                CliError::Usage(format!("attribute {a:?} is not name=value[:ecert]"))
            })?;
            let (value, ecert) = match rest.strip_suffix(":ecert") {
                Some(v) => (v, true),
                None => (rest, false),
            };
            Ok(Attribute {
                name: name.trim().to_owned(),
                value: value.to_owned(),
                ecert,
            })
        })
        .collect()
}

impl ClientArgs {
    fn client(&self) -> Result<(CaClient, CaUrl), CliError> {
        let url = CaUrl::parse(&self.url)?;
        let roots = match &self.tls_certfiles {
            Some(p) => Some(std::fs::read(p).map_err(|e| file_err(p, e))?),
            None => None,
        };
        let client = CaClient::new(&url, roots.as_deref())?.with_ca_name(&self.caname);
        Ok((client, url))
    }

    fn signer(&self) -> Result<SigningIdentity, CliError> {
        SigningIdentity::load(&self.mspdir, &self.mspid).map_err(|e| {
            file_err(
                &self.mspdir,
                format!(
                    "{e} (--mspdir must be the MSP folder of an enrolled identity: run \
                     `medledger-ca enroll -u https://ID:SECRET@host:port --mspdir {}` first)",
                    self.mspdir.display()
                ),
            )
        })
    }
}

fn write_crl(mspdir: &Path, pem: &str) -> Result<PathBuf, CliError> {
    let path = mspdir.join("crls/crl.pem");
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(|e| file_err(p, e))?;
    }
    std::fs::write(&path, pem).map_err(|e| file_err(&path, e))?;
    Ok(path)
}

async fn server(args: ServerArgs, start: bool) -> Result<(), CliError> {
    let home = CaHome::new(&args.home);
    let mut config = AuthorityConfig::new(&args.name);
    config.affiliations = args.affiliations.clone();
    config.max_enrollments = args.max_enrollments;
    config.identities_allow_remove = args.identities_allow_remove;
    config.affiliations_allow_remove = args.affiliations_allow_remove;
    if !home.is_initialized() {
        match &args.parent_url {
            Some(parent) => {
                let url = CaUrl::parse(parent)?;
                let (id, secret) = url
                    .user
                    .clone()
                    .ok_or_else(|| CliError::Usage("the parent URL needs id:secret@".into()))?;
                let roots = match &args.parent_tls {
                    Some(p) => Some(std::fs::read(p).map_err(|e| file_err(p, e))?),
                    None => None,
                };
                let client = CaClient::new(&url, roots.as_deref())?;
                let key = PrivateKey::generate();
                let csr = medledger_common::issue::certificate_request_pem(&key, &id, &[])
                    .map_err(|e| CliError::Usage(e.to_string()))?;
                let (cert, chain) = client
                    .enroll(
                        &id,
                        &secret,
                        &EnrollRequest {
                            certificate_request: csr,
                            profile: Some("ca".into()),
                            ..Default::default()
                        },
                    )
                    .await?;
                let signer =
                    medledger_common::issue::CaSigner::from_parts(&cert, key, chain.clone())
                        .map_err(|e| CliError::Usage(e.to_string()))?;
                home.save_signer(&signer, &chain)?;
            }
            None => Authority::init_root(&home, &config)?,
        }
        println!("initialised CA {} in {}", args.name, args.home.display());
    }
    let signer = home.load_signer()?;
    if !args.no_tls {
        home.ensure_tls(&signer, &args.hosts)?;
    }
    let boot = match &args.boot {
        Some(b) => Some(
            b.split_once(':')
                .ok_or_else(|| CliError::Usage("-b must be id:secret".into()))?,
        ),
        None => None,
    };
    let mut cas = vec![Arc::new(Authority::open(&home, config, boot)?)];
    for file in &args.cafiles {
        cas.push(Arc::new(open_ca_file(file)?));
    }
    let cas = CaSet::new(cas)?;
    if !start {
        return Ok(());
    }
    if let Some(address) = &args.operations_address {
        let (listener, bound) = medledger_common::ops::bind(address)
            .await
            .map_err(|e| CliError::Usage(format!("cannot listen on {address}: {e}")))?;
        println!("operations endpoint on http://{bound}");
        tokio::spawn(crate::server::serve_operations(
            listener,
            cas.clone(),
            shutdown_signal(),
        ));
    }
    let addr: SocketAddr = format!("{}:{}", args.address, args.port)
        .parse()
        .map_err(|e| CliError::Usage(format!("bad listen address: {e}")))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::Usage(format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let tls = if args.no_tls {
        None
    } else {
        Some(crate::server::tls_config(
            &home.tls_cert(),
            &home.tls_key(),
        )?)
    };
    println!(
        "CA {} listening on {}://{local}",
        cas.names().join(", "),
        if tls.is_some() { "https" } else { "http" }
    );
    crate::server::serve(listener, tls, cas, shutdown_signal()).await;
    Ok(())
}

/// A CA configuration file of `--cafiles`: the part of Fabric CA's server configuration this CA
/// uses.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct CaFile {
    ca: CaFileCa,
    registry: CaFileRegistry,
    /// Fabric CA's nested map: `hospital2: [cardiology, nursing]`.
    affiliations: serde_yaml::Value,
    cfg: CaFileCfg,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct CaFileCa {
    name: String,
}

#[derive(serde::Deserialize)]
#[serde(default)]
struct CaFileRegistry {
    maxenrollments: i32,
    identities: Vec<CaFileIdentity>,
}

impl Default for CaFileRegistry {
    fn default() -> Self {
        Self {
            maxenrollments: -1,
            identities: Vec::new(),
        }
    }
}

#[derive(serde::Deserialize, Default)]
struct CaFileIdentity {
    name: String,
    pass: String,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct CaFileCfg {
    identities: CaFileSwitch,
    affiliations: CaFileSwitch,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct CaFileSwitch {
    allowremove: bool,
}

/// The dotted affiliation paths of Fabric CA's nested affiliation map.
fn affiliation_paths(prefix: &str, v: &serde_yaml::Value, out: &mut Vec<String>) {
    let join = |name: &str| {
        if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}.{name}")
        }
    };
    match v {
        serde_yaml::Value::Mapping(m) => {
            for (k, child) in m {
                if let Some(name) = k.as_str() {
                    out.push(join(name));
                    affiliation_paths(&join(name), child, out);
                }
            }
        }
        serde_yaml::Value::Sequence(items) => {
            for item in items {
                match item.as_str() {
                    Some(name) => out.push(join(name)),
                    None => affiliation_paths(prefix, item, out),
                }
            }
        }
        _ => {}
    }
}

/// Opens (initialising on first use) the root CA a `--cafiles` file describes, in the file's
/// folder.
fn open_ca_file(file: &Path) -> Result<Authority, CliError> {
    let text = std::fs::read_to_string(file).map_err(|e| file_err(file, e))?;
    let parsed: CaFile = serde_yaml::from_str(&text).map_err(|e| file_err(file, e))?;
    if parsed.ca.name.is_empty() {
        return Err(file_err(
            file,
            "ca.name is missing: every CA of a server needs a name",
        ));
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    let home = CaHome::new(dir);
    let mut config = AuthorityConfig::new(&parsed.ca.name);
    affiliation_paths("", &parsed.affiliations, &mut config.affiliations);
    config.max_enrollments = parsed.registry.maxenrollments;
    config.identities_allow_remove = parsed.cfg.identities.allowremove;
    config.affiliations_allow_remove = parsed.cfg.affiliations.allowremove;
    Authority::init_root(&home, &config)?;
    let boot = parsed
        .registry
        .identities
        .first()
        .map(|i| (i.name.as_str(), i.pass.as_str()));
    Ok(Authority::open(&home, config, boot)?)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs one CLI invocation; a failed call to a CA gets a hint of what to try.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let target = match &cli.command {
        Command::Server(ServerCommand::Init(a) | ServerCommand::Start(a)) => {
            a.parent_url.clone().map(|u| (u, a.parent_tls.clone()))
        }
        Command::Enroll(EnrollArgs { client: a, .. })
        | Command::Register(RegisterArgs { client: a, .. })
        | Command::Revoke(RevokeArgs { client: a, .. })
        | Command::Reenroll(a)
        | Command::Gencrl(a)
        | Command::Identity(
            IdentityCommand::List(IdentityListArgs { client: a, .. })
            | IdentityCommand::Add(IdentityArgs { client: a, .. })
            | IdentityCommand::Modify(IdentityArgs { client: a, .. })
            | IdentityCommand::Remove(RemoveArgs { client: a, .. }),
        )
        | Command::Affiliation(
            AffiliationCommand::List(AffiliationListArgs { client: a, .. })
            | AffiliationCommand::Add(AffiliationAddArgs { client: a, .. })
            | AffiliationCommand::Modify(AffiliationModifyArgs { client: a, .. })
            | AffiliationCommand::Remove(RemoveArgs { client: a, .. }),
        )
        | Command::Certificate(CertificateCommand::List(CertificateListArgs {
            client: a, ..
        })) => Some((a.url.clone(), a.tls_certfiles.clone())),
    };
    match execute(cli).await {
        Err(CliError::Client { source, hint: None }) => {
            let hint = target.and_then(|(url, roots)| hint(&source, &url, roots.as_deref()));
            Err(CliError::Client { source, hint })
        }
        other => other,
    }
}

async fn execute(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Server(ServerCommand::Init(a)) => server(a, false).await,
        Command::Server(ServerCommand::Start(a)) => server(a, true).await,
        Command::Enroll(a) => {
            let (client, url) = a.client.client()?;
            let (id, secret) = url.user.clone().ok_or_else(|| {
                CliError::Usage("enroll needs https://id:secret@host:port".into())
            })?;
            let attr_reqs = a
                .attrs
                .iter()
                .map(|s| match s.strip_suffix(":opt") {
                    Some(n) => AttrRequest {
                        name: n.into(),
                        optional: true,
                    },
                    None => AttrRequest {
                        name: s.clone(),
                        optional: false,
                    },
                })
                .collect();
            let opts = EnrollOptions {
                profile: a.profile.clone(),
                attr_reqs,
                hosts: a.hosts.clone(),
            };
            enroll_to_msp(&client, &id, &secret, &opts, &a.client.mspdir).await?;
            println!(
                "enrolled {id}: MSP written to {}",
                a.client.mspdir.display()
            );
            Ok(())
        }
        Command::Register(a) => {
            let (client, _) = a.client.client()?;
            let signer = a.client.signer()?;
            let req = RegisterRequest {
                id: a.name.clone(),
                kind: Some(a.kind.clone()),
                secret: a.secret.clone(),
                max_enrollments: a.max_enrollments,
                affiliation: a.affiliation.clone(),
                attrs: parse_attrs(&a.attrs)?,
            };
            let secret = client.register(&signer, &req).await?;
            println!("Password: {secret}");
            Ok(())
        }
        Command::Reenroll(a) => {
            let (client, _) = a.client()?;
            let signer = a.signer()?;
            let key = PrivateKey::generate();
            let cn = signer.certificate().subject.clone();
            let csr = medledger_common::issue::certificate_request_pem(&key, &cn, &[])
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let (cert, chain) = client
                .reenroll(
                    &signer,
                    &EnrollRequest {
                        certificate_request: csr,
                        ..Default::default()
                    },
                )
                .await?;
            let _ = std::fs::remove_dir_all(a.mspdir.join("keystore"));
            write_enrollment(&a.mspdir, &cert, &key, &chain, false)?;
            println!("reenrolled: MSP rewritten in {}", a.mspdir.display());
            Ok(())
        }
        Command::Revoke(a) => {
            let (client, _) = a.client.client()?;
            let signer = a.client.signer()?;
            let result = client
                .revoke(
                    &signer,
                    &RevokeRequest {
                        id: a.name.clone(),
                        aki: a.aki.clone(),
                        serial: a.serial.clone(),
                        reason: a.reason.clone(),
                        gencrl: a.gencrl,
                    },
                )
                .await?;
            for c in &result.revoked_certs {
                println!("revoked certificate serial={} aki={}", c.serial, c.aki);
            }
            if a.gencrl {
                use base64::Engine;
                let pem = base64::engine::general_purpose::STANDARD
                    .decode(&result.crl)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or_default();
                let path = write_crl(&a.client.mspdir, &pem)?;
                println!("CRL written to {}", path.display());
            }
            Ok(())
        }
        Command::Gencrl(a) => {
            let (client, _) = a.client()?;
            let signer = a.signer()?;
            let pem = client.gencrl(&signer).await?;
            let path = write_crl(&a.mspdir, &pem)?;
            println!("CRL written to {}", path.display());
            Ok(())
        }
        Command::Identity(cmd) => identity_command(cmd).await,
        Command::Affiliation(cmd) => affiliation_command(cmd).await,
        Command::Certificate(CertificateCommand::List(a)) => {
            let (client, _) = a.client.client()?;
            let signer = a.client.signer()?;
            let (expired_start, expired_end) = time_range(&a.expiration)?;
            let (revoked_start, revoked_end) = time_range(&a.revocation)?;
            let flag = |b: bool| if b { "true".to_owned() } else { String::new() };
            let pems = client
                .certificates(
                    &signer,
                    &[
                        ("id", a.id.clone()),
                        ("serial", a.serial.clone()),
                        ("aki", a.aki.clone()),
                        ("expired_start", expired_start),
                        ("expired_end", expired_end),
                        ("revoked_start", revoked_start),
                        ("revoked_end", revoked_end),
                        ("notexpired", flag(a.notexpired)),
                        ("notrevoked", flag(a.notrevoked)),
                    ],
                )
                .await?;
            match &a.store {
                Some(dir) => {
                    for path in store_certificates(dir, &pems)? {
                        println!("{}", path.display());
                    }
                }
                None => pems.iter().for_each(|p| print!("{p}")),
            }
            Ok(())
        }
    }
}

async fn identity_command(cmd: IdentityCommand) -> Result<(), CliError> {
    match cmd {
        IdentityCommand::List(a) => {
            let (client, _) = a.client.client()?;
            let signer = a.client.signer()?;
            match &a.id {
                Some(id) => print_identity(&client.identity(&signer, id).await?),
                None => {
                    let list = client.identities(&signer).await?;
                    list["identities"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .for_each(print_identity);
                }
            }
            Ok(())
        }
        IdentityCommand::Add(a) => {
            let (client, _) = a.client.client()?;
            let signer = a.client.signer()?;
            let req = RegisterRequest {
                id: a.id.clone(),
                kind: Some(a.kind.clone()).filter(|k| !k.is_empty()),
                secret: Some(a.secret.clone()).filter(|s| !s.is_empty()),
                max_enrollments: a.max_enrollments,
                affiliation: a.affiliation.clone(),
                attrs: parse_attrs(&a.attrs)?,
            };
            let added = client.add_identity(&signer, &req).await?;
            println!(
                "Successfully added identity {}; Password: {}",
                a.id,
                added["secret"].as_str().unwrap_or_default()
            );
            Ok(())
        }
        IdentityCommand::Modify(a) => {
            let (client, _) = a.client.client()?;
            let signer = a.client.signer()?;
            let req = ModifyIdentityRequest {
                kind: a.kind.clone(),
                affiliation: a.affiliation.clone(),
                attrs: parse_attrs(&a.attrs)?,
                max_enrollments: a.max_enrollments,
                secret: a.secret.clone(),
            };
            let modified = client.modify_identity(&signer, &a.id, &req).await?;
            print!("Successfully modified identity: ");
            print_identity(&modified);
            Ok(())
        }
        IdentityCommand::Remove(a) => {
            let (client, _) = a.client.client()?;
            let signer = a.client.signer()?;
            client.remove_identity(&signer, &a.name, a.force).await?;
            println!("Successfully removed identity {}", a.name);
            Ok(())
        }
    }
}

async fn affiliation_command(cmd: AffiliationCommand) -> Result<(), CliError> {
    match cmd {
        AffiliationCommand::List(a) => {
            let (client, _) = a.client.client()?;
            let signer = a.client.signer()?;
            let tree = client
                .affiliations(&signer, a.affiliation.as_deref())
                .await?;
            print_affiliation(&tree, 0);
            Ok(())
        }
        AffiliationCommand::Add(a) => {
            let (client, _) = a.client.client()?;
            let signer = a.client.signer()?;
            client.add_affiliation(&signer, &a.name, a.force).await?;
            println!("Successfully added affiliation: {}", a.name);
            Ok(())
        }
        AffiliationCommand::Modify(a) => {
            let (client, _) = a.client.client()?;
            let signer = a.client.signer()?;
            let tree = client
                .modify_affiliation(&signer, &a.name, &a.new_name, a.force)
                .await?;
            println!(
                "Successfully modified affiliation {} to {}",
                a.name, a.new_name
            );
            print_affiliation(&tree, 0);
            Ok(())
        }
        AffiliationCommand::Remove(a) => {
            let (client, _) = a.client.client()?;
            let signer = a.client.signer()?;
            let tree = client.remove_affiliation(&signer, &a.name, a.force).await?;
            println!("Successfully removed affiliation:");
            print_affiliation(&tree, 0);
            Ok(())
        }
    }
}
