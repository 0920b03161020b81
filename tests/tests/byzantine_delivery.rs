//! Block delivery against Byzantine orderers: peers keep committing, with the honest blocks only,
//! when orderers withhold blocks or send forged ones; orderers serve HEADER_WITH_SIG attestations
//! that verify on their signatures alone.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use medledger_common::protoutil::block_header_hash;
use medledger_orderer::byzantine::Misbehaviour;
use medledger_peer::node::DeliveryClientConfig;
use medledger_proto::common::Block;
use medledger_proto::orderer::seek_info::SeekContentType;
use medledger_proto::protos::TxValidationCode;
use medledger_tests::peernet::{NetOptions, PeerNet};

const BOTH: &str = "AND('Hospital1MSP.peer', 'Hospital2MSP.peer')";

/// A network whose orderers 1-3 (of 4) commit `fault` towards Deliver clients while ordering
/// honestly: only orderer 4 gives whole, true blocks.
async fn network_with(fault: &str) -> anyhow::Result<PeerNet> {
    let faults = Misbehaviour::parse(fault).map_err(anyhow::Error::msg)?;
    PeerNet::build(NetOptions {
        delivery_client: DeliveryClientConfig {
            block_censorship_timeout_ms: 1_500,
            min_reconnect_interval_ms: 50,
            max_reconnect_interval_ms: 500,
        },
        byzantine_orderers: (1..=3).map(|id| (id, faults)).collect(),
        ..NetOptions::new(BOTH)
    })
    .await
}

/// Submits through Hospital1's peer and checks that both peers hold exactly the blocks the
/// honest orderer decided.
async fn peers_follow_the_honest_orderer(net: &PeerNet) -> anyhow::Result<()> {
    let doctor = net.orgs[0].identity("doctor1", "client", &[("role", "doctor")])?;
    let mut gw = net.gateway(0, doctor).await?;
    let mut last = 0;
    for i in 0..3 {
        let (_, code, block, _) = gw.submit(&["Put", &format!("rec-{i}"), "v"]).await?;
        assert_eq!(code, TxValidationCode::Valid as i32);
        last = block;
    }
    net.wait_height(last + 1).await?;
    let honest = &net.running_orderers[3]
        .as_ref()
        .expect("orderer 4 runs")
        .store;
    for peer in 0..2 {
        let ledger = &net.channel(peer).await?.ledger;
        for n in 0..=last {
            let mine = ledger.block(n)?.expect("committed block");
            let theirs = honest.block(n)?.expect("ordered block");
            assert_eq!(
                block_header_hash(mine.header.as_ref().expect("header")),
                block_header_hash(theirs.header.as_ref().expect("header")),
                "peer {peer} block {n}"
            );
            assert_eq!(mine.data, theirs.data, "peer {peer} block {n} transactions");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_take_blocks_past_orderers_that_withhold_them() -> anyhow::Result<()> {
    let net = network_with("withhold-blocks").await?;
    let started = Instant::now();
    peers_follow_the_honest_orderer(&net).await?;
    // Each peer may have started on a withholding orderer: finding out costs a censorship
    // timeout per withholder, not a stall.
    assert!(started.elapsed() < Duration::from_secs(40));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_refuse_forged_blocks_and_take_the_true_ones() -> anyhow::Result<()> {
    let net = network_with("forge-blocks").await?;
    peers_follow_the_honest_orderer(&net).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_refuse_blocks_with_padded_unsigned_metadata() -> anyhow::Result<()> {
    let net = network_with("pad-metadata").await?;
    peers_follow_the_honest_orderer(&net).await?;
    for peer in 0..2 {
        let ledger = &net.channel(peer).await?.ledger;
        for n in 1..ledger.height() {
            let b = ledger.block(n)?.expect("committed");
            let md = b.metadata.expect("metadata");
            assert!(
                md.metadata[3].is_empty(),
                "peer {peer} stored padded block {n}"
            );
        }
    }
    Ok(())
}

/// What orderer `id` sends for a Deliver of all its blocks with `content`.
async fn deliver(net: &PeerNet, id: u32, content: SeekContentType) -> anyhow::Result<Vec<Block>> {
    let reader = net.orgs[0].identity("reader", "client", &[])?;
    net.orderers.deliver(id, &reader, content).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn header_attestations_carry_no_transactions_and_verify_on_signatures() -> anyhow::Result<()>
{
    let net = PeerNet::start(BOTH, 5_000).await?;
    let doctor = net.orgs[0].identity("doctor1", "client", &[("role", "doctor")])?;
    let mut gw = net.gateway(0, doctor).await?;
    let (_, _, block, _) = gw.submit(&["Put", "rec", "v"]).await?;
    net.wait_height(block + 1).await?;
    let config = net.channel(0).await?.config();

    let whole = deliver(&net, 2, SeekContentType::Block).await?;
    let headers = deliver(&net, 2, SeekContentType::HeaderWithSig).await?;
    assert_eq!(whole.len(), headers.len());
    assert!(headers.len() as u64 > block);
    // The genesis block is a configuration block: sent whole, as Fabric does.
    assert_eq!(headers[0], whole[0]);
    for (h, w) in headers.iter().zip(&whole).skip(1) {
        assert_eq!(h.data, None, "an attestation carries no transactions");
        assert_eq!((&h.header, &h.metadata), (&w.header, &w.metadata));
        config.verify_block_attestation(h)?;
        assert!(config.verify_block(h).is_err(), "no data to check");
        config.verify_block(w)?;
    }
    // A header changed after signing does not verify.
    let mut forged = headers[block as usize].clone();
    if let Some(h) = forged.header.as_mut() {
        h.data_hash = vec![0; 32];
    }
    assert!(config.verify_block_attestation(&forged).is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn false_attestations_do_not_move_peers_off_an_honest_source() -> anyhow::Result<()> {
    let net = network_with("false-attestations").await?;
    peers_follow_the_honest_orderer(&net).await?;
    // Past the censorship timeout: a peer that believed the false headers would have switched.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    for peer in 0..2 {
        let stats = &net.channel(peer).await?.delivery;
        assert_eq!(
            stats.censorship_switches.load(Ordering::Relaxed),
            0,
            "peer {peer} left an honest block source"
        );
        assert!(
            stats.invalid_attestations.load(Ordering::Relaxed) > 0,
            "peer {peer} checked the false attestations"
        );
    }
    Ok(())
}
