//! Answering the chaincode's calls during a transaction (state, ranges, history, private data,
//! metadata) from the transaction's simulator, with Fabric's query batching.

use super::*;

/// Query results as the shim expects them: encoded `queryresult.KV` rows.
pub(super) fn kv_rows(ns: &str, rows: Vec<(String, Vec<u8>)>) -> VecDeque<Vec<u8>> {
    rows.into_iter()
        .map(|(key, value)| {
            Kv {
                namespace: ns.to_owned(),
                key,
                value,
            }
            .encode_to_vec()
        })
        .collect()
}

impl ChaincodeSupport {
    pub(super) fn reply(
        msg: &ChaincodeMessage,
        result: Result<Vec<u8>, String>,
    ) -> ChaincodeMessage {
        let (kind, payload) = match result {
            Ok(p) => (Msg::Response, p),
            Err(reason) => {
                let name = Msg::try_from(msg.r#type)
                    .map(|t| t.as_str_name().to_owned())
                    .unwrap_or_else(|_| msg.r#type.to_string());
                (
                    Msg::Error,
                    format!("{name} failed: transaction ID: {}: {reason}", msg.txid).into_bytes(),
                )
            }
        };
        ChaincodeMessage {
            r#type: kind as i32,
            payload,
            txid: msg.txid.clone(),
            channel_id: msg.channel_id.clone(),
            ..Default::default()
        }
    }

    /// The first batch of `rows`; the rest waits under a new iterator id for QUERY_STATE_NEXT.
    /// Refused when the transaction already holds `MAX_OPEN_QUERY_ITERATORS` unfinished ones.
    pub(super) fn first_batch(
        &self,
        mut rows: VecDeque<Vec<u8>>,
        iterators: &mut HashMap<String, VecDeque<Vec<u8>>>,
    ) -> Result<QueryResponse, String> {
        if rows.len() > QUERY_BATCH && iterators.len() >= MAX_OPEN_QUERY_ITERATORS {
            return Err(format!(
                "too many open query iterators (at most {MAX_OPEN_QUERY_ITERATORS}): close or \
                 exhaust one first"
            ));
        }
        let id = format!("it{}", self.next_iterator.fetch_add(1, Ordering::Relaxed));
        let resp = self.batch(id.clone(), &mut rows);
        if resp.has_more {
            iterators.insert(id, rows);
        }
        Ok(resp)
    }

    pub(super) fn batch(&self, id: String, rows: &mut VecDeque<Vec<u8>>) -> QueryResponse {
        let n = rows.len().min(QUERY_BATCH);
        let results: Vec<QueryResultBytes> = rows
            .drain(..n)
            .map(|r| QueryResultBytes { result_bytes: r })
            .collect();
        QueryResponse {
            results,
            has_more: !rows.is_empty(),
            id,
            metadata: Vec::new(),
        }
    }

    /// Answers one state request of the chaincode (never panics on bad payloads).
    pub(super) fn serve(
        &self,
        ns: &str,
        msg: &ChaincodeMessage,
        sim: &mut TxSimulator,
        iterators: &mut HashMap<String, VecDeque<Vec<u8>>>,
    ) -> ChaincodeMessage {
        fn dec<M: Message + Default>(b: &[u8]) -> Result<M, String> {
            M::decode(b).map_err(|e| format!("malformed payload: {e}"))
        }
        let sim_err = |e: SimulationError| e.to_string();
        let no_private = |collection: &str| -> Result<(), String> {
            if collection.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "collection {collection:?}: state metadata of private data is not supported"
                ))
            }
        };
        let result: Result<Vec<u8>, String> = match Msg::try_from(msg.r#type) {
            Ok(Msg::GetState) => dec::<GetState>(&msg.payload).and_then(|r| {
                if r.collection.is_empty() {
                    sim.get_state(ns, &r.key)
                } else {
                    sim.get_private_data(ns, &r.collection, &r.key)
                }
                .map(Option::unwrap_or_default)
                .map_err(sim_err)
            }),
            Ok(Msg::GetPrivateDataHash) => dec::<GetState>(&msg.payload).and_then(|r| {
                sim.get_private_data_hash(ns, &r.collection, &r.key)
                    .map(Option::unwrap_or_default)
                    .map_err(sim_err)
            }),
            Ok(Msg::PutState) => dec::<PutState>(&msg.payload).and_then(|r| {
                if r.collection.is_empty() {
                    sim.put_state(ns, &r.key, r.value)
                } else {
                    sim.put_private_data(ns, &r.collection, &r.key, r.value)
                }
                .map(|()| Vec::new())
                .map_err(sim_err)
            }),
            Ok(Msg::DelState) => dec::<DelState>(&msg.payload).and_then(|r| {
                if r.collection.is_empty() {
                    sim.del_state(ns, &r.key)
                } else {
                    sim.del_private_data(ns, &r.collection, &r.key)
                }
                .map(|()| Vec::new())
                .map_err(sim_err)
            }),
            Ok(Msg::PurgePrivateData) => dec::<DelState>(&msg.payload).and_then(|r| {
                sim.purge_private_data(ns, &r.collection, &r.key)
                    .map(|()| Vec::new())
                    .map_err(sim_err)
            }),
            Ok(Msg::GetStateMetadata) => dec::<GetStateMetadata>(&msg.payload).and_then(|r| {
                no_private(&r.collection)?;
                let entries = sim.get_state_metadata(ns, &r.key).map_err(sim_err)?;
                Ok(StateMetadataResult {
                    entries: entries
                        .into_iter()
                        .map(|e| StateMetadata {
                            metakey: e.name,
                            value: e.value,
                        })
                        .collect(),
                }
                .encode_to_vec())
            }),
            Ok(Msg::PutStateMetadata) => dec::<PutStateMetadata>(&msg.payload).and_then(|r| {
                no_private(&r.collection)?;
                let m = r.metadata.ok_or("metadata is missing")?;
                sim.put_state_metadata(ns, &r.key, &m.metakey, m.value)
                    .map(|()| Vec::new())
                    .map_err(sim_err)
            }),
            Ok(Msg::GetStateByRange) => dec::<GetStateByRange>(&msg.payload).and_then(|r| {
                if !r.collection.is_empty() {
                    if !r.metadata.is_empty() {
                        return Err("pagination is not supported for private data queries".into());
                    }
                    let rows = sim
                        .private_range(ns, &r.collection, &r.start_key, &r.end_key)
                        .map_err(sim_err)?;
                    return Ok(self
                        .first_batch(kv_rows(ns, rows), iterators)?
                        .encode_to_vec());
                }
                let paging = if r.metadata.is_empty() {
                    None
                } else {
                    Some(dec::<QueryMetadata>(&r.metadata)?)
                };
                let start = match &paging {
                    Some(p) if !p.bookmark.is_empty() => p.bookmark.clone(),
                    _ => r.start_key.clone(),
                };
                let page = paging.as_ref().map(|p| p.page_size.max(1) as usize);
                let (rows, next) = sim.range(ns, &start, &r.end_key, page).map_err(sim_err)?;
                let mut encoded = kv_rows(ns, rows);
                if page.is_some() {
                    let id = format!("it{}", self.next_iterator.fetch_add(1, Ordering::Relaxed));
                    let count = encoded.len() as i32;
                    let mut resp = QueryResponse {
                        results: encoded
                            .drain(..)
                            .map(|r| QueryResultBytes { result_bytes: r })
                            .collect(),
                        has_more: false,
                        id,
                        metadata: Vec::new(),
                    };
                    resp.metadata = QueryResponseMetadata {
                        fetched_records_count: count,
                        bookmark: next.unwrap_or_default(),
                    }
                    .encode_to_vec();
                    Ok(resp.encode_to_vec())
                } else {
                    Ok(self.first_batch(encoded, iterators)?.encode_to_vec())
                }
            }),
            Ok(Msg::GetHistoryForKey) => dec::<GetHistoryForKey>(&msg.payload).and_then(|r| {
                let history = sim
                    .ledger()
                    .history(ns, &r.key)
                    .map_err(|e| e.to_string())?;
                let encoded: VecDeque<Vec<u8>> = history
                    .into_iter()
                    .rev()
                    .map(|h| {
                        KeyModification {
                            tx_id: h.tx_id,
                            value: h.value,
                            timestamp: Some(h.timestamp.unwrap_or_default()),
                            is_delete: h.is_delete,
                            medledger_block_num: h.block_num,
                            medledger_tx_num: h.tx_num,
                        }
                        .encode_to_vec()
                    })
                    .collect();
                Ok(self.first_batch(encoded, iterators)?.encode_to_vec())
            }),
            Ok(Msg::QueryStateNext) => dec::<QueryStateNext>(&msg.payload).and_then(|r| {
                let rows = iterators
                    .get_mut(&r.id)
                    .ok_or_else(|| format!("query iterator {} not found", r.id))?;
                let resp = self.batch(r.id.clone(), rows);
                if !resp.has_more {
                    iterators.remove(&r.id);
                }
                Ok(resp.encode_to_vec())
            }),
            Ok(Msg::QueryStateClose) => dec::<QueryStateClose>(&msg.payload).map(|r| {
                iterators.remove(&r.id);
                QueryResponse {
                    results: vec![],
                    has_more: false,
                    id: r.id,
                    metadata: vec![],
                }
                .encode_to_vec()
            }),
            Ok(Msg::GetQueryResult) => Err(
                "rich queries need a CouchDB state database, which this peer does not use".into(),
            ),
            Ok(Msg::InvokeChaincode) => {
                Err("chaincode-to-chaincode invocation is not supported".into())
            }
            _ => Err(format!("unexpected message type {}", msg.r#type)),
        };
        Self::reply(msg, result)
    }
}

#[cfg(test)]
mod tests {
    use medledger_common::mutation::{MutationRng, iterations, mutate};
    use medledger_common::protoutil;
    use medledger_proto::medledger::ledger::VersionedValue;

