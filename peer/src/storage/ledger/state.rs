//! World state with versions, range scans, and the history index (every write of every key).

use medledger_proto::medledger::ledger::{HistoryEntry, VersionedValue};
use rocksdb::IteratorMode;

use super::keys::*;
use super::{Ledger, LedgerError};

impl Ledger {
    /// A key's committed value and version.
    pub fn state(&self, ns: &str, key: &str) -> Result<Option<VersionedValue>, LedgerError> {
        self.db
            .get_cf(cf(&self.db, STATE)?, state_key(ns, key))?
            .map(|b| decode(&b, "state value"))
            .transpose()
    }

    /// Keys in `[start, end)` of a namespace (empty `end` = to the end), at most `limit`.
    pub fn range(
        &self,
        ns: &str,
        start: &str,
        end: &str,
        limit: usize,
    ) -> Result<Vec<(String, VersionedValue)>, LedgerError> {
        self.scan(STATE, &state_key(ns, ""), start, end, limit)
    }

    /// Rows of `cf_name` under `prefix` whose key suffix is in `[start, end)`.
    pub(super) fn scan(
        &self,
        cf_name: &str,
        prefix: &[u8],
        start: &str,
        end: &str,
        limit: usize,
    ) -> Result<Vec<(String, VersionedValue)>, LedgerError> {
        let from = [prefix, start.as_bytes()].concat();
        let upper = if end.is_empty() {
            None
        } else {
            Some([prefix, end.as_bytes()].concat())
        };
        let mut out = Vec::new();
        let bound = upper.clone().or_else(|| prefix_end(prefix));
        for item in bounded_iter(&self.db, cf_name, &from, bound)? {
            let (k, v) = item?;
            if !k.starts_with(prefix) || upper.as_ref().is_some_and(|u| k.as_ref() >= u.as_slice())
            {
                break;
            }
            if out.len() >= limit {
                break;
            }
            let key = String::from_utf8(k[prefix.len()..].to_vec())
                .map_err(|_| LedgerError::Corrupt("state key is not UTF-8".into()))?;
            out.push((key, decode(&v, "state value")?));
        }
        Ok(out)
    }

    /// Every committed write of a key, oldest first.
    pub fn history(&self, ns: &str, key: &str) -> Result<Vec<HistoryEntry>, LedgerError> {
        let prefix = history_prefix(ns, key);
        let mut out = Vec::new();
        for item in bounded_iter(&self.db, HISTORY, &prefix, prefix_end(&prefix))? {
            let (k, v) = item?;
            if !k.starts_with(&prefix) || k.len() != prefix.len() + 16 {
                break;
            }
            out.push(decode(&v, "history entry")?);
        }
        Ok(out)
    }

    /// SHA-256 over the whole world state (keys and versioned values, in order): equal on two
    /// peers exactly when their states are equal.
    pub fn state_hash(&self) -> Result<[u8; 32], LedgerError> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        for item in self
            .db
            .iterator_cf(cf(&self.db, STATE)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            parts.push((k.len() as u64).to_be_bytes().to_vec());
            parts.push(k.to_vec());
            parts.push((v.len() as u64).to_be_bytes().to_vec());
            parts.push(v.to_vec());
        }
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        Ok(medledger_common::crypto::sha256_concat(&refs))
    }
}
