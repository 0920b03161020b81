//! The certificate authority's rules, independent of HTTP: who may enroll, register, revoke and
//! generate CRLs, and what goes into the certificates it issues (Fabric CA's behaviour). The
//! management endpoints (identities, affiliations, certificates) are in `manage`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use medledger_common::Certificate;
use medledger_common::cert::{CertificateRequest, RevocationList};
use medledger_common::crypto::{self, PrivateKey};
use medledger_common::issue::{CaSigner, IssueRequest, Usage, random_serial};
use medledger_common::msp::unix_now;
use serde::{Deserialize, Serialize};

use crate::attrs;
use crate::error::{CaError, code};
use crate::store::{Attribute, CaStore, CertRecord, Changes, IdentityRecord, serial_hex};

/// The CA software version reported by cainfo.
pub const VERSION: &str = "1.5.0-medledger";

/// Validity of the server's own TLS certificate.
const TLS_CERT_VALIDITY_SECS: i64 = 365 * 24 * 3600;
/// How far back issued certificates' notBefore is set, for clocks slightly behind ours.
const CLOCK_SKEW_SECS: i64 = 300;
/// Length of a generated enrollment secret.
const GENERATED_SECRET_LEN: usize = 16;
/// Longest enrollment id accepted.
const MAX_ID_LEN: usize = 256;
/// Validity of a generated CRL (its nextUpdate).
const CRL_VALIDITY_SECS: i64 = 7 * 24 * 3600;

/// Settings of one CA.
#[derive(Debug, Clone)]
pub struct AuthorityConfig {
    pub name: String,
    /// Known affiliations (`hospital1`, `hospital1.cardiology`); registering under another fails.
    pub affiliations: Vec<String>,
    /// Default max enrollments for identities registered with 0 (-1 = unlimited).
    pub max_enrollments: i32,
    /// Validity of issued certificates.
    pub cert_validity_secs: i64,
    /// `cfg.identities.allowremove`: whether identities may be deleted (off, as in Fabric CA).
    pub identities_allow_remove: bool,
    /// `cfg.affiliations.allowremove`: whether affiliations may be deleted (off by default).
    pub affiliations_allow_remove: bool,
}

impl AuthorityConfig {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            affiliations: Vec::new(),
            max_enrollments: -1,
            cert_validity_secs: 365 * 24 * 3600,
            identities_allow_remove: false,
            affiliations_allow_remove: false,
        }
    }
}

/// Reads `null` as the type's default: Fabric's clients send `null` for fields they leave unset.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An attribute a client asks to have in its certificate.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AttrRequest {
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub optional: bool,
}

/// The body of `enroll` and `reenroll`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct EnrollRequest {
    pub certificate_request: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attr_reqs: Option<Vec<AttrRequest>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
}

/// The body of `register`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RegisterRequest {
    pub id: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub max_enrollments: i32,
    #[serde(default, deserialize_with = "nullable")]
    pub affiliation: String,
    #[serde(default, deserialize_with = "nullable")]
    pub attrs: Vec<Attribute>,
}

/// The body of `revoke`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RevokeRequest {
    #[serde(default, deserialize_with = "nullable")]
    pub id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub aki: String,
    #[serde(default, deserialize_with = "nullable")]
    pub serial: String,
    #[serde(default, deserialize_with = "nullable")]
    pub reason: String,
    #[serde(default, deserialize_with = "nullable")]
    pub gencrl: bool,
}

/// What a revocation did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeResult {
    #[serde(rename = "RevokedCerts")]
    pub revoked_certs: Vec<RevokedCert>,
    #[serde(rename = "CRL")]
    pub crl: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokedCert {
    #[serde(rename = "Serial")]
    pub serial: String,
    #[serde(rename = "AKI")]
    pub aki: String,
}

/// The identity behind a request's token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: IdentityRecord,
    pub cert: Certificate,
    /// SHA-256 of the token, recorded when a state-changing request succeeds.
    pub token_hash: [u8; 32],
}

/// Files of a CA home directory.
pub struct CaHome {
    pub dir: PathBuf,
}

