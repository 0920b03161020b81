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
}

/// One past value of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub tx_id: String,
    pub timestamp: i64,
    pub value: Vec<u8>,
    pub is_delete: bool,
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
}

impl Ctx for Stub {
    fn caller(&self) -> Caller {
        let c = self.creator();
        Caller {
            mspid: c.mspid.clone(),
            subject: c.subject(),
            role: c.attribute("role").map(str::to_owned),
            node_type: c.attribute("hf.Type").map(str::to_owned),
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
            })
            .collect())
    }
    fn event(&mut self, name: &str, payload: Vec<u8>) {
        self.set_event(name, payload);
    }
}

/// An in-memory ledger for unit tests: writes of a transaction are visible once `commit` is
/// called, and every committed write is kept as history.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    pub state: BTreeMap<String, Vec<u8>>,
    pub history: BTreeMap<String, Vec<Change>>,
}

/// One transaction against a [`MemoryLedger`].
pub struct MemoryCtx<'a> {
    pub ledger: &'a mut MemoryLedger,
    pub caller: Caller,
    pub tx_id: String,
    pub now: i64,
    pub writes: BTreeMap<String, Vec<u8>>,
    pub events: Vec<(String, Vec<u8>)>,
}

impl<'a> MemoryCtx<'a> {
    pub fn new(ledger: &'a mut MemoryLedger, caller: Caller, tx_id: &str, now: i64) -> Self {
        Self {
            ledger,
            caller,
            tx_id: tx_id.to_owned(),
            now,
            writes: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    /// Applies the writes, as a valid commit would.
    pub fn commit(self) {
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
}
