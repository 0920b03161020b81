//! A channel's block puller: takes blocks from the channel's orderers and commits them.

use super::channels::reload_definitions;
use medledger_common::config::MessageLimits;

use super::*;

/// What the block puller of one channel works with.
pub(super) struct BlockPuller {
    pub(super) channel: Arc<Channel>,
    pub(super) plugins: PluginRegistry,
    pub(super) signer: SigningIdentity,
    pub(super) client_tls: Option<ClientTls>,
    pub(super) private_data: Arc<PrivateDataClient>,
    pub(super) packages: Arc<PackageStore>,
    pub(super) limits: MessageLimits,
}

/// Takes blocks from the channel's orderers (rotating on failure) and commits them.
pub(super) async fn pull_blocks(puller: BlockPuller, mut shutdown: watch::Receiver<bool>) {
    let BlockPuller {
        channel,
        plugins,
        signer,
        client_tls,
        private_data,
        packages,
        limits,
    } = puller;
    let consenters = channel.config.consenters.clone();
    if consenters.is_empty() {
        tracing::error!(channel = %channel.id(), "the channel configuration names no consenters: no blocks can be pulled");
        return;
    }
    let roots = channel.orderer_tls_roots();
    let mut attempt = 0usize;
    while !*shutdown.borrow() {
        let c = &consenters[attempt % consenters.len()];
        attempt += 1;
        let address = format!("{}:{}", c.host, c.port);
        let run = async {
            let ch = dial(&address, &roots, client_tls.as_ref()).await?;
            let seek = SeekInfo {
                start: Some(SeekPosition {
                    r#type: Some(seek_position::Type::Specified(SeekSpecified {
                        number: channel.ledger.height(),
                    })),
                }),
                stop: Some(SeekPosition {
                    r#type: Some(seek_position::Type::Specified(SeekSpecified {
                        number: u64::MAX,
                    })),
                }),
                ..Default::default()
            };
            let env = signed_envelope(
                HeaderType::DeliverSeekInfo,
                channel.id(),
                seek.encode_to_vec(),
                &signer,
            )
            .map_err(|e| e.to_string())?;
            let mut stream = AtomicBroadcastClient::new(ch)
                .max_decoding_message_size(limits.max_recv)
                .max_encoding_message_size(limits.max_send)
                .deliver(tokio_stream::once(env))
                .await
                .map_err(|s| s.message().to_owned())?
                .into_inner();
            loop {
                let msg = stream.message().await.map_err(|s| s.message().to_owned())?;
                match msg.and_then(|m| m.r#type) {
                    Some(deliver_response::Type::Block(block)) => {
                        let number = block.header.as_ref().map(|h| h.number).unwrap_or_default();
                        if number < channel.ledger.height() {
                            continue;
                        }
                        let pvt = private_data.gather(&channel, &block).await;
                        let (ch, pl) = (channel.clone(), plugins.clone());
                        let committed = tokio::task::spawn_blocking(move || {
                            commit_block(&ch, &pl, block, &pvt)
                        })
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| format!("block {number}: {e}"))?;
                        if committed.namespaces.contains(LIFECYCLE) {
                            reload_definitions(&channel, &packages).map_err(|e| e.to_string())?;
                        }
                        if number % 100 == 0
                            && let Err(e) = channel.ledger.transient_purge_now()
                        {
                            tracing::warn!(error = %e, "transient store purge failed");
                        }
                    }
                    Some(deliver_response::Type::Status(s)) => {
                        return Err::<(), String>(format!(
                            "orderer ended delivery with status {s}"
                        ));
                    }
                    None => return Err("orderer closed the delivery stream".to_owned()),
                }
            }
        };
        tokio::select! {
            r = run => if let Err(e) = r {
                tracing::warn!(channel = %channel.id(), orderer = %address, error = %e, "block delivery interrupted");
            },
            _ = shutdown.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(300)) => {},
            _ = shutdown.changed() => return,
        }
    }
}