    use super::*;
    use crate::storage::ledger::{BlockCommit, Ledger, StateUpdate};

    /// Keys in namespace `kv`: more than one query batch, so ranges leave iterators open.
    const KEYS: usize = 2 * QUERY_BATCH + 10;

    fn ledger(dir: &std::path::Path) -> Arc<Ledger> {
        let ledger = Ledger::open(dir).unwrap();
        let updates = (0..KEYS)
            .map(|i| StateUpdate {
                namespace: "kv".into(),
                key: format!("k{i:03}"),
                value: Some(VersionedValue {
                    block_num: 0,
                    tx_num: 0,
                    value: vec![b'v'; 8],
                    metadata: vec![],
                }),
            })
            .collect();
        ledger
            .commit(BlockCommit {
                block: protoutil::new_block(0, vec![], vec![]),
                updates,
                ..Default::default()
            })
            .unwrap();
        Arc::new(ledger)
    }

    fn call(kind: Msg, payload: impl Message) -> ChaincodeMessage {
        ChaincodeMessage {
            r#type: kind as i32,
            payload: payload.encode_to_vec(),
            txid: "tx".into(),
            channel_id: "ch".into(),
            ..Default::default()
        }
    }

    fn range() -> ChaincodeMessage {
        call(
            Msg::GetStateByRange,
            GetStateByRange {
                start_key: "k".into(),
                end_key: "l".into(),
                ..Default::default()
            },
        )
    }

