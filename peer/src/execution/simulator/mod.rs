//! Transaction simulation: chaincode reads committed state and the simulator records what it read
//! (with versions), wrote, and which ranges it scanned, as Fabric's read-write set. As in Fabric a
//! transaction does not read its own writes, and writing an empty value deletes.
//!
//! Private data: reads and writes of collections are kept apart; the public read-write set gets
//! only their hashes (`collection_hashed_rwset`), the private write set is returned separately
//! for the transient store and dissemination. Collection rules (memberOnlyRead/Write, whether
//! this peer holds the values) are checked here, at endorsement.
//!
//! Isolation: simulation reads the latest committed state without holding a lock; every read is
//! recorded with its version and re-checked at commit (MVCC and range phantoms), so a commit that
//! lands mid-simulation invalidates the transaction instead of corrupting state.

use std::collections::BTreeMap;
use std::sync::Arc;

use medledger_common::msp::Identity;
use medledger_proto::kvrwset::{
    HashedRwSet, KvMetadataEntry, KvMetadataWrite, KvRead, KvReadHash, KvWrite, KvWriteHash,
    KvrwSet, QueryReads, RangeQueryInfo, Version, range_query_info::ReadsInfo,
};
use medledger_proto::medledger::ledger::VersionedValue;
use medledger_proto::rwset::{
    CollectionHashedReadWriteSet, CollectionPvtReadWriteSet, NsReadWriteSet, TxPvtReadWriteSet,
    TxReadWriteSet,
};
use prost::Message;

use crate::channel::collection::{Collection, Collections};
use crate::channel::pvtdata::add_collection;
use crate::storage::ledger::{Ledger, LedgerError, pvt_hash};

mod private;

/// Most results one range query may return (Fabric's `totalQueryLimit`).
pub const TOTAL_QUERY_LIMIT: usize = 100_000;

type NsKey = (String, String);
type CollKey = (String, String, String);

/// A private write: a value, a delete, or a purge (erasure, with its history).
#[derive(Debug, Clone)]
enum PvtWrite {
    Put(Vec<u8>),
    Delete,
    Purge,
}

/// What private data access needs to know: the chaincode's collections, who is asking, and
/// which organisation this peer belongs to.
#[derive(Clone)]
pub struct PrivateAccess {
    pub collections: Collections,
    pub creator: Identity,
    pub peer_msp: String,
}

/// A page of `(key, value)` rows and the key the next page starts at, if any.
pub type RangePage = (Vec<(String, Vec<u8>)>, Option<String>);

/// Records one transaction's reads and writes.
pub struct TxSimulator {
    ledger: Arc<Ledger>,
    reads: BTreeMap<NsKey, Option<Version>>,
    writes: BTreeMap<NsKey, Option<Vec<u8>>>,
    metadata_writes: BTreeMap<NsKey, Vec<KvMetadataEntry>>,
    range_queries: Vec<(String, RangeQueryInfo)>,
    /// A paginated query was run: Fabric then forbids writes in the same transaction.
    paginated: bool,
    private: Option<PrivateAccess>,
    pvt_reads: BTreeMap<CollKey, Option<Version>>,
    pvt_writes: BTreeMap<CollKey, PvtWrite>,
}

/// A simulation's results: the public read-write set (with collection hashes) and the private
/// write sets, if any collection was written.
pub struct SimulationResults {
    pub public: TxReadWriteSet,
    pub private: Option<TxPvtReadWriteSet>,
}

/// Errors simulating.
#[derive(Debug, thiserror::Error)]
pub enum SimulationError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("{0}")]
    Rejected(String),
}

fn version(v: &VersionedValue) -> Version {
    Version {
        block_num: v.block_num,
        tx_num: v.tx_num,
    }
}

impl TxSimulator {
    pub fn new(ledger: Arc<Ledger>) -> Self {
        Self {
            ledger,
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
            metadata_writes: BTreeMap::new(),
            range_queries: Vec::new(),
            paginated: false,
            private: None,
            pvt_reads: BTreeMap::new(),
            pvt_writes: BTreeMap::new(),
        }
    }

    /// Enables private data calls with these collections and caller.
    pub fn with_private(mut self, access: PrivateAccess) -> Self {
        self.private = Some(access);
        self
    }

