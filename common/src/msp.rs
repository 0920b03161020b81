//! Membership service providers: which certificates belong to an organisation, in which role.
//!
//! An [`Msp`] is built from Fabric's `FabricMSPConfig` (from the channel configuration, or read
//! from an MSP folder by [`load_msp_folder`]). It validates an identity's chain to its root and
//! intermediate CAs, its validity window, the CRLs, and classifies it by Node OU. An
//! [`MspManager`] holds a channel's MSPs and turns serialized creators into validated
//! [`Identity`] values, caching chain validation (the expensive part) per certificate.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use medledger_proto::common::msp_principal::Classification;
use medledger_proto::common::{MspPrincipal, MspRole, OrganizationUnit, msp_role::MspRoleType};
use medledger_proto::msp::{
    FabricMspConfig, FabricNodeOUs, FabricOuIdentifier, MspConfig, SerializedIdentity,
};
use prost::Message;

use crate::cert::{CertError, Certificate, RevocationList};
use crate::crypto::{self, CryptoError};

/// Errors deciding membership.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MspError {
    #[error("malformed serialized identity: {0}")]
    MalformedIdentity(String),
    #[error("MSP {0} is not known on this channel")]
    UnknownMsp(String),
    #[error(transparent)]
    Certificate(#[from] CertError),
    #[error("certificate is not issued by a CA of MSP {0}")]
    UnknownIssuer(String),
    #[error("a CA certificate cannot be used as an identity")]
    CaAsIdentity,
    #[error("certificate {subject} is outside its validity period")]
    Expired { subject: String },
    #[error("certificate {subject} has been revoked")]
    Revoked { subject: String },
    #[error("identity has no valid Node OU: found {0:?}")]
    NodeOu(Vec<String>),
    #[error("signature check failed: {0}")]
    Signature(#[from] CryptoError),
    #[error("invalid MSP configuration: {0}")]
    Config(String),
    #[error("cannot read MSP folder {path}: {reason}")]
    Folder { path: PathBuf, reason: String },
}

/// What an identity is in its organisation, from its Node OU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeRole {
    Client,
    Peer,
    Admin,
    Orderer,
    /// NodeOUs are disabled in this MSP: the identity is only known to be a member.
    Member,
}

/// When validating, whether to hold the certificate's validity window against a clock.
///
/// Commit-time validation must not depend on the wall clock (two peers committing the same
/// block at different times must agree), so it uses [`Expiry::Ignore`], as Fabric does;
/// endorsement, broadcast and deliver use [`Expiry::CheckAt`] the current time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    CheckAt(i64),
    Ignore,
}

impl Expiry {
    /// Check against the system clock now.
    pub fn now() -> Self {
        Expiry::CheckAt(unix_now())
    }
}