    /// A chaincode that opens ranges and never finishes them holds at most
    /// `MAX_OPEN_QUERY_ITERATORS` at once; closing one makes room.
    #[test]
    fn open_query_iterators_per_transaction_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let support = ChaincodeSupport::new(Duration::from_secs(5), MessageLimits::default());
        let mut sim = TxSimulator::new(ledger(dir.path()));
        let mut iterators = HashMap::new();
        let mut first = String::new();
        for i in 0..MAX_OPEN_QUERY_ITERATORS {
            let reply = support.serve("kv", &range(), &mut sim, &mut iterators);
            assert_eq!(reply.r#type, Msg::Response as i32, "range {i}");
            let resp = QueryResponse::decode(reply.payload.as_slice()).unwrap();
            assert!(resp.has_more);
            if i == 0 {
                first = resp.id;
            }
        }
        let refused = support.serve("kv", &range(), &mut sim, &mut iterators);
        assert_eq!(refused.r#type, Msg::Error as i32);
        assert!(String::from_utf8_lossy(&refused.payload).contains("too many open query"));
        assert_eq!(iterators.len(), MAX_OPEN_QUERY_ITERATORS);
        let close = call(Msg::QueryStateClose, QueryStateClose { id: first });
        assert_eq!(
            support.serve("kv", &close, &mut sim, &mut iterators).r#type,
            Msg::Response as i32
        );
        let again = support.serve("kv", &range(), &mut sim, &mut iterators);
        assert_eq!(again.r#type, Msg::Response as i32);
    }

    /// The peer's side of the shim protocol under hostile chaincode messages: mutations of every
    /// state call (and random bytes) get a RESPONSE or an ERROR, never a panic, and iterators
    /// stay bounded. `MEDLEDGER_FUZZ_ITERATIONS` sets the inputs; inputs/s is printed.
    #[test]
    fn chaincode_messages_never_panic_the_peer() {
        let dir = tempfile::tempdir().unwrap();
        let support = ChaincodeSupport::new(Duration::from_secs(5), MessageLimits::default());
        let ledger = ledger(dir.path());
        let page = QueryMetadata {
            page_size: 10,
            bookmark: "k050".into(),
        }
        .encode_to_vec();
        let seeds: Vec<Vec<u8>> = [
            call(
                Msg::GetState,
                GetState {
                    key: "k001".into(),
                    collection: String::new(),
                },
            ),
            call(
                Msg::GetState,
                GetState {
                    key: "k001".into(),
                    collection: "c".into(),
                },
            ),
            call(
                Msg::GetPrivateDataHash,
                GetState {
                    key: "k".into(),
                    collection: "c".into(),
                },
            ),
            call(
                Msg::PutState,
                PutState {
                    key: "k001".into(),
                    value: b"v".to_vec(),
                    collection: String::new(),
                },
            ),
            call(
                Msg::DelState,
                DelState {
                    key: "k002".into(),
                    collection: String::new(),
                },
            ),
            call(
                Msg::PurgePrivateData,
                DelState {
                    key: "k".into(),
                    collection: "c".into(),
                },
            ),
            call(
                Msg::GetStateMetadata,
                GetStateMetadata {
                    key: "k001".into(),
                    collection: String::new(),
                },
            ),
            call(
                Msg::PutStateMetadata,
                PutStateMetadata {
                    key: "k001".into(),
                    collection: String::new(),
                    metadata: Some(StateMetadata {
                        metakey: "VALIDATION_PARAMETER".into(),
                        value: vec![1, 2],
                    }),
                },
            ),
            range(),
            call(
                Msg::GetStateByRange,
                GetStateByRange {
                    start_key: "k".into(),
                    end_key: "l".into(),
                    collection: String::new(),
                    metadata: page,
                },
            ),
            call(Msg::QueryStateNext, QueryStateNext { id: "it1".into() }),
            call(Msg::QueryStateClose, QueryStateClose { id: "it2".into() }),
            call(
                Msg::GetHistoryForKey,
                GetHistoryForKey { key: "k001".into() },
            ),
        ]
        .iter()
        .map(Message::encode_to_vec)
        .collect();
        let n = iterations(5_000);
        let mut rng = MutationRng::new(0x5eed);
        let started = std::time::Instant::now();
        // A fresh transaction every 64 inputs: read-only and writing ones both occur.
        let mut sim = TxSimulator::new(ledger.clone());
        let mut iterators = HashMap::new();
        for i in 0..n {
            if i % 64 == 0 {
                sim = TxSimulator::new(ledger.clone());
                iterators.clear();
            }
            let mut bytes = if i % 8 == 7 {
                (0..rng.below(256)).map(|_| rng.next_u64() as u8).collect()
            } else {
                seeds[rng.below(seeds.len())].clone()
            };
            mutate(&mut rng, &mut bytes);
            let Ok(msg) = ChaincodeMessage::decode(bytes.as_slice()) else {
                continue;
            };
            let reply = support.serve("kv", &msg, &mut sim, &mut iterators);
            assert!(
                [Msg::Response as i32, Msg::Error as i32].contains(&reply.r#type),
                "{reply:?}"
            );
            assert_eq!(
                (&reply.txid, &reply.channel_id),
                (&msg.txid, &msg.channel_id)
            );
            assert!(iterators.len() <= MAX_OPEN_QUERY_ITERATORS);
        }
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        eprintln!(
            "peer: ChaincodeMessage from a chaincode: {n} inputs, {:.0} inputs/s",
            n as f64 / secs
        );
    }
}
