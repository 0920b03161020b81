//! What a contract needs from a transaction, as a trait: the shim's `Stub` in production and an
//! in-memory ledger in unit tests.

use std::collections::BTreeMap;

use medledger_shim::Stub;

/// The caller, from its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub mspid: String,
    pub subject: String,
    /// Fabric CA attribute `role` (doctor, nurse, patient...).
    pub role: Option<String>,
    /// Node OU type (client, admin, peer...).
    pub node_type: Option<String>,
    /// Fabric CA attribute `patientId` (a patient's pseudonymous id).
    pub patient_id: Option<String>,
}

impl Caller {
    /// A caller for unit tests.
    pub fn test(
        msp: &str,
        name: &str,
        role: Option<&str>,
        node_type: &str,
        patient_id: Option<&str>,
    ) -> Self {
        Self {
            mspid: msp.into(),
            subject: format!("CN={name}, OU={node_type}"),
            role: role.map(str::to_owned),
            node_type: Some(node_type.into()),
            patient_id: patient_id.map(str::to_owned),
        }
    }
}

/// Rows of a page and the bookmark where the next page starts (empty on the last).
pub type Page = (Vec<(String, Vec<u8>)>, String);

/// One past value of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub tx_id: String,
    pub timestamp: i64,
    pub value: Vec<u8>,
    pub is_delete: bool,
    /// The block that committed it.
    pub block: u64,
}

/// A transaction's view of the ledger.
pub trait Ctx: Send {
    fn caller(&self) -> Caller;
    fn tx_id(&self) -> String;
    /// The proposal's timestamp (seconds), the same on every endorser.
    fn now(&self) -> i64;
    fn get(
        &mut self,
        key: &str,
    ) -> impl std::future::Future<Output = Result<Option<Vec<u8>>, String>> + Send;
    fn put(
        &mut self,
        key: &str,
        value: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
    fn history(
        &mut self,
        key: &str,
    ) -> impl std::future::Future<Output = Result<Vec<Change>, String>> + Send;
    fn event(&mut self, name: &str, payload: Vec<u8>);
    /// A private input from the proposal's transient map.
    fn transient(&self, name: &str) -> Option<Vec<u8>>;
    fn get_private(
        &mut self,
        collection: &str,
        key: &str,
    ) -> impl std::future::Future<Output = Result<Option<Vec<u8>>, String>> + Send;
    fn put_private(
        &mut self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
    /// Erases a private key and its history (hashes on the ledger stay).
    fn purge_private(
        &mut self,
        collection: &str,
        key: &str,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
    /// Rows whose key starts with `prefix` (a composite key prefix), one page at a time.
    fn page(
        &mut self,
        prefix: &str,
        page_size: i32,
        bookmark: &str,
    ) -> impl std::future::Future<Output = Result<Page, String>> + Send;
    /// All rows whose key starts with `prefix`.
    fn scan(
        &mut self,
        prefix: &str,
    ) -> impl std::future::Future<Output = Result<Vec<(String, Vec<u8>)>, String>> + Send;
    /// Requires `policy` (Fabric policy language) to endorse every later change of `key`.
    fn set_key_policy(
        &mut self,
        key: &str,
        policy: &str,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

/// The end of a prefix range: every key starting with the prefix sorts below it.
pub const MAX_UNICODE: char = '\u{10FFFF}';

impl Ctx for Stub {
    fn caller(&self) -> Caller {
        let c = self.creator();
        Caller {
            mspid: c.mspid.clone(),
            subject: c.subject(),
            role: c.attribute("role").map(str::to_owned),
            node_type: c.attribute("hf.Type").map(str::to_owned),
            patient_id: c.attribute("patientId").map(str::to_owned),
        }
    }
    fn tx_id(&self) -> String {
        Stub::tx_id(self).to_owned()
    }
    fn now(&self) -> i64 {
        self.tx_timestamp()
    }
    async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.get_state(key).await.map_err(|e| e.to_string())
    }
    async fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), String> {
        self.put_state(key, value).await.map_err(|e| e.to_string())
    }
    async fn history(&mut self, key: &str) -> Result<Vec<Change>, String> {
        Ok(self
            .get_history_for_key(key)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|m| Change {
                tx_id: m.tx_id,
                timestamp: m.timestamp_seconds,
                value: m.value,
                is_delete: m.is_delete,
                block: m.block_num,
            })
            .collect())
    }
    fn event(&mut self, name: &str, payload: Vec<u8>) {
        self.set_event(name, payload);
    }
    fn transient(&self, name: &str) -> Option<Vec<u8>> {
        Stub::transient(self, name).map(<[u8]>::to_vec)
    }
    async fn get_private(
        &mut self,
        collection: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, String> {
        self.get_private_data(collection, key)
            .await
            .map_err(|e| e.to_string())
    }
    async fn put_private(
        &mut self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), String> {
        self.put_private_data(collection, key, value)
            .await
            .map_err(|e| e.to_string())
    }
    async fn purge_private(&mut self, collection: &str, key: &str) -> Result<(), String> {
        self.purge_private_data(collection, key)
            .await
            .map_err(|e| e.to_string())
    }
    async fn page(&mut self, prefix: &str, page_size: i32, bookmark: &str) -> Result<Page, String> {
        self.get_state_by_range_with_pagination(
            prefix,
            &format!("{prefix}{MAX_UNICODE}"),
            page_size,
            bookmark,
        )
        .await
        .map_err(|e| e.to_string())
    }
    async fn scan(&mut self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        self.get_state_by_range(prefix, &format!("{prefix}{MAX_UNICODE}"))
            .await
            .map_err(|e| e.to_string())
    }
    async fn set_key_policy(&mut self, key: &str, policy: &str) -> Result<(), String> {
        use prost::Message;
        let env =
            medledger_common::policy::parse_signature_policy(policy).map_err(|e| e.to_string())?;
        self.set_state_validation_parameter(key, env.encode_to_vec())
            .await
            .map_err(|e| e.to_string())
    }
}

/// An in-memory ledger for unit tests: writes of a transaction are visible once `commit` is
/// called, and every committed write is kept as history.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    pub state: BTreeMap<String, Vec<u8>>,
    pub history: BTreeMap<String, Vec<Change>>,
    /// Private values by (collection, key).
    pub private: BTreeMap<(String, String), Vec<u8>>,
    /// Key-level endorsement policies set.
    pub key_policies: BTreeMap<String, String>,
    /// Collections whose values this (simulated) peer holds; reads of others fail as on a
    /// non-member peer.
    pub member_of: Vec<String>,
    /// Committed transactions so far (each commit is its own block).
    pub height: u64,
}

/// One transaction against a [`MemoryLedger`].
pub struct MemoryCtx<'a> {
    pub ledger: &'a mut MemoryLedger,
    pub caller: Caller,
    pub tx_id: String,
    pub now: i64,
    pub writes: BTreeMap<String, Vec<u8>>,
    pub private_writes: BTreeMap<(String, String), Option<Vec<u8>>>,
    pub events: Vec<(String, Vec<u8>)>,
    pub transient: BTreeMap<String, Vec<u8>>,
}

impl<'a> MemoryCtx<'a> {
    pub fn new(ledger: &'a mut MemoryLedger, caller: Caller, tx_id: &str, now: i64) -> Self {
        Self {
            ledger,
            caller,
            tx_id: tx_id.to_owned(),
            now,
            writes: BTreeMap::new(),
            private_writes: BTreeMap::new(),
            events: Vec::new(),
            transient: BTreeMap::new(),
        }
    }

