//! A channel's ledger on RocksDB: blocks (by number and hash), the transaction index, versioned
//! world state, the history index (every write of every key: the traceability query) and the
//! savepoint. A block's commit is one synced write batch, so state never runs ahead of or behind
//! the block store, and a block is never applied twice.

use std::path::Path;

use medledger_common::protoutil;
use medledger_proto::common::Block;
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
}

const BLOCKS: &str = "blocks";
const HASHES: &str = "hashes";
const TXIDS: &str = "txids";
const STATE: &str = "state";
const HISTORY: &str = "history";
const META: &str = "meta";

const HEIGHT_KEY: &[u8] = b"height";
const LAST_HASH_KEY: &[u8] = b"last_hash";

/// The write-set of one namespace key: a new value, or `None` to delete.
#[derive(Debug, Clone)]
pub struct StateUpdate {
    pub namespace: String,
    pub key: String,
    pub value: Option<VersionedValue>,
}

/// Everything one block commit writes, applied atomically.
#[derive(Debug, Default)]
pub struct BlockCommit {
    /// The block with its TRANSACTIONS_FILTER filled in.
    pub block: Block,
    pub updates: Vec<StateUpdate>,
    pub history: Vec<(String, String, HistoryEntry)>,
    pub tx_locations: Vec<(String, TxLocation)>,
}

/// One channel's ledger.
pub struct Ledger {
    db: DB,
    height: tokio::sync::watch::Sender<u64>,
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
    /// Opens (creating if needed) the ledger in `dir`.
    pub fn open(dir: &Path) -> Result<Self, LedgerError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = [BLOCKS, HASHES, TXIDS, STATE, HISTORY, META]
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
        Ok(Self { db, height: tx })
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
        let from = state_key(ns, start);
        let prefix = state_key(ns, "");
        let upper = if end.is_empty() {
            None
        } else {
            Some(state_key(ns, end))
        };
        let mut out = Vec::new();
        let it = self.db.iterator_cf(
            cf(&self.db, STATE)?,
            IteratorMode::From(&from, Direction::Forward),
        );
        for item in it {
            let (k, v) = item?;
            if !k.starts_with(&prefix) || upper.as_ref().is_some_and(|u| k.as_ref() >= u.as_slice())
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

fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, LedgerError> {
    db.cf_handle(name)
        .ok_or_else(|| LedgerError::Corrupt(format!("missing column family {name}")))
}
