//! Private data in simulation: reads checked against the collection's rules, writes hashed into
//! the public read-write set and kept apart as the private write set.

use super::*;

impl TxSimulator {
    pub(super) fn collection(
        &self,
        ns: &str,
        coll: &str,
    ) -> Result<(&Collection, &PrivateAccess), SimulationError> {
        let access = self.private.as_ref().ok_or_else(|| {
            SimulationError::Rejected("private data is not available in this context".into())
        })?;
        let c = access.collections.get(coll).ok_or_else(|| {
            SimulationError::Rejected(format!("collection {coll} not defined for chaincode {ns}"))
        })?;
        Ok((c, access))
    }

    /// The checks before reading private values: the caller may read, and this peer holds them.
    pub(super) fn check_private_read(&self, ns: &str, coll: &str) -> Result<(), SimulationError> {
        let (c, access) = self.collection(ns, coll)?;
        if c.member_only_read && !c.admits(&access.creator) {
            return Err(SimulationError::Rejected(format!(
                "tx creator does not have read access permission on privatedata in chaincodeName:{ns} collectionName: {coll}"
            )));
        }
        if !c.is_member_org(&access.peer_msp) {
            return Err(SimulationError::Rejected(format!(
                "this peer ({}) is not a member of collection {coll}: it holds only the hashes of its data",
                access.peer_msp
            )));
        }
        Ok(())
    }

    pub(super) fn record_pvt_read(
        &mut self,
        ns: &str,
        coll: &str,
        key: &str,
    ) -> Result<Option<VersionedValue>, SimulationError> {
        let hashed = self
            .ledger
            .hashed_state(ns, coll, &pvt_hash(key.as_bytes()))?;
        self.pvt_reads
            .entry((ns.to_owned(), coll.to_owned(), key.to_owned()))
            .or_insert_with(|| hashed.as_ref().map(version));
        Ok(hashed)
    }

    /// A private value (`None` if absent); fails for callers the collection does not admit
    /// under memberOnlyRead and on peers outside the collection.
    pub fn get_private_data(
        &mut self,
        ns: &str,
        coll: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, SimulationError> {
        self.check_private_read(ns, coll)?;
        let Some(hashed) = self.record_pvt_read(ns, coll, key)? else {
            return Ok(None);
        };
        match self.ledger.pvt_state(ns, coll, key)? {
            Some(v) if version(&v) == version(&hashed) => Ok(Some(v.value)),
            other => Err(SimulationError::Rejected(format!(
                "private data matching public hash version is not available. Public hash version = {:?}, Private data version = {:?}",
                (hashed.block_num, hashed.tx_num),
                other.map(|v| (v.block_num, v.tx_num))
            ))),
        }
    }

    /// The SHA-256 of a private value, available on every peer of the channel.
    pub fn get_private_data_hash(
        &mut self,
        ns: &str,
        coll: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, SimulationError> {
        self.collection(ns, coll)?;
        Ok(self.record_pvt_read(ns, coll, key)?.map(|v| v.value))
    }

    pub(super) fn private_write(
        &mut self,
        ns: &str,
        coll: &str,
        key: &str,
        w: PvtWrite,
    ) -> Result<(), SimulationError> {
        self.check_writable()?;
        if key.is_empty() {
            return Err(SimulationError::Rejected("key must not be empty".into()));
        }
        let (c, access) = self.collection(ns, coll)?;
        if c.member_only_write && !c.admits(&access.creator) {
            return Err(SimulationError::Rejected(format!(
                "tx creator does not have write access permission on privatedata in chaincodeName:{ns} collectionName: {coll}"
            )));
        }
        self.pvt_writes
            .insert((ns.to_owned(), coll.to_owned(), key.to_owned()), w);
        Ok(())
    }

    /// Writes a private value (only its hashes reach the transaction).
    pub fn put_private_data(
        &mut self,
        ns: &str,
        coll: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), SimulationError> {
        if value.is_empty() {
            return Err(SimulationError::Rejected(
                "private data value must not be empty (use DelPrivateData to delete)".into(),
            ));
        }
        self.private_write(ns, coll, key, PvtWrite::Put(value))
    }

    /// Deletes a private key.
    pub fn del_private_data(
        &mut self,
        ns: &str,
        coll: &str,
        key: &str,
    ) -> Result<(), SimulationError> {
        self.private_write(ns, coll, key, PvtWrite::Delete)
    }

    /// Erases a private key and its history on every member (the hashes on the ledger stay).
    pub fn purge_private_data(
        &mut self,
        ns: &str,
        coll: &str,
        key: &str,
    ) -> Result<(), SimulationError> {
        self.private_write(ns, coll, key, PvtWrite::Purge)
    }

    /// Private keys in `[start, end)` (empty end: unbounded), each recorded as a read.
    pub fn private_range(
        &mut self,
        ns: &str,
        coll: &str,
        start: &str,
        end: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, SimulationError> {
        self.check_private_read(ns, coll)?;
        let rows = self
            .ledger
            .pvt_range(ns, coll, start, end, TOTAL_QUERY_LIMIT)?;
        let mut out = Vec::with_capacity(rows.len());
        for (key, v) in rows {
            // Values the hashed state has moved past (missing newer data) are not returned.
            if self
                .record_pvt_read(ns, coll, &key)?
                .is_some_and(|h| version(&h) == version(&v))
            {
                out.push((key, v.value));
            }
        }
        Ok(out)
    }
}