    /// With a transient map entry.
    pub fn with_transient(mut self, name: &str, value: &[u8]) -> Self {
        self.transient.insert(name.to_owned(), value.to_vec());
        self
    }

    /// Applies the writes, as a valid commit would.
    pub fn commit(self) {
        let block = self.ledger.height;
        self.ledger.height += 1;
        for (k, v) in self.private_writes {
            match v {
                Some(v) => self.ledger.private.insert(k, v),
                None => self.ledger.private.remove(&k),
            };
        }
        for (k, v) in self.writes {
            self.ledger
                .history
                .entry(k.clone())
                .or_default()
                .push(Change {
                    tx_id: self.tx_id.clone(),
                    timestamp: self.now,
                    value: v.clone(),
                    is_delete: false,
                    block,
                });
            self.ledger.state.insert(k, v);
        }
    }
}

impl Ctx for MemoryCtx<'_> {
    fn caller(&self) -> Caller {
        self.caller.clone()
    }
    fn tx_id(&self) -> String {
        self.tx_id.clone()
    }
    fn now(&self) -> i64 {
        self.now
    }
    async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.ledger.state.get(key).cloned())
    }
    async fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), String> {
        self.writes.insert(key.to_owned(), value);
        Ok(())
    }
    async fn history(&mut self, key: &str) -> Result<Vec<Change>, String> {
        Ok(self
            .ledger
            .history
            .get(key)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .rev()
            .collect())
    }
    fn event(&mut self, name: &str, payload: Vec<u8>) {
        self.events.push((name.to_owned(), payload));
    }
    fn transient(&self, name: &str) -> Option<Vec<u8>> {
        self.transient.get(name).cloned()
    }
    async fn get_private(
        &mut self,
        collection: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, String> {
        if !self.ledger.member_of.iter().any(|c| c == collection) {
            return Err(format!(
                "this peer is not a member of collection {collection}"
            ));
        }
        Ok(self
            .ledger
            .private
            .get(&(collection.to_owned(), key.to_owned()))
            .cloned())
    }
    async fn put_private(
        &mut self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), String> {
        self.private_writes
            .insert((collection.to_owned(), key.to_owned()), Some(value));
        Ok(())
    }
    async fn purge_private(&mut self, collection: &str, key: &str) -> Result<(), String> {
        self.private_writes
            .insert((collection.to_owned(), key.to_owned()), None);
        Ok(())
    }
    async fn page(&mut self, prefix: &str, page_size: i32, bookmark: &str) -> Result<Page, String> {
        let start = if bookmark.is_empty() {
            prefix
        } else {
            bookmark
        };
        let mut rows: Vec<(String, Vec<u8>)> = self
            .ledger
            .state
            .range(start.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(page_size.max(1) as usize + 1)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let next = if rows.len() > page_size.max(1) as usize {
            rows.pop().map(|(k, _)| k).unwrap_or_default()
        } else {
            String::new()
        };
        Ok((rows, next))
    }
    async fn scan(&mut self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        Ok(self
            .ledger
            .state
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    async fn set_key_policy(&mut self, key: &str, policy: &str) -> Result<(), String> {
        medledger_common::policy::parse_signature_policy(policy).map_err(|e| e.to_string())?;
        self.ledger
            .key_policies
            .insert(key.to_owned(), policy.to_owned());
        Ok(())
    }
}
