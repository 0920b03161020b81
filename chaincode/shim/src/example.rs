//! A small example chaincode, used by the peer's tests: keys and values with events, history,
//! ranges, key-level endorsement, and deliberate failures (error, panic, slow) to exercise the
//! peer's error paths.

use medledger_common::policy::parse_signature_policy;
use prost::Message;

use crate::{Chaincode, Response, ResponseExt, Stub};

/// Functions (`args[0]`): `Put k v`, `Get k`, `Del k`, `Increment k`, `Range start end`,
/// `History k`, `SetPolicy k policy`, `Whoami`, `Transient name`, `Fail msg`, `Panic`, `Sleep ms`,
/// `Page start end size bookmark`, `PutIndexed type attr1 attr2 value`, `ByPartial type attr1`;
/// private data: `PutPrivate coll k` (value from transient `value`), `GetPrivate coll k`,
/// `PrivateHash coll k` (hex), `DelPrivate coll k`, `PurgePrivate coll k`,
/// `RangePrivate coll start end`, `PutPrivateIndexed coll type attr value-from-transient`,
/// `ByPartialPrivate coll type attr`.
pub struct KvStore;

fn param(p: &[String], i: usize, name: &str) -> Result<String, Response> {
    p.get(i)
        .cloned()
        .ok_or_else(|| Response::error(format!("missing argument {name}")))
}

