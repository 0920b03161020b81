//! Making certificates and CRLs as Fabric CA makes them: ECDSA P-256 roots and intermediates,
//! enrollment certificates with Node OUs and the attribute extension, TLS certificates.
//!
//! The CA server signs through this module; tests use it to stand up organisations in-process.

use std::collections::BTreeMap;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    RevocationReason, RevokedCertParams, SanType, SerialNumber, SignatureAlgorithm,
};
use time::OffsetDateTime;

use crate::cert::{CertError, Certificate};
use crate::crypto::{PrivateKey, PublicKey};

/// Errors making certificates.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("key error: {0}")]
    Key(String),
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// What the issued certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// An enrollment (signing) certificate: digitalSignature only.
    Signing,
    /// A TLS certificate: server and client authentication.
    Tls,
    /// An intermediate CA certificate (profile `ca`).
    IntermediateCa,
}

/// One certificate to issue.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    pub public_key: PublicKey,
    pub common_name: String,
    pub organization: Option<String>,
    /// In order: the identity type (client, peer, admin, orderer) then affiliation parts.
    pub organizational_units: Vec<String>,
    /// DNS names or IP addresses.
    pub hosts: Vec<String>,
    /// Fabric CA attributes; empty means no attribute extension.
    pub attributes: BTreeMap<String, String>,
    pub serial: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
    pub usage: Usage,
}

struct SubjectKey<'a>(&'a PublicKey);

impl rcgen::PublicKeyData for SubjectKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0.as_sec1()
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

fn datetime(unix: i64) -> Result<OffsetDateTime, IssueError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|e| IssueError::Invalid(e.to_string()))
}

/// A random positive 20-byte serial number.
pub fn random_serial() -> Vec<u8> {
    use rand::RngCore;
    let mut s = vec![0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s[0] &= 0x7f;
    s[0] |= 0x01;
    s
}

fn rcgen_key(key: &PrivateKey) -> Result<KeyPair, IssueError> {
    let der = key
        .to_pkcs8_der()
        .map_err(|e| IssueError::Key(e.to_string()))?;
    KeyPair::from_pkcs8_der_and_sign_algo(&der.into(), &PKCS_ECDSA_P256_SHA256)
        .map_err(IssueError::from)
}

fn ca_params(
    common_name: &str,
    organization: &str,
    not_before: i64,
    not_after: i64,
) -> Result<CertificateParams, IssueError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, organization);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params.not_before = datetime(not_before)?;
    params.not_after = datetime(not_after)?;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// A certificate authority's signing material.
pub struct CaSigner {
    cert: Certificate,
    cert_pem: String,
    key: PrivateKey,
    /// The issuer chain above this CA (empty for a root), PEM.
    parent_chain_pem: String,
}

impl std::fmt::Debug for CaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaSigner")
            .field("subject", &self.cert.subject)
            .finish()
    }
}

const YEAR: i64 = 365 * 24 * 3600;

impl CaSigner {
    /// A new self-signed root CA valid for `years`.
    pub fn new_root(common_name: &str, organization: &str, years: i64) -> Result<Self, IssueError> {
        let key = PrivateKey::generate();
        let now = crate::msp::unix_now();
        let params = ca_params(common_name, organization, now - 300, now + years * YEAR)?;
        let cert = params.self_signed(&rcgen_key(&key)?)?;
        Self::from_parts(&cert.pem(), key, String::new())
    }

    /// A new intermediate CA signed by `parent`.
    pub fn new_intermediate(
        parent: &CaSigner,
        common_name: &str,
        organization: &str,
        years: i64,
    ) -> Result<Self, IssueError> {
        let key = PrivateKey::generate();
        let now = crate::msp::unix_now();
        let not_after = (now + years * YEAR).min(parent.cert.not_after);
        let params = ca_params(common_name, organization, now - 300, not_after)?;
        let pk = key.public_key();
        let cert = params.signed_by(&SubjectKey(&pk), &parent.issuer()?)?;
        let chain = format!("{}{}", parent.cert_pem, parent.parent_chain_pem);
        Self::from_parts(&cert.pem(), key, chain)
    }

