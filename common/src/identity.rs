//! Signing identities: an MSP id, a certificate and its private key, as nodes and clients use them.

use std::path::Path;

use medledger_proto::msp::SerializedIdentity;
use prost::Message;

use crate::cert::Certificate;
use crate::crypto::{CryptoError, PrivateKey};
use crate::msp::{MspError, read_dir_files};

/// Who signs: an MSP member holding its private key.
#[derive(Debug, Clone)]
pub struct SigningIdentity {
    mspid: String,
    cert_pem: Vec<u8>,
    cert: Certificate,
    key: PrivateKey,
    serialized: Vec<u8>,
}

impl SigningIdentity {
    /// An identity from a PEM certificate and its key; fails if they do not match.
    pub fn new(mspid: &str, cert_pem: Vec<u8>, key: PrivateKey) -> Result<Self, MspError> {
        let cert = Certificate::from_pem(&cert_pem)?;
        if cert.public_key != key.public_key() {
            return Err(MspError::Config(
                "the private key does not match the certificate".into(),
            ));
        }
        let serialized = SerializedIdentity {
            mspid: mspid.to_owned(),
            id_bytes: cert_pem.clone(),
        }
        .encode_to_vec();
        Ok(Self {
            mspid: mspid.to_owned(),
            cert_pem,
            cert,
            key,
            serialized,
        })
    }

    /// Loads `signcerts/` and the matching key in `keystore/` from a Fabric MSP folder.
    pub fn load(msp_dir: &Path, mspid: &str) -> Result<Self, MspError> {
        let certs = read_dir_files(&msp_dir.join("signcerts"))?;
        let (_, cert_pem) = certs.into_iter().next().ok_or_else(|| MspError::Folder {
            path: msp_dir.join("signcerts"),
            reason: "no certificate".into(),
        })?;
        let cert = Certificate::from_pem(&cert_pem)?;
        for (path, bytes) in read_dir_files(&msp_dir.join("keystore"))? {
            let Ok(text) = std::str::from_utf8(&bytes) else {
                continue;
            };
            match PrivateKey::from_pem(text) {
                Ok(key) if key.public_key() == cert.public_key => {
                    return Self::new(mspid, cert_pem, key);
                }
                Ok(_) => continue,
                Err(e) => {
                    return Err(MspError::Folder {
                        path,
                        reason: e.to_string(),
                    });
                }
            }
        }
        Err(MspError::Folder {
            path: msp_dir.join("keystore"),
            reason: "no private key matching signcerts".into(),
        })
    }

    /// The MSP id.
    pub fn mspid(&self) -> &str {
        &self.mspid
    }

    /// The certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    /// The certificate as the PEM bytes that go into `SerializedIdentity.id_bytes`.
    pub fn cert_pem(&self) -> &[u8] {
        &self.cert_pem
    }

    /// The private key.
    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }

    /// The serialized `msp.SerializedIdentity` (creator / endorser bytes).
    pub fn serialized(&self) -> &[u8] {
        &self.serialized
    }

    /// Signs `msg` as Fabric does (low-S ECDSA over SHA-256).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.key.sign(msg)
    }
}