/// Seconds since the Unix epoch by the system clock.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Clone)]
struct OuIdentifier {
    ou: String,
    certifier: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
struct NodeOus {
    client: Option<OuIdentifier>,
    peer: Option<OuIdentifier>,
    admin: Option<OuIdentifier>,
    orderer: Option<OuIdentifier>,
}

/// A validated chain: the identity certificate, then its issuers up to a root.
#[derive(Debug, Clone)]
struct Validated {
    cert: Arc<Certificate>,
    chain: Vec<Arc<Certificate>>,
    role: NodeRole,
}

const CACHE_LIMIT: usize = 8192;

/// One organisation's membership rules.
#[derive(Debug)]
pub struct Msp {
    id: String,
    roots: Vec<Arc<Certificate>>,
    intermediates: Vec<Arc<Certificate>>,
    crls: Vec<RevocationList>,
    admins: Vec<Vec<u8>>,
    node_ous: Option<NodeOus>,
    tls_roots: Vec<Certificate>,
    tls_intermediates: Vec<Certificate>,
    config: FabricMspConfig,
    cache: Mutex<HashMap<[u8; 32], Result<Validated, MspError>>>,
}

fn parse_ou(id: &Option<FabricOuIdentifier>) -> Result<Option<OuIdentifier>, MspError> {
    let Some(id) = id else { return Ok(None) };
    let certifier = if id.certificate.is_empty() {
        None
    } else {
        Some(Certificate::from_pem(&id.certificate)?.der)
    };
    Ok(Some(OuIdentifier {
        ou: id.organizational_unit_identifier.clone(),
        certifier,
    }))
}

fn parse_pems(list: &[Vec<u8>]) -> Result<Vec<Certificate>, MspError> {
    let mut out = Vec::new();
    for pem in list {
        out.extend(Certificate::all_from_pem(pem)?);
    }
    Ok(out)
}

impl Msp {
    /// Builds an MSP from Fabric's configuration message, checking that it is coherent: roots
    /// are CAs, intermediates chain to a root, CRLs are signed by one of the CAs.
    pub fn new(config: &FabricMspConfig) -> Result<Self, MspError> {
        if config.name.is_empty() {
            return Err(MspError::Config("MSP name is empty".into()));
        }
        let roots: Vec<Arc<Certificate>> = parse_pems(&config.root_certs)?
            .into_iter()
            .map(Arc::new)
            .collect();
        if roots.is_empty() {
            return Err(MspError::Config(format!(
                "MSP {} has no root CA",
                config.name
            )));
        }
        let intermediates: Vec<Arc<Certificate>> = parse_pems(&config.intermediate_certs)?
            .into_iter()
            .map(Arc::new)
            .collect();
        let cas: Vec<&Arc<Certificate>> = roots.iter().chain(intermediates.iter()).collect();
        let mut crls = Vec::new();
        for raw in &config.revocation_list {
            let crl = RevocationList::parse(raw)?;
            if !cas.iter().any(|ca| crl.is_signed_by(ca)) {
                return Err(MspError::Config(format!(
                    "a CRL of MSP {} is not signed by any of its CAs",
                    config.name
                )));
            }
            crls.push(crl);
        }
        let admins = parse_pems(&config.admins)?
            .into_iter()
            .map(|c| c.der)
            .collect();
        let node_ous = match &config.fabric_node_ous {
            Some(n) if n.enable => Some(NodeOus {
                client: parse_ou(&n.client_ou_identifier)?,
                peer: parse_ou(&n.peer_ou_identifier)?,
                admin: parse_ou(&n.admin_ou_identifier)?,
                orderer: parse_ou(&n.orderer_ou_identifier)?,
            }),
            _ => None,
        };
        let msp = Self {
            id: config.name.clone(),
            roots,
            intermediates,
            crls,
            admins,
            node_ous,
            tls_roots: parse_pems(&config.tls_root_certs)?,
            tls_intermediates: parse_pems(&config.tls_intermediate_certs)?,
            config: config.clone(),
            cache: Mutex::new(HashMap::new()),
        };
        for ic in &msp.intermediates {
            msp.chain_of(ic)?;
        }
        Ok(msp)
    }

    /// The MSP id (`Hospital1MSP`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The configuration this MSP was built from (what goes into channel config).
    pub fn config(&self) -> &FabricMspConfig {
        &self.config
    }

    /// TLS root and intermediate CA certificates, to trust this organisation's TLS servers.
    pub fn tls_ca_certs(&self) -> impl Iterator<Item = &Certificate> {
        self.tls_roots.iter().chain(self.tls_intermediates.iter())
    }

    /// Issuers of `cert` up to a root, not including `cert`.
    fn chain_of(&self, cert: &Certificate) -> Result<Vec<Arc<Certificate>>, MspError> {
        let mut chain = Vec::new();
        let mut current = cert.clone();
        for _ in 0..8 {
            if let Some(root) = self.roots.iter().find(|r| current.is_signed_by(r)) {
                chain.push(root.clone());
                return Ok(chain);
            }
            let Some(next) = self
                .intermediates
                .iter()
                .find(|i| i.der != current.der && current.is_signed_by(i))
            else {
                break;
            };
            chain.push(next.clone());
            current = (**next).clone();
        }
        Err(MspError::UnknownIssuer(self.id.clone()))
    }

    fn is_revoked(&self, cert: &Certificate) -> bool {
        self.crls
            .iter()
            .any(|crl| crl.issuer_raw == cert.issuer_raw && crl.revokes(&cert.serial))
    }

