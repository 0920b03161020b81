//! A channel's ledger on RocksDB: blocks (by number and hash), the transaction index, versioned
//! world state, the history index (every write of every key: the traceability query) and the
//! savepoint; and the private data store: hashed state of every collection, the private values of
//! collections this peer is a member of, their committed write sets (served to other members),
//! what is missing, what expires, and the transient store of endorsed, not yet committed private
//! write sets. A block's commit is one synced write batch, so state never runs ahead of or behind
//! the block store, and a block is never applied twice. Private values and write sets are sealed
//! with the collection's key ([`CollectionKeys`]) before they reach RocksDB.

use std::path::Path;
use std::sync::{Arc, Mutex};

use medledger_common::protoutil;
use medledger_proto::common::Block;
use medledger_proto::kvrwset::KvrwSet;
use medledger_proto::medledger::ledger::{HistoryEntry, TxLocation, VersionedValue};
use prost::Message;
use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions,
};

/// Errors from the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger storage: {0}")]
    Storage(#[from] rocksdb::Error),
    #[error("corrupt ledger record: {0}")]
    Corrupt(String),
    #[error("block {got} does not follow the ledger at height {height}")]
    OutOfOrder { got: u64, height: u64 },
    #[error("block {0}'s previous hash does not match the ledger's last block")]
    BrokenChain(u64),
    #[error("private data: {0}")]
    Sealing(#[from] crate::sealing::SealError),
    #[error("this ledger was opened without collection keys: private data is not available")]
    NoKeys,
}

use crate::sealing::CollectionKeys;

const BLOCKS: &str = "blocks";
const HASHES: &str = "hashes";
const TXIDS: &str = "txids";
const STATE: &str = "state";
const HISTORY: &str = "history";
const META: &str = "meta";
/// `ns \0 coll \0 keyhash` → VersionedValue whose value is the value hash: every peer keeps it.
const PVT_HASHED: &str = "pvt_hashed";
/// `ns \0 coll \0 key` → sealed VersionedValue: the private values of member collections.
const PVT_STATE: &str = "pvt_state";
/// `ns \0 coll \0 keyhash` → key: finds a private key from the hash a block carries.
const PVT_KEYS: &str = "pvt_keys";
/// `block tx ns \0 coll` → sealed KVRWSet: committed private write sets, served to members.
const PVT_WRITESETS: &str = "pvt_writesets";
/// `ns \0 coll \0 len(key) key` + `block tx` → (): where a key's private writes are, for erasure.
const PVT_INDEX: &str = "pvt_index";
/// `block tx ns \0 coll` → (): committed private write sets this member does not have yet.
const PVT_MISSING: &str = "pvt_missing";
/// `expiry block tx` + `p ns \0 coll \0 len key` (private value) or `h ns \0 coll \0 keyhash`
/// (hashed state) → (): blockToLive purges.
const PVT_EXPIRY: &str = "pvt_expiry";
/// `txid \0 ns \0 coll \0 hash` → height ‖ sealed KVRWSet: endorsed, not yet committed.
const TRANSIENT: &str = "transient";

const HEIGHT_KEY: &[u8] = b"height";
const LAST_HASH_KEY: &[u8] = b"last_hash";

/// The write-set of one namespace key: a new value, or `None` to delete.
#[derive(Debug, Clone)]
pub struct StateUpdate {
    pub namespace: String,
    pub key: String,
    pub value: Option<VersionedValue>,
}

/// A collection's key as committed: `(namespace, collection, key hash)` in hashed state.
#[derive(Debug, Clone)]
pub struct HashedUpdate {
    pub namespace: String,
    pub collection: String,
    pub key_hash: Vec<u8>,
    /// Value hash and version; `None` deletes.
    pub value: Option<VersionedValue>,
    /// Block at whose commit blockToLive removes this hash from the state (`None`: kept).
    pub expires_at: Option<u64>,
}

/// Which committed private write set: a transaction's write set of one collection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PvtSlot {
    pub block_num: u64,
    pub tx_num: u64,
    pub namespace: String,
    pub collection: String,
}

