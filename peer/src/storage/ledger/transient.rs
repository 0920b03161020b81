//! The transient store: endorsed, not yet committed private write sets, sealed, by txid.

use std::sync::atomic::Ordering;

use super::keys::*;
use super::*;

/// First byte of an entry that carries its receive time: `TIMED ‖ height(8) ‖ secs(8) ‖ sealed`.
/// Entries written before have no marker (`height(8) ‖ sealed`; a height never starts with it).
const TIMED: u8 = 0xA1;

/// Bounds of the transient store, which endorsements and other members' pushes fill before
/// their transactions commit (and forever, for transactions that never do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransientLimits {
    /// Keys and sealed values stored at most; a put beyond it is refused.
    pub max_bytes: u64,
    /// An entry is dropped once the ledger is this many blocks past where it was received.
    pub retention_blocks: u64,
    /// An entry is dropped this long after it was received, even on an idle channel.
    pub max_age_secs: u64,
}

impl Default for TransientLimits {
    fn default() -> Self {
        Self {
            max_bytes: 512 * 1024 * 1024,
            retention_blocks: 1000,
            max_age_secs: 3600,
        }
    }
}

/// `(height, received at, sealed value)` of a stored entry.
fn transient_entry(v: &[u8]) -> Option<(u64, u64, &[u8])> {
    let be_u64 = |b: &[u8]| b.try_into().ok().map(u64::from_be_bytes);
    if v.first() == Some(&TIMED) && v.len() >= 17 {
        return Some((be_u64(&v[1..9])?, be_u64(&v[9..17])?, &v[17..]));
    }
    Some((be_u64(v.get(..8)?)?, 0, &v[8..]))
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Ledger {
    pub(super) fn transient_prefix(txid: &str, ns: &str, coll: &str) -> Vec<u8> {
        let mut k = txid.as_bytes().to_vec();
        k.push(0);
        k.extend_from_slice(&coll_prefix(ns, coll));
        k
    }

    /// Keeps an endorsed private write set until its transaction commits.
    pub fn transient_put(
        &self,
        txid: &str,
        ns: &str,
        coll: &str,
        endorsed_at: u64,
        rwset: &[u8],
    ) -> Result<(), LedgerError> {
        let k = [Self::transient_prefix(txid, ns, coll), pvt_hash(rwset)].concat();
        let store = cf(&self.db, TRANSIENT)?;
        // The same write set again (a repeated push) changes nothing and counts nothing: the
        // key names its hash. Otherwise repeats would inflate the size count until every put
        // was refused.
        if self.db.get_pinned_cf(store, &k)?.is_some() {
            return Ok(());
        }
        let sealed = self.seal(ns, coll, &k, rwset)?;
        let value = [&[TIMED][..], &be(endorsed_at), &be(unix_secs()), &sealed].concat();
        let size = (k.len() + value.len()) as u64;
        // No purge here: a full store would make every refused put scan it (the timer purges).
        let max = self.transient_limits().max_bytes;
        if self
            .transient_bytes
            .load(Ordering::Relaxed)
            .saturating_add(size)
            > max
        {
            return Err(LedgerError::TransientFull { max });
        }
        self.db.put_cf(store, &k, value)?;
        self.transient_bytes.fetch_add(size, Ordering::Relaxed);
        Ok(())
    }

    /// Takes `n` bytes off the size count, never below zero: a purge and a commit may both
    /// delete one entry, and a wrapped count would refuse every put until a restart.
    fn release_transient_bytes(&self, n: u64) {
        let _ = self
            .transient_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }

    /// The write sets endorsed for a transaction's collection (more than one if endorsers
    /// disagreed; the committer takes the one whose hash the block carries).
    pub fn transient_get(
        &self,
        txid: &str,
        ns: &str,
        coll: &str,
    ) -> Result<Vec<Vec<u8>>, LedgerError> {
        let prefix = Self::transient_prefix(txid, ns, coll);
        let mut out = Vec::new();
        for item in bounded_iter(&self.db, TRANSIENT, &prefix, prefix_end(&prefix))? {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let (_, _, sealed) = transient_entry(&v)
                .ok_or_else(|| LedgerError::Corrupt("transient entry".into()))?;
            out.push(self.unseal(ns, coll, &k, sealed)?);
        }
        Ok(out)
    }

    pub(super) fn transient_delete(
        &self,
        batch: &mut WriteBatch,
        txid: &str,
    ) -> Result<(), LedgerError> {
        let mut prefix = txid.as_bytes().to_vec();
        prefix.push(0);
        for item in bounded_iter(&self.db, TRANSIENT, &prefix, prefix_end(&prefix))? {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            batch.delete_cf(cf(&self.db, TRANSIENT)?, &k);
            self.release_transient_bytes((k.len() + v.len()) as u64);
        }
        Ok(())
    }

    /// The transient store's bounds in force.
    pub fn transient_limits(&self) -> TransientLimits {
        *self
            .transient_limits
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the transient store's bounds (the peer's configuration).
    pub fn set_transient_limits(&self, limits: TransientLimits) {
        *self
            .transient_limits
            .write()
            .unwrap_or_else(|e| e.into_inner()) = limits;
    }

    /// Bytes of keys and sealed values in the transient store.
    pub fn transient_bytes(&self) -> u64 {
        self.transient_bytes.load(Ordering::Relaxed)
    }

    /// Drops the transient write sets whose transactions never committed and which are past the
    /// retention (`height` is the ledger's height, `now` seconds since the epoch): received more
    /// than `retention_blocks` blocks ago, or longer than `max_age_secs` ago. Returns how many.
    pub fn transient_purge(&self, height: u64, now: u64) -> Result<usize, LedgerError> {
        let limits = self.transient_limits();
        let min_height = height.saturating_sub(limits.retention_blocks);
        let min_secs = now.saturating_sub(limits.max_age_secs);
        let mut batch = WriteBatch::default();
        let (mut n, mut freed) = (0, 0u64);
        for item in self
            .db
            .iterator_cf(cf(&self.db, TRANSIENT)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            let expired =
                transient_entry(&v).is_none_or(|(at, secs, _)| at < min_height || secs < min_secs);
            if expired {
                batch.delete_cf(cf(&self.db, TRANSIENT)?, &k);
                n += 1;
                freed += (k.len() + v.len()) as u64;
            }
        }
        self.db.write(batch)?;
        self.release_transient_bytes(freed);
        Ok(n)
    }

    /// Drops the transient write sets that are past the retention now.
    pub fn transient_purge_now(&self) -> Result<usize, LedgerError> {
        self.transient_purge(self.height(), unix_secs())
    }
}