    fn classify(
        &self,
        cert: &Certificate,
        chain: &[Arc<Certificate>],
    ) -> Result<NodeRole, MspError> {
        if self.admins.contains(&cert.der) {
            return Ok(NodeRole::Admin);
        }
        let Some(ous) = &self.node_ous else {
            return Ok(NodeRole::Member);
        };
        let matches = |id: &Option<OuIdentifier>| -> bool {
            id.as_ref().is_some_and(|id| {
                cert.organizational_units.contains(&id.ou)
                    && id
                        .certifier
                        .as_ref()
                        .is_none_or(|c| chain.iter().any(|ca| ca.der == *c))
            })
        };
        let found: Vec<NodeRole> = [
            (&ous.client, NodeRole::Client),
            (&ous.peer, NodeRole::Peer),
            (&ous.admin, NodeRole::Admin),
            (&ous.orderer, NodeRole::Orderer),
        ]
        .into_iter()
        .filter(|(id, _)| matches(id))
        .map(|(_, role)| role)
        .collect();
        match found.as_slice() {
            [role] => Ok(*role),
            _ => Err(MspError::NodeOu(cert.organizational_units.clone())),
        }
    }

    fn validate_uncached(&self, cert: Certificate) -> Result<Validated, MspError> {
        if cert.is_ca {
            return Err(MspError::CaAsIdentity);
        }
        let chain = self.chain_of(&cert)?;
        if self.is_revoked(&cert) || chain.iter().any(|c| self.is_revoked(c)) {
            return Err(MspError::Revoked {
                subject: cert.subject.clone(),
            });
        }
        let role = self.classify(&cert, &chain)?;
        Ok(Validated {
            cert: Arc::new(cert),
            chain,
            role,
        })
    }

    fn validate_cached(&self, cert_der: &[u8]) -> Result<Validated, MspError> {
        self.cached(crypto::sha256_concat(&[b"der\0", cert_der]), || {
            Certificate::from_der(cert_der).map_err(MspError::from)
        })
    }

    /// Validates the certificate in a serialized identity's `id_bytes` (PEM), cached by those
    /// bytes: a peer sees the same few identities in every transaction, and parsing their PEM
    /// again each time cost more than the cache lookup. The key is domain-separated from the
    /// DER one, so bytes are only ever judged as what they arrived as.
    fn validate_pem_cached(&self, id_bytes: &[u8]) -> Result<Validated, MspError> {
        self.cached(crypto::sha256_concat(&[b"pem\0", id_bytes]), || {
            let block = pem::parse_many(id_bytes)
                .map_err(|e| MspError::MalformedIdentity(e.to_string()))?
                .into_iter()
                .next()
                .ok_or_else(|| MspError::MalformedIdentity("no PEM block in id_bytes".into()))?;
            Certificate::from_der(block.contents()).map_err(MspError::from)
        })
    }

    fn cached(
        &self,
        key: [u8; 32],
        parse: impl FnOnce() -> Result<Certificate, MspError>,
    ) -> Result<Validated, MspError> {
        if let Ok(cache) = self.cache.lock()
            && let Some(hit) = cache.get(&key)
        {
            return hit.clone();
        }
        let result = parse().and_then(|c| self.validate_uncached(c));
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(key, result.clone());
        }
        result
    }

    /// Validates a certificate as an identity of this MSP and returns its role.
    pub fn validate(&self, cert: &Certificate, expiry: Expiry) -> Result<NodeRole, MspError> {
        let v = self.validate_cached(&cert.der)?;
        check_expiry(&v, expiry)?;
        Ok(v.role)
    }
}

fn check_expiry(v: &Validated, expiry: Expiry) -> Result<(), MspError> {
    if let Expiry::CheckAt(now) = expiry {
        for c in std::iter::once(&v.cert).chain(v.chain.iter()) {
            if !c.is_valid_at(now) {
                return Err(MspError::Expired {
                    subject: c.subject.clone(),
                });
            }
        }
    }
    Ok(())
}

/// A validated member identity: who signed something.
#[derive(Debug, Clone)]
pub struct Identity {
    pub mspid: String,
    pub cert: Arc<Certificate>,
    pub role: NodeRole,
    /// The serialized `SerializedIdentity` exactly as received.
    pub serialized: Vec<u8>,
}

