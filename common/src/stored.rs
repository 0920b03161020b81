//! The on-disk form of the large values nodes store (blocks, proposals, requests): LZ4
//! compressed when that saves bytes, so the certificates every transaction repeats (its creator
//! twice, each endorser once) are written once per block instead of once per transaction.
//!
//! A packed value is `COMPRESSED_TAG ‖ raw length (u32, little endian) ‖ LZ4 block`, or the raw
//! protobuf bytes when compression would not make them smaller. No protobuf encoding starts with
//! a zero byte (field number 0 does not exist), so values written before compression existed
//! still read as they are.

use std::borrow::Cow;

use prost::Message;

/// First byte of a compressed value.
const COMPRESSED_TAG: u8 = 0x00;
/// Tag and length in front of the LZ4 block.
const HEADER_BYTES: usize = 5;
/// The largest value unpacking will allocate for, whatever a (corrupt) header claims.
pub const MAX_UNPACKED_BYTES: usize = 1 << 30;
/// LZ4 cannot expand its input more than this (a match's length grows by 255 per extra byte), so
/// a header claiming more than this many times the compressed size is corrupt.
const MAX_LZ4_RATIO: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnpackError {
    #[error("compressed value shorter than its header")]
    Truncated,
    #[error(
        "compressed value claims {claimed} bytes from {compressed} (at most {MAX_UNPACKED_BYTES}, {MAX_LZ4_RATIO} times the compressed size)"
    )]
    ImplausibleLength { claimed: usize, compressed: usize },
    #[error("compressed value does not decompress to the {0} bytes it claims")]
    Corrupt(usize),
    #[error("value does not decode: {0}")]
    Decode(String),
}

/// The stored form of `raw`.
pub fn pack(raw: &[u8]) -> Cow<'_, [u8]> {
    compress(raw).map_or(Cow::Borrowed(raw), Cow::Owned)
}

/// `raw` compressed with its header, if that is smaller.
fn compress(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() > MAX_UNPACKED_BYTES {
        return None;
    }
    let len = u32::try_from(raw.len()).ok()?;
    // Compression fails only on inputs over LZ4's limit (~2 GiB), excluded above.
    let compressed = lz4::block::compress(raw, None, false).ok()?;
    if compressed.len() + HEADER_BYTES >= raw.len() {
        return None;
    }
    let mut out = Vec::with_capacity(HEADER_BYTES + compressed.len());
    out.push(COMPRESSED_TAG);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&compressed);
    Some(out)
}

/// The raw bytes of a stored value.
pub fn unpack(stored: &[u8]) -> Result<Cow<'_, [u8]>, UnpackError> {
    if stored.first() != Some(&COMPRESSED_TAG) {
        return Ok(Cow::Borrowed(stored));
    }
    let (Some(len), Some(body)) = (stored.get(1..HEADER_BYTES), stored.get(HEADER_BYTES..)) else {
        return Err(UnpackError::Truncated);
    };
    let mut claimed = [0u8; 4];
    claimed.copy_from_slice(len);
    let claimed = u32::from_le_bytes(claimed) as usize;
    if claimed > MAX_UNPACKED_BYTES || claimed > body.len().saturating_mul(MAX_LZ4_RATIO) {
        return Err(UnpackError::ImplausibleLength {
            claimed,
            compressed: body.len(),
        });
    }
    // `claimed` fits in i32: it is at most MAX_UNPACKED_BYTES.
    let raw = lz4::block::decompress(body, Some(claimed as i32))
        .map_err(|_| UnpackError::Corrupt(claimed))?;
    if raw.len() != claimed {
        return Err(UnpackError::Corrupt(claimed));
    }
    Ok(Cow::Owned(raw))
}

/// `message` in its stored form.
pub fn encode<M: Message>(message: &M) -> Vec<u8> {
    let raw = message.encode_to_vec();
    compress(&raw).unwrap_or(raw)
}

/// The message a stored value holds.
pub fn decode<M: Message + Default>(stored: &[u8]) -> Result<M, UnpackError> {
    M::decode(unpack(stored)?.as_ref()).map_err(|e| UnpackError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use medledger_proto::common::{Block, BlockData, BlockHeader};
    use rand::{Rng, SeedableRng};

    use super::*;

    /// A block of `n` transactions that, like real ones, repeat the same certificate.
    fn block(n: usize) -> Block {
        let cert = b"-----BEGIN CERTIFICATE-----\nMIICKjCCAdGgAwIBAgIUexample\n".repeat(12);
        Block {
            header: Some(BlockHeader {
                number: 7,
                previous_hash: vec![1; 32],
                data_hash: vec![2; 32],
            }),
            data: Some(BlockData {
                data: (0..n)
                    .map(|i| [cert.as_slice(), format!("tx{i}").as_bytes(), &cert].concat())
                    .collect(),
            }),
            metadata: None,
        }
    }

    #[test]
    fn a_block_round_trips_and_its_repeated_certificates_are_stored_once() {
        let b = block(20);
        let raw = b.encode_to_vec();
        let stored = encode(&b);
        assert!(
            stored.len() * 10 < raw.len(),
            "{} bytes stored for {} raw",
            stored.len(),
            raw.len()
        );
        assert_eq!(decode::<Block>(&stored).unwrap(), b);
    }

    #[test]
    fn values_written_before_compression_still_read() {
        let b = block(3);
        assert_eq!(decode::<Block>(&b.encode_to_vec()).unwrap(), b);
        // Incompressible bytes are kept raw, and raw bytes read as themselves.
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let noise: Vec<u8> = (0..4096).map(|_| rng.r#gen::<u8>() | 1).collect();
        let stored = pack(&noise);
        assert_eq!(stored.as_ref(), noise.as_slice());
        assert_eq!(unpack(&stored).unwrap().as_ref(), noise.as_slice());
        assert!(pack(&[]).is_empty());
    }

    #[test]
    fn a_header_claiming_more_than_lz4_can_yield_is_refused_before_allocating() {
        let mut stored = vec![COMPRESSED_TAG];
        stored.extend_from_slice(&u32::MAX.to_le_bytes());
        stored.extend_from_slice(&[0x10, b'a']);
        assert!(matches!(
            unpack(&stored),
            Err(UnpackError::ImplausibleLength { .. })
        ));
        assert_eq!(unpack(&[COMPRESSED_TAG, 1, 0]), Err(UnpackError::Truncated));
    }

    /// Corrupt stored values (bit flips, truncation, garbage after the tag) are refused or read
    /// as some bytes; never a panic, never an allocation beyond the bounds.
    #[test]
    fn corrupt_stored_values_are_refused_without_panicking() {
        let stored = encode(&block(30));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut refused = 0;
        for _ in 0..3000 {
            let mut bad = stored.clone();
            match rng.gen_range(0..3) {
                0 => {
                    let i = rng.gen_range(1..bad.len());
                    bad[i] ^= 1 << rng.gen_range(0..8);
                }
                1 => bad.truncate(rng.gen_range(0..bad.len())),
                _ => {
                    let n = rng.gen_range(1..64);
                    bad = std::iter::once(COMPRESSED_TAG)
                        .chain((0..n).map(|_| rng.r#gen::<u8>()))
                        .collect();
                }
            }
            match decode::<Block>(&bad) {
                Ok(b) => assert!(b.encoded_len() <= MAX_UNPACKED_BYTES),
                Err(_) => refused += 1,
            }
        }
        assert!(refused > 1000, "only {refused} corruptions noticed");
    }
}