impl CaHome {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.join("ca-cert.pem")
    }
    pub fn chain(&self) -> PathBuf {
        self.dir.join("ca-chain.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("msp/keystore/ca-key.pem")
    }
    pub fn tls_cert(&self) -> PathBuf {
        self.dir.join("tls-cert.pem")
    }
    pub fn tls_key(&self) -> PathBuf {
        self.dir.join("msp/keystore/tls-key.pem")
    }
    pub fn db(&self) -> PathBuf {
        self.dir.join("db")
    }
    pub fn is_initialized(&self) -> bool {
        self.cert().exists() && self.key().exists()
    }

    /// Writes one of the CA's files durably (a crash leaves the old file or the whole new one: a
    /// truncated key would stop the CA from starting), a secret one created owner-only, never
    /// readable by others for a moment before a chmod.
    fn write(&self, path: &Path, contents: &str, secret: bool) -> Result<(), CaError> {
        medledger_common::durable::write_file_durably(
            path,
            contents.as_bytes(),
            secret.then_some(0o600),
        )
        .map_err(|e| CaError::internal(format!("{}: {e}", path.display())))
    }

    /// Saves a CA's certificate, key and (for intermediates) the chain above it.
    pub fn save_signer(&self, signer: &CaSigner, parent_chain: &str) -> Result<(), CaError> {
        self.write(&self.cert(), signer.cert_pem(), false)?;
        let key = signer.key().to_pkcs8_pem().map_err(CaError::internal)?;
        self.write(&self.key(), &key, true)?;
        if !parent_chain.is_empty() {
            self.write(&self.chain(), parent_chain, false)?;
        }
        Ok(())
    }

    /// Loads the CA's signing material.
    pub fn load_signer(&self) -> Result<CaSigner, CaError> {
        let cert = std::fs::read_to_string(self.cert()).map_err(CaError::internal)?;
        let key = std::fs::read_to_string(self.key()).map_err(CaError::internal)?;
        let key = PrivateKey::from_pem(&key).map_err(CaError::internal)?;
        let chain = std::fs::read_to_string(self.chain()).unwrap_or_default();
        CaSigner::from_parts(&cert, key, chain).map_err(CaError::internal)
    }

    /// Issues the server's own TLS certificate from this CA, for `hosts`.
    pub fn ensure_tls(&self, signer: &CaSigner, hosts: &[String]) -> Result<(), CaError> {
        if self.tls_cert().exists() && self.tls_key().exists() {
            return Ok(());
        }
        let key = PrivateKey::generate();
        let now = unix_now();
        let pem = signer
            .issue(&IssueRequest {
                public_key: key.public_key(),
                common_name: hosts.first().cloned().unwrap_or_else(|| "localhost".into()),
                organization: None,
                organizational_units: vec![],
                hosts: hosts.to_vec(),
                attributes: BTreeMap::new(),
                serial: random_serial(),
                not_before: now - CLOCK_SKEW_SECS,
                not_after: now + TLS_CERT_VALIDITY_SECS,
                usage: Usage::Tls,
            })
            .map_err(CaError::internal)?;
        self.write(
            &self.tls_cert(),
            &format!("{pem}{}", signer.chain_pem()),
            false,
        )?;
        let key = key.to_pkcs8_pem().map_err(CaError::internal)?;
        self.write(&self.tls_key(), &key, true)
    }
}

/// A running certificate authority.
pub struct Authority {
    pub(crate) config: AuthorityConfig,
    signer: CaSigner,
    pub(crate) store: CaStore,
    /// Serialises read-modify-write requests (enrollment counts, registrations). Never held
    /// while a secret is hashed or checked: that takes tens of milliseconds.
    lock: Mutex<()>,
    /// The hash an unknown id's secret is checked against, so that an unknown id takes as long
    /// as a known one with a wrong secret (no way to probe which ids exist).
    dummy_hash: String,
    /// Certificates issued by enroll and reenroll, and certificates revoked, since the start.
    enrollments: AtomicU64,
    revocations: AtomicU64,
}

pub(crate) fn hash_secret(secret: &str) -> Result<String, CaError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(CaError::internal)
}