impl Identity {
    /// Checks a Fabric signature (low-S ECDSA over SHA-256 of `msg`) by this identity.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), MspError> {
        crypto::verify(&self.cert.public_key, msg, sig).map_err(MspError::from)
    }

    /// A Fabric CA attribute from the certificate (`role`, `patientId`, `hf.EnrollmentID`...).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.cert.attributes.get(name).map(String::as_str)
    }

    /// Whether this identity satisfies a policy principal.
    pub fn satisfies(&self, principal: &MspPrincipal) -> bool {
        match Classification::try_from(principal.principal_classification) {
            Ok(Classification::Role) => {
                let Ok(role) = MspRole::decode(principal.principal.as_slice()) else {
                    return false;
                };
                role.msp_identifier == self.mspid
                    && match MspRoleType::try_from(role.role) {
                        Ok(MspRoleType::Member) => true,
                        Ok(MspRoleType::Admin) => self.role == NodeRole::Admin,
                        Ok(MspRoleType::Client) => self.role == NodeRole::Client,
                        Ok(MspRoleType::Peer) => self.role == NodeRole::Peer,
                        Ok(MspRoleType::Orderer) => self.role == NodeRole::Orderer,
                        Err(_) => false,
                    }
            }
            Ok(Classification::OrganizationUnit) => {
                let Ok(ou) = OrganizationUnit::decode(principal.principal.as_slice()) else {
                    return false;
                };
                ou.msp_identifier == self.mspid
                    && self
                        .cert
                        .organizational_units
                        .contains(&ou.organizational_unit_identifier)
            }
            Ok(Classification::Identity) => principal.principal == self.serialized,
            _ => false,
        }
    }
}

/// The MSPs of one channel, by id.
#[derive(Debug, Default, Clone)]
pub struct MspManager {
    msps: BTreeMap<String, Arc<Msp>>,
}

impl MspManager {
    /// A manager over the given MSPs.
    pub fn new(msps: impl IntoIterator<Item = Msp>) -> Self {
        Self {
            msps: msps
                .into_iter()
                .map(|m| (m.id.clone(), Arc::new(m)))
                .collect(),
        }
    }

