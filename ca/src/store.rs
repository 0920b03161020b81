//! The CA's durable state in RocksDB: registered identities, affiliations, every issued
//! certificate, the tokens already used for state-changing requests, and counters. Each state
//! change is one atomic write batch.

use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::error::CaError;

const IDENTITIES: &str = "identities";
const CERTIFICATES: &str = "certificates";
const TOKENS: &str = "tokens";
const META: &str = "meta";
const AFFILIATIONS: &str = "affiliations";

/// One attribute of a registered identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute {
    pub name: String,
    pub value: String,
    /// Whether the attribute goes into enrollment certificates by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ecert: bool,
}

/// A registered identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    pub id: String,
    /// Argon2 PHC string of the enrollment secret.
    pub secret_hash: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub affiliation: String,
    pub attrs: Vec<Attribute>,
    /// -1 unlimited, otherwise the maximum number of enrollments.
    pub max_enrollments: i32,
    pub enrollments: i32,
    pub revoked: bool,
}

impl IdentityRecord {
    /// The value of an attribute, if registered.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.as_str())
    }
}

/// An issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRecord {
    /// Lowercase hex, no leading zeros.
    pub serial: String,
    /// Lowercase hex of the issuing CA's subject key identifier.
    pub aki: String,
    pub id: String,
    pub pem: String,
    pub not_after: i64,
    pub revoked_at: Option<i64>,
    pub reason: Option<String>,
}

/// Normalises a serial (bytes or hex text) to lowercase hex without leading zeros.
pub fn serial_hex(serial: &[u8]) -> String {
    let h = hex::encode(serial);
    let t = h.trim_start_matches('0');
    if t.is_empty() { "0".into() } else { t.into() }
}

/// The RocksDB-backed store.
pub struct CaStore {
    db: DB,
}

/// A token seen before on a state-changing request: Fabric CA tokens carry no nonce or time, so
/// a captured one could otherwise be replayed.
fn replayed() -> CaError {
    CaError::unauthorized(
        crate::error::code::INVALID_TOKEN,
        "invalid token: this token was already used (replayed request)",
    )
}

