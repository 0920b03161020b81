//! X.509 certificates and CRLs reduced to the facts an MSP decides on, parsed once.

use std::collections::BTreeMap;

use x509_parser::prelude::*;

use crate::crypto::{self, CryptoError, PublicKey, VerifyBackend};

/// OID of Fabric CA's attribute extension, whose value is JSON `{"attrs":{...}}`.
pub const ATTRIBUTE_EXTENSION_OID: &str = "1.2.3.4.5.6.7.8.1";

const ECDSA_WITH_SHA256: &str = "1.2.840.10045.4.3.2";

/// Errors reading certificates, keys and CRLs.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CertError {
    #[error("not a PEM certificate: {0}")]
    Pem(String),
    #[error("malformed X.509 certificate: {0}")]
    Der(String),
    #[error("unsupported public key: {0}")]
    PublicKey(String),
    #[error("unsupported signature algorithm {0}: only ecdsa-with-SHA256 is accepted")]
    SignatureAlgorithm(String),
    #[error("malformed attribute extension: {0}")]
    Attributes(String),
    #[error("malformed CRL: {0}")]
    Crl(String),
}

/// The parts of an X.509 certificate an MSP needs, owned so they can be cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub der: Vec<u8>,
    pub tbs: Vec<u8>,
    pub signature: Vec<u8>,
    pub subject_raw: Vec<u8>,
    pub issuer_raw: Vec<u8>,
    pub subject: String,
    pub serial: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
    pub is_ca: bool,
    pub public_key: PublicKey,
    pub subject_key_id: Option<Vec<u8>>,
    pub authority_key_id: Option<Vec<u8>>,
    pub organizational_units: Vec<String>,
    /// Fabric CA attributes (`hf.EnrollmentID`, `role`, `patientId`, ...).
    pub attributes: BTreeMap<String, String>,
}

impl Certificate {
    /// Parses the first `CERTIFICATE` block of a PEM text.
    pub fn from_pem(pem_bytes: &[u8]) -> Result<Self, CertError> {
        let blocks = ::pem::parse_many(pem_bytes).map_err(|e| CertError::Pem(e.to_string()))?;
        let block = blocks
            .into_iter()
            .find(|b| b.tag() == "CERTIFICATE")
            .ok_or_else(|| CertError::Pem("no CERTIFICATE block".into()))?;
        Self::from_der(block.contents())
    }

    /// Parses every `CERTIFICATE` block of a PEM text (a chain file).
    pub fn all_from_pem(pem_bytes: &[u8]) -> Result<Vec<Self>, CertError> {
        ::pem::parse_many(pem_bytes)
            .map_err(|e| CertError::Pem(e.to_string()))?
            .into_iter()
            .filter(|b| b.tag() == "CERTIFICATE")
            .map(|b| Self::from_der(b.contents()))
            .collect()
    }

    /// Parses a DER certificate; trailing bytes are refused.
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        let (rest, cert) =
            parse_x509_certificate(der).map_err(|e| CertError::Der(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CertError::Der("trailing bytes after certificate".into()));
        }
        let alg = cert.signature_algorithm.algorithm.to_id_string();
        if alg != ECDSA_WITH_SHA256 {
            return Err(CertError::SignatureAlgorithm(alg));
        }
        let public_key = PublicKey::from_sec1(&cert.public_key().subject_public_key.data)
            .map_err(|e: CryptoError| CertError::PublicKey(e.to_string()))?;
        let mut subject_key_id = None;
        let mut authority_key_id = None;
        let mut attributes = BTreeMap::new();
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => subject_key_id = Some(k.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    authority_key_id = a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => {}
            }
            if ext.oid.to_id_string() == ATTRIBUTE_EXTENSION_OID {
                attributes = parse_attributes(ext.value)?;
            }
        }
        Ok(Self {
            der: der.to_vec(),
            tbs: cert.tbs_certificate.as_ref().to_vec(),
            signature: cert.signature_value.data.to_vec(),
            subject_raw: cert.subject().as_raw().to_vec(),
            issuer_raw: cert.issuer().as_raw().to_vec(),
            subject: cert.subject().to_string(),
            serial: cert.raw_serial().to_vec(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            is_ca: cert.is_ca(),
            public_key,
            subject_key_id,
            authority_key_id,
            organizational_units: cert
                .subject()
                .iter_organizational_unit()
                .filter_map(|ou| ou.as_str().ok().map(str::to_owned))
                .collect(),
            attributes,
        })
    }

    /// Whether `issuer` signed this certificate (CA signatures may be high-S, as Fabric allows).
    pub fn is_signed_by(&self, issuer: &Certificate) -> bool {
        self.issuer_raw == issuer.subject_raw
            && crypto::verify_any_s(
                VerifyBackend::Ring,
                &issuer.public_key,
                &self.tbs,
                &self.signature,
            )
            .is_ok()
    }

    /// Whether `at` (unix seconds) lies in the validity window.
    pub fn is_valid_at(&self, at: i64) -> bool {
        self.not_before <= at && at <= self.not_after
    }

    /// The certificate as PEM text.
    pub fn to_pem(&self) -> String {
        ::pem::encode(&::pem::Pem::new("CERTIFICATE", self.der.clone()))
    }
}

fn parse_attributes(value: &[u8]) -> Result<BTreeMap<String, String>, CertError> {
    #[derive(serde::Deserialize)]
    struct Attrs {
        #[serde(default)]
        attrs: BTreeMap<String, String>,
    }
    serde_json::from_slice::<Attrs>(value)
        .map(|a| a.attrs)
        .map_err(|e| CertError::Attributes(e.to_string()))
}