    /// The MSP with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<Msp>> {
        self.msps.get(id)
    }

    /// All MSP ids, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.msps.keys().map(String::as_str)
    }

    /// All MSPs.
    pub fn msps(&self) -> impl Iterator<Item = &Arc<Msp>> {
        self.msps.values()
    }

    /// Decodes a serialized identity and validates it in its MSP.
    pub fn deserialize(&self, serialized: &[u8], expiry: Expiry) -> Result<Identity, MspError> {
        let sid = SerializedIdentity::decode(serialized)
            .map_err(|e| MspError::MalformedIdentity(e.to_string()))?;
        let msp = self
            .msps
            .get(&sid.mspid)
            .ok_or_else(|| MspError::UnknownMsp(sid.mspid.clone()))?;
        let v = msp.validate_pem_cached(&sid.id_bytes)?;
        check_expiry(&v, expiry)?;
        Ok(Identity {
            mspid: sid.mspid,
            cert: v.cert,
            role: v.role,
            serialized: serialized.to_vec(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// MSP folders (Fabric layout)

#[derive(serde::Deserialize, serde::Serialize, Default, Debug)]
struct MspYaml {
    #[serde(rename = "NodeOUs", default)]
    node_ous: Option<NodeOusYaml>,
}

#[derive(serde::Deserialize, serde::Serialize, Default, Debug)]
#[serde(rename_all = "PascalCase")]
struct NodeOusYaml {
    #[serde(default)]
    enable: bool,
    #[serde(rename = "ClientOUIdentifier", default)]
    client: Option<OuYaml>,
    #[serde(rename = "PeerOUIdentifier", default)]
    peer: Option<OuYaml>,
    #[serde(rename = "AdminOUIdentifier", default)]
    admin: Option<OuYaml>,
    #[serde(rename = "OrdererOUIdentifier", default)]
    orderer: Option<OuYaml>,
}

#[derive(serde::Deserialize, serde::Serialize, Debug)]
struct OuYaml {
    #[serde(rename = "Certificate", default)]
    certificate: Option<String>,
    #[serde(rename = "OrganizationalUnitIdentifier")]
    ou: String,
}

fn folder_err(path: &Path, reason: impl ToString) -> MspError {
    MspError::Folder {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The files of a sub-folder, sorted; a missing folder is empty.
pub(crate) fn read_dir_files(dir: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>, MspError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| folder_err(dir, e))? {
        let path = entry.map_err(|e| folder_err(dir, e))?.path();
        if path.is_file() {
            let bytes = std::fs::read(&path).map_err(|e| folder_err(&path, e))?;
            out.push((path, bytes));
        }
    }
    out.sort();
    Ok(out)
}

fn read_all(dir: &Path) -> Result<Vec<Vec<u8>>, MspError> {
    Ok(read_dir_files(dir)?.into_iter().map(|(_, b)| b).collect())
}

/// The text of `config.yaml` enabling Node OUs against the CA certificate at `ca_cert_rel`
/// (relative to the MSP folder), as Fabric CA clients write it.
pub fn node_ous_config_yaml(ca_cert_rel: &str) -> String {
    let ou = |name: &str| {
        Some(OuYaml {
            certificate: Some(ca_cert_rel.to_owned()),
            ou: name.to_owned(),
        })
    };
    let yaml = MspYaml {
        node_ous: Some(NodeOusYaml {
            enable: true,
            client: ou("client"),
            peer: ou("peer"),
            admin: ou("admin"),
            orderer: ou("orderer"),
        }),
    };
    serde_yaml::to_string(&yaml).unwrap_or_default()
}

/// Reads an MSP folder (`cacerts/`, `intermediatecerts/`, `admincerts/`, `crls/`,
/// `tlscacerts/`, `tlsintermediatecerts/`, `config.yaml`) into Fabric's MSP configuration.
/// The signing identity (`signcerts/`, `keystore/`) is not part of it; see
/// [`crate::identity::SigningIdentity::load`].
pub fn load_msp_folder(dir: &Path, mspid: &str) -> Result<FabricMspConfig, MspError> {
    if !dir.is_dir() {
        return Err(folder_err(dir, "not a directory"));
    }
    let root_certs = read_all(&dir.join("cacerts"))?;
    if root_certs.is_empty() {
        return Err(folder_err(dir, "cacerts/ is empty"));
    }
    let mut fabric_node_ous = None;
    let cfg_path = dir.join("config.yaml");
    if cfg_path.exists() {
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| folder_err(&cfg_path, e))?;
        let yaml: MspYaml = serde_yaml::from_str(&text).map_err(|e| folder_err(&cfg_path, e))?;
        if let Some(n) = yaml.node_ous {
            let ou = |o: Option<OuYaml>| -> Result<Option<FabricOuIdentifier>, MspError> {
                let Some(o) = o else { return Ok(None) };
                let certificate = match o.certificate {
                    Some(rel) => {
                        let p = dir.join(rel);
                        std::fs::read(&p).map_err(|e| folder_err(&p, e))?
                    }
                    None => Vec::new(),
                };
                Ok(Some(FabricOuIdentifier {
                    certificate,
                    organizational_unit_identifier: o.ou,
                }))
            };
            fabric_node_ous = Some(FabricNodeOUs {
                enable: n.enable,
                client_ou_identifier: ou(n.client)?,
                peer_ou_identifier: ou(n.peer)?,
                admin_ou_identifier: ou(n.admin)?,
                orderer_ou_identifier: ou(n.orderer)?,
            });
        }
    }
    Ok(FabricMspConfig {
        name: mspid.to_owned(),
        root_certs,
        intermediate_certs: read_all(&dir.join("intermediatecerts"))?,
        admins: read_all(&dir.join("admincerts"))?,
        revocation_list: read_all(&dir.join("crls"))?,
        signing_identity: None,
        organizational_unit_identifiers: Vec::new(),
        crypto_config: Some(medledger_proto::msp::FabricCryptoConfig {
            signature_hash_family: "SHA2".into(),
            identity_identifier_hash_function: "SHA256".into(),
        }),
        tls_root_certs: read_all(&dir.join("tlscacerts"))?,
        tls_intermediate_certs: read_all(&dir.join("tlsintermediatecerts"))?,
        fabric_node_ous,
    })
}

/// Wraps a Fabric MSP configuration into the `MSPConfig` envelope channel config carries.
pub fn to_msp_config(config: &FabricMspConfig) -> MspConfig {
    MspConfig {
        r#type: 0,
        config: config.encode_to_vec(),
    }
}

/// Unwraps an `MSPConfig` from channel config into a usable MSP.
pub fn from_msp_config(config: &MspConfig) -> Result<Msp, MspError> {
    if config.r#type != 0 {
        return Err(MspError::Config(format!(
            "unsupported MSP type {} (only X.509 / type 0)",
            config.r#type
        )));
    }
    let fabric = FabricMspConfig::decode(config.config.as_slice())
        .map_err(|e| MspError::Config(e.to_string()))?;
    Msp::new(&fabric)
}

/// What goes into an MSP folder written for an enrolled identity.
#[derive(Debug, Clone, Default)]
pub struct MspFolderContents {
    pub signcert_pem: String,
    /// PKCS#8 PEM; `None` writes no keystore (a verifying-only MSP).
    pub key_pem: Option<String>,
    pub cacert_pem: String,
    pub intermediate_pem: Option<String>,
    pub tlscacert_pem: Option<String>,
    pub crl_pems: Vec<String>,
    pub node_ous: bool,
}

fn write_file(path: &Path, contents: &[u8]) -> Result<(), MspError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| folder_err(parent, e))?;
    }
    std::fs::write(path, contents).map_err(|e| folder_err(path, e))
}