fn secret_matches(secret: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(secret.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

fn random_secret() -> String {
    use rand::Rng;
    let mut rng = rand::rngs::OsRng;
    (0..GENERATED_SECRET_LEN)
        .map(|_| {
            let c = rng.gen_range(0..62u8);
            (match c {
                0..=9 => b'0' + c,
                10..=35 => b'a' + c - 10,
                _ => b'A' + c - 36,
            }) as char
        })
        .collect()
}

/// `containsAffiliation`: the caller's affiliation is the root or above `target`.
pub(crate) fn affiliation_covers(caller: &str, target: &str) -> bool {
    caller.is_empty() || target == caller || target.starts_with(&format!("{caller}."))
}

/// A boolean attribute read as Fabric CA does (`strconv.ParseBool`); absent or unparsable is
/// false.
pub(crate) fn bool_attr(rec: &IdentityRecord, name: &str) -> bool {
    rec.attr(name).and_then(attrs::parse_bool).unwrap_or(false)
}

/// `isRegistrar`: the caller's `hf.Registrar.Roles`, if it has a value.
pub(crate) fn registrar_roles(rec: &IdentityRecord) -> Option<&str> {
    rec.attr(attrs::ROLES).filter(|v| !v.is_empty())
}

/// `canActOnType`: `*` or the type (case-insensitive) among the registrar's roles; an empty type
/// is `client`.
fn roles_allow(roles: &str, kind: &str) -> bool {
    let kind = if kind.is_empty() { "client" } else { kind };
    let roles = attrs::list(roles);
    roles.iter().any(|r| r == "*") || roles.iter().any(|r| r.eq_ignore_ascii_case(kind))
}

fn validate_id(id: &str) -> Result<(), CaError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(CaError::bad_request(
            code::BAD_BODY,
            format!(
                "invalid identity name {id:?}: use 1-{MAX_ID_LEN} letters, digits, '-', '_', '.', '@'"
            ),
        ))
    }
}

impl Authority {
    /// Creates a self-signed root CA in `home` if none is there yet.
    pub fn init_root(home: &CaHome, config: &AuthorityConfig) -> Result<(), CaError> {
        if home.is_initialized() {
            return Ok(());
        }
        let signer =
            CaSigner::new_root(&config.name, &config.name, 15).map_err(CaError::internal)?;
        home.save_signer(&signer, "")
    }

    /// Opens an initialised CA home; registers the bootstrap identity on first start.
    pub fn open(
        home: &CaHome,
        config: AuthorityConfig,
        bootstrap: Option<(&str, &str)>,
    ) -> Result<Self, CaError> {
        let signer = home.load_signer()?;
        let store = CaStore::open(&home.db())?;
        let authority = Self {
            config,
            signer,
            store,
            lock: Mutex::new(()),
            dummy_hash: hash_secret(&random_secret())?,
            enrollments: AtomicU64::new(0),
            revocations: AtomicU64::new(0),
        };
        authority.load_affiliations()?;
        if let Some((id, secret)) = bootstrap
            && authority.store.identity(id)?.is_none()
        {
            authority.register_bootstrap(id, secret)?;
        }
        Ok(authority)
    }

    /// Puts the configured affiliations (and every level above each) into the store on the
    /// first start; later they are managed through the affiliations API, so a removed one does
    /// not come back at a restart.
    fn load_affiliations(&self) -> Result<(), CaError> {
        const LOADED: &str = "affiliations_loaded";
        if self.store.counter(LOADED)? != 0 {
            return Ok(());
        }
        let mut changes = Changes::default();
        for name in &self.config.affiliations {
            let mut path = String::new();
            for level in name.split('.').filter(|l| !l.is_empty()) {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(level);
                changes.put_affiliation(&path);
            }
        }
        changes.put_counter(LOADED, 1);
        self.store.apply(changes)
    }

    fn register_bootstrap(&self, id: &str, secret: &str) -> Result<(), CaError> {
        validate_id(id)?;
        if secret.is_empty() {
            return Err(CaError::bad_request(
                code::BAD_BODY,
                "bootstrap secret is empty",
            ));
        }
        let attr = |name: &str, value: &str| Attribute {
            name: name.into(),
            value: value.into(),
            ecert: false,
        };
        let rec = IdentityRecord {
            id: id.into(),
            secret_hash: hash_secret(secret)?,
            kind: "client".into(),
            affiliation: String::new(),
            attrs: vec![
                attr("hf.Registrar.Roles", "*"),
                attr("hf.Registrar.DelegateRoles", "*"),
                attr("hf.Registrar.Attributes", "*"),
                attr("hf.Revoker", "true"),
                attr("hf.GenCRL", "true"),
                attr("hf.IntermediateCA", "true"),
                attr("hf.AffiliationMgr", "true"),
            ],
            max_enrollments: -1,
            enrollments: 0,
            revoked: false,
        };
        let mut changes = Changes::default();
        changes.put_identity(&rec)?;
        self.store.apply(changes)
    }

