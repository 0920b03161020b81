//! The transient store: endorsed, not yet committed private write sets, sealed, by txid.

use super::keys::*;
use super::*;

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
        let sealed = self.seal(ns, coll, &k, rwset)?;
        self.db.put_cf(
            cf(&self.db, TRANSIENT)?,
            &k,
            [&be(endorsed_at)[..], &sealed].concat(),
        )?;
        Ok(())
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
        for item in self.db.iterator_cf(
            cf(&self.db, TRANSIENT)?,
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            if v.len() < 8 {
                return Err(LedgerError::Corrupt("transient entry".into()));
            }
            out.push(self.unseal(ns, coll, &k, &v[8..])?);
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
        for item in self.db.iterator_cf(
            cf(&self.db, TRANSIENT)?,
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            batch.delete_cf(cf(&self.db, TRANSIENT)?, &k);
        }
        Ok(())
    }

    /// Drops transient write sets endorsed below `height` whose transactions never committed.
    pub fn transient_purge_below(&self, height: u64) -> Result<usize, LedgerError> {
        let mut batch = WriteBatch::default();
        let mut n = 0;
        for item in self
            .db
            .iterator_cf(cf(&self.db, TRANSIENT)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            let at = v
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            if at.is_none_or(|at| at < height) {
                batch.delete_cf(cf(&self.db, TRANSIENT)?, &k);
                n += 1;
            }
        }
        self.db.write(batch)?;
        Ok(n)
    }
}
