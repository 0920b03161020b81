//! The orderer's RocksDB store for one channel: committed blocks (with their quorum signatures)
//! and the consensus core's write-ahead state (view, last vote, accepted requests). Every write
//! is synced before the node acts on it.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use medledger_common::protoutil::block_header_hash;
use medledger_proto::common::Block;
use prost::Message;
use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};

use crate::consensus::{Durable, Restored, WalOp, txid_of};

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("orderer storage: {0}")]
    Storage(#[from] rocksdb::Error),
    #[error("corrupt orderer record: {0}")]
    Corrupt(String),
    #[error("block {got} does not follow height {height}")]
    OutOfOrder { got: u64, height: u64 },
}

const BLOCKS: &str = "blocks";
const WAL: &str = "wal";

const VIEW: &[u8] = b"view";
const VOTED: &[u8] = b"voted";
const PENDING_PREFIX: &[u8] = b"pending/";

/// Blocks and write-ahead state.
pub struct BlockStore {
    db: DB,
    height: tokio::sync::watch::Sender<u64>,
}

fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(name)
        .ok_or_else(|| StoreError::Corrupt(format!("missing column family {name}")))
}

fn synced() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    wo
}

impl BlockStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = [BLOCKS, WAL]
            .into_iter()
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        let mut height = 0;
        if let Some(item) = db
            .iterator_cf(cf(&db, BLOCKS)?, rocksdb::IteratorMode::End)
            .next()
        {
            let (k, _) = item?;
            let n: [u8; 8] = k
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("block key".into()))?;
            height = u64::from_be_bytes(n) + 1;
        }
        let (tx, _) = tokio::sync::watch::channel(height);
        Ok(Self { db, height: tx })
    }

    pub fn height(&self) -> u64 {
        *self.height.borrow()
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.height.subscribe()
    }

    /// Appends the next block (synced).
    pub fn append(&self, block: &Block) -> Result<(), StoreError> {
        self.write(&[], std::slice::from_ref(block))
    }

    /// Writes write-ahead changes and the next blocks in one synced batch (group commit).
    pub fn write(&self, ops: &[WalOp], blocks: &[Block]) -> Result<(), StoreError> {
        let wal = cf(&self.db, WAL)?;
        let mut batch = WriteBatch::default();
        for op in ops {
            match op {
                WalOp::View(v) => batch.put_cf(wal, VIEW, v.to_be_bytes()),
                WalOp::Voted(v, s, digest) => {
                    let mut b = v.to_be_bytes().to_vec();
                    b.extend_from_slice(&s.to_be_bytes());
                    b.extend_from_slice(digest);
                    batch.put_cf(wal, VOTED, b);
                }
                WalOp::Pending(txid, env) => {
                    batch.put_cf(wal, [PENDING_PREFIX, txid.as_bytes()].concat(), env)
                }
                WalOp::Done(txids) => {
                    for t in txids {
                        batch.delete_cf(wal, [PENDING_PREFIX, t.as_bytes()].concat());
                    }
                }
            }
        }
        let mut next = self.height();
        for block in blocks {
            let n = block
                .header
                .as_ref()
                .map(|h| h.number)
                .ok_or_else(|| StoreError::Corrupt("no header".into()))?;
            if n != next {
                return Err(StoreError::OutOfOrder {
                    got: n,
                    height: next,
                });
            }
            batch.put_cf(
                cf(&self.db, BLOCKS)?,
                n.to_be_bytes(),
                block.encode_to_vec(),
            );
            next += 1;
        }
        self.db.write_opt(batch, &synced())?;
        self.height.send_replace(next);
        Ok(())
    }

    pub fn block(&self, n: u64) -> Result<Option<Block>, StoreError> {
        self.db
            .get_cf(cf(&self.db, BLOCKS)?, n.to_be_bytes())?
            .map(|b| Block::decode(b.as_slice()).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    /// What a restarting replica resumes from.
    pub fn restore(&self) -> Result<Restored, StoreError> {
        let wal = cf(&self.db, WAL)?;
        let view = self
            .db
            .get_cf(wal, VIEW)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let voted = self.db.get_cf(wal, VOTED)?.and_then(|b| {
            (b.len() >= 16).then(|| {
                let v = u64::from_be_bytes(b[..8].try_into().unwrap_or_default());
                let s = u64::from_be_bytes(b[8..16].try_into().unwrap_or_default());
                (v, s, b[16..].to_vec())
            })
        });
        let mut pending = BTreeMap::new();
        for item in self.db.prefix_iterator_cf(wal, PENDING_PREFIX) {
            let (k, v) = item?;
            if !k.starts_with(PENDING_PREFIX) {
                break;
            }
            pending.insert(
                String::from_utf8_lossy(&k[PENDING_PREFIX.len()..]).into_owned(),
                v.to_vec(),
            );
        }
        let height = self.height();
        let mut committed = HashSet::new();
        let mut last_hash = Vec::new();
        for n in 0..height {
            let b = self
                .block(n)?
                .ok_or_else(|| StoreError::Corrupt(format!("block {n} missing")))?;
            if n > 0 {
                for e in b
                    .data
                    .as_ref()
                    .map(|d| d.data.as_slice())
                    .unwrap_or_default()
                {
                    if let Some(t) = txid_of(e) {
                        committed.insert(t);
                    }
                }
            }
            if n + 1 == height {
                last_hash = b
                    .header
                    .as_ref()
                    .map(|h| block_header_hash(h).to_vec())
                    .unwrap_or_default();
            }
        }
        Ok(Restored {
            durable: Durable {
                view,
                voted,
                pending,
            },
            height,
            last_hash,
            committed_txids: committed,
        })
    }
}