/// A CRL reduced to who issued it and which serial numbers it revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationList {
    pub issuer_raw: Vec<u8>,
    pub tbs: Vec<u8>,
    pub signature: Vec<u8>,
    pub revoked_serials: Vec<Vec<u8>>,
    pub der: Vec<u8>,
}

impl RevocationList {
    /// Parses a PEM (`X509 CRL`) or DER CRL.
    pub fn parse(bytes: &[u8]) -> Result<Self, CertError> {
        let der = match ::pem::parse(bytes) {
            Ok(block) => block.into_contents(),
            Err(_) => bytes.to_vec(),
        };
        let (rest, crl) = parse_x509_crl(&der).map_err(|e| CertError::Crl(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CertError::Crl("trailing bytes after CRL".into()));
        }
        Ok(Self {
            issuer_raw: crl.issuer().as_raw().to_vec(),
            tbs: crl.tbs_cert_list.as_ref().to_vec(),
            signature: crl.signature_value.data.to_vec(),
            revoked_serials: crl
                .iter_revoked_certificates()
                .map(|r| r.raw_serial().to_vec())
                .collect(),
            der: der.clone(),
        })
    }

    /// Whether `ca` issued and signed this CRL.
    pub fn is_signed_by(&self, ca: &Certificate) -> bool {
        self.issuer_raw == ca.subject_raw
            && crypto::verify_any_s(
                VerifyBackend::Ring,
                &ca.public_key,
                &self.tbs,
                &self.signature,
            )
            .is_ok()
    }

    /// Whether the CRL lists `serial`, compared as integers (leading zero bytes ignored).
    pub fn revokes(&self, serial: &[u8]) -> bool {
        let norm = |s: &[u8]| -> Vec<u8> {
            let first = s.iter().position(|&b| b != 0).unwrap_or(s.len());
            s[first..].to_vec()
        };
        let target = norm(serial);
        self.revoked_serials.iter().any(|s| norm(s) == target)
    }
}

/// A PKCS#10 certificate signing request whose self-signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRequest {
    pub public_key: PublicKey,
    pub common_name: Option<String>,
    /// DNS names and IP addresses requested as subject alternative names.
    pub hosts: Vec<String>,
}

const ID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const SECP256R1: &str = "1.2.840.10045.3.1.7";

impl CertificateRequest {
    /// Parses a PEM (`CERTIFICATE REQUEST`) CSR, requires an ECDSA P-256 key, and verifies the
    /// request's signature by that key.
    pub fn from_pem(pem_text: &str) -> Result<Self, CertError> {
        let block = ::pem::parse(pem_text).map_err(|e| CertError::Pem(e.to_string()))?;
        if !block.tag().contains("CERTIFICATE REQUEST") {
            return Err(CertError::Pem(format!(
                "expected a CERTIFICATE REQUEST block, found {:?}",
                block.tag()
            )));
        }
        Self::from_der(block.contents())
    }

    /// Parses a DER CSR; see [`CertificateRequest::from_pem`].
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        use x509_parser::certification_request::X509CertificationRequest;
        let (rest, csr) =
            X509CertificationRequest::from_der(der).map_err(|e| CertError::Der(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CertError::Der("trailing bytes after CSR".into()));
        }
        let info = &csr.certification_request_info;
        let spki = &info.subject_pki;
        let alg = spki.algorithm.algorithm.to_id_string();
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string());
        if alg != ID_EC_PUBLIC_KEY || curve.as_deref() != Some(SECP256R1) {
            return Err(CertError::PublicKey(format!(
                "only ECDSA P-256 keys are accepted (found algorithm {alg}, curve {})",
                curve.as_deref().unwrap_or("none")
            )));
        }
        let sig_alg = csr.signature_algorithm.algorithm.to_id_string();
        if sig_alg != ECDSA_WITH_SHA256 {
            return Err(CertError::SignatureAlgorithm(sig_alg));
        }
        let public_key = PublicKey::from_sec1(&spki.subject_public_key.data)
            .map_err(|e| CertError::PublicKey(e.to_string()))?;
        crypto::verify_any_s(
            VerifyBackend::Ring,
            &public_key,
            info.raw,
            &csr.signature_value.data,
        )
        .map_err(|_| CertError::Der("the CSR's signature does not verify with its key".into()))?;
        let common_name = info
            .subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let mut hosts = Vec::new();
        if let Some(exts) = csr.requested_extensions() {
            for ext in exts {
                if let ParsedExtension::SubjectAlternativeName(san) = ext {
                    for name in &san.general_names {
                        match name {
                            GeneralName::DNSName(d) => hosts.push((*d).to_owned()),
                            GeneralName::IPAddress(ip) => match ip.len() {
                                4 => hosts.push(
                                    std::net::Ipv4Addr::from(
                                        <[u8; 4]>::try_from(*ip).unwrap_or_default(),
                                    )
                                    .to_string(),
                                ),
                                16 => hosts.push(
                                    std::net::Ipv6Addr::from(
                                        <[u8; 16]>::try_from(*ip).unwrap_or_default(),
                                    )
                                    .to_string(),
                                ),
                                _ => {}
                            },
                            _ => {}
                        }
                    }
                }
            }
        }
        Ok(Self {
            public_key,
            common_name,
            hosts,
        })
    }
}
