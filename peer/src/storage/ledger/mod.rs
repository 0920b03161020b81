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
    Sealing(#[from] crate::storage::sealing::SealError),
    #[error("this ledger was opened without collection keys: private data is not available")]
    NoKeys,
    #[error("the transient store is full ({max} bytes): private data refused until it drains")]
    TransientFull { max: u64 },
}

mod blocks;
mod keys;
mod private;
mod state;
mod transient;

pub use transient::TransientLimits;

use crate::storage::sealing::CollectionKeys;
pub use keys::pvt_hash;
use keys::*;

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
    /// The block is a valid configuration block: it becomes the channel's last config.
    pub config_block: bool,
}

/// One channel's ledger.
pub struct Ledger {
    db: DB,
    height: tokio::sync::watch::Sender<u64>,
    /// The channel and its collection keys (private data needs both).
    sealing: Option<(String, Arc<CollectionKeys>)>,
    /// Serialises block commits with reconciliation, which both change private state.
    write_lock: Mutex<()>,
    /// Bytes of keys and values in the transient store (counted at open, kept up to date).
    transient_bytes: std::sync::atomic::AtomicU64,
    transient_limits: std::sync::RwLock<TransientLimits>,
    /// Collections whose sealed-data mark is known to be stored (see [`SEALED_MARK_PREFIX`]).
    sealed_marked: Mutex<std::collections::HashSet<(String, String)>>,
}

/// `(namespace, collection, key hash)`.
type HashedKeyRef = (String, String, Vec<u8>);

/// Keys to remove from stored write sets, gathered over a whole commit so that several keys of
/// one write set are all removed (each removal rewrites the set).
type Scrubs = std::collections::BTreeMap<PvtSlot, std::collections::BTreeSet<String>>;

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
        if let Some((channel, keys)) = &sealing {
            check_sealing_keys(&db, channel, keys)?;
        }
        let mut transient_bytes = 0u64;
        for item in db.iterator_cf(cf(&db, TRANSIENT)?, IteratorMode::Start) {
            let (k, v) = item?;
            transient_bytes = transient_bytes.saturating_add((k.len() + v.len()) as u64);
        }
        let (tx, _) = tokio::sync::watch::channel(height);
        Ok(Self {
            db,
            height: tx,
            sealing,
            write_lock: Mutex::new(()),
            sealed_marked: Mutex::default(),
            transient_bytes: std::sync::atomic::AtomicU64::new(transient_bytes),
            transient_limits: std::sync::RwLock::new(TransientLimits::default()),
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
            medledger_common::stored::encode(&c.block),
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
        if c.config_block {
            batch.put_cf(&meta, LAST_CONFIG_KEY, header.number.to_be_bytes());
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        self.height.send_replace(height + 1);
        Ok(())
    }
}

/// Refuses to open a ledger whose sealed private data has lost its collection key: the error
/// names the missing file, instead of a new key silently leaving old data unreadable.
fn check_sealing_keys(db: &DB, channel: &str, keys: &CollectionKeys) -> Result<(), LedgerError> {
    let it = db.iterator_cf(
        cf(db, META)?,
        IteratorMode::From(SEALED_MARK_PREFIX, Direction::Forward),
    );
    for item in it {
        let (k, _) = item?;
        let Some(rest) = k.strip_prefix(SEALED_MARK_PREFIX) else {
            break;
        };
        let text = std::str::from_utf8(rest)
            .map_err(|_| LedgerError::Corrupt("sealed-data mark".into()))?;
        let (ns, coll) = text
            .strip_suffix('\0')
            .and_then(|t| t.split_once('\0'))
            .ok_or_else(|| LedgerError::Corrupt("sealed-data mark".into()))?;
        keys.require(channel, ns, coll)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use medledger_proto::kvrwset::KvWrite;

    fn ledger(dir: &Path) -> Ledger {
        let keys = Arc::new(CollectionKeys::new(&dir.join("keys")));
        Ledger::open_private(&dir.join("ledger"), "ch", keys).unwrap()
    }

    #[test]
    fn a_lost_collection_key_stops_the_ledger_from_opening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let l = ledger(dir.path());
            l.transient_put("tx1", "cc", "coll", 0, b"private write set")
                .unwrap();
        }
        // Reopening with the key in place works; without it, the ledger refuses and names the
        // file, instead of making a new key under which the stored data never decrypts.
        drop(ledger(dir.path()));
        let key = dir.path().join("keys/ch/cc/coll.key");
        std::fs::remove_file(&key).unwrap();
        let keys = Arc::new(CollectionKeys::new(&dir.path().join("keys")));
        let err = match Ledger::open_private(&dir.path().join("ledger"), "ch", keys) {
            Ok(_) => panic!("a ledger whose collection key is lost must not open"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&key.display().to_string()), "{err}");
        assert!(!key.exists(), "no new key may be made in its place");
    }

    #[test]
    fn the_transient_store_is_bounded_by_size_and_drained_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let l = ledger(dir.path());
        l.set_transient_limits(TransientLimits {
            max_bytes: 600,
            retention_blocks: 1000,
            max_age_secs: 60,
        });
        l.transient_put("tx1", "cc", "coll", 0, &[1; 200]).unwrap();
        assert!(l.transient_bytes() > 200);
        // A second set would pass the bound: refused, nothing stored.
        let full = l.transient_put("tx2", "cc", "coll", 0, &[2; 300]);
        assert!(
            matches!(full, Err(LedgerError::TransientFull { max: 600 })),
            "{full:?}"
        );
        assert!(l.transient_get("tx2", "cc", "coll").unwrap().is_empty());
        // Nothing is old yet; an hour later the idle channel (no new blocks) drains anyway.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(l.transient_purge(l.height(), now).unwrap(), 0);
        assert_eq!(l.transient_purge(l.height(), now + 3600).unwrap(), 1);
        assert!(l.transient_get("tx1", "cc", "coll").unwrap().is_empty());
        assert_eq!(l.transient_bytes(), 0);
        l.transient_put("tx2", "cc", "coll", 0, &[2; 300]).unwrap();
        // The same write set pushed again and again is stored and counted once.
        let once = l.transient_bytes();
        for _ in 0..10 {
            l.transient_put("tx2", "cc", "coll", 0, &[2; 300]).unwrap();
        }
        assert_eq!(l.transient_bytes(), once);
        // A commit's delete and a purge of the same entry never wrap the count.
        let mut batch = WriteBatch::default();
        l.transient_delete(&mut batch, "tx2").unwrap();
        assert_eq!(l.transient_purge(l.height(), now + 3600).unwrap(), 1);
        l.db.write(batch).unwrap();
        assert_eq!(l.transient_bytes(), 0);
        l.transient_put("tx3", "cc", "coll", 0, &[3; 300]).unwrap();
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
