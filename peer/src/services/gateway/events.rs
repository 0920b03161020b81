//! ChaincodeEvents: the events of committed blocks, streamed from a start position.

use super::*;

impl GatewayService {
    /// ChaincodeEvents: the chaincode events of committed blocks from a start position.
    pub(super) async fn event_stream(
        &self,
        request: Request<SignedChaincodeEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let signed = request.into_inner();
        let req = ChaincodeEventsRequest::decode(signed.request.as_slice()).map_err(|e| {
            Status::invalid_argument(format!("malformed chaincode events request: {e}"))
        })?;
        let channel = self
            .authorize(
                &req.channel_id,
                &req.identity,
                &signed.request,
                &signed.signature,
            )
            .await?;
        let ledger = channel.ledger.clone();
        let located = if req.after_transaction_id.is_empty() {
            None
        } else {
            ledger
                .tx_location(&req.after_transaction_id)
                .map_err(|e| Status::aborted(e.to_string()))?
                .map(|l| l.block_num)
        };
        let start = match located {
            Some(b) => b,
            None => match req.start_position.as_ref().and_then(|p| p.r#type.as_ref()) {
                None | Some(Seek::NextCommit(_)) => ledger.height(),
                Some(Seek::Specified(s)) => s.number,
                Some(other) => {
                    return Err(Status::invalid_argument(format!(
                        "invalid start position type: {other:?}"
                    )));
                }
            },
        };
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut heights = ledger.subscribe();
            let mut skipping = located.is_some();
            let mut n = start;
            loop {
                while n >= ledger.height() {
                    tokio::select! {
                        r = heights.changed() => if r.is_err() { return },
                        _ = tx.closed() => return,
                    }
                }
                let Ok(Some(block)) = ledger.block(n) else {
                    return;
                };
                let mut events = Vec::new();
                for (env, code) in transactions(&block) {
                    if code != TxValidationCode::Valid as i32 {
                        continue;
                    }
                    for e in chaincode_events(env) {
                        if skipping {
                            if e.tx_id == req.after_transaction_id {
                                skipping = false;
                            }
                            continue;
                        }
                        if e.chaincode_id == req.chaincode_id
                            && !e.event_name.is_empty()
                            && !e.tx_id.is_empty()
                        {
                            events.push(e);
                        }
                    }
                }
                if !events.is_empty()
                    && tx
                        .send(Ok(ChaincodeEventsResponse {
                            events,
                            block_number: n,
                        }))
                        .await
                        .is_err()
                {
                    return;
                }
                n += 1;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
