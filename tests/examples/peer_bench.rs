//! Peer benchmark: endorsement throughput through the Gateway (each transaction endorsed by both
//! hospitals' peers: 2 endorsement signatures) and commit throughput (ordered blocks validated
//! and committed by both peers), on the in-process two-peer network over TLS on loopback.
//!
//! `cargo run --release -p medledger-tests --example peer_bench -- [TXS] [CONCURRENCY] [ROUNDS]`
//! Prints per-round figures and the median.

use std::time::Instant;

use medledger_tests::peernet::PeerNet;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let txs = *args.first().unwrap_or(&400);
    let concurrency = *args.get(1).unwrap_or(&16);
    let rounds = *args.get(2).unwrap_or(&3);
    let (mut endorse_rates, mut commit_rates) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let net = PeerNet::start("AND('Hospital1MSP.peer', 'Hospital2MSP.peer')", 30_000).await?;
        let client = net.orgs[0].identity("bench", "client", &[])?;
        let per_worker = txs / concurrency;
        let start = Instant::now();
        let mut workers = Vec::new();
        for w in 0..concurrency {
            let mut gw = net.gateway(0, client.clone()).await?;
            workers.push(tokio::spawn(async move {
                let mut prepared = Vec::new();
                for i in 0..per_worker {
                    prepared.push(gw.endorse(&["Put", &format!("w{w}-k{i}"), "value"]).await?);
                }
                anyhow::Ok((gw, prepared))
            }));
        }
        let mut ready = Vec::new();
        for w in workers {
            ready.push(w.await??);
        }
        let endorse_secs = start.elapsed().as_secs_f64();
        let n = (per_worker * concurrency) as f64;
        let start = Instant::now();
        let mut submitters = Vec::new();
        for (mut gw, prepared) in ready {
            submitters.push(tokio::spawn(async move {
                let mut last = 0;
                for (tx, env) in prepared {
                    gw.submit_prepared(&tx, env).await?;
                    last = last.max(gw.commit_status(&tx).await?.1);
                }
                anyhow::Ok(last)
            }));
        }
        let mut last = 0;
        for s in submitters {
            last = last.max(s.await??);
        }
        net.wait_height(last + 1).await?;
        let commit_secs = start.elapsed().as_secs_f64();
        endorse_rates.push(n / endorse_secs);
        commit_rates.push(n / commit_secs);
        println!(
            "round {round}: {n} tx endorsed by 2 peers in {endorse_secs:.2}s ({:.0} tx/s); submitted and committed on both peers in {commit_secs:.2}s ({:.0} tx/s)",
            n / endorse_secs,
            n / commit_secs
        );
    }
    println!(
        "median over {rounds} rounds: endorsement {:.0} tx/s, submit-to-commit {:.0} tx/s (concurrency {concurrency})",
        median(endorse_rates),
        median(commit_rates)
    );
    Ok(())
}