/// A private write set a member commits with the block, its hashes already checked.
#[derive(Debug, Clone)]
pub struct PvtCommit {
    pub slot: PvtSlot,
    pub set: KvrwSet,
    /// Block at whose commit blockToLive purges these values (`None`: kept).
    pub expires_at: Option<u64>,
}

/// A private key to erase for good (PurgePrivateData): value, write-set history and index.
#[derive(Debug, Clone)]
pub struct PvtPurge {
    pub namespace: String,
    pub collection: String,
    pub key_hash: Vec<u8>,
}

/// Everything one block commit writes, applied atomically.
#[derive(Debug, Default)]
pub struct BlockCommit {
    /// The block with its TRANSACTIONS_FILTER filled in.
    pub block: Block,
    pub updates: Vec<StateUpdate>,
    pub history: Vec<(String, String, HistoryEntry)>,
    pub tx_locations: Vec<(String, TxLocation)>,
    /// Hashed state changes of every collection (members and non-members alike).
    pub hashed_updates: Vec<HashedUpdate>,
    /// Private write sets this member has, in transaction order.
    pub pvt_writes: Vec<PvtCommit>,
    /// Private write sets this member should have but does not (yet).
    pub pvt_missing: Vec<PvtSlot>,
    pub pvt_purges: Vec<PvtPurge>,
    /// Transactions whose transient write sets are no longer needed.
    pub transient_done: Vec<String>,
}

/// One channel's ledger.
pub struct Ledger {
    db: DB,
    height: tokio::sync::watch::Sender<u64>,
    /// The channel and its collection keys (private data needs both).
    sealing: Option<(String, Arc<CollectionKeys>)>,
    /// Serialises block commits with reconciliation, which both change private state.
    write_lock: Mutex<()>,
}

/// `(namespace, collection, key hash)`.
type HashedKeyRef = (String, String, Vec<u8>);

/// Keys to remove from stored write sets, gathered over a whole commit so that several keys of
/// one write set are all removed (each removal rewrites the set).
type Scrubs = std::collections::BTreeMap<PvtSlot, std::collections::BTreeSet<String>>;

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

fn coll_prefix(ns: &str, coll: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(ns.len() + coll.len() + 2);
    k.extend_from_slice(ns.as_bytes());
    k.push(0);
    k.extend_from_slice(coll.as_bytes());
    k.push(0);
    k
}

fn coll_key(ns: &str, coll: &str, key: &[u8]) -> Vec<u8> {
    let mut k = coll_prefix(ns, coll);
    k.extend_from_slice(key);
    k
}

fn slot_key(s: &PvtSlot) -> Vec<u8> {
    let mut k = Vec::new();
    k.extend_from_slice(&be(s.block_num));
    k.extend_from_slice(&be(s.tx_num));
    k.extend_from_slice(s.namespace.as_bytes());
    k.push(0);
    k.extend_from_slice(s.collection.as_bytes());
    k
}

fn parse_slot(k: &[u8]) -> Option<PvtSlot> {
    if k.len() < 17 {
        return None;
    }
    let block_num = u64::from_be_bytes(k[..8].try_into().ok()?);
    let tx_num = u64::from_be_bytes(k[8..16].try_into().ok()?);
    let rest = std::str::from_utf8(&k[16..]).ok()?;
    let (ns, coll) = rest.split_once('\0')?;
    Some(PvtSlot {
        block_num,
        tx_num,
        namespace: ns.to_owned(),
        collection: coll.to_owned(),
    })
}

