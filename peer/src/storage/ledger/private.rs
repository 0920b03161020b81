//! The private data store: hashed state of every collection, sealed private values and write
//! sets of member collections, what is missing, what expires, erasure and reconciliation.

use super::keys::*;
use super::*;

/// Private data: hashed state, sealed private state, committed write sets, reconciliation,
/// erasure and the transient store.
impl Ledger {
    pub(super) fn sealing(&self) -> Result<(&str, &CollectionKeys), LedgerError> {
        self.sealing
            .as_ref()
            .map(|(c, k)| (c.as_str(), k.as_ref()))
            .ok_or(LedgerError::NoKeys)
    }

    pub(super) fn seal(
        &self,
        ns: &str,
        coll: &str,
        aad: &[u8],
        plain: &[u8],
    ) -> Result<Vec<u8>, LedgerError> {
        let (channel, keys) = self.sealing()?;
        // Sealing makes the key file first; the mark goes in before the caller stores anything
        // sealed. A mark without its key would stop the ledger from opening for nothing.
        let sealed = keys.seal(channel, ns, coll, aad, plain)?;
        self.mark_sealed(ns, coll)?;
        Ok(sealed)
    }

    /// Records, durably and before any data sealed with it is written, that collection `coll`
    /// of `ns` has sealed data: from then on its key file must exist for the ledger to open.
    fn mark_sealed(&self, ns: &str, coll: &str) -> Result<(), LedgerError> {
        let id = (ns.to_owned(), coll.to_owned());
        let mut marked = self.sealed_marked.lock().unwrap_or_else(|e| e.into_inner());
        if marked.contains(&id) {
            return Ok(());
        }
        let mark = [SEALED_MARK_PREFIX, &coll_prefix(ns, coll)].concat();
        let meta = cf(&self.db, META)?;
        if self.db.get_cf(meta, &mark)?.is_none() {
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            self.db.put_cf_opt(meta, &mark, [], &wo)?;
        }
        marked.insert(id);
        Ok(())
    }

    pub(super) fn unseal(
        &self,
        ns: &str,
        coll: &str,
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, LedgerError> {
        let (channel, keys) = self.sealing()?;
        Ok(keys.open(channel, ns, coll, aad, sealed)?)
    }

    /// Value hash and version of a private key, from the hashed state every peer keeps.
    pub fn hashed_state(
        &self,
        ns: &str,
        coll: &str,
        key_hash: &[u8],
    ) -> Result<Option<VersionedValue>, LedgerError> {
        self.db
            .get_cf(cf(&self.db, PVT_HASHED)?, coll_key(ns, coll, key_hash))?
            .map(|b| decode(&b, "hashed state"))
            .transpose()
    }

    /// A private value of a member collection, decrypted, with its version.
    pub fn pvt_state(
        &self,
        ns: &str,
        coll: &str,
        key: &str,
    ) -> Result<Option<VersionedValue>, LedgerError> {
        let k = coll_key(ns, coll, key.as_bytes());
        match self.db.get_cf(cf(&self.db, PVT_STATE)?, &k)? {
            Some(b) => {
                let mut v: VersionedValue = decode(&b, "private state")?;
                v.value = self.unseal(ns, coll, &k, &v.value)?;
                Ok(Some(v))
            }
            None => Ok(None),
        }
    }

    /// Private keys in `[start, end)` of a collection, decrypted, at most `limit`.
    pub fn pvt_range(
        &self,
        ns: &str,
        coll: &str,
        start: &str,
        end: &str,
        limit: usize,
    ) -> Result<Vec<(String, VersionedValue)>, LedgerError> {
        let mut rows = self.scan(PVT_STATE, &coll_prefix(ns, coll), start, end, limit)?;
        for (key, v) in &mut rows {
            v.value = self.unseal(ns, coll, &coll_key(ns, coll, key.as_bytes()), &v.value)?;
        }
        Ok(rows)
    }

    /// A committed private write set this peer holds, decrypted.
    pub fn pvt_write_set(&self, slot: &PvtSlot) -> Result<Option<KvrwSet>, LedgerError> {
        let k = slot_key(slot);
        match self.db.get_cf(cf(&self.db, PVT_WRITESETS)?, &k)? {
            Some(b) => {
                let plain = self.unseal(&slot.namespace, &slot.collection, &k, &b)?;
                Ok(Some(decode(&plain, "private write set")?))
            }
            None => Ok(None),
        }
    }

    /// Private write sets this member lacks, oldest first, at most `limit`.
    pub fn pvt_missing(&self, limit: usize) -> Result<Vec<PvtSlot>, LedgerError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(cf(&self.db, PVT_MISSING)?, IteratorMode::Start)
        {
            let (k, _) = item?;
            if out.len() >= limit {
                break;
            }
            out.push(
                parse_slot(&k).ok_or_else(|| LedgerError::Corrupt("missing-data key".into()))?,
            );
        }
        Ok(out)
    }

