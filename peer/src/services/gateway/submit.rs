//! Submit (broadcast to every consenter, a BFT quorum of SUCCESS) and CommitStatus.

use super::*;

impl GatewayService {
    pub(super) async fn broadcast(&self, channel: &Channel, env: &Envelope) -> Result<(), Status> {
        let roots = channel.orderer_tls_roots();
        let mut tasks = Vec::new();
        for c in &channel.config().consenters {
            let address = format!("{}:{}", c.host, c.port);
            let env = env.clone();
            let conn = self.connect(&address, &roots).await;
            let limits = self.conns.limits();
            tasks.push(tokio::spawn(async move {
                let ch = conn?;
                let mut client = AtomicBroadcastClient::new(ch)
                    .max_decoding_message_size(limits.max_recv)
                    .max_encoding_message_size(limits.max_send);
                let call = async {
                    let mut stream = client
                        .broadcast(tokio_stream::once(env))
                        .await
                        .map_err(|s| s.message().to_owned())?
                        .into_inner();
                    stream
                        .message()
                        .await
                        .map_err(|s| s.message().to_owned())?
                        .ok_or_else(|| "orderer closed the stream without an answer".to_owned())
                };
                let resp = tokio::time::timeout(BROADCAST_TIMEOUT, call)
                    .await
                    .map_err(|_| "broadcast timeout".to_owned())??;
                Ok::<_, String>((address, resp))
            }));
        }
        let quorum = channel.config().bft_quorum();
        let mut ok = 0;
        let mut details = Vec::new();
        for t in tasks {
            match t.await {
                Ok(Ok((_, r))) if r.status == OrdererStatus::Success as i32 => ok += 1,
                Ok(Ok((_, r)))
                    if r.status == OrdererStatus::ServiceUnavailable as i32
                        && r.info.contains("already exists") =>
                {
                    ok += 1
                }
                Ok(Ok((addr, r))) => {
                    let name = OrdererStatus::try_from(r.status)
                        .map(|s| s.as_str_name())
                        .unwrap_or("UNKNOWN");
                    if (400..500).contains(&r.status) {
                        return Err(Status::aborted(format!(
                            "received unsuccessful response from orderer: status={name}, info={}",
                            r.info
                        )));
                    }
                    details.push(detail(&addr, "", format!("status={name}, info={}", r.info)));
                }
                Ok(Err(e)) => details.push(detail("", "", e)),
                Err(e) => details.push(detail("", "", e.to_string())),
            }
        }
        if ok >= quorum {
            Ok(())
        } else {
            Err(gateway_error(
                Code::Unavailable,
                "insufficient number of orderers could successfully process transaction to satisfy quorum requirement",
                details,
            ))
        }
    }

    /// Submit: the signed transaction to every consenter; needs a BFT quorum of SUCCESS.
    pub(super) async fn submit_transaction(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitResponse>, Status> {
        let req = request.into_inner();
        let env = req
            .prepared_transaction
            .ok_or_else(|| Status::invalid_argument("a prepared transaction is required"))?;
        if env.signature.is_empty() {
            return Err(Status::invalid_argument(
                "prepared transaction must be signed",
            ));
        }
        let channel = self
            .channel(&req.channel_id)
            .await
            .ok_or_else(|| Status::not_found(format!("channel '{}' not found", req.channel_id)))?;
        self.broadcast(&channel, &env).await?;
        Ok(Response::new(SubmitResponse {}))
    }

    /// CommitStatus: waits for the transaction to commit and answers its validation code.
    pub(super) async fn commit_status_of(
        &self,
        request: Request<SignedCommitStatusRequest>,
    ) -> Result<Response<CommitStatusResponse>, Status> {
        let signed = request.into_inner();
        if signed.request.is_empty() {
            return Err(Status::invalid_argument(
                "a commit status request is required",
            ));
        }
        let req = CommitStatusRequest::decode(signed.request.as_slice()).map_err(|e| {
            Status::invalid_argument(format!("malformed commit status request: {e}"))
        })?;
        if req.transaction_id.is_empty() || req.channel_id.is_empty() || req.identity.is_empty() {
            return Err(Status::invalid_argument(
                "transaction id, channel id and identity are required",
            ));
        }
        let channel = self
            .authorize(
                &req.channel_id,
                &req.identity,
                &signed.request,
                &signed.signature,
            )
            .await?;
        let mut heights = channel.ledger.subscribe();
        loop {
            if let Some(loc) = channel
                .ledger
                .tx_location(&req.transaction_id)
                .map_err(|e| Status::aborted(e.to_string()))?
            {
                return Ok(Response::new(CommitStatusResponse {
                    result: loc.validation_code,
                    block_number: loc.block_num,
                }));
            }
            if heights.changed().await.is_err() {
                return Err(Status::unavailable("the ledger is closing"));
            }
        }
    }
}