    /// Loads a CA from its certificate and key (and the chain above it, if any).
    pub fn from_parts(
        cert_pem: &str,
        key: PrivateKey,
        parent_chain_pem: String,
    ) -> Result<Self, IssueError> {
        let cert = Certificate::from_pem(cert_pem.as_bytes())?;
        if !cert.is_ca {
            return Err(IssueError::Invalid("certificate is not a CA".into()));
        }
        if cert.public_key != key.public_key() {
            return Err(IssueError::Key(
                "key does not match the CA certificate".into(),
            ));
        }
        Ok(Self {
            cert,
            cert_pem: cert_pem.to_owned(),
            key,
            parent_chain_pem,
        })
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, IssueError> {
        Issuer::from_ca_cert_pem(&self.cert_pem, rcgen_key(&self.key)?).map_err(IssueError::from)
    }

    /// The CA certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The chain from this CA up to (and including) the root, PEM.
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.parent_chain_pem)
    }

    /// The root certificate PEM at the top of the chain.
    pub fn root_pem(&self) -> String {
        if self.parent_chain_pem.is_empty() {
            return self.cert_pem.clone();
        }
        pem::parse_many(self.parent_chain_pem.as_bytes())
            .ok()
            .and_then(|v| v.last().map(pem::encode))
            .unwrap_or_default()
    }

    /// The PEM of the CAs between this one and the root (for `intermediatecerts/`).
    pub fn intermediates_pem(&self) -> String {
        if self.parent_chain_pem.is_empty() {
            return String::new();
        }
        let mut all = vec![self.cert_pem.clone()];
        if let Ok(blocks) = pem::parse_many(self.parent_chain_pem.as_bytes()) {
            let n = blocks.len();
            all.extend(blocks.iter().take(n.saturating_sub(1)).map(pem::encode));
        }
        all.concat()
    }

    /// The CA's private key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// Issues an end-entity certificate; returns it as PEM.
    pub fn issue(&self, req: &IssueRequest) -> Result<String, IssueError> {
        if req.common_name.is_empty() {
            return Err(IssueError::Invalid("common name is empty".into()));
        }
        if req.not_after <= req.not_before {
            return Err(IssueError::Invalid("validity window is empty".into()));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, req.common_name.as_str());
        if let Some(o) = &req.organization {
            params
                .distinguished_name
                .push(DnType::OrganizationName, o.as_str());
        }
        // rcgen keeps one value per attribute type, so the identity type goes in as the standard
        // OU and the affiliation (dotted, e.g. `hospital1.cardiology`) as a second OU attribute
        // under the same OID; Fabric CA would split the affiliation into one OU per level.
        let mut ous = req.organizational_units.iter();
        if let Some(kind) = ous.next() {
            params
                .distinguished_name
                .push(DnType::OrganizationalUnitName, kind.as_str());
        }
        let affiliation: Vec<&str> = ous.map(String::as_str).collect();
        if !affiliation.is_empty() {
            params.distinguished_name.push(
                DnType::CustomDnType(vec![2, 5, 4, 11]),
                rcgen::DnValue::Utf8String(affiliation.join(".")),
            );
        }
        params.is_ca = if req.usage == Usage::IntermediateCa {
            IsCa::Ca(BasicConstraints::Constrained(0))
        } else {
            IsCa::ExplicitNoCa
        };
        params.not_before = datetime(req.not_before)?;
        params.not_after = datetime(req.not_after.min(self.cert.not_after))?;
        params.serial_number = Some(SerialNumber::from_slice(&req.serial));
        params.use_authority_key_identifier_extension = true;
        match req.usage {
            Usage::Signing => params.key_usages = vec![KeyUsagePurpose::DigitalSignature],
            Usage::IntermediateCa => {
                params.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::CrlSign,
                ]
            }
            Usage::Tls => {
                params.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::KeyEncipherment,
                ];
                params.extended_key_usages = vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ];
            }
        }
        for host in &req.hosts {
            let san = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    host.clone()
                        .try_into()
                        .map_err(|_| IssueError::Invalid(format!("invalid host {host:?}")))?,
                ),
            };
            params.subject_alt_names.push(san);
        }
        if !req.attributes.is_empty() {
            let json = serde_json::json!({ "attrs": req.attributes }).to_string();
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    &[1, 2, 3, 4, 5, 6, 7, 8, 1],
                    json.into_bytes(),
                ));
        }
        let cert = params.signed_by(&SubjectKey(&req.public_key), &self.issuer()?)?;
        Ok(cert.pem())
    }

    /// A CRL listing `revoked` (serial, revocation time); PEM.
    pub fn crl(
        &self,
        revoked: &[(Vec<u8>, i64)],
        crl_number: u64,
        valid_for_secs: i64,
    ) -> Result<String, IssueError> {
        let now = crate::msp::unix_now();
        let params = CertificateRevocationListParams {
            this_update: datetime(now - 60)?,
            next_update: datetime(now + valid_for_secs.max(60))?,
            crl_number: SerialNumber::from_slice(&crl_number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|(serial, at)| {
                    Ok(RevokedCertParams {
                        serial_number: SerialNumber::from_slice(serial),
                        revocation_time: datetime(*at)?,
                        reason_code: Some(RevocationReason::Unspecified),
                        invalidity_date: None,
                    })
                })
                .collect::<Result<_, IssueError>>()?,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer()?)?.pem()?)
    }
}

/// A PKCS#10 CSR (PEM) for `key`, with `common_name` and `hosts` as SANs, as clients send to
/// the CA's enroll endpoint.
pub fn certificate_request_pem(
    key: &PrivateKey,
    common_name: &str,
    hosts: &[String],
) -> Result<String, IssueError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    for host in hosts {
        params
            .subject_alt_names
            .push(match host.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    host.clone()
                        .try_into()
                        .map_err(|_| IssueError::Invalid(format!("invalid host {host:?}")))?,
                ),
            });
    }
    Ok(params.serialize_request(&rcgen_key(key)?)?.pem()?)
}