    /// Stores one write set's values (those the hashed state still points at) in `batch`.
    pub(super) fn put_pvt_writes(
        &self,
        batch: &mut WriteBatch,
        p: &PvtCommit,
        current: impl Fn(&[u8], bool) -> Result<bool, LedgerError>,
    ) -> Result<(), LedgerError> {
        let db = &self.db;
        let (ns, coll) = (&p.slot.namespace, &p.slot.collection);
        // Only the writes applied are kept: a superseded or erased value is not stored either.
        let mut kept = KvrwSet {
            reads: p.set.reads.clone(),
            ..Default::default()
        };
        for w in &p.set.writes {
            let kh = pvt_hash(w.key.as_bytes());
            if !current(&kh, w.is_delete)? {
                continue;
            }
            kept.writes.push(w.clone());
            let k = coll_key(ns, coll, w.key.as_bytes());
            if w.is_delete {
                batch.delete_cf(cf(db, PVT_STATE)?, &k);
                batch.delete_cf(cf(db, PVT_KEYS)?, coll_key(ns, coll, &kh));
                continue;
            }
            let v = VersionedValue {
                block_num: p.slot.block_num,
                tx_num: p.slot.tx_num,
                value: self.seal(ns, coll, &k, &w.value)?,
                metadata: Vec::new(),
            };
            batch.put_cf(cf(db, PVT_STATE)?, &k, v.encode_to_vec());
            batch.put_cf(cf(db, PVT_KEYS)?, coll_key(ns, coll, &kh), w.key.as_bytes());
            let r = pvt_key_ref(ns, coll, &w.key);
            batch.put_cf(
                cf(db, PVT_INDEX)?,
                [r.as_slice(), &be(p.slot.block_num), &be(p.slot.tx_num)].concat(),
                [],
            );
            if let Some(at) = p.expires_at {
                batch.put_cf(
                    cf(db, PVT_EXPIRY)?,
                    [
                        &be(at)[..],
                        &be(p.slot.block_num),
                        &be(p.slot.tx_num),
                        b"p",
                        &r,
                    ]
                    .concat(),
                    [],
                );
            }
        }
        let sk = slot_key(&p.slot);
        if !kept.writes.is_empty() {
            batch.put_cf(
                cf(db, PVT_WRITESETS)?,
                &sk,
                self.seal(ns, coll, &sk, &kept.encode_to_vec())?,
            );
        }
        batch.delete_cf(cf(db, PVT_MISSING)?, &sk);
        Ok(())
    }

    /// Rewrites the stored write sets without the gathered keys (erasure and blockToLive).
    pub(super) fn scrub_write_sets(
        &self,
        batch: &mut WriteBatch,
        scrubs: Scrubs,
    ) -> Result<(), LedgerError> {
        for (slot, keys) in scrubs {
            let Some(mut set) = self.pvt_write_set(&slot)? else {
                continue;
            };
            set.writes.retain(|w| !keys.contains(&w.key));
            set.reads.retain(|r| !keys.contains(&r.key));
            let sk = slot_key(&slot);
            if set.writes.is_empty() {
                batch.delete_cf(cf(&self.db, PVT_WRITESETS)?, &sk);
            } else {
                let sealed =
                    self.seal(&slot.namespace, &slot.collection, &sk, &set.encode_to_vec())?;
                batch.put_cf(cf(&self.db, PVT_WRITESETS)?, &sk, sealed);
            }
        }
        Ok(())
    }