impl KvStore {
    async fn run(&self, stub: &mut Stub) -> Result<Response, Response> {
        let p = stub.params();
        let err = |e: crate::ShimError| Response::error(e.to_string());
        match stub.function().as_str() {
            "Put" => {
                let (k, v) = (param(&p, 0, "key")?, param(&p, 1, "value")?);
                stub.put_state(&k, v.clone().into_bytes())
                    .await
                    .map_err(err)?;
                stub.set_event("Put", k.into_bytes());
                Ok(Response::success(v))
            }
            "Get" => {
                let k = param(&p, 0, "key")?;
                match stub.get_state(&k).await.map_err(err)? {
                    Some(v) => Ok(Response::success(v)),
                    None => Err(Response::error(format!("key {k} not found"))),
                }
            }
            "Del" => {
                let k = param(&p, 0, "key")?;
                stub.del_state(&k).await.map_err(err)?;
                Ok(Response::success(Vec::new()))
            }
            "Increment" => {
                let k = param(&p, 0, "key")?;
                let n = stub
                    .get_state(&k)
                    .await
                    .map_err(err)?
                    .and_then(|v| String::from_utf8(v).ok()?.parse::<u64>().ok())
                    .unwrap_or(0)
                    + 1;
                stub.put_state(&k, n.to_string().into_bytes())
                    .await
                    .map_err(err)?;
                Ok(Response::success(n.to_string()))
            }
            "Range" => {
                let (s, e) = (param(&p, 0, "start")?, param(&p, 1, "end")?);
                let rows = stub.get_state_by_range(&s, &e).await.map_err(err)?;
                let keys: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
                Ok(Response::success(
                    serde_json::to_vec(&keys).unwrap_or_default(),
                ))
            }
            "Page" => {
                let (s, e) = (param(&p, 0, "start")?, param(&p, 1, "end")?);
                let size: i32 = param(&p, 2, "size")?
                    .parse()
                    .map_err(|_| Response::error("size must be a number"))?;
                let bookmark = p.get(3).cloned().unwrap_or_default();
                let (rows, next) = stub
                    .get_state_by_range_with_pagination(&s, &e, size, &bookmark)
                    .await
                    .map_err(err)?;
                let keys: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
                Ok(Response::success(
                    serde_json::to_vec(&serde_json::json!({"keys": keys, "bookmark": next}))
                        .unwrap_or_default(),
                ))
            }
            "PutIndexed" => {
                let (t, a, b, v) = (
                    param(&p, 0, "type")?,
                    param(&p, 1, "attr1")?,
                    param(&p, 2, "attr2")?,
                    param(&p, 3, "value")?,
                );
                let key = Stub::create_composite_key(&t, &[&a, &b]).map_err(err)?;
                stub.put_state(&key, v.into_bytes()).await.map_err(err)?;
                Ok(Response::success(Vec::new()))
            }
            "ByPartial" => {
                let (t, a) = (param(&p, 0, "type")?, param(&p, 1, "attr1")?);
                let rows = stub
                    .get_state_by_partial_composite_key(&t, &[&a])
                    .await
                    .map_err(err)?;
                let parts: Vec<Vec<String>> = rows
                    .iter()
                    .filter_map(|(k, _)| Stub::split_composite_key(k).map(|(_, attrs)| attrs))
                    .collect();
                Ok(Response::success(
                    serde_json::to_vec(&parts).unwrap_or_default(),
                ))
            }
            "History" => {
                let k = param(&p, 0, "key")?;
                let h = stub.get_history_for_key(&k).await.map_err(err)?;
                let list: Vec<serde_json::Value> = h
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "txId": m.tx_id,
                            "value": String::from_utf8_lossy(&m.value),
                            "isDelete": m.is_delete,
                            "timestamp": m.timestamp_seconds,
                        })
                    })
                    .collect();
                Ok(Response::success(
                    serde_json::to_vec(&list).unwrap_or_default(),
                ))
            }
            "SetPolicy" => {
                let (k, policy) = (param(&p, 0, "key")?, param(&p, 1, "policy")?);
                let env =
                    parse_signature_policy(&policy).map_err(|e| Response::error(e.to_string()))?;
                stub.set_state_validation_parameter(&k, env.encode_to_vec())
                    .await
                    .map_err(err)?;
                Ok(Response::success(Vec::new()))
            }
            "Whoami" => {
                let c = stub.creator();
                Ok(Response::success(format!(
                    "{} {}",
                    c.mspid,
                    c.attribute("role").unwrap_or("-")
                )))
            }
            "Transient" => {
                let name = param(&p, 0, "name")?;
                Ok(Response::success(
                    stub.transient(&name).unwrap_or_default().to_vec(),
                ))
            }
            "PutPrivate" => {
                let (c, k) = (param(&p, 0, "collection")?, param(&p, 1, "key")?);
                let v = stub
                    .transient("value")
                    .ok_or_else(|| Response::error("transient field \"value\" is missing"))?
                    .to_vec();
                stub.put_private_data(&c, &k, v).await.map_err(err)?;
                Ok(Response::success(Vec::new()))
            }
            "GetPrivate" => {
                let (c, k) = (param(&p, 0, "collection")?, param(&p, 1, "key")?);
                match stub.get_private_data(&c, &k).await.map_err(err)? {
                    Some(v) => Ok(Response::success(v)),
                    None => Err(Response::error(format!("private key {k} not found"))),
                }
            }
            "PrivateHash" => {
                let (c, k) = (param(&p, 0, "collection")?, param(&p, 1, "key")?);
                let h = stub.get_private_data_hash(&c, &k).await.map_err(err)?;
                Ok(Response::success(h.map(hex::encode).unwrap_or_default()))
            }
            "DelPrivate" => {
                let (c, k) = (param(&p, 0, "collection")?, param(&p, 1, "key")?);
                stub.del_private_data(&c, &k).await.map_err(err)?;
                Ok(Response::success(Vec::new()))
            }
            "PurgePrivate" => {
                let (c, k) = (param(&p, 0, "collection")?, param(&p, 1, "key")?);
                stub.purge_private_data(&c, &k).await.map_err(err)?;
                Ok(Response::success(Vec::new()))
            }
            "RangePrivate" => {
                let (c, s, e) = (
                    param(&p, 0, "collection")?,
                    param(&p, 1, "start")?,
                    param(&p, 2, "end")?,
                );
                let rows = stub
                    .get_private_data_by_range(&c, &s, &e)
                    .await
                    .map_err(err)?;
                let keys: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
                Ok(Response::success(
                    serde_json::to_vec(&keys).unwrap_or_default(),
                ))
            }
            "PutPrivateIndexed" => {
                let (c, t, a) = (
                    param(&p, 0, "collection")?,
                    param(&p, 1, "type")?,
                    param(&p, 2, "attr")?,
                );
                let v = stub
                    .transient("value")
                    .ok_or_else(|| Response::error("transient field \"value\" is missing"))?
                    .to_vec();
                let key = Stub::create_composite_key(&t, &[&a]).map_err(err)?;
                stub.put_private_data(&c, &key, v).await.map_err(err)?;
                Ok(Response::success(Vec::new()))
            }
            "ByPartialPrivate" => {
                let (c, t, a) = (
                    param(&p, 0, "collection")?,
                    param(&p, 1, "type")?,
                    param(&p, 2, "attr")?,
                );
                let rows = stub
                    .get_private_data_by_partial_composite_key(&c, &t, &[&a])
                    .await
                    .map_err(err)?;
                let values: Vec<String> = rows
                    .iter()
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                    .collect();
                Ok(Response::success(
                    serde_json::to_vec(&values).unwrap_or_default(),
                ))
            }
            "Fail" => Err(Response::error(param(&p, 0, "message")?)),
            "Panic" => panic!("asked to panic"),
            "Sleep" => {
                let ms: u64 = param(&p, 0, "ms")?
                    .parse()
                    .map_err(|_| Response::error("ms must be a number"))?;
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                Ok(Response::success(Vec::new()))
            }
            f => Err(Response::error(format!("unknown function {f:?}"))),
        }
    }
}

impl Chaincode for KvStore {
    async fn invoke(&self, stub: &mut Stub) -> Response {
        self.run(stub).await.unwrap_or_else(|e| e)
    }
}