    /// The ledger simulated against.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    fn read(&mut self, ns: &str, key: &str) -> Result<Option<VersionedValue>, SimulationError> {
        let v = self.ledger.state(ns, key)?;
        self.reads
            .entry((ns.to_owned(), key.to_owned()))
            .or_insert_with(|| v.as_ref().map(version));
        Ok(v)
    }

    /// A key's committed value (recorded as a read).
    pub fn get_state(&mut self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, SimulationError> {
        Ok(self.read(ns, key)?.map(|v| v.value))
    }

    /// A key's committed metadata (recorded as a read).
    pub fn get_state_metadata(
        &mut self,
        ns: &str,
        key: &str,
    ) -> Result<Vec<KvMetadataEntry>, SimulationError> {
        Ok(self.read(ns, key)?.map(|v| v.metadata).unwrap_or_default())
    }

    fn check_writable(&self) -> Result<(), SimulationError> {
        if self.paginated {
            return Err(SimulationError::Rejected(
                "transaction has already performed a paginated query; writes are not allowed"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Writes a value; an empty value deletes, as in Fabric.
    pub fn put_state(
        &mut self,
        ns: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), SimulationError> {
        self.check_writable()?;
        if key.is_empty() {
            return Err(SimulationError::Rejected("key must not be empty".into()));
        }
        let value = if value.is_empty() { None } else { Some(value) };
        self.writes.insert((ns.to_owned(), key.to_owned()), value);
        Ok(())
    }

    /// Deletes a key.
    pub fn del_state(&mut self, ns: &str, key: &str) -> Result<(), SimulationError> {
        self.check_writable()?;
        self.writes.insert((ns.to_owned(), key.to_owned()), None);
        Ok(())
    }

    /// Sets one metadata entry of a key (e.g. `VALIDATION_PARAMETER` for key-level endorsement).
    pub fn put_state_metadata(
        &mut self,
        ns: &str,
        key: &str,
        name: &str,
        value: Vec<u8>,
    ) -> Result<(), SimulationError> {
        self.check_writable()?;
        let mut entries = match self.metadata_writes.get(&(ns.to_owned(), key.to_owned())) {
            Some(e) => e.clone(),
            None => self.get_state_metadata(ns, key)?,
        };
        entries.retain(|e| e.name != name);
        entries.push(KvMetadataEntry {
            name: name.to_owned(),
            value,
        });
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        self.metadata_writes
            .insert((ns.to_owned(), key.to_owned()), entries);
        Ok(())
    }

    /// Keys in `[start, end)` (empty end = unbounded), recorded for phantom detection. With
    /// `page_size`, at most that many results and the bookmark (next start key) if more remain.
    pub fn range(
        &mut self,
        ns: &str,
        start: &str,
        end: &str,
        page_size: Option<usize>,
    ) -> Result<RangePage, SimulationError> {
        if page_size.is_some() {
            if !self.writes.is_empty() || !self.metadata_writes.is_empty() {
                return Err(SimulationError::Rejected(
                    "paginated queries are only allowed in read-only transactions".into(),
                ));
            }
            self.paginated = true;
        }
        let limit = page_size.map_or(TOTAL_QUERY_LIMIT, |p| p.min(TOTAL_QUERY_LIMIT));
        let mut rows = self.ledger.range(ns, start, end, limit + 1)?;
        // One row beyond the page tells whether more remain; its key is the next page's start.
        let next_start = if rows.len() > limit {
            rows.pop().map(|(k, _)| k)
        } else {
            None
        };
        let exhausted = next_start.is_none();
        let info = RangeQueryInfo {
            start_key: start.to_owned(),
            end_key: if exhausted {
                end.to_owned()
            } else {
                rows.last().map(|(k, _)| k.clone()).unwrap_or_default()
            },
            itr_exhausted: exhausted,
            reads_info: Some(ReadsInfo::RawReads(QueryReads {
                kv_reads: rows
                    .iter()
                    .map(|(k, v)| KvRead {
                        key: k.clone(),
                        version: Some(version(v)),
                    })
                    .collect(),
            })),
        };
        self.range_queries.push((ns.to_owned(), info));
        Ok((
            rows.into_iter().map(|(k, v)| (k, v.value)).collect(),
            next_start,
        ))
    }

    /// The read-write sets, namespaces and keys sorted as Fabric sorts them.
    pub fn build(self) -> SimulationResults {
        // Per namespace and collection: the private set and its hashed form.
        let mut colls: BTreeMap<(String, String), (KvrwSet, HashedRwSet)> = BTreeMap::new();
        for ((ns, coll, key), v) in &self.pvt_reads {
            let e = colls.entry((ns.clone(), coll.clone())).or_default();
            e.0.reads.push(KvRead {
                key: key.clone(),
                version: *v,
            });
            e.1.hashed_reads.push(KvReadHash {
                key_hash: pvt_hash(key.as_bytes()),
                version: *v,
            });
        }
        for ((ns, coll, key), w) in &self.pvt_writes {
            let e = colls.entry((ns.clone(), coll.clone())).or_default();
            let (value, is_delete, is_purge) = match w {
                PvtWrite::Put(v) => (v.clone(), false, false),
                PvtWrite::Delete => (Vec::new(), true, false),
                PvtWrite::Purge => (Vec::new(), true, true),
            };
            e.1.hashed_writes.push(KvWriteHash {
                key_hash: pvt_hash(key.as_bytes()),
                is_delete,
                value_hash: if is_delete {
                    Vec::new()
                } else {
                    pvt_hash(&value)
                },
                is_purge,
            });
            e.0.writes.push(KvWrite {
                key: key.clone(),
                is_delete,
                value,
            });
        }
        let any_private_write = !self.pvt_writes.is_empty();
        let mut public = self.build_public();
        let mut private = TxPvtReadWriteSet::default();
        for ((ns, coll), (set, hashed)) in colls {
            let bytes = set.encode_to_vec();
            let hashed_set = CollectionHashedReadWriteSet {
                collection_name: coll.clone(),
                hashed_rwset: hashed.encode_to_vec(),
                pvt_rwset_hash: pvt_hash(&bytes),
            };
            let i = match public.ns_rwset.iter().position(|n| n.namespace == ns) {
                Some(i) => i,
                None => {
                    public.ns_rwset.push(NsReadWriteSet {
                        namespace: ns.clone(),
                        rwset: KvrwSet::default().encode_to_vec(),
                        collection_hashed_rwset: Vec::new(),
                    });
                    public
                        .ns_rwset
                        .sort_by(|a, b| a.namespace.cmp(&b.namespace));
                    public
                        .ns_rwset
                        .iter()
                        .position(|n| n.namespace == ns)
                        .unwrap_or_default()
                }
            };
            public.ns_rwset[i].collection_hashed_rwset.push(hashed_set);
            if !set.writes.is_empty() {
                add_collection(
                    &mut private,
                    &ns,
                    CollectionPvtReadWriteSet {
                        collection_name: coll,
                        rwset: bytes,
                    },
                );
            }
        }
        SimulationResults {
            public,
            private: any_private_write.then_some(private),
        }
    }

    fn build_public(&self) -> TxReadWriteSet {
        let mut by_ns: BTreeMap<String, KvrwSet> = BTreeMap::new();
        for ((ns, key), v) in &self.reads {
            by_ns.entry(ns.clone()).or_default().reads.push(KvRead {
                key: key.clone(),
                version: *v,
            });
        }
        for (ns, info) in &self.range_queries {
            by_ns
                .entry(ns.clone())
                .or_default()
                .range_queries_info
                .push(info.clone());
        }
        for ((ns, key), v) in &self.writes {
            by_ns.entry(ns.clone()).or_default().writes.push(KvWrite {
                key: key.clone(),
                is_delete: v.is_none(),
                value: v.clone().unwrap_or_default(),
            });
        }
        for ((ns, key), entries) in &self.metadata_writes {
            by_ns
                .entry(ns.clone())
                .or_default()
                .metadata_writes
                .push(KvMetadataWrite {
                    key: key.clone(),
                    entries: entries.clone(),
                });
        }
        TxReadWriteSet {
            data_model: 0,
            ns_rwset: by_ns
                .into_iter()
                .map(|(namespace, set)| NsReadWriteSet {
                    namespace,
                    rwset: set.encode_to_vec(),
                    collection_hashed_rwset: Vec::new(),
                })
                .collect(),
        }
    }
}
