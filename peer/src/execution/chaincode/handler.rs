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
    pub(super) fn first_batch(
        &self,
        mut rows: VecDeque<Vec<u8>>,
        iterators: &mut HashMap<String, VecDeque<Vec<u8>>>,
    ) -> QueryResponse {
        let id = format!("it{}", self.next_iterator.fetch_add(1, Ordering::Relaxed));
        let resp = self.batch(id.clone(), &mut rows);
        if resp.has_more {
            iterators.insert(id, rows);
        }
        resp
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
                        .first_batch(kv_rows(ns, rows), iterators)
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
                    Ok(self.first_batch(encoded, iterators).encode_to_vec())
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
                Ok(self.first_batch(encoded, iterators).encode_to_vec())
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