    /// Certificates issued (enroll, reenroll) and revoked since this CA started.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.enrollments.load(Ordering::Relaxed),
            self.revocations.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn count_revocations(&self, n: usize) {
        self.revocations.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The CA's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The chain from this CA up to its root, PEM.
    pub fn chain_pem(&self) -> String {
        self.signer.chain_pem()
    }

    /// The CA's own certificate.
    pub fn certificate(&self) -> &Certificate {
        self.signer.certificate()
    }

    /// `cainfo` result.
    pub fn cainfo(&self) -> serde_json::Value {
        serde_json::json!({
            "CAName": self.config.name,
            "CAChain": B64.encode(self.chain_pem()),
            "IssuerPublicKey": "",
            "IssuerRevocationPublicKey": "",
            "Version": VERSION,
        })
    }

    pub(crate) fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn aki(&self) -> String {
        self.signer
            .certificate()
            .subject_key_id
            .as_deref()
            .map(hex::encode)
            .unwrap_or_default()
    }

    /// Issues a certificate for an identity from a CSR; returns (record, PEM).
    fn issue_for(&self, rec: &IdentityRecord, req: &EnrollRequest) -> Result<CertRecord, CaError> {
        let csr = CertificateRequest::from_pem(&req.certificate_request)
            .map_err(|e| CaError::bad_request(code::BAD_CSR, format!("invalid CSR: {e}")))?;
        let usage = match req.profile.as_deref().unwrap_or("") {
            "" => Usage::Signing,
            "tls" => Usage::Tls,
            "ca" => {
                if !bool_attr(rec, attrs::INTERMEDIATE_CA) {
                    return Err(CaError::forbidden(
                        code::AUTHORIZATION_FAILURE,
                        format!(
                            "identity '{}' may not enroll an intermediate CA (hf.IntermediateCA)",
                            rec.id
                        ),
                    ));
                }
                Usage::IntermediateCa
            }
            other => {
                return Err(CaError::bad_request(
                    code::BAD_BODY,
                    format!("unknown profile {other:?} (use tls or ca)"),
                ));
            }
        };
        // Fabric CA puts the attribute extension in every certificate it signs for an identity,
        // whatever the profile; an intermediate CA's certificate carries none here.
        let attributes = if usage == Usage::IntermediateCa {
            BTreeMap::new()
        } else {
            attrs::for_certificate(rec, req.attr_reqs.as_deref()).map_err(|e| {
                CaError::bad_request(
                    code::UNKNOWN,
                    format!("Failed to find requested attributes: {e}"),
                )
            })?
        };
        let mut ous = vec![rec.kind.clone()];
        if !rec.affiliation.is_empty() {
            ous.push(rec.affiliation.clone());
        }
        let hosts = match &req.hosts {
            Some(h) if !h.is_empty() => h.clone(),
            _ => csr.hosts.clone(),
        };
        let now = unix_now();
        let serial = random_serial();
        let pem = self
            .signer
            .issue(&IssueRequest {
                public_key: csr.public_key,
                common_name: rec.id.clone(),
                organization: None,
                organizational_units: if usage == Usage::IntermediateCa {
                    vec![]
                } else {
                    ous
                },
                hosts,
                attributes,
                serial: serial.clone(),
                not_before: now - CLOCK_SKEW_SECS,
                not_after: now + self.config.cert_validity_secs,
                usage,
            })
            .map_err(|e| CaError::bad_request(code::BAD_CSR, format!("cannot issue: {e}")))?;
        let cert = Certificate::from_pem(pem.as_bytes()).map_err(CaError::internal)?;
        Ok(CertRecord {
            serial: serial_hex(&serial),
            aki: self.aki(),
            id: rec.id.clone(),
            pem,
            not_after: cert.not_after,
            revoked_at: None,
            reason: None,
        })
    }

    fn enroll_result(&self, cert: &CertRecord) -> serde_json::Value {
        self.enrollments.fetch_add(1, Ordering::Relaxed);
        serde_json::json!({
            "Cert": B64.encode(&cert.pem),
            "ServerInfo": self.cainfo(),
        })
    }

    /// `enroll`: basic auth with the enrollment secret, a CSR in, a certificate out.
    pub fn enroll(
        &self,
        id: &str,
        secret: &str,
        req: &EnrollRequest,
    ) -> Result<serde_json::Value, CaError> {
        let failure = || {
            CaError::unauthorized(
                code::AUTHENTICATION_FAILURE,
                "authentication failure: unknown identity or wrong enrollment secret",
            )
        };
        // The secret is checked before taking the lock (a check takes tens of milliseconds: a
        // flood of wrong secrets must not queue everyone else), and an unknown id is checked
        // against a dummy hash so that it takes as long as a known one.
        let checked = self.store.identity(id)?;
        let hash = checked
            .as_ref()
            .map_or(self.dummy_hash.as_str(), |r| r.secret_hash.as_str());
        if !secret_matches(secret, hash) || checked.is_none() {
            return Err(failure());
        }
        let _g = self.guard();
        let mut rec = self.store.identity(id)?.ok_or_else(failure)?;
        if Some(&rec.secret_hash) != checked.as_ref().map(|r| &r.secret_hash) {
            // The secret changed (or the identity was replaced) while it was being checked.
            return Err(failure());
        }
        if rec.revoked {
            return Err(CaError::unauthorized(
                code::REVOKED_ID,
                format!("identity '{id}' is revoked"),
            ));
        }
        let max = if rec.max_enrollments == 0 {
            self.config.max_enrollments
        } else {
            rec.max_enrollments
        };
        if max >= 0 && rec.enrollments >= max {
            return Err(CaError::unauthorized(
                code::AUTHENTICATION_FAILURE,
                format!("identity '{id}' has reached its maximum of {max} enrollment(s)"),
            ));
        }
        let cert = self.issue_for(&rec, req)?;
        rec.enrollments += 1;
        let mut changes = Changes::default();
        changes.put_identity(&rec)?;
        changes.put_cert(&cert)?;
        self.store.apply(changes)?;
        Ok(self.enroll_result(&cert))
    }

    /// Checks an `Authorization` token (Fabric CA's `b64(cert).b64(sig)` over
    /// `METHOD.b64(path).b64(body).b64(cert)`), and that the certificate is one this CA issued and
    /// has not revoked. A token already used for a change is refused when this request tries to
    /// change something too (`CaStore::apply`): a request that fails anyway answers as in Fabric CA.
    pub fn authenticate(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Caller, CaError> {
        let bad =
            |msg: &str| CaError::unauthorized(code::INVALID_TOKEN, format!("invalid token: {msg}"));
        let (cert_b64, sig_b64) = token
            .split_once('.')
            .ok_or_else(|| bad("expected cert.signature"))?;
        let cert_pem = B64
            .decode(cert_b64)
            .map_err(|_| bad("certificate is not base64"))?;
        let sig = B64
            .decode(sig_b64)
            .map_err(|_| bad("signature is not base64"))?;
        let cert = Certificate::from_pem(&cert_pem).map_err(|e| bad(&e.to_string()))?;
        if !cert.is_signed_by(self.signer.certificate()) {
            return Err(CaError::unauthorized(
                code::UNTRUSTED_CERT,
                "the token's certificate was not issued by this CA",
            ));
        }
        if !cert.is_valid_at(unix_now()) {
            return Err(CaError::unauthorized(
                code::CERT_EXPIRED,
                "the token's certificate has expired",
            ));
        }
        let b64_body = B64.encode(body);
        let b64_path = B64.encode(path.as_bytes());
        let signed = format!("{method}.{b64_path}.{b64_body}.{cert_b64}");
        let legacy = format!("{b64_body}.{cert_b64}");
        if crypto::verify(&cert.public_key, signed.as_bytes(), &sig).is_err()
            && crypto::verify(&cert.public_key, legacy.as_bytes(), &sig).is_err()
        {
            return Err(bad("signature does not verify over this request"));
        }
        let record = self.store.cert(&serial_hex(&cert.serial))?.ok_or_else(|| {
            CaError::unauthorized(
                code::UNTRUSTED_CERT,
                "the token's certificate is unknown to this CA",
            )
        })?;
        if record.revoked_at.is_some() {
            return Err(CaError::unauthorized(
                code::CERT_REVOKED,
                "the token's certificate has been revoked",
            ));
        }
        let identity = self.store.identity(&record.id)?.ok_or_else(|| {
            CaError::unauthorized(
                code::AUTHENTICATION_FAILURE,
                "the token's identity no longer exists",
            )
        })?;
        if identity.revoked {
            return Err(CaError::unauthorized(
                code::REVOKED_ID,
                format!("identity '{}' is revoked", identity.id),
            ));
        }
        let token_hash = crypto::sha256(token.as_bytes());
        Ok(Caller {
            identity,
            cert,
            token_hash,
        })
    }

    /// `reenroll`: a new certificate for the caller's identity (does not count as an enrollment).
    pub fn reenroll(
        &self,
        caller: &Caller,
        req: &EnrollRequest,
    ) -> Result<serde_json::Value, CaError> {
        let _g = self.guard();
        let cert = self.issue_for(&caller.identity, req)?;
        let mut changes = Changes::default();
        changes.put_cert(&cert)?;
        changes.use_token(&caller.token_hash, unix_now());
        self.store.apply(changes)?;
        Ok(self.enroll_result(&cert))
    }

    /// Fabric CA's registrar check for `register`: a registrar (hf.Registrar.Roles) for this
    /// type whose affiliation covers the target's.
    fn check_registrar_for(
        &self,
        caller: &IdentityRecord,
        kind: &str,
        affiliation: &str,
    ) -> Result<(), CaError> {
        let roles = registrar_roles(caller).ok_or_else(|| {
            CaError::forbidden(
                code::MISSING_ROLE,
                format!("'{}' is not a registrar (no hf.Registrar.Roles)", caller.id),
            )
        })?;
        if !roles_allow(roles, kind) {
            return Err(CaError::forbidden(
                code::REGISTRAR_INVALID_TYPE,
                format!(
                    "registrar '{}' may not act on identities of type '{kind}'",
                    caller.id
                ),
            ));
        }
        if !affiliation_covers(&caller.affiliation, affiliation) {
            return Err(CaError::forbidden(
                code::REGISTRAR_NOT_AFFILIATED,
                format!(
                    "registrar '{}' (affiliation '{}') may not act on affiliation '{affiliation}'",
                    caller.id, caller.affiliation
                ),
            ));
        }
        Ok(())
    }

    /// `ContainsAffiliation`: the caller's affiliation covers `affiliation`.
    pub(crate) fn contains_affiliation(
        caller: &IdentityRecord,
        affiliation: &str,
    ) -> Result<(), CaError> {
        if affiliation_covers(&caller.affiliation, affiliation) {
            Ok(())
        } else {
            Err(CaError::forbidden(
                code::CALLER_NOT_AFFILIATED,
                format!("Caller does not have authority to act on affiliation '{affiliation}'"),
            ))
        }
    }

    /// `CanActOnType`: the caller is a registrar for identities of type `kind`.
    pub(crate) fn can_act_on_type(caller: &IdentityRecord, kind: &str) -> Result<(), CaError> {
        let roles = registrar_roles(caller).ok_or_else(|| {
            CaError::forbidden(
                code::REG_ATTR_AUTH,
                format!("'{}' is not allowed to manage users", caller.id),
            )
        })?;
        if roles_allow(roles, kind) {
            Ok(())
        } else {
            Err(CaError::forbidden(
                code::CALLER_NOT_AFFILIATED,
                format!("Registrar does not have authority to act on type '{kind}'"),
            ))
        }
    }

    /// `CanManageUser`: the caller's affiliation covers the identity's, and it is a registrar for
    /// the identity's type.
    pub(crate) fn can_manage(
        caller: &IdentityRecord,
        target: &IdentityRecord,
    ) -> Result<(), CaError> {
        Self::contains_affiliation(caller, &target.affiliation)?;
        Self::can_act_on_type(caller, &target.kind)
    }

    /// Fabric CA's attribute rules for giving `requested` to `user` (None: a new identity).
    pub(crate) fn check_attrs(
        registrar: &IdentityRecord,
        requested: &[Attribute],
        user: Option<&IdentityRecord>,
    ) -> Result<(), CaError> {
        attrs::can_register(requested, user, registrar).map_err(|e| {
            CaError::forbidden(
                code::REG_ATTR_AUTH,
                format!("Failed to register attribute: {e}"),
            )
        })
    }

    /// `register`: a registrar creates an identity; returns its enrollment secret.
    pub fn register(&self, caller: &Caller, req: &RegisterRequest) -> Result<String, CaError> {
        let rec = self.new_identity(&caller.identity, req)?;
        let secret = rec.1;
        let mut changes = Changes::default();
        changes.use_token(&caller.token_hash, unix_now());
        self.insert_identity(rec.0, changes)?;
        Ok(secret)
    }

    /// Checks a registration as Fabric CA's `registerUser` does and builds the record (the
    /// secret hashed here, outside the lock); returns it with the secret in clear.
    pub(crate) fn new_identity(
        &self,
        registrar: &IdentityRecord,
        req: &RegisterRequest,
    ) -> Result<(IdentityRecord, String), CaError> {
        validate_id(&req.id)?;
        // Fabric CA: an unset type is the registrar's, an unset affiliation the registrar's,
        // "." the root.
        let kind = req
            .kind
            .clone()
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| registrar.kind.clone());
        let affiliation = match req.affiliation.as_str() {
            "" => registrar.affiliation.clone(),
            "." => String::new(),
            a => a.to_owned(),
        };
        self.check_registrar_for(registrar, &kind, &affiliation)?;
        if !affiliation.is_empty() && !self.store.has_affiliation(&affiliation)? {
            return Err(CaError::new(
                404,
                code::GETTING_AFFILIATION,
                format!(
                    "Failed getting affiliation '{affiliation}': it is not configured on this CA"
                ),
            ));
        }
        Self::check_attrs(registrar, &req.attrs, None)?;
        if req.max_enrollments < -1 {
            return Err(CaError::bad_request(
                code::BAD_BODY,
                "max_enrollments must be -1, 0 or positive",
            ));
        }
        let secret = req
            .secret
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(random_secret);
        // As Fabric CA: the identity's id, type and affiliation are stored as attributes that go
        // into its enrollment certificates by default.
        let mut attrs = req.attrs.clone();
        for (name, value) in [
            (attrs::ENROLLMENT_ID, req.id.as_str()),
            (attrs::TYPE, kind.as_str()),
            (attrs::AFFILIATION, affiliation.as_str()),
        ] {
            attrs.push(Attribute {
                name: name.into(),
                value: value.into(),
                ecert: true,
            });
        }
        let rec = IdentityRecord {
            id: req.id.clone(),
            secret_hash: hash_secret(&secret)?,
            kind,
            affiliation,
            attrs,
            max_enrollments: req.max_enrollments,
            enrollments: 0,
            revoked: false,
        };
        Ok((rec, secret))
    }

    /// Stores a new identity with `changes`, refusing an id already registered.
    pub(crate) fn insert_identity(
        &self,
        rec: IdentityRecord,
        mut changes: Changes,
    ) -> Result<(), CaError> {
        let _g = self.guard();
        if self.store.identity(&rec.id)?.is_some() {
            return Err(CaError::new(
                409,
                code::DUP_IDENTITY_REG,
                format!("Identity '{}' is already registered", rec.id),
            ));
        }
        changes.put_identity(&rec)?;
        self.store.apply(changes)
    }

    /// Fabric CA's `checkAuth` and `CanManageUser` for revoking `target`'s certificates: revoking
    /// one's own needs nothing; anyone else's needs hf.Revoker and the right to manage them
    /// (affiliation and type: a registrar for clients cannot revoke a peer or an admin).
    fn check_revoke(
        &self,
        caller: &IdentityRecord,
        target: Option<&IdentityRecord>,
        owner: &str,
    ) -> Result<(), CaError> {
        if caller.id == owner {
            return Ok(());
        }
        if !bool_attr(caller, attrs::REVOKER) {
            return Err(CaError::unauthorized(
                code::NOT_REVOKER,
                format!("'{}' may not revoke (no hf.Revoker)", caller.id),
            ));
        }
        match target {
            Some(t) => Self::can_manage(caller, t),
            None => Ok(()),
        }
    }

    /// `revoke`: by enrollment id (every certificate, and future enrollments refused) or by
    /// serial + AKI (one certificate).
    pub fn revoke(&self, caller: &Caller, req: &RevokeRequest) -> Result<RevokeResult, CaError> {
        let _g = self.guard();
        let now = unix_now();
        let mut changes = Changes::default();
        let mut revoked = Vec::new();
        let reason = if req.reason.is_empty() {
            "unspecified".to_owned()
        } else {
            req.reason.clone()
        };
        let mut revoke_cert = |mut c: CertRecord, changes: &mut Changes| -> Result<(), CaError> {
            c.revoked_at = Some(now);
            c.reason = Some(reason.clone());
            revoked.push(RevokedCert {
                serial: c.serial.clone(),
                aki: c.aki.clone(),
            });
            changes.put_cert(&c)
        };
        if !req.serial.is_empty() {
            let serial_bytes = hex::decode(req.serial.trim_start_matches("0x"))
                .or_else(|_| hex::decode(format!("0{}", req.serial)))
                .map_err(|_| CaError::bad_request(code::BAD_BODY, "serial must be hex"))?;
            let cert = self
                .store
                .cert(&serial_hex(&serial_bytes))?
                .ok_or_else(|| {
                    CaError::new(
                        404,
                        code::REVOKE_CERT_NOT_FOUND,
                        format!("certificate {} not found", req.serial),
                    )
                })?;
            if !req.aki.is_empty() && !req.aki.eq_ignore_ascii_case(&cert.aki) {
                return Err(CaError::new(
                    404,
                    code::REVOKE_CERT_NOT_FOUND,
                    "no certificate with this serial and AKI",
                ));
            }
            let owner = self.store.identity(&cert.id)?;
            self.check_revoke(&caller.identity, owner.as_ref(), &cert.id)?;
            if !req.id.is_empty() && req.id != cert.id {
                return Err(CaError::bad_request(
                    code::CERT_WRONG_OWNER,
                    format!("certificate {} does not belong to '{}'", req.serial, req.id),
                ));
            }
            if cert.revoked_at.is_some() {
                return Err(CaError::bad_request(
                    code::CERT_ALREADY_REVOKED,
                    "certificate is already revoked",
                ));
            }
            revoke_cert(cert, &mut changes)?;
        } else if !req.id.is_empty() {
            let rec = self.store.identity(&req.id)?;
            self.check_revoke(&caller.identity, rec.as_ref(), &req.id)?;
            let mut rec = rec.ok_or_else(|| {
                CaError::new(
                    404,
                    code::REVOKE_ID_NOT_FOUND,
                    format!("identity '{}' not found", req.id),
                )
            })?;
            if rec.revoked {
                return Err(CaError::bad_request(
                    code::CERT_ALREADY_REVOKED,
                    format!("identity '{}' is already revoked", req.id),
                ));
            }
            for c in self.store.certs()? {
                if c.id == req.id && c.revoked_at.is_none() {
                    revoke_cert(c, &mut changes)?;
                }
            }
            rec.revoked = true;
            changes.put_identity(&rec)?;
        } else {
            return Err(CaError::bad_request(
                code::MISSING_REVOKE_ARGS,
                "revoke needs an enrollment id, or a serial and AKI",
            ));
        }
        changes.use_token(&caller.token_hash, now);
        self.store.apply(changes)?;
        self.count_revocations(revoked.len());
        let crl = if req.gencrl {
            B64.encode(self.make_crl()?)
        } else {
            String::new()
        };
        Ok(RevokeResult {
            revoked_certs: revoked,
            crl,
        })
    }

    fn make_crl(&self) -> Result<String, CaError> {
        let now = unix_now();
        let revoked: Vec<(Vec<u8>, i64)> = self
            .store
            .certs()?
            .into_iter()
            .filter_map(|c| {
                let at = c.revoked_at?;
                if c.not_after < now {
                    return None;
                }
                let serial = hex::decode(if c.serial.len() % 2 == 1 {
                    format!("0{}", c.serial)
                } else {
                    c.serial.clone()
                })
                .ok()?;
                Some((serial, at))
            })
            .collect();
        let number = self.store.counter("crl_number")? + 1;
        let pem = self
            .signer
            .crl(&revoked, number, CRL_VALIDITY_SECS)
            .map_err(|e| CaError::new(500, code::GEN_CRL, format!("cannot generate CRL: {e}")))?;
        let mut changes = Changes::default();
        changes.put_counter("crl_number", number);
        self.store.apply(changes)?;
        // The CRL must verify against this CA, or peers would reject the MSP.
        RevocationList::parse(pem.as_bytes())
            .ok()
            .filter(|crl| crl.is_signed_by(self.signer.certificate()))
            .ok_or_else(|| CaError::new(500, code::GEN_CRL, "generated CRL does not verify"))?;
        Ok(pem)
    }

    /// `gencrl`: a CRL of every revoked, unexpired certificate (PEM).
    pub fn gencrl(&self, caller: &Caller) -> Result<String, CaError> {
        let _g = self.guard();
        if !bool_attr(&caller.identity, attrs::GEN_CRL) {
            return Err(CaError::unauthorized(
                code::NO_GENCRL_AUTH,
                format!(
                    "'{}' may not generate CRLs (no hf.GenCRL)",
                    caller.identity.id
                ),
            ));
        }
        self.store.check_token_unused(&caller.token_hash)?;
        let pem = self.make_crl()?;
        let mut changes = Changes::default();
        changes.use_token(&caller.token_hash, unix_now());
        self.store.apply(changes)?;
        Ok(pem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CA's keys (signing and TLS) are written owner-only from their creation, and its files
    /// are whole ones
    /// (written through a synced temporary file, none left behind).
    #[test]
    fn the_ca_key_is_owner_only_and_its_files_whole() {
        let dir = tempfile::tempdir().unwrap();
        let home = CaHome::new(dir.path());
        Authority::init_root(&home, &AuthorityConfig::new("ca")).unwrap();
        home.ensure_tls(&home.load_signer().unwrap(), &["localhost".into()])
            .unwrap();
        #[cfg(unix)]
        for key in [home.key(), home.tls_key()] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}: {mode:o}", key.display());
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        home.load_signer().unwrap();
    }
}
