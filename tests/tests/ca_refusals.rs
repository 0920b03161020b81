//! The CA logs every refused request at WARN with where it came from (in a process of its own:
//! the refusal log's per-second budget is shared by everything in a process).

use std::time::Duration;

use medledger_tests::ca_net::RunningCa;

#[tokio::test]
async fn refused_requests_are_logged_with_where_they_came_from() -> anyhow::Result<()> {
    // A current-thread runtime: the server's tasks log on this thread, into this subscriber.
    let log = medledger_tests::LogCapture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .finish();
    let _guard = tracing_subscriber::util::SubscriberInitExt::set_default(subscriber);
    let dir = tempfile::tempdir()?;
    let ca = RunningCa::start(dir.path()).await?;
    // Other tests in this process refuse requests too and share the per-second log budget
    // (`REFUSAL_LOG_LINES_PER_SECOND`): refuse until a line of ours gets through.
    let ours = |text: &str| {
        text.lines().any(|l| {
            l.contains("request refused")
                && l.contains("ca POST /api/v1/enroll")
                && l.contains("remote=127.0.0.1")
        })
    };
    for _ in 0..30 {
        let r = ca
            .enroll(dir.path(), "admin", "not-the-password", &[])
            .await;
        assert!(r.is_err());
        if ours(&log.text()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let text = log.text();
    assert!(ours(&text), "no refusal logged:\n{text}");
    ca.stop().await;
    Ok(())
}
