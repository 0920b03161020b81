//! The ledger's column families and how their keys are laid out.

use prost::Message;
use rocksdb::DB;

use super::{LedgerError, PvtSlot};

pub(super) const BLOCKS: &str = "blocks";
pub(super) const HASHES: &str = "hashes";
pub(super) const TXIDS: &str = "txids";
pub(super) const STATE: &str = "state";
pub(super) const HISTORY: &str = "history";
pub(super) const META: &str = "meta";
/// `ns \0 coll \0 keyhash` → VersionedValue whose value is the value hash: every peer keeps it.
pub(super) const PVT_HASHED: &str = "pvt_hashed";
/// `ns \0 coll \0 key` → sealed VersionedValue: the private values of member collections.
pub(super) const PVT_STATE: &str = "pvt_state";
/// `ns \0 coll \0 keyhash` → key: finds a private key from the hash a block carries.
pub(super) const PVT_KEYS: &str = "pvt_keys";
/// `block tx ns \0 coll` → sealed KVRWSet: committed private write sets, served to members.
pub(super) const PVT_WRITESETS: &str = "pvt_writesets";
/// `ns \0 coll \0 len(key) key` + `block tx` → (): where a key's private writes are, for erasure.
pub(super) const PVT_INDEX: &str = "pvt_index";
/// `block tx ns \0 coll` → (): committed private write sets this member does not have yet.
pub(super) const PVT_MISSING: &str = "pvt_missing";
/// `expiry block tx` + `p ns \0 coll \0 len key` (private value) or `h ns \0 coll \0 keyhash`
/// (hashed state) → (): blockToLive purges.
pub(super) const PVT_EXPIRY: &str = "pvt_expiry";
/// `txid \0 ns \0 coll \0 hash` → height ‖ sealed KVRWSet: endorsed, not yet committed.
pub(super) const TRANSIENT: &str = "transient";

/// `sealed \0 ns \0 coll` in META: this collection has sealed data, so its key must exist.
pub(super) const SEALED_MARK_PREFIX: &[u8] = b"sealed\0";
pub(super) const HEIGHT_KEY: &[u8] = b"height";
pub(super) const LAST_HASH_KEY: &[u8] = b"last_hash";
/// The number of the newest configuration block (absent: the genesis block).
pub(super) const LAST_CONFIG_KEY: &[u8] = b"last_config";

pub(super) fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

pub(super) fn coll_prefix(ns: &str, coll: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(ns.len() + coll.len() + 2);
    k.extend_from_slice(ns.as_bytes());
    k.push(0);
    k.extend_from_slice(coll.as_bytes());
    k.push(0);
    k
}

pub(super) fn coll_key(ns: &str, coll: &str, key: &[u8]) -> Vec<u8> {
    let mut k = coll_prefix(ns, coll);
    k.extend_from_slice(key);
    k
}

pub(super) fn slot_key(s: &PvtSlot) -> Vec<u8> {
    let mut k = Vec::new();
    k.extend_from_slice(&be(s.block_num));
    k.extend_from_slice(&be(s.tx_num));
    k.extend_from_slice(s.namespace.as_bytes());
    k.push(0);
    k.extend_from_slice(s.collection.as_bytes());
    k
}

pub(super) fn parse_slot(k: &[u8]) -> Option<PvtSlot> {
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
pub(super) fn pvt_key_ref(ns: &str, coll: &str, key: &str) -> Vec<u8> {
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
pub(super) fn state_key(ns: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(ns.len() + 1 + key.len());
    k.extend_from_slice(ns.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// `namespace \0 key \0 block(8) tx(8)`; the key is length-prefixed so one key's history never
/// interleaves with another key that extends it.
pub(super) fn history_prefix(ns: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(ns.len() + key.len() + 6);
    k.extend_from_slice(ns.as_bytes());
    k.push(0);
    k.extend_from_slice(&(key.len() as u32).to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

pub(super) fn decode<M: Message + Default>(bytes: &[u8], what: &str) -> Result<M, LedgerError> {
    M::decode(bytes).map_err(|e| LedgerError::Corrupt(format!("{what}: {e}")))
}

pub(super) fn parse_key_ref(r: &[u8]) -> Option<(String, String, String)> {
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

pub(super) fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, LedgerError> {
    db.cf_handle(name)
        .ok_or_else(|| LedgerError::Corrupt(format!("missing column family {name}")))
}

/// The smallest key above every key that starts with `prefix` (none when the prefix is all
/// 0xff bytes, or empty).
pub(super) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Iterates column family `name` forward from `from`, stopping below `upper`. The bound is set
/// in RocksDB itself, not only checked on what it returns: without it, stepping past the last
/// key in range walks over every deleted key that follows it (the transient store deletes an
/// entry per committed transaction), which profiling showed as a tenth of a peer's CPU.
pub(super) fn bounded_iter<'a>(
    db: &'a DB,
    name: &str,
    from: &[u8],
    upper: Option<Vec<u8>>,
) -> Result<rocksdb::DBIteratorWithThreadMode<'a, DB>, LedgerError> {
    let mut opts = rocksdb::ReadOptions::default();
    if let Some(u) = upper {
        opts.set_iterate_upper_bound(u);
    }
    Ok(db.iterator_cf_opt(
        cf(db, name)?,
        opts,
        rocksdb::IteratorMode::From(from, rocksdb::Direction::Forward),
    ))
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_end_is_above_every_key_with_the_prefix_and_below_the_next() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
        let end = prefix_end(b"tx1\0").expect("bounded");
        assert!(b"tx1\0\xff\xff".as_slice() < end.as_slice());
        assert!(end.as_slice() <= b"tx1\x01".as_slice());
    }
}