fn db_err(e: impl std::fmt::Display) -> CaError {
    CaError::internal(format!("database: {e}"))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, CaError> {
    serde_json::from_slice(bytes).map_err(|e| db_err(format!("corrupt record: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, CaError> {
    serde_json::to_vec(v).map_err(db_err)
}

/// One change: column family, key, and the value to put (None: delete the key).
type Op = (&'static str, Vec<u8>, Option<Vec<u8>>);

/// One atomic set of changes.
#[derive(Default)]
pub struct Changes {
    batch: WriteBatch,
    ops: Vec<Op>,
}

impl Changes {
    pub fn put_identity(&mut self, rec: &IdentityRecord) -> Result<(), CaError> {
        self.ops
            .push((IDENTITIES, rec.id.as_bytes().to_vec(), Some(encode(rec)?)));
        Ok(())
    }
    pub fn delete_identity(&mut self, id: &str) {
        self.ops.push((IDENTITIES, id.as_bytes().to_vec(), None));
    }
    pub fn put_cert(&mut self, rec: &CertRecord) -> Result<(), CaError> {
        self.ops.push((
            CERTIFICATES,
            rec.serial.as_bytes().to_vec(),
            Some(encode(rec)?),
        ));
        Ok(())
    }
    /// Adds an affiliation (its dotted path, `hospital1.cardiology`).
    pub fn put_affiliation(&mut self, name: &str) {
        self.ops
            .push((AFFILIATIONS, name.as_bytes().to_vec(), Some(Vec::new())));
    }
    pub fn delete_affiliation(&mut self, name: &str) {
        self.ops
            .push((AFFILIATIONS, name.as_bytes().to_vec(), None));
    }
    /// Marks a token as used (replay protection).
    pub fn use_token(&mut self, token_hash: &[u8; 32], at: i64) {
        self.ops
            .push((TOKENS, token_hash.to_vec(), Some(at.to_be_bytes().to_vec())));
    }
    pub fn put_counter(&mut self, name: &str, value: u64) {
        self.ops.push((
            META,
            name.as_bytes().to_vec(),
            Some(value.to_be_bytes().to_vec()),
        ));
    }
}

impl CaStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, CaError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = [IDENTITIES, CERTIFICATES, TOKENS, META, AFFILIATIONS]
            .into_iter()
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(db_err)?;
        Ok(Self { db })
    }

    fn get_raw(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, CaError> {
        let handle = self
            .db
            .cf_handle(cf)
            .ok_or_else(|| db_err(format!("missing column family {cf}")))?;
        self.db.get_cf(&handle, key).map_err(db_err)
    }

    pub fn identity(&self, id: &str) -> Result<Option<IdentityRecord>, CaError> {
        self.get_raw(IDENTITIES, id.as_bytes())?
            .map(|b| decode(&b))
            .transpose()
    }

    pub fn cert(&self, serial: &str) -> Result<Option<CertRecord>, CaError> {
        self.get_raw(CERTIFICATES, serial.as_bytes())?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Refuses a token already used for a change (see `apply`).
    pub fn check_token_unused(&self, token_hash: &[u8; 32]) -> Result<(), CaError> {
        match self.get_raw(TOKENS, token_hash)? {
            Some(_) => Err(replayed()),
            None => Ok(()),
        }
    }

    pub fn counter(&self, name: &str) -> Result<u64, CaError> {
        Ok(self
            .get_raw(META, name.as_bytes())?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    fn scan<T: for<'de> Deserialize<'de>>(&self, cf: &str) -> Result<Vec<T>, CaError> {
        let handle = self
            .db
            .cf_handle(cf)
            .ok_or_else(|| db_err(format!("missing column family {cf}")))?;
        self.db
            .iterator_cf(&handle, rocksdb::IteratorMode::Start)
            .map(|item| item.map_err(db_err).and_then(|(_, v)| decode(&v)))
            .collect()
    }

    pub fn identities(&self) -> Result<Vec<IdentityRecord>, CaError> {
        self.scan(IDENTITIES)
    }

    pub fn certs(&self) -> Result<Vec<CertRecord>, CaError> {
        self.scan(CERTIFICATES)
    }

    pub fn has_affiliation(&self, name: &str) -> Result<bool, CaError> {
        Ok(self.get_raw(AFFILIATIONS, name.as_bytes())?.is_some())
    }

    /// Every affiliation's dotted path, sorted.
    pub fn affiliations(&self) -> Result<Vec<String>, CaError> {
        let handle = self
            .db
            .cf_handle(AFFILIATIONS)
            .ok_or_else(|| db_err(format!("missing column family {AFFILIATIONS}")))?;
        self.db
            .iterator_cf(&handle, rocksdb::IteratorMode::Start)
            .map(|item| {
                item.map_err(db_err).and_then(|(k, _)| {
                    String::from_utf8(k.to_vec()).map_err(|e| db_err(format!("corrupt key: {e}")))
                })
            })
            .collect()
    }

    /// Applies a set of changes atomically (synced to disk). A change that uses a token already
    /// used is refused whole: a replayed request. Callers apply under the CA's lock, so two
    /// copies of one request cannot both pass.
    pub fn apply(&self, changes: Changes) -> Result<(), CaError> {
        let Changes { mut batch, ops } = changes;
        for (cf, k, _) in &ops {
            if *cf == TOKENS && self.get_raw(TOKENS, k)?.is_some() {
                return Err(replayed());
            }
        }
        for (cf, k, v) in ops {
            let handle = self
                .db
                .cf_handle(cf)
                .ok_or_else(|| db_err(format!("missing column family {cf}")))?;
            match v {
                Some(v) => batch.put_cf(&handle, k, v),
                None => batch.delete_cf(&handle, k),
            }
        }
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(db_err)
    }
}