    /// Erases a private key for good: its value and every stored write of it.
    pub(super) fn erase(
        &self,
        batch: &mut WriteBatch,
        scrubs: &mut Scrubs,
        ns: &str,
        coll: &str,
        key: &str,
    ) -> Result<(), LedgerError> {
        let db = &self.db;
        batch.delete_cf(cf(db, PVT_STATE)?, coll_key(ns, coll, key.as_bytes()));
        batch.delete_cf(
            cf(db, PVT_KEYS)?,
            coll_key(ns, coll, &pvt_hash(key.as_bytes())),
        );
        let r = pvt_key_ref(ns, coll, key);
        for item in db.iterator_cf(
            cf(db, PVT_INDEX)?,
            IteratorMode::From(&r, Direction::Forward),
        ) {
            let (k, _) = item?;
            if !k.starts_with(&r) || k.len() != r.len() + 16 {
                break;
            }
            let slot = PvtSlot {
                block_num: u64::from_be_bytes(
                    k[r.len()..r.len() + 8].try_into().unwrap_or_default(),
                ),
                tx_num: u64::from_be_bytes(k[r.len() + 8..].try_into().unwrap_or_default()),
                namespace: ns.to_owned(),
                collection: coll.to_owned(),
            };
            scrubs.entry(slot).or_default().insert(key.to_owned());
            batch.delete_cf(cf(db, PVT_INDEX)?, &k);
        }
        Ok(())
    }

    /// The private part of a block commit, added to its write batch.
    pub(super) fn private_commit(
        &self,
        batch: &mut WriteBatch,
        c: &BlockCommit,
        number: u64,
    ) -> Result<(), LedgerError> {
        let db = &self.db;
        for u in &c.hashed_updates {
            let k = coll_key(&u.namespace, &u.collection, &u.key_hash);
            match &u.value {
                Some(v) => {
                    if let Some(at) = u.expires_at {
                        batch.put_cf(
                            cf(db, PVT_EXPIRY)?,
                            [&be(at)[..], &be(v.block_num), &be(v.tx_num), b"h", &k].concat(),
                            [],
                        );
                    }
                    batch.put_cf(cf(db, PVT_HASHED)?, k, v.encode_to_vec())
                }
                None => batch.delete_cf(cf(db, PVT_HASHED)?, k),
            }
        }
        // A key's last hashed write in this block decides which private value is current.
        let mut last: std::collections::HashMap<HashedKeyRef, Option<(u64, u64)>> =
            std::collections::HashMap::new();
        for u in &c.hashed_updates {
            last.insert(
                (
                    u.namespace.clone(),
                    u.collection.clone(),
                    u.key_hash.clone(),
                ),
                u.value.as_ref().map(|v| (v.block_num, v.tx_num)),
            );
        }
        let purged: std::collections::HashSet<(String, String, Vec<u8>)> = c
            .pvt_purges
            .iter()
            .map(|p| {
                (
                    p.namespace.clone(),
                    p.collection.clone(),
                    p.key_hash.clone(),
                )
            })
            .collect();
        for p in &c.pvt_writes {
            let mut p = p.clone();
            // Values of a key erased in this block never reach the store.
            p.set.writes.retain(|w| {
                !purged.contains(&(
                    p.slot.namespace.clone(),
                    p.slot.collection.clone(),
                    pvt_hash(w.key.as_bytes()),
                ))
            });
            let slot = p.slot.clone();
            self.put_pvt_writes(batch, &p, |kh, is_delete| {
                Ok(is_delete
                    || last
                        .get(&(slot.namespace.clone(), slot.collection.clone(), kh.to_vec()))
                        .is_some_and(|v| *v == Some((slot.block_num, slot.tx_num))))
            })?;
        }
        for m in &c.pvt_missing {
            batch.put_cf(cf(db, PVT_MISSING)?, slot_key(m), []);
        }
        let mut scrubs = Scrubs::new();
        for p in &c.pvt_purges {
            let key = self.db.get_cf(
                cf(db, PVT_KEYS)?,
                coll_key(&p.namespace, &p.collection, &p.key_hash),
            )?;
            if let Some(key) = key {
                let key = String::from_utf8(key)
                    .map_err(|_| LedgerError::Corrupt("private key is not UTF-8".into()))?;
                self.erase(batch, &mut scrubs, &p.namespace, &p.collection, &key)?;
            }
        }
        for txid in &c.transient_done {
            self.transient_delete(batch, txid)?;
        }
        self.expire(batch, &mut scrubs, number)?;
        self.scrub_write_sets(batch, scrubs)
    }