/// Writes a Fabric MSP folder: `signcerts/cert.pem`, `keystore/<ski>_sk` (mode 0600),
/// `cacerts/ca.pem`, `intermediatecerts/`, `tlscacerts/`, `crls/`, and `config.yaml` with
/// Node OUs when asked.
pub fn write_msp_folder(dir: &Path, c: &MspFolderContents) -> Result<(), MspError> {
    write_file(&dir.join("signcerts/cert.pem"), c.signcert_pem.as_bytes())?;
    if let Some(key) = &c.key_pem {
        let cert = Certificate::from_pem(c.signcert_pem.as_bytes())?;
        let name = match &cert.subject_key_id {
            Some(ski) => format!("{}_sk", hex::encode(ski)),
            None => "priv_sk".to_owned(),
        };
        let path = dir.join("keystore").join(name);
        write_file(&path, key.as_bytes())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| folder_err(&path, e))?;
        }
    }
    write_file(&dir.join("cacerts/ca.pem"), c.cacert_pem.as_bytes())?;
    if let Some(i) = &c.intermediate_pem {
        write_file(&dir.join("intermediatecerts/ca-chain.pem"), i.as_bytes())?;
    }
    if let Some(t) = &c.tlscacert_pem {
        write_file(&dir.join("tlscacerts/tls-ca.pem"), t.as_bytes())?;
    }
    for (i, crl) in c.crl_pems.iter().enumerate() {
        write_file(&dir.join(format!("crls/crl{i}.pem")), crl.as_bytes())?;
    }
    if c.node_ous {
        write_file(
            &dir.join("config.yaml"),
            node_ous_config_yaml("cacerts/ca.pem").as_bytes(),
        )?;
    }
    Ok(())
}

/// An organisation's MSP configuration from its CA certificates, with Node OUs enabled
/// (client, peer, admin, orderer), as `configtxgen` would read it from the org's MSP folder.
pub fn org_msp_config(mspid: &str, ca_pem: &[u8], tls_ca_pem: Option<&[u8]>) -> FabricMspConfig {
    let ou = |name: &str| {
        Some(FabricOuIdentifier {
            certificate: ca_pem.to_vec(),
            organizational_unit_identifier: name.to_owned(),
        })
    };
    FabricMspConfig {
        name: mspid.to_owned(),
        root_certs: vec![ca_pem.to_vec()],
        tls_root_certs: tls_ca_pem.map(|t| vec![t.to_vec()]).unwrap_or_default(),
        crypto_config: Some(medledger_proto::msp::FabricCryptoConfig {
            signature_hash_family: "SHA2".into(),
            identity_identifier_hash_function: "SHA256".into(),
        }),
        fabric_node_ous: Some(FabricNodeOUs {
            enable: true,
            client_ou_identifier: ou("client"),
            peer_ou_identifier: ou("peer"),
            admin_ou_identifier: ou("admin"),
            orderer_ou_identifier: ou("orderer"),
        }),
        ..Default::default()
    }
}
