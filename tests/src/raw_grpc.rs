//! gRPC calls with raw message bytes, to send nodes frames no honest client would: garbage that
//! does not decode as the method's message.

use prost::bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Messages as they are on the wire, neither encoded nor decoded.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

#[derive(Debug)]
pub struct RawEncoder;

#[derive(Debug)]
pub struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Sends `frames` on a client stream of `path` (e.g. `/protos.Deliver/Deliver`) and returns how
/// the call ended: the status the server closed it with (code `Ok` for a clean end).
pub async fn stream_call(channel: Channel, path: &'static str, frames: Vec<Vec<u8>>) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    if let Err(e) = grpc.ready().await {
        return Status::unavailable(e.to_string());
    }
    let request = tonic::Request::new(tokio_stream::iter(frames));
    let response = match grpc
        .streaming(request, PathAndQuery::from_static(path), RawCodec)
        .await
    {
        Ok(r) => r,
        Err(status) => return status,
    };
    let mut stream = response.into_inner();
    loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => return Status::new(Code::Ok, ""),
            Err(status) => return status,
        }
    }
}

/// Sends `body` as the whole request body of a call to `path`, gRPC's own framing included, so
/// that a test can send what no encoder writes: a length prefix far beyond the data that
/// follows, or the compressed flag without a `grpc-encoding` header. Returns how the server
/// ended the call (`grpc-status` / `grpc-message`, from the headers or the trailers).
pub async fn framed_call(channel: Channel, path: &str, body: String) -> Status {
    use tonic::codegen::http::Request;
    use tonic::codegen::{Body, Service};

    let mut channel = channel;
    let request = match Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(body))
    {
        Ok(r) => r,
        Err(e) => return Status::internal(e.to_string()),
    };
    if let Err(e) = std::future::poll_fn(|cx| channel.poll_ready(cx)).await {
        return Status::unavailable(e.to_string());
    }
    let response = match channel.call(request).await {
        Ok(r) => r,
        Err(e) => return Status::unavailable(e.to_string()),
    };
    // tonic's own reading of grpc-status / grpc-message (percent-decoded).
    if let Some(status) = Status::from_header_map(response.headers()) {
        return status;
    }
    let mut body = response.into_body();
    loop {
        match std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
            Some(Ok(frame)) => {
                if let Some(status) = frame.trailers_ref().and_then(Status::from_header_map) {
                    return status;
                }
            }
            Some(Err(e)) => return Status::unknown(e.to_string()),
            None => return Status::unknown("the call ended without a grpc-status"),
        }
    }
}