    /// blockToLive: purges the private values whose time ends with block `number`.
    pub(super) fn expire(
        &self,
        batch: &mut WriteBatch,
        scrubs: &mut Scrubs,
        number: u64,
    ) -> Result<(), LedgerError> {
        let db = &self.db;
        for item in db.iterator_cf(cf(db, PVT_EXPIRY)?, IteratorMode::Start) {
            let (k, _) = item?;
            let corrupt = || LedgerError::Corrupt("expiry entry".into());
            if k.len() < 24 {
                return Err(corrupt());
            }
            let at = u64::from_be_bytes(k[..8].try_into().map_err(|_| corrupt())?);
            if at > number {
                break;
            }
            let block_num = u64::from_be_bytes(k[8..16].try_into().map_err(|_| corrupt())?);
            let tx_num = u64::from_be_bytes(k[16..24].try_into().map_err(|_| corrupt())?);
            let (kind, r) = k[24..].split_first().ok_or_else(corrupt)?;
            batch.delete_cf(cf(db, PVT_EXPIRY)?, &k);
            if *kind == b'h' {
                if let Some(b) = db.get_cf(cf(db, PVT_HASHED)?, r)? {
                    let v: VersionedValue = decode(&b, "hashed state")?;
                    if (v.block_num, v.tx_num) == (block_num, tx_num) {
                        batch.delete_cf(cf(db, PVT_HASHED)?, r);
                    }
                }
                continue;
            }
            let (ns, coll, key) = parse_key_ref(r).ok_or_else(corrupt)?;
            let sk = coll_key(&ns, &coll, key.as_bytes());
            if let Some(b) = db.get_cf(cf(db, PVT_STATE)?, &sk)? {
                let v: VersionedValue = decode(&b, "private state")?;
                if (v.block_num, v.tx_num) == (block_num, tx_num) {
                    batch.delete_cf(cf(db, PVT_STATE)?, &sk);
                    batch.delete_cf(
                        cf(db, PVT_KEYS)?,
                        coll_key(&ns, &coll, &pvt_hash(key.as_bytes())),
                    );
                }
            }
            let slot = PvtSlot {
                block_num,
                tx_num,
                namespace: ns,
                collection: coll,
            };
            batch.delete_cf(
                cf(db, PVT_INDEX)?,
                [r, &be(block_num), &be(tx_num)].concat(),
            );
            scrubs.entry(slot).or_default().insert(key);
        }
        Ok(())
    }

    /// Commits a missing private write set obtained later: only values the hashed state still
    /// points at are applied; returns how many were.
    pub fn reconcile(&self, p: &PvtCommit) -> Result<usize, LedgerError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        if p.expires_at.is_some_and(|at| at < self.height()) {
            let mut batch = WriteBatch::default();
            batch.delete_cf(cf(&self.db, PVT_MISSING)?, slot_key(&p.slot));
            self.db.write(batch)?;
            return Ok(0);
        }
        let mut batch = WriteBatch::default();
        let applied = std::cell::Cell::new(0usize);
        self.put_pvt_writes(&mut batch, p, |kh, is_delete| {
            let now = self.hashed_state(&p.slot.namespace, &p.slot.collection, kh)?;
            let current = match now {
                Some(v) => (v.block_num, v.tx_num) == (p.slot.block_num, p.slot.tx_num),
                None => is_delete,
            };
            if current {
                applied.set(applied.get() + 1);
            }
            Ok(current)
        })?;
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        Ok(applied.get())
    }
}
