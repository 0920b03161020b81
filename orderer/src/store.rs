//! The orderer's RocksDB store for one channel: committed blocks (with their quorum signatures)
//! and the consensus core's write-ahead state (view with the NewView that installed it, last
//! vote with its proposal, prepared certificate, accepted requests). Every write is synced before the node acts on it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use medledger_common::protoutil::block_header_hash;
use medledger_common::stored;
use medledger_proto::common::Block;
use medledger_proto::medledger::consensus::{ConsensusMessage, PreparedCertificate};
use prost::Message;
use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};

use crate::consensus::{Durable, Restored, WalOp, block_txids};
use crate::recent::{self, OlderTxids, RecentTxids};

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
/// Transaction id → number of the block that committed it (block 0, the genesis, excluded).
const TXIDS: &str = "txids";
/// In WAL: the height up to which TXIDS indexes the blocks (written with each block).
const TXIDS_INDEXED: &[u8] = b"txids_indexed";
/// Blocks indexed per write batch when a store from before the index is opened.
const BACKFILL_BATCH_BLOCKS: u64 = 1_000;

const VIEW: &[u8] = b"view";
const VIEW_CHANGE: &[u8] = b"view_change";
const VOTED: &[u8] = b"voted";
const ACCEPTED: &[u8] = b"accepted";
const PREPARED: &[u8] = b"prepared";
const NEW_VIEW: &[u8] = b"new_view";
const PENDING_PREFIX: &[u8] = b"pending/";

/// Blocks and write-ahead state.
pub struct BlockStore {
    db: Arc<DB>,
    height: tokio::sync::watch::Sender<u64>,
}

/// The store's transaction id index, for the consensus core's duplicate checks.
struct IndexedTxids(Arc<DB>);