/// Index/expiry entry of one private key: `ns \0 coll \0 len(key) key`.
fn pvt_key_ref(ns: &str, coll: &str, key: &str) -> Vec<u8> {
    let mut k = coll_prefix(ns, coll);
    k.extend_from_slice(&(key.len() as u32).to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

/// SHA-256 of a private key or value, as hashed read-write sets carry them.
pub fn pvt_hash(bytes: &[u8]) -> Vec<u8> {
    medledger_common::crypto::sha256(bytes).to_vec()
}

/// `namespace \0 key`: namespaces never contain NUL, keys may (composite keys start with it).
fn state_key(ns: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(ns.len() + 1 + key.len());
    k.extend_from_slice(ns.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// `namespace \0 key \0 block(8) tx(8)`; the key is length-prefixed so one key's history never
/// interleaves with another key that extends it.
fn history_prefix(ns: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(ns.len() + key.len() + 6);
    k.extend_from_slice(ns.as_bytes());
    k.push(0);
    k.extend_from_slice(&(key.len() as u32).to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

fn decode<M: Message + Default>(bytes: &[u8], what: &str) -> Result<M, LedgerError> {
    M::decode(bytes).map_err(|e| LedgerError::Corrupt(format!("{what}: {e}")))
}

impl Ledger {
    /// Opens (creating if needed) the ledger in `dir`, without private data access.
    pub fn open(dir: &Path) -> Result<Self, LedgerError> {
        Self::open_with(dir, None)
    }

    /// Opens the ledger of `channel` in `dir`, sealing private data with `keys`.
    pub fn open_private(
        dir: &Path,
        channel: &str,
        keys: Arc<CollectionKeys>,
    ) -> Result<Self, LedgerError> {
        Self::open_with(dir, Some((channel.to_owned(), keys)))
    }

    fn open_with(
        dir: &Path,
        sealing: Option<(String, Arc<CollectionKeys>)>,
    ) -> Result<Self, LedgerError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = [
            BLOCKS,
            HASHES,
            TXIDS,
            STATE,
            HISTORY,
            META,
            PVT_HASHED,
            PVT_STATE,
            PVT_KEYS,
            PVT_WRITESETS,
            PVT_INDEX,
            PVT_MISSING,
            PVT_EXPIRY,
            TRANSIENT,
        ]
        .into_iter()
        .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        let height = match db.get_cf(cf(&db, META)?, HEIGHT_KEY)? {
            Some(b) => u64::from_be_bytes(
                b.as_slice()
                    .try_into()
                    .map_err(|_| LedgerError::Corrupt("height".into()))?,
            ),
            None => 0,
        };
        let (tx, _) = tokio::sync::watch::channel(height);
        Ok(Self {
            db,
            height: tx,
            sealing,
            write_lock: Mutex::new(()),
        })
    }

    /// Number of committed blocks (the savepoint is `height - 1`).
    pub fn height(&self) -> u64 {
        *self.height.borrow()
    }

    /// Watches the height, to wait for new blocks.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.height.subscribe()
    }

    /// Header hash of the last block (empty before genesis).
    pub fn last_hash(&self) -> Result<Vec<u8>, LedgerError> {
        Ok(self
            .db
            .get_cf(cf(&self.db, META)?, LAST_HASH_KEY)?
            .unwrap_or_default())
    }

    /// Commits a block and its effects in one synced write batch.
    pub fn commit(&self, c: BlockCommit) -> Result<(), LedgerError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let header = c
            .block
            .header
            .as_ref()
            .ok_or_else(|| LedgerError::Corrupt("block without header".into()))?;
        let height = self.height();
        if header.number != height {
            return Err(LedgerError::OutOfOrder {
                got: header.number,
                height,
            });
        }
        if height > 0 && header.previous_hash != self.last_hash()? {
            return Err(LedgerError::BrokenChain(header.number));
        }
        let hash = protoutil::block_header_hash(header);
        let mut batch = WriteBatch::default();
        let db = &self.db;
        batch.put_cf(
            cf(db, BLOCKS)?,
            header.number.to_be_bytes(),
            c.block.encode_to_vec(),
        );
        batch.put_cf(cf(db, HASHES)?, hash, header.number.to_be_bytes());
        for (txid, loc) in &c.tx_locations {
            // The first committed occurrence of a transaction id is the one that counts.
            if !txid.is_empty() && self.tx_location(txid)?.is_none() {
                batch.put_cf(cf(db, TXIDS)?, txid.as_bytes(), loc.encode_to_vec());
            }
        }
        let state = cf(db, STATE)?;
        for u in &c.updates {
            let k = state_key(&u.namespace, &u.key);
            match &u.value {
                Some(v) => batch.put_cf(&state, k, v.encode_to_vec()),
                None => batch.delete_cf(&state, k),
            }
        }
        let history = cf(db, HISTORY)?;
        for (ns, key, entry) in &c.history {
            let mut k = history_prefix(ns, key);
            k.extend_from_slice(&entry.block_num.to_be_bytes());
            k.extend_from_slice(&entry.tx_num.to_be_bytes());
            batch.put_cf(&history, k, entry.encode_to_vec());
        }
        self.private_commit(&mut batch, &c, header.number)?;
        let meta = cf(db, META)?;
        batch.put_cf(&meta, HEIGHT_KEY, (height + 1).to_be_bytes());
        batch.put_cf(&meta, LAST_HASH_KEY, hash);
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        self.height.send_replace(height + 1);
        Ok(())
    }

    /// The block at `number`.
    pub fn block(&self, number: u64) -> Result<Option<Block>, LedgerError> {
        self.db
            .get_cf(cf(&self.db, BLOCKS)?, number.to_be_bytes())?
            .map(|b| decode(&b, "block"))
            .transpose()
    }

    /// The block whose header hash is `hash`.
    pub fn block_by_hash(&self, hash: &[u8]) -> Result<Option<Block>, LedgerError> {
        match self.db.get_cf(cf(&self.db, HASHES)?, hash)? {
            Some(n) => self.block(u64::from_be_bytes(
                n.as_slice()
                    .try_into()
                    .map_err(|_| LedgerError::Corrupt("hash index".into()))?,
            )),
            None => Ok(None),
        }
    }

    /// Where a transaction id was committed.
    pub fn tx_location(&self, txid: &str) -> Result<Option<TxLocation>, LedgerError> {
        self.db
            .get_cf(cf(&self.db, TXIDS)?, txid.as_bytes())?
            .map(|b| decode(&b, "tx location"))
            .transpose()
    }

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
    fn scan(
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
        let it = self.db.iterator_cf(
            cf(&self.db, cf_name)?,
            IteratorMode::From(&from, Direction::Forward),
        );
        for item in it {
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
        let it = self.db.iterator_cf(
            cf(&self.db, HISTORY)?,
            IteratorMode::From(&prefix, Direction::Forward),
        );
        for item in it {
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

/// Private data: hashed state, sealed private state, committed write sets, reconciliation,
/// erasure and the transient store.
impl Ledger {
    fn sealing(&self) -> Result<(&str, &CollectionKeys), LedgerError> {
        self.sealing
            .as_ref()
            .map(|(c, k)| (c.as_str(), k.as_ref()))
            .ok_or(LedgerError::NoKeys)
    }

    fn seal(&self, ns: &str, coll: &str, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, LedgerError> {
        let (channel, keys) = self.sealing()?;
        Ok(keys.seal(channel, ns, coll, aad, plain)?)
    }

    fn unseal(
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
    fn put_pvt_writes(
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
    fn scrub_write_sets(&self, batch: &mut WriteBatch, scrubs: Scrubs) -> Result<(), LedgerError> {
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
    fn erase(
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
    fn private_commit(
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
    fn expire(
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

    fn transient_prefix(txid: &str, ns: &str, coll: &str) -> Vec<u8> {
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

    fn transient_delete(&self, batch: &mut WriteBatch, txid: &str) -> Result<(), LedgerError> {
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

fn parse_key_ref(r: &[u8]) -> Option<(String, String, String)> {
    let ns_end = r.iter().position(|b| *b == 0)?;
    let ns = std::str::from_utf8(&r[..ns_end]).ok()?;
    let rest = &r[ns_end + 1..];
    let coll_end = rest.iter().position(|b| *b == 0)?;
    let coll = std::str::from_utf8(&rest[..coll_end]).ok()?;
    let rest = &rest[coll_end + 1..];
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let key = std::str::from_utf8(rest.get(4..4 + len)?).ok()?;
    Some((ns.to_owned(), coll.to_owned(), key.to_owned()))
}

fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, LedgerError> {
    db.cf_handle(name)
        .ok_or_else(|| LedgerError::Corrupt(format!("missing column family {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use medledger_proto::kvrwset::KvWrite;

    fn ledger(dir: &Path) -> Ledger {
        let keys = Arc::new(CollectionKeys::new(&dir.join("keys")));
        Ledger::open_private(&dir.join("ledger"), "ch", keys).unwrap()
    }

    /// Commits the next (empty) block with `c`'s private effects.
    fn commit(l: &Ledger, mut c: BlockCommit) {
        c.block = protoutil::new_block(l.height(), l.last_hash().unwrap(), vec![]);
        l.commit(c).unwrap();
    }

    fn slot(block_num: u64) -> PvtSlot {
        PvtSlot {
            block_num,
            tx_num: 0,
            namespace: "cc".into(),
            collection: "records".into(),
        }
    }

    /// Block `b` writes keys a and b (tx 0), expiring at `expires_at`.
    fn write_two(l: &Ledger, expires_at: Option<u64>) -> u64 {
        let b = l.height();
        let mut c = BlockCommit::default();
        for (k, v) in [("a", "alpha"), ("b", "beta")] {
            c.hashed_updates.push(HashedUpdate {
                namespace: "cc".into(),
                collection: "records".into(),
                key_hash: pvt_hash(k.as_bytes()),
                value: Some(VersionedValue {
                    block_num: b,
                    tx_num: 0,
                    value: pvt_hash(v.as_bytes()),
                    metadata: vec![],
                }),
                expires_at,
            });
        }
        c.pvt_writes.push(PvtCommit {
            slot: slot(b),
            set: KvrwSet {
                writes: ["a", "b"]
                    .iter()
                    .map(|k| KvWrite {
                        key: (*k).into(),
                        is_delete: false,
                        value: if *k == "a" {
                            b"alpha".to_vec()
                        } else {
                            b"beta".to_vec()
                        },
                    })
                    .collect(),
                ..Default::default()
            },
            expires_at,
        });
        commit(l, c);
        b
    }

    #[test]
    fn purging_two_keys_of_one_write_set_erases_both() {
        let dir = tempfile::tempdir().unwrap();
        let l = ledger(dir.path());
        commit(&l, BlockCommit::default());
        let b = write_two(&l, None);
        assert_eq!(l.pvt_write_set(&slot(b)).unwrap().unwrap().writes.len(), 2);
        let mut c = BlockCommit::default();
        for k in ["a", "b"] {
            c.pvt_purges.push(PvtPurge {
                namespace: "cc".into(),
                collection: "records".into(),
                key_hash: pvt_hash(k.as_bytes()),
            });
        }
        commit(&l, c);
        for k in ["a", "b"] {
            assert!(l.pvt_state("cc", "records", k).unwrap().is_none());
        }
        assert!(
            l.pvt_write_set(&slot(b)).unwrap().is_none(),
            "no stored write keeps a purged value"
        );
    }

    #[test]
    fn block_to_live_removes_every_key_of_a_write_set() {
        let dir = tempfile::tempdir().unwrap();
        let l = ledger(dir.path());
        commit(&l, BlockCommit::default());
        let b = write_two(&l, Some(3));
        commit(&l, BlockCommit::default());
        assert_eq!(
            l.pvt_state("cc", "records", "a").unwrap().unwrap().value,
            b"alpha"
        );
        commit(&l, BlockCommit::default());
        assert_eq!(l.height(), 4, "block 3 committed");
        for k in ["a", "b"] {
            assert!(l.pvt_state("cc", "records", k).unwrap().is_none());
            assert!(
                l.hashed_state("cc", "records", &pvt_hash(k.as_bytes()))
                    .unwrap()
                    .is_none()
            );
        }
        assert!(l.pvt_write_set(&slot(b)).unwrap().is_none());
    }
}
