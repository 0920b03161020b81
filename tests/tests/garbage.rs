//! Garbage on the streaming services: a frame that does not decode must end the call with a
//! non-OK status (Fabric: `13 INTERNAL grpc: failed to unmarshal the received message`), never
//! with a clean end that a client would take for success.

use medledger_tests::LogCapture;
use medledger_tests::peernet::PeerNet;
use medledger_tests::raw_grpc::{framed_call, stream_call};
use tonic::Code;

/// Bytes that are no protobuf message: field 0 is invalid in every message.
fn undecodable() -> Vec<u8> {
    vec![0x00, 0xff, 0xff, 0xff, 0x0f]
}

/// 10 MiB of a wire type (7) protobuf does not have.
fn big_garbage() -> Vec<u8> {
    vec![0x0f; 10 * 1024 * 1024]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_frames_end_streams_with_an_error_status() -> anyhow::Result<()> {
    let log = LogCapture::default();
    tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .init();
    let net = PeerNet::start("OR('Hospital1MSP.member')", 5_000).await?;
    let peer_root = net.orgs[0].tls_ca.cert_pem().as_bytes().to_vec();
    let orderer_root = net.orderers.org.tls_ca.cert_pem().as_bytes().to_vec();
    let targets = [
        (net.address(0), peer_root.clone(), "/protos.Deliver/Deliver"),
        (net.address(0), peer_root, "/protos.Deliver/DeliverFiltered"),
        (
            net.orderers.address(1),
            orderer_root.clone(),
            "/orderer.AtomicBroadcast/Broadcast",
        ),
        (
            net.orderers.address(2),
            orderer_root,
            "/orderer.AtomicBroadcast/Deliver",
        ),
    ];
    for (address, root, path) in targets {
        for (what, frame) in [("undecodable", undecodable()), ("10 MiB", big_garbage())] {
            let ch = medledger_peer::comm::dial(&address, std::slice::from_ref(&root), None)
                .await
                .map_err(anyhow::Error::msg)?;
            let status = stream_call(ch, path, vec![frame]).await;
            assert_ne!(
                status.code(),
                Code::Ok,
                "{path} at {address} ended a stream of {what} garbage with OK"
            );
            assert!(
                status.message().contains("failed to unmarshal"),
                "{path} {what}: {status:?}"
            );
        }
    }
    // Each refusal was logged at WARN with the service and where it came from.
    let text = log.text();
    for service in [
        "service=\"protos.Deliver\"",
        "service=\"orderer.AtomicBroadcast/Broadcast\"",
        "service=\"orderer.AtomicBroadcast/Deliver\"",
    ] {
        assert!(
            text.lines().any(|l| l.contains("request refused")
                && l.contains(service)
                && l.contains("remote=127.0.0.1")),
            "no refusal logged for {service}:\n{text}"
        );
    }
    // The nodes are still serving: an honest transaction commits.
    let client = net.orgs[0].identity("app", "client", &[])?;
    let mut gw = net.gateway(0, client).await?;
    let (_, code, _, _) = gw.submit(&["Put", "after-garbage", "1"]).await?;
    assert_eq!(
        code, 0,
        "a valid transaction after the garbage must commit VALID"
    );
    Ok(())
}

/// The chaincode side too: a chaincode server given a frame that does not decode on its
/// `protos.Chaincode/Connect` stream ends it with an error status (it used to end it cleanly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chaincode_server_ends_garbage_from_a_peer_with_an_error_status() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(medledger_shim::serve_with_listener(
        listener,
        "kv:0".into(),
        None,
        medledger_shim::example::KvStore,
        std::future::pending(),
    ));
    for (what, frame) in [("undecodable", undecodable()), ("10 MiB", big_garbage())] {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let status = stream_call(ch, "/protos.Chaincode/Connect", vec![frame]).await;
        assert_ne!(status.code(), Code::Ok, "{what} garbage ended with OK");
        assert!(
            status.message().contains("failed to unmarshal"),
            "{what}: {status:?}"
        );
    }
    Ok(())
}

/// Frames no encoder writes, sent byte for byte: a length prefix claiming about 2 GiB with five
/// bytes behind it, and the compressed flag without a `grpc-encoding` header. Peer Deliver and
/// orderer Broadcast end each call with a non-OK status and a message (Fabric: `grpc: failed to
/// unmarshal the received message` / RESOURCE_EXHAUSTED), never with OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_frame_headers_end_streams_with_an_error_status() -> anyhow::Result<()> {
    let net = PeerNet::start("OR('Hospital1MSP.member')", 5_000).await?;
    let peer_root = net.orgs[0].tls_ca.cert_pem().as_bytes().to_vec();
    let orderer_root = net.orderers.org.tls_ca.cert_pem().as_bytes().to_vec();
    // Flag, big-endian length, message: ASCII throughout, so a String body carries it.
    let huge = "\u{0}\u{7f}\u{7f}\u{7f}\u{7f}hello".to_owned();
    let compressed = "\u{1}\u{0}\u{0}\u{0}\u{5}hello".to_owned();
    for (address, root, path) in [
        (net.address(0), peer_root, "/protos.Deliver/Deliver"),
        (
            net.orderers.address(1),
            orderer_root,
            "/orderer.AtomicBroadcast/Broadcast",
        ),
    ] {
        for (what, body) in [("2 GiB claim", &huge), ("compressed flag", &compressed)] {
            let ch = medledger_peer::comm::dial(&address, std::slice::from_ref(&root), None)
                .await
                .map_err(anyhow::Error::msg)?;
            let status = framed_call(ch, path, body.clone()).await;
            assert!(
                ![Code::Ok, Code::Unknown, Code::Unavailable].contains(&status.code()),
                "{path} ended a call with a {what} with {status:?}"
            );
            assert!(
                status.message().contains("failed to unmarshal"),
                "{path} {what}: {status:?}"
            );
        }
    }
    Ok(())
}
