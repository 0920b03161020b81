//! Encryption of private data at rest: AES-256-GCM with one key per collection per peer, kept as
//! files in the peer's key folder (never in RocksDB). Every private value and every transient
//! write set is sealed before it reaches the database; the associated data binds a sealed value
//! to the place it is stored, so ciphertexts cannot be moved between keys.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;

const NONCE_LEN: usize = 12;

/// Errors sealing or opening private data.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("collection key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("sealed private data does not open (wrong key, or tampered with)")]
    Open,
    #[error("name {0:?} cannot name a key file")]
    BadName(String),
}

/// The peer's collection keys, created on first use.
pub struct CollectionKeys {
    dir: PathBuf,
    cache: Mutex<HashMap<(String, String, String), Aes256Gcm>>,
}

fn safe(part: &str) -> Result<&str, SealError> {
    if part.is_empty()
        || part.starts_with('.')
        || !part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(SealError::BadName(part.to_owned()));
    }
    Ok(part)
}

impl CollectionKeys {
    /// Keys under `dir` (`<dir>/<channel>/<chaincode>/<collection>.key`).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Where the key of one collection is kept.
    pub fn key_path(&self, channel: &str, ns: &str, coll: &str) -> Result<PathBuf, SealError> {
        Ok(self
            .dir
            .join(safe(channel)?)
            .join(safe(ns)?)
            .join(format!("{}.key", safe(coll)?)))
    }

    /// Fails, naming the file, when the key of a collection that has sealed data is missing:
    /// a new key would leave everything sealed before unreadable, silently.
    pub fn require(&self, channel: &str, ns: &str, coll: &str) -> Result<(), SealError> {
        let path = self.key_path(channel, ns, coll)?;
        if path.is_file() {
            return Ok(());
        }
        Err(SealError::Key {
            path,
            reason: "missing, although private data sealed with it is stored: restore it from \
                     a backup of the peer's key folder (a new key could not read that data)"
                .into(),
        })
    }

    fn cipher(&self, channel: &str, ns: &str, coll: &str) -> Result<Aes256Gcm, SealError> {
        let id = (channel.to_owned(), ns.to_owned(), coll.to_owned());
        // Held while a missing key is created: two first uses at once must not make two keys
        // (values sealed with the one that loses the rename would be unreadable after a restart).
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(&id) {
            return Ok(c.clone());
        }
        let path = self.key_path(channel, ns, coll)?;
        let err = |reason: String| SealError::Key {
            path: path.clone(),
            reason,
        };
        let key = match std::fs::read(&path) {
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut k = vec![0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut k);
                write_key(&path, &k).map_err(|e| err(e.to_string()))?;
                k
            }
            Err(e) => return Err(err(e.to_string())),
        };
        let cipher = Aes256Gcm::new_from_slice(&key)
            .map_err(|_| err(format!("a key is 32 bytes, this file has {}", key.len())))?;
        cache.insert(id, cipher.clone());
        Ok(cipher)
    }

    /// Encrypts `plain` for collection `coll` of chaincode `ns`; `aad` names where it is stored.
    pub fn seal(
        &self,
        channel: &str,
        ns: &str,
        coll: &str,
        aad: &[u8],
        plain: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let cipher = self.cipher(channel, ns, coll)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: plain, aad })
            .map_err(|_| SealError::Open)?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    /// Decrypts what [`CollectionKeys::seal`] produced with the same names and `aad`.
    pub fn open(
        &self,
        channel: &str,
        ns: &str,
        coll: &str,
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let cipher = self.cipher(channel, ns, coll)?;
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Open)?;
        cipher
            .decrypt(&Nonce::from(nonce), Payload { msg: body, aad })
            .map_err(|_| SealError::Open)
    }
}

fn write_key(path: &Path, key: &[u8]) -> std::io::Result<()> {
    medledger_common::durable::write_file_durably(path, key, Some(0o600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_place() {
        let dir = tempfile::tempdir().unwrap();
        let keys = CollectionKeys::new(dir.path());
        let sealed = keys
            .seal("ch", "cc", "records", b"k1", b"blood type O")
            .unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"blood"));
        assert_eq!(
            keys.open("ch", "cc", "records", b"k1", &sealed).unwrap(),
            b"blood type O"
        );
        // Another place, another collection, a flipped bit, a truncated value: all refused.
        assert!(keys.open("ch", "cc", "records", b"k2", &sealed).is_err());
        assert!(keys.open("ch", "cc", "other", b"k1", &sealed).is_err());
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(keys.open("ch", "cc", "records", b"k1", &bad).is_err());
        assert!(
            keys.open("ch", "cc", "records", b"k1", &sealed[..5])
                .is_err()
        );
        // The key survives a restart; another peer's key folder cannot open it.
        let again = CollectionKeys::new(dir.path());
        assert!(again.open("ch", "cc", "records", b"k1", &sealed).is_ok());
        let other = tempfile::tempdir().unwrap();
        assert!(
            CollectionKeys::new(other.path())
                .open("ch", "cc", "records", b"k1", &sealed)
                .is_err()
        );
        assert!(keys.seal("ch", "../x", "c", b"", b"v").is_err());
    }

    #[test]
    fn concurrent_first_uses_share_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = std::sync::Arc::new(CollectionKeys::new(dir.path()));
        let sealed: Vec<Vec<u8>> = (0..8)
            .map(|i| {
                let keys = keys.clone();
                std::thread::spawn(move || keys.seal("ch", "cc", "new", b"k", &[i]).unwrap())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        // After a restart (a fresh key cache) every value still opens.
        let reopened = CollectionKeys::new(dir.path());
        for (i, s) in sealed.iter().enumerate() {
            assert_eq!(
                reopened.open("ch", "cc", "new", b"k", s).unwrap(),
                [i as u8]
            );
        }
    }
}
