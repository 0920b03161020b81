//! Ordering benchmark: 4 BFT orderers (in-process, TLS, mutual TLS between consenters) ordering
//! real signed envelopes from concurrent clients. Reports ordered tx/s and broadcast-to-delivery
//! latency (p50, p99), measured from each Broadcast until the block holding it is delivered.
//!
//! Also the process's CPU per ordered transaction (orderers and the load generator share it; the
//! envelopes are signed before timing starts).
//!
//! `cargo run --release -p medledger-tests --example orderer_bench -- [TXS] [CLIENTS] [ROUNDS] [ORDERERS]`

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use medledger_common::channelconfig::{ChannelProfile, OrgProfile, genesis_block};
use medledger_common::protoutil::signed_envelope;
use medledger_orderer::consensus::txid_of;
use medledger_proto::common::HeaderType;
use medledger_proto::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use medledger_proto::orderer::{
    BatchSize, SeekInfo, SeekPosition, SeekSpecified, deliver_response, seek_position::Type as Seek,
};
use medledger_tests::TestOrg;
use medledger_tests::ordernet::OrdererSet;
use prost::Message;
use tokio::sync::Mutex;

/// CPU seconds (user + system) this process has used, from /proc (USER_HZ is 100 on Linux).
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let fields: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let txs = *args.first().unwrap_or(&2000);
    let clients = *args.get(1).unwrap_or(&16);
    let rounds = *args.get(2).unwrap_or(&3);
    let n = *args.get(3).unwrap_or(&4);
    let (mut rates, mut p50s, mut p99s, mut cpus) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let dir = tempfile::tempdir()?;
        let app = TestOrg::new("Hospital1MSP")?;
        let orderers = OrdererSet::prepare(dir.path(), n as u32, &[app.tls_ca.cert_pem()])?;
        let genesis = genesis_block(&ChannelProfile {
            channel_id: "medchannel".into(),
            application_orgs: vec![OrgProfile {
                msp: app.msp_config(),
                anchor_peers: vec![],
            }],
            orderer_orgs: vec![OrgProfile {
                msp: orderers.org.msp_config(),
                anchor_peers: vec![],
            }],
            consenters: orderers.consenters.clone(),
            batch_size: BatchSize {
                max_message_count: 200,
                absolute_max_bytes: 10 << 20,
                preferred_max_bytes: 2 << 20,
            },
            batch_timeout: Duration::from_millis(100),
        })?;
        std::fs::write(&orderers.genesis_path, genesis.encode_to_vec())?;
        let _running = orderers.start_all().await?;
        let client = app.identity("bench", "client", &[])?;
        let envs: Vec<_> = (0..txs)
            .map(|i| {
                signed_envelope(
                    HeaderType::EndorserTransaction,
                    "medchannel",
                    format!("tx {i} {}", "x".repeat(200)).into_bytes(),
                    &client,
                )
            })
            .collect::<Result<_, _>>()?;
        let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));

        // Watch deliveries from orderer 1.
        let root = orderers.org.tls_ca.cert_pem().as_bytes().to_vec();
        let ch =
            medledger_peer::comm::dial(&orderers.address(1), std::slice::from_ref(&root), None)
                .await
                .map_err(anyhow::Error::msg)?;
        let seek = SeekInfo {
            start: Some(SeekPosition {
                r#type: Some(Seek::Specified(SeekSpecified { number: 1 })),
            }),
            stop: Some(SeekPosition {
                r#type: Some(Seek::Specified(SeekSpecified { number: u64::MAX })),
            }),
            ..Default::default()
        };
        let env = signed_envelope(
            HeaderType::DeliverSeekInfo,
            "medchannel",
            seek.encode_to_vec(),
            &client,
        )?;
        let mut deliveries = AtomicBroadcastClient::new(ch)
            .deliver(tokio_stream::once(env))
            .await?
            .into_inner();
        let watcher_sent = sent.clone();
        let watcher = tokio::spawn(async move {
            let mut latencies = Vec::new();
            while latencies.len() < txs {
                let Ok(Some(m)) = deliveries.message().await else {
                    break;
                };
                if let Some(deliver_response::Type::Block(b)) = m.r#type {
                    let now = Instant::now();
                    let sent = watcher_sent.lock().await;
                    for e in b.data.map(|d| d.data).unwrap_or_default() {
                        if let Some(t) = txid_of(&e).and_then(|t| sent.get(&t).copied()) {
                            latencies.push(now.duration_since(t).as_secs_f64() * 1000.0);
                        }
                    }
                }
            }
            latencies
        });

        let start = Instant::now();
        let cpu_start = cpu_seconds();
        let per = envs.len().div_ceil(clients);
        let mut tasks = Vec::new();
        for (w, chunk) in envs.chunks(per).enumerate() {
            let chunk = chunk.to_vec();
            let sent = sent.clone();
            let address = orderers.address(1 + (w % n) as u32);
            let root = root.clone();
            tasks.push(tokio::spawn(async move {
                let ch = medledger_peer::comm::dial(&address, &[root], None)
                    .await
                    .map_err(anyhow::Error::msg)?;
                let mut client = AtomicBroadcastClient::new(ch);
                for env in chunk {
                    let txid = txid_of(&env.encode_to_vec()).unwrap_or_default();
                    sent.lock().await.insert(txid, Instant::now());
                    let mut s = client
                        .broadcast(tokio_stream::once(env))
                        .await?
                        .into_inner();
                    s.message().await?;
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let mut lat = tokio::time::timeout(Duration::from_secs(120), watcher).await??;
        let secs = start.elapsed().as_secs_f64();
        let cpu_ms = (cpu_seconds() - cpu_start) * 1e3 / lat.len().max(1) as f64;
        let rate = lat.len() as f64 / secs;
        let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
        println!(
            "round {round}: {} tx ordered in {secs:.2}s ({rate:.0} tx/s); broadcast-to-delivery p50 {p50:.0} ms, p99 {p99:.0} ms; CPU {cpu_ms:.2} ms/tx",
            lat.len()
        );
        cpus.push(cpu_ms);
        rates.push(rate);
        p50s.push(p50);
        p99s.push(p99);
    }
    let cpu = pct(&mut cpus, 0.5);
    println!(
        "median over {rounds} rounds ({n} orderers, {clients} clients): {:.0} tx/s, p50 {:.0} ms, p99 {:.0} ms; CPU {cpu:.2} ms/tx ({:.2} per orderer, load generator included)",
        pct(&mut rates, 0.5),
        pct(&mut p50s, 0.5),
        pct(&mut p99s, 0.5),
        cpu / n as f64
    );
    Ok(())
}