impl OlderTxids for IndexedTxids {
    fn contains(&self, txid: &str) -> bool {
        let Ok(txids) = cf(&self.0, TXIDS) else {
            return false;
        };
        match self.0.get_pinned_cf(txids, txid.as_bytes()) {
            Ok(found) => found.is_some(),
            Err(e) => {
                // Refusing an unknown id would be wrong; taking a known one again is what
                // happened before the index, and the peers mark it DUPLICATE_TXID.
                tracing::error!(error = %e, "transaction id index unreadable");
                false
            }
        }
    }
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
        let cfs = [BLOCKS, WAL, TXIDS]
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
        let store = Self {
            db: Arc::new(db),
            height: tx,
        };
        store.backfill_txids()?;
        Ok(store)
    }

    /// Indexes the transaction ids of blocks written before the index existed (once).
    fn backfill_txids(&self) -> Result<(), StoreError> {
        let height = self.height();
        let wal = cf(&self.db, WAL)?;
        let mut next = match self.db.get_cf(wal, TXIDS_INDEXED)? {
            Some(b) => u64::from_be_bytes(
                b.as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("transaction id index height".into()))?,
            ),
            None => 0,
        };
        if next < height {
            tracing::info!(
                from = next,
                to = height,
                "indexing the transaction ids of stored blocks"
            );
        }
        while next < height {
            let end = height.min(next.saturating_add(BACKFILL_BATCH_BLOCKS));
            let mut batch = WriteBatch::default();
            for n in next..end {
                let b = self
                    .block(n)?
                    .ok_or_else(|| StoreError::Corrupt(format!("block {n} missing")))?;
                self.index_txids(&mut batch, n, &b)?;
            }
            batch.put_cf(wal, TXIDS_INDEXED, end.to_be_bytes());
            self.db.write_opt(batch, &synced())?;
            next = end;
        }
        Ok(())
    }

    fn index_txids(&self, batch: &mut WriteBatch, n: u64, block: &Block) -> Result<(), StoreError> {
        if n == 0 {
            return Ok(());
        }
        let txids = cf(&self.db, TXIDS)?;
        for t in block_txids(block) {
            batch.put_cf(txids, t.as_bytes(), n.to_be_bytes());
        }
        Ok(())
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
        // The sequence of the vote as it stands after the ops so far (outer `None`: as stored).
        let mut voted_seq: Option<Option<u64>> = None;
        for op in ops {
            match op {
                WalOp::View(v) => batch.put_cf(wal, VIEW, v.to_be_bytes()),
                WalOp::ViewChange(v) => batch.put_cf(wal, VIEW_CHANGE, v.to_be_bytes()),
                WalOp::NewView(m) => batch.put_cf(wal, NEW_VIEW, stored::encode(m)),
                WalOp::Accepted {
                    view,
                    seq,
                    digest,
                    pre_prepare,
                } => {
                    let mut b = view.to_be_bytes().to_vec();
                    b.extend_from_slice(&seq.to_be_bytes());
                    b.extend_from_slice(digest);
                    batch.put_cf(wal, VOTED, b);
                    batch.put_cf(wal, ACCEPTED, stored::encode(pre_prepare));
                    voted_seq = Some(Some(*seq));
                }
                WalOp::Prepared(Some(c)) => batch.put_cf(wal, PREPARED, stored::encode(c)),
                WalOp::Prepared(None) => batch.delete_cf(wal, PREPARED),
                WalOp::Decided(seq) => {
                    let current = match voted_seq {
                        Some(s) => s,
                        None => self.voted()?.map(|(_, s, _)| s),
                    };
                    // Only a vote at or below the decided sequence is done with; a later one
                    // (never written before this op by the core, but cheap to honour) stays.
                    if current.is_some_and(|s| s <= *seq) {
                        batch.delete_cf(wal, VOTED);
                        batch.delete_cf(wal, ACCEPTED);
                        voted_seq = Some(None);
                    }
                }
                WalOp::Pending(txid, env) => batch.put_cf(
                    wal,
                    [PENDING_PREFIX, txid.as_bytes()].concat(),
                    stored::pack(env),
                ),
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
                stored::encode(block),
            );
            self.index_txids(&mut batch, n, block)?;
            next += 1;
        }
        if !blocks.is_empty() {
            batch.put_cf(wal, TXIDS_INDEXED, next.to_be_bytes());
        }
        self.db.write_opt(batch, &synced())?;
        self.height.send_replace(next);
        Ok(())
    }

    pub fn block(&self, n: u64) -> Result<Option<Block>, StoreError> {
        self.db
            .get_cf(cf(&self.db, BLOCKS)?, n.to_be_bytes())?
            .map(|b| stored::decode(&b).map_err(|e| StoreError::Corrupt(format!("block {n}: {e}"))))
            .transpose()
    }

    /// The written-ahead vote: (view, seq, digest).
    fn voted(&self) -> Result<Option<(u64, u64, Vec<u8>)>, StoreError> {
        let wal = cf(&self.db, WAL)?;
        Ok(self.db.get_cf(wal, VOTED)?.and_then(|b| {
            let v = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
            let s = u64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
            Some((v, s, b.get(16..)?.to_vec()))
        }))
    }

    /// A written-ahead protobuf record, refused as corrupt if it does not decode.
    fn record<M: Message + Default>(&self, key: &[u8]) -> Result<Option<M>, StoreError> {
        let wal = cf(&self.db, WAL)?;
        self.db
            .get_cf(wal, key)?
            .map(|b| {
                stored::decode(&b).map_err(|e| {
                    StoreError::Corrupt(format!("{}: {e}", String::from_utf8_lossy(key)))
                })
            })
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
        let view_change = self
            .db
            .get_cf(wal, VIEW_CHANGE)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let voted = self.voted()?;
        let accepted = self.record::<ConsensusMessage>(ACCEPTED)?;
        let prepared = self.record::<PreparedCertificate>(PREPARED)?;
        let new_view = self.record::<ConsensusMessage>(NEW_VIEW)?;
        let mut pending = BTreeMap::new();
        for item in self.db.prefix_iterator_cf(wal, PENDING_PREFIX) {
            let (k, v) = item?;
            if !k.starts_with(PENDING_PREFIX) {
                break;
            }
            let txid = String::from_utf8_lossy(&k[PENDING_PREFIX.len()..]).into_owned();
            let env = stored::unpack(&v)
                .map_err(|e| StoreError::Corrupt(format!("pending request {txid}: {e}")))?;
            pending.insert(txid, env.into_owned());
        }
        let height = self.height();
        // Only the blocks in the deduplication window are read: a restart costs the same at any
        // chain length.
        let mut committed = RecentTxids::with_older(Arc::new(IndexedTxids(self.db.clone())));
        let mut last_hash = Vec::new();
        let mut last_config = 0;
        for n in recent::window_start(height)..height {
            let b = self
                .block(n)?
                .ok_or_else(|| StoreError::Corrupt(format!("block {n} missing")))?;
            if n > 0 {
                committed.record_block(n, &b);
            }
            if n + 1 == height {
                // The node refuses to start on a last block naming no configuration block
                // (`node::config_in_force`), before this is read.
                if n > 0 {
                    last_config =
                        medledger_common::protoutil::signed_last_config(&b).unwrap_or_default();
                }
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
                view_change,
                voted,
                accepted,
                prepared,
                new_view,
                pending,
            },
            height,
            last_hash,
            committed_txids: committed,
            last_config,
        })
    }
}

