//! End-to-end benchmark of a running test network (`network/network.sh up && deployCC`): N
//! concurrent clients submit through Hospital1's Gateway a fixed count of medical `CreateRecord`
//! transactions (FHIR content in the transient map, private data) and of plain key writes (`kv`
//! `Put`), each endorsed by both hospitals and ordered by the BFT orderers; prints committed tx/s
//! and p50/p95/p99 submit-to-commit latency (endorse + submit + commit status) per kind, and the
//! p50/p99 of each of those three stages.
//!
//! `network/bench.sh [CLIENTS] [COUNT]` (run from the repository root).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use medledger_common::SigningIdentity;
use medledger_common::protoutil::{Invocation, build_signed_proposal};
use medledger_proto::gateway::gateway_client::GatewayClient;
use medledger_proto::gateway::{
    CommitStatusRequest, EndorseRequest, SignedCommitStatusRequest, SubmitRequest,
};
use prost::Message;
use tonic::transport::Channel;

const CHANNEL: &str = "medchannel";

/// One transaction to send: chaincode, arguments, transient map.
type Call = (String, Vec<String>, HashMap<String, Vec<u8>>);

struct Client {
    gw: GatewayClient<Channel>,
    signer: SigningIdentity,
}

/// How long one transaction took, in all and in each Gateway call.
#[derive(Clone, Copy)]
struct Timing {
    total: Duration,
    endorse: Duration,
    submit: Duration,
    commit: Duration,
}

