//! A peer process killed with SIGKILL while it commits blocks restarts from its savepoint, never
//! applies a block twice, and ends with the same state and block hashes as the peer that kept
//! running.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use medledger_peer::storage::ledger::Ledger;
use medledger_tests::peernet::PeerNet;
use medledger_tests::workspace_binary;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_peer(bin: &std::path::Path, config: &std::path::Path) -> anyhow::Result<Proc> {
    Ok(Proc(
        Command::new(bin)
            .args(["node", "start", "--config"])
            .arg(config)
            .env("MEDLEDGER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_commits_then_restart_converges() -> anyhow::Result<()> {
    let bin = tokio::task::spawn_blocking(|| workspace_binary("medledger-peer", "medledger-peer"))
        .await??;
    // Hospital1 alone may endorse, so load continues while Hospital2's peer is down.
    let net = PeerNet::start_without_peer2("OR('Hospital1MSP.peer', 'Hospital2MSP.peer')").await?;
    let config = net.dir.path().join("peer1-core.yaml");
    std::fs::write(&config, serde_yaml::to_string(&net.configs[1])?)?;
    let mut peer2 = spawn_peer(&bin, &config)?;

    let client = net.orgs[0].identity("app", "client", &[])?;
    let mut gw = net.gateway(0, client).await?;
    let load = tokio::spawn(async move {
        let mut last = 0;
        for i in 0..20 {
            let (_, _, block, _) = gw
                .submit(&["Put", &format!("key{}", i % 7), &i.to_string()])
                .await?;
            last = block;
        }
        anyhow::Ok(last)
    });
    // Kill Hospital2's peer in the middle of the load, without warning.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let _ = peer2.0.kill();
    let _ = peer2.0.wait();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut peer2 = spawn_peer(&bin, &config)?;
    let last_block = load.await??;

    // Wait until the restarted process has caught up (it is another process: poll its port by
    // stopping it once the in-process peer's height is reached and checking its ledger).
    let target = last_block + 1;
    let ledger_dir = net.configs[1].data_dir.join("ledgers").join("medchannel");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let _ = peer2.0.kill();
        let _ = peer2.0.wait();
        let height = Ledger::open(&ledger_dir)?.height();
        if height >= target {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "peer 2 stuck at height {height}, expected {target}"
        );
        peer2 = spawn_peer(&bin, &config)?;
    }
    let theirs = Ledger::open(&ledger_dir)?;
    let ours = net.channel(0).await?;
    assert_eq!(theirs.height(), ours.ledger.height());
    assert_eq!(
        theirs.last_hash()?,
        ours.ledger.last_hash()?,
        "same block hashes"
    );
    assert_eq!(
        theirs.state_hash()?,
        ours.ledger.state_hash()?,
        "same state after SIGKILL and restart"
    );
    for n in 0..theirs.height() {
        assert_eq!(
            theirs.block(n)?.map(|b| b.header),
            ours.ledger.block(n)?.map(|b| b.header)
        );
    }
    Ok(())
}