#[cfg(test)]
mod tests {
    use medledger_common::protoutil::new_block;
    use medledger_proto::medledger::consensus::{Body, PrePrepare, body::Kind};

    use super::*;

    /// A fresh store in a directory removed on drop.
    struct TempStore(std::path::PathBuf);

    impl TempStore {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "medledger-orderer-store-{name}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            Self(dir)
        }
        fn open(&self) -> BlockStore {
            BlockStore::open(&self.0).expect("open store")
        }
    }

    impl Drop for TempStore {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn pre_prepare(seq: u64) -> ConsensusMessage {
        let body = Body {
            kind: Some(Kind::PrePrepare(PrePrepare {
                view: 2,
                seq,
                block: Some(new_block(seq, vec![1; 32], vec![b"tx".to_vec()])),
            })),
        };
        ConsensusMessage {
            sender: 3,
            channel_id: "ch".into(),
            body: body.encode_to_vec(),
            signature: vec![7],
        }
    }

    fn accepted(seq: u64) -> WalOp {
        WalOp::Accepted {
            view: 2,
            seq,
            digest: vec![seq as u8; 32],
            pre_prepare: pre_prepare(seq),
        }
    }

    #[test]
    fn the_accepted_proposal_and_certificate_survive_a_reopen_and_go_once_decided() {
        let dir = TempStore::new("wal");
        let cert = PreparedCertificate {
            pre_prepare: Some(pre_prepare(1)),
            prepares: vec![pre_prepare(1)],
        };
        {
            let store = dir.open();
            store
                .write(
                    &[
                        accepted(1),
                        WalOp::Prepared(Some(cert.clone())),
                        WalOp::NewView(pre_prepare(9)),
                    ],
                    &[],
                )
                .expect("write");
        }
        let store = dir.open();
        let d = store.restore().expect("restore").durable;
        assert_eq!(d.voted, Some((2, 1, vec![1; 32])));
        assert_eq!(d.accepted, Some(pre_prepare(1)));
        assert_eq!(d.prepared, Some(cert.clone()));
        assert_eq!(d.new_view, Some(pre_prepare(9)));
        // Deciding seq 1 drops its vote and proposal, in the same batch as the next vote too;
        // the certificate stays (it is the last committed block's).
        store
            .write(&[WalOp::Decided(1), accepted(2), WalOp::Decided(1)], &[])
            .expect("write");
        let d = store.restore().expect("restore").durable;
        assert_eq!(d.voted, Some((2, 2, vec![2; 32])));
        assert_eq!(d.accepted, Some(pre_prepare(2)));
        assert_eq!(d.prepared, Some(cert));
        store
            .write(&[WalOp::Decided(2), WalOp::Prepared(None)], &[])
            .expect("write");
        let d = store.restore().expect("restore").durable;
        assert_eq!((d.voted, d.accepted, d.prepared), (None, None, None));
    }

    /// A request envelope with this transaction id (nothing else is read from it here).
    fn request(txid: &str) -> Vec<u8> {
        use medledger_proto::common::{ChannelHeader, Envelope, Header, Payload};
        let channel_header = ChannelHeader {
            tx_id: txid.into(),
            ..Default::default()
        };
        let payload = Payload {
            header: Some(Header {
                channel_header: channel_header.encode_to_vec(),
                signature_header: Vec::new(),
            }),
            data: Vec::new(),
        };
        Envelope {
            payload: payload.encode_to_vec(),
            signature: Vec::new(),
        }
        .encode_to_vec()
    }

    #[test]
    fn a_restart_reads_only_the_deduplication_window_of_a_long_chain() {
        let dir = TempStore::new("window");
        let store = dir.open();
        let last = recent::DEDUP_WINDOW_BLOCKS + 4;
        let mut prev = Vec::new();
        let mut chain = Vec::new();
        for n in 0..=last {
            let b = new_block(n, prev, vec![request(&format!("tx{n}"))]);
            prev = block_header_hash(b.header.as_ref().expect("header")).to_vec();
            chain.push(b);
        }
        store.write(&[], &chain).expect("write");
        // Blocks before the window are not read at all: a missing one does not matter.
        store
            .db
            .delete_cf(cf(&store.db, BLOCKS).expect("blocks"), 2u64.to_be_bytes())
            .expect("delete");
        let r = store.restore().expect("restore");
        assert_eq!(r.height, last + 1);
        assert_eq!(r.last_hash, prev);
        assert_eq!(
            r.committed_txids.in_window(),
            recent::DEDUP_WINDOW_BLOCKS as usize
        );
        // Older blocks' ids come from the index: still refused, as before the window.
        for n in [1, 2, 4, 5, last] {
            assert!(r.committed_txids.contains(&format!("tx{n}")), "tx{n}");
        }
        assert!(!r.committed_txids.contains("tx-never"));
    }

    #[test]
    fn a_store_from_before_the_index_is_indexed_when_opened() {
        let dir = TempStore::new("backfill");
        {
            let store = dir.open();
            let mut prev = Vec::new();
            let mut chain = Vec::new();
            for n in 0..2500u64 {
                let b = new_block(n, prev, vec![request(&format!("tx{n}"))]);
                prev = block_header_hash(b.header.as_ref().expect("header")).to_vec();
                chain.push(b);
            }
            store.write(&[], &chain).expect("write");
            // As a store written before the index existed.
            let txids = cf(&store.db, TXIDS).expect("txids");
            for n in 0..2500u64 {
                store.db.delete_cf(txids, format!("tx{n}")).expect("delete");
            }
            let wal = cf(&store.db, WAL).expect("wal");
            store.db.delete_cf(wal, TXIDS_INDEXED).expect("delete");
            let r = store.restore().expect("restore");
            assert!(!r.committed_txids.contains("tx3"));
        }
        let r = dir.open().restore().expect("restore");
        assert!(r.committed_txids.contains("tx3") && r.committed_txids.contains("tx2499"));
        assert!(
            !r.committed_txids.contains("tx0"),
            "the genesis block is not indexed"
        );
    }

    #[test]
    fn a_corrupt_accepted_record_is_an_error_not_a_panic() {
        let dir = TempStore::new("corrupt");
        let store = dir.open();
        let wal = cf(&store.db, WAL).expect("wal");
        store.db.put_cf(wal, ACCEPTED, [0xff, 0xff]).expect("put");
        assert!(matches!(store.restore(), Err(StoreError::Corrupt(_))));
    }
}