impl Client {
    /// Endorse (by both hospitals), sign, submit, wait for the commit; returns the latencies.
    async fn transact(
        &mut self,
        chaincode: &str,
        args: Vec<String>,
        transient: HashMap<String, Vec<u8>>,
    ) -> anyhow::Result<Timing> {
        let start = Instant::now();
        let inv = Invocation {
            channel: CHANNEL.into(),
            chaincode: chaincode.into(),
            args: args.into_iter().map(String::into_bytes).collect(),
            transient,
            is_init: false,
        };
        let (sp, tx_id) = build_signed_proposal(&inv, &self.signer)?;
        let mut env = self
            .gw
            .endorse(EndorseRequest {
                transaction_id: tx_id.clone(),
                channel_id: CHANNEL.into(),
                proposed_transaction: Some(sp),
                endorsing_organizations: vec!["Hospital1MSP".into(), "Hospital2MSP".into()],
            })
            .await?
            .into_inner()
            .prepared_transaction
            .context("no prepared transaction")?;
        let endorsed = Instant::now();
        env.signature = self.signer.sign(&env.payload)?;
        self.gw
            .submit(SubmitRequest {
                transaction_id: tx_id.clone(),
                channel_id: CHANNEL.into(),
                prepared_transaction: Some(env),
            })
            .await?;
        let submitted = Instant::now();
        let request = CommitStatusRequest {
            transaction_id: tx_id.clone(),
            channel_id: CHANNEL.into(),
            identity: self.signer.serialized().to_vec(),
        }
        .encode_to_vec();
        let signature = self.signer.sign(&request)?;
        let status = self
            .gw
            .commit_status(SignedCommitStatusRequest { request, signature })
            .await?
            .into_inner();
        if status.result != 0 {
            bail!("transaction {tx_id} committed with code {}", status.result);
        }
        Ok(Timing {
            total: start.elapsed(),
            endorse: endorsed - start,
            submit: submitted - endorsed,
            commit: submitted.elapsed(),
        })
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn progress(label: &str, done: usize, total: usize) {
    let width = 40;
    let filled = done * width / total.max(1);
    eprint!(
        "\r{label:<12} [{}{}] {done}/{total}",
        "#".repeat(filled),
        " ".repeat(width - filled)
    );
    let _ = std::io::stderr().flush();
}

async fn run_kind(
    label: &str,
    clients: usize,
    count: usize,
    connect: &(dyn Fn() -> futures::future::BoxFuture<'static, anyhow::Result<Client>> + Sync),
    make: Arc<dyn Fn(usize) -> Call + Send + Sync>,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..clients {
        let mut client = connect().await?;
        let (next, done, make) = (next.clone(), done.clone(), make.clone());
        let label = label.to_owned();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let (cc, args, transient) = make(i);
                latencies.push(client.transact(&cc, args, transient).await?);
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                if d % 10 == 0 || d == count {
                    progress(&label, d, count);
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut timings: Vec<Timing> = Vec::new();
    for w in workers {
        timings.extend(w.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!();
    let sorted = |stage: fn(&Timing) -> Duration| {
        let mut v: Vec<Duration> = timings.iter().map(stage).collect();
        v.sort();
        v
    };
    let all = sorted(|t| t.total);
    let ms = |p: f64| percentile(&all, p).as_secs_f64() * 1e3;
    let stages = [
        ("endorse", sorted(|t| t.endorse)),
        ("submit", sorted(|t| t.submit)),
        ("commit", sorted(|t| t.commit)),
    ];
    let stage_ms = |v: &[Duration], p: f64| percentile(v, p).as_secs_f64() * 1e3;
    println!(
        "{label:<12} {count} committed in {secs:.1} s: {:.0} tx/s; submit-to-commit p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms ({clients} clients)",
        count as f64 / secs,
        ms(0.50),
        ms(0.95),
        ms(0.99),
    );
    println!(
        "{:<12} stages p50 / p99: {}",
        "",
        stages
            .iter()
            .map(|(name, v)| format!(
                "{name} {:.0} / {:.0} ms",
                stage_ms(v.as_slice(), 0.50),
                stage_ms(v.as_slice(), 0.99)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Ok(path) = std::env::var("BENCH_JSON") {
        let stage_json: String = stages
            .iter()
            .map(|(name, v)| {
                format!(
                    ",\"{name}_p50_ms\":{:.1},\"{name}_p99_ms\":{:.1}",
                    stage_ms(v.as_slice(), 0.50),
                    stage_ms(v.as_slice(), 0.99)
                )
            })
            .collect();
        // One JSON object per line, for network/bench.sh to gather.
        let line = format!(
            "{{\"kind\":\"{label}\",\"clients\":{clients},\"committed\":{count},\"seconds\":{secs:.3},\"tx_per_s\":{:.1},\"p50_ms\":{:.1},\"p95_ms\":{:.1},\"p99_ms\":{:.1}{stage_json}}}\n",
            count as f64 / secs,
            ms(0.50),
            ms(0.95),
            ms(0.99)
        );
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?
            .write_all(line.as_bytes())?;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let clients = *args.first().unwrap_or(&16);
    let count = *args.get(1).unwrap_or(&400);
    let root = PathBuf::from(std::env::var("MEDLEDGER_ROOT").unwrap_or_else(|_| ".".into()));
    let orgs = root.join("network/organizations");
    if !orgs.exists() {
        bail!(
            "{} does not exist: bring the network up first (network/network.sh up && network/network.sh deployCC)",
            orgs.display()
        );
    }
    let peer = std::env::var("BENCH_PEER").unwrap_or_else(|_| "localhost:7051".into());
    let signer = SigningIdentity::load(&orgs.join("hospital1/users/doctor1/msp"), "Hospital1MSP")
        .context("doctor1's MSP folder")?;
    let tls_root = std::fs::read(orgs.join("hospital1/tlsca/tlsca-cert.pem"))?;
    let connect = {
        let (peer, signer, tls_root) = (peer.clone(), signer.clone(), tls_root.clone());
        move || -> futures::future::BoxFuture<'static, anyhow::Result<Client>> {
            let (peer, signer, tls_root) = (peer.clone(), signer.clone(), tls_root.clone());
            Box::pin(async move {
                let ch = medledger_peer::comm::dial(&peer, &[tls_root], None)
                    .await
                    .map_err(anyhow::Error::msg)?;
                Ok(Client {
                    gw: GatewayClient::new(ch),
                    signer,
                })
            })
        }
    };
    let run_id = medledger_common::msp::unix_now();
    println!(
        "MedLedger network benchmark: {clients} clients, {count} transactions per kind, through {peer}"
    );
    let content = br#"{"resourceType":"Observation","status":"final","code":{"text":"heart rate"},"valueQuantity":{"value":72,"unit":"beats/min"}}"#;
    run_kind(
        "CreateRecord",
        clients,
        count,
        &connect,
        Arc::new(move |i| {
            let body = format!(
                r#"{{"id":"B{run_id}-{i}","patientId":"P-{:04}","resourceType":"Observation"}}"#,
                i % 1000
            );
            (
                "medical".to_owned(),
                vec!["CreateRecord".to_owned(), body],
                HashMap::from([
                    ("content".to_owned(), content.to_vec()),
                    ("salt".to_owned(), rand::random::<[u8; 32]>().to_vec()),
                ]),
            )
        }),
    )
    .await?;
    run_kind(
        "kv Put",
        clients,
        count,
        &connect,
        Arc::new(move |i| {
            (
                "kv".to_owned(),
                vec![
                    "Put".to_owned(),
                    format!("b{run_id}-{i}"),
                    "value".to_owned(),
                ],
                HashMap::new(),
            )
        }),
    )
    .await?;
    Ok(())
}
