//! ECDSA P-256 / SHA-256 as Fabric uses it: low-S DER signatures, PKCS#8 PEM keys.
//!
//! Verification is the hottest code in the system (every orderer and every peer checks every
//! transaction), so it has a single entry point, [`verify`], backed by `ring` after measuring it
//! against the pure-Rust `p256` crate (see `examples/verify_bench.rs` and ARCHITECTURE.md).
//! Both backends stay available as [`VerifyBackend`] so the benchmark can compare them.

use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use sha2::{Digest, Sha256};

/// Errors from key handling, signing and verification.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("malformed DER signature: {0}")]
    MalformedSignature(&'static str),
    #[error("invalid S: must be smaller than half the order")]
    HighS,
    #[error("signature verification failed")]
    BadSignature,
    #[error("malformed public key: {0}")]
    MalformedPublicKey(String),
    #[error("malformed private key: {0}")]
    MalformedPrivateKey(String),
    #[error("signing failed: {0}")]
    Signing(String),
}

/// The order n of the P-256 group, big-endian.
const P256_ORDER: [u8; 32] =
    hex_literal("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
/// floor(n / 2): the inclusive upper bound for a low S.
const P256_HALF_ORDER: [u8; 32] =
    hex_literal("7fffffff800000007fffffffffffffffde737d56d38bcf4279dce5617e3192a8");

const fn hex_literal(s: &str) -> [u8; 32] {
    let b = s.as_bytes();
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = (nibble(b[2 * i]) << 4) | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("bad hex literal"),
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SHA-256 over the concatenation of `parts`, without copying them together.
pub fn sha256_concat(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// `r` and `s` of a DER `SEQUENCE { INTEGER r, INTEGER s }`, each as 32 big-endian bytes.
struct RawSignature {
    r: [u8; 32],
    s: [u8; 32],
}

fn der_len(input: &[u8]) -> Result<(usize, &[u8]), CryptoError> {
    let (&first, rest) = input
        .split_first()
        .ok_or(CryptoError::MalformedSignature("truncated length"))?;
    if first < 0x80 {
        return Ok((first as usize, rest));
    }
    // A P-256 signature is at most 72 bytes, so only the one-byte long form is legal here.
    if first != 0x81 {
        return Err(CryptoError::MalformedSignature("unsupported length form"));
    }
    let (&len, rest) = rest
        .split_first()
        .ok_or(CryptoError::MalformedSignature("truncated length"))?;
    if len < 0x80 {
        return Err(CryptoError::MalformedSignature("non-minimal length"));
    }
    Ok((len as usize, rest))
}

fn der_integer(input: &[u8]) -> Result<([u8; 32], &[u8]), CryptoError> {
    let (&tag, rest) = input
        .split_first()
        .ok_or(CryptoError::MalformedSignature("truncated integer"))?;
    if tag != 0x02 {
        return Err(CryptoError::MalformedSignature("expected INTEGER"));
    }
    let (len, rest) = der_len(rest)?;
    if len == 0 || rest.len() < len {
        return Err(CryptoError::MalformedSignature("bad integer length"));
    }
    let (mut digits, rest) = rest.split_at(len);
    if digits[0] & 0x80 != 0 {
        return Err(CryptoError::MalformedSignature("negative integer"));
    }
    if digits.len() > 1 && digits[0] == 0 && digits[1] & 0x80 == 0 {
        return Err(CryptoError::MalformedSignature("non-minimal integer"));
    }
    while digits.len() > 1 && digits[0] == 0 {
        digits = &digits[1..];
    }
    if digits.len() > 32 {
        return Err(CryptoError::MalformedSignature("integer too large"));
    }
    let mut out = [0u8; 32];
    out[32 - digits.len()..].copy_from_slice(digits);
    if out == [0u8; 32] {
        return Err(CryptoError::MalformedSignature("zero integer"));
    }
    Ok((out, rest))
}

fn parse_der_signature(sig: &[u8]) -> Result<RawSignature, CryptoError> {
    let (&tag, rest) = sig
        .split_first()
        .ok_or(CryptoError::MalformedSignature("empty"))?;
    if tag != 0x30 {
        return Err(CryptoError::MalformedSignature("expected SEQUENCE"));
    }
    let (len, body) = der_len(rest)?;
    if body.len() != len {
        return Err(CryptoError::MalformedSignature("trailing or missing bytes"));
    }
    let (r, body) = der_integer(body)?;
    let (s, body) = der_integer(body)?;
    if !body.is_empty() {
        return Err(CryptoError::MalformedSignature(
            "trailing bytes in SEQUENCE",
        ));
    }
    Ok(RawSignature { r, s })
}

fn encode_der_integer(v: &[u8; 32], out: &mut Vec<u8>) {
    let first = v.iter().position(|&b| b != 0).unwrap_or(31);
    let digits = &v[first..];
    let pad = digits[0] & 0x80 != 0;
    out.push(0x02);
    out.push((digits.len() + usize::from(pad)) as u8);
    if pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
}

fn encode_der_signature(r: &[u8; 32], s: &[u8; 32]) -> Vec<u8> {
    let mut body = Vec::with_capacity(70);
    encode_der_integer(r, &mut body);
    encode_der_integer(s, &mut body);
    let mut out = Vec::with_capacity(body.len() + 2);
    out.push(0x30);
    out.push(body.len() as u8);
    out.extend_from_slice(&body);
    out
}

/// `n - s` for big-endian 32-byte values with `s < n`.
fn order_minus(s: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = P256_ORDER[i] as i16 - s[i] as i16 - borrow;
        borrow = if d < 0 {
            d += 256;
            1
        } else {
            0
        };
        out[i] = d as u8;
    }
    out
}

/// Whether a DER signature has S ≤ n/2. Malformed signatures are errors.
pub fn is_low_s(sig: &[u8]) -> Result<bool, CryptoError> {
    Ok(parse_der_signature(sig)?.s <= P256_HALF_ORDER)
}

/// Rewrites a DER signature so that S is low, as Fabric's signers do.
pub fn normalize_low_s(sig: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let raw = parse_der_signature(sig)?;
    let s = if raw.s > P256_HALF_ORDER {
        order_minus(&raw.s)
    } else {
        raw.s
    };
    Ok(encode_der_signature(&raw.r, &s))
}

/// A P-256 public key as an uncompressed SEC1 point (65 bytes).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    sec1: Vec<u8>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", hex::encode(&self.sec1))
    }
}

impl PublicKey {
    /// Accepts a SEC1 point (compressed or not) and stores it uncompressed.
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, CryptoError> {
        let key = p256::PublicKey::from_sec1_bytes(bytes)
            .map_err(|e| CryptoError::MalformedPublicKey(e.to_string()))?;
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        Ok(Self {
            sec1: key.to_encoded_point(false).as_bytes().to_vec(),
        })
    }

    /// The uncompressed SEC1 encoding.
    pub fn as_sec1(&self) -> &[u8] {
        &self.sec1
    }
}

/// The verification implementations measured against each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyBackend {
    /// BoringSSL-derived assembly in `ring`.
    Ring,
    /// The pure-Rust RustCrypto `p256` crate.
    P256,
}

/// The backend [`verify`] uses: the faster one on our benchmark.
pub const DEFAULT_BACKEND: VerifyBackend = VerifyBackend::Ring;

/// Verifies a Fabric signature: ECDSA P-256 over SHA-256(`msg`), DER-encoded, low S required.
pub fn verify(key: &PublicKey, msg: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
    verify_with(DEFAULT_BACKEND, key, msg, sig)
}

/// [`verify`] with an explicit backend (for the benchmark and cross-checking tests).
pub fn verify_with(
    backend: VerifyBackend,
    key: &PublicKey,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), CryptoError> {
    if !is_low_s(sig)? {
        return Err(CryptoError::HighS);
    }
    verify_any_s(backend, key, msg, sig)
}

/// Verification without the low-S rule: certificate and CRL signatures made by CAs may be
/// high-S and Fabric accepts them (it normalises before checking).
pub(crate) fn verify_any_s(
    backend: VerifyBackend,
    key: &PublicKey,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), CryptoError> {
    match backend {
        VerifyBackend::Ring => ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            &key.sec1,
        )
        .verify(msg, sig)
        .map_err(|_| CryptoError::BadSignature),
        VerifyBackend::P256 => {
            use p256::ecdsa::signature::Verifier;
            let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&key.sec1)
                .map_err(|e| CryptoError::MalformedPublicKey(e.to_string()))?;
            let sig = p256::ecdsa::Signature::from_der(sig)
                .map_err(|_| CryptoError::MalformedSignature("rejected by p256"))?;
            vk.verify(msg, &sig).map_err(|_| CryptoError::BadSignature)
        }
    }
}

/// A P-256 private key that signs as Fabric does.
#[derive(Clone)]
pub struct PrivateKey {
    inner: p256::ecdsa::SigningKey,
    /// The same key for ring's signer: its P-256 assembly signs several times faster than the
    /// pure-Rust `p256` (measured in `examples/verify_bench.rs`), and every block, vote,
    /// endorsement and transaction is signed.
    signer: std::sync::Arc<ring::signature::EcdsaKeyPair>,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

impl PrivateKey {
    /// A fresh random key from the OS generator.
    pub fn generate() -> Self {
        let inner = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        Self::with_signer(inner).expect("a freshly generated P-256 key converts to PKCS#8")
    }

    fn with_signer(inner: p256::ecdsa::SigningKey) -> Result<Self, CryptoError> {
        let der = inner
            .to_pkcs8_der()
            .map_err(|e| CryptoError::MalformedPrivateKey(e.to_string()))?;
        let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            der.as_bytes(),
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|e| CryptoError::MalformedPrivateKey(e.to_string()))?;
        Ok(Self {
            inner,
            signer: std::sync::Arc::new(signer),
        })
    }

    /// Loads a PEM key: PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`).
    pub fn from_pem(pem_text: &str) -> Result<Self, CryptoError> {
        if let Ok(inner) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem_text) {
            return Self::with_signer(inner);
        }
        let block =
            pem::parse(pem_text).map_err(|e| CryptoError::MalformedPrivateKey(e.to_string()))?;
        if block.tag() == "EC PRIVATE KEY" {
            let sk = p256::SecretKey::from_sec1_der(block.contents())
                .map_err(|e| CryptoError::MalformedPrivateKey(e.to_string()))?;
            return Self::with_signer(sk.into());
        }
        Err(CryptoError::MalformedPrivateKey(format!(
            "expected a P-256 PKCS#8 or SEC1 key, found PEM block {:?}",
            block.tag()
        )))
    }

    /// The key as PKCS#8 PEM, the form Fabric's keystore holds.
    pub fn to_pkcs8_pem(&self) -> Result<String, CryptoError> {
        self.inner
            .to_pkcs8_pem(LineEnding::LF)
            .map(|s| s.to_string())
            .map_err(|e| CryptoError::MalformedPrivateKey(e.to_string()))
    }

    /// The key as PKCS#8 DER.
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, CryptoError> {
        self.inner
            .to_pkcs8_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|e| CryptoError::MalformedPrivateKey(e.to_string()))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            sec1: self
                .inner
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
        }
    }

    /// Signs SHA-256(`msg`) and returns a low-S DER signature (Fabric refuses high S).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let sig = self
            .signer
            .sign(&ring::rand::SystemRandom::new(), msg)
            .map_err(|e| CryptoError::Signing(e.to_string()))?;
        normalize_low_s(sig.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify_on_both_backends() {
        let key = PrivateKey::generate();
        let sig = key.sign(b"medical record").unwrap();
        assert!(is_low_s(&sig).unwrap());
        for backend in [VerifyBackend::Ring, VerifyBackend::P256] {
            verify_with(backend, &key.public_key(), b"medical record", &sig).unwrap();
            assert_eq!(
                verify_with(backend, &key.public_key(), b"medical recorD", &sig),
                Err(CryptoError::BadSignature)
            );
        }
    }

    #[test]
    fn high_s_twin_is_rejected_but_valid_math() {
        let key = PrivateKey::generate();
        let sig = key.sign(b"x").unwrap();
        let raw = parse_der_signature(&sig).unwrap();
        let high = encode_der_signature(&raw.r, &order_minus(&raw.s));
        assert!(!is_low_s(&high).unwrap());
        // The malleated twin is a mathematically valid signature...
        verify_any_s(VerifyBackend::Ring, &key.public_key(), b"x", &high).unwrap();
        // ...which Fabric's rule refuses.
        assert_eq!(
            verify(&key.public_key(), b"x", &high),
            Err(CryptoError::HighS)
        );
        assert_eq!(normalize_low_s(&high).unwrap(), sig);
    }

    #[test]
    fn garbage_signatures_are_typed_errors() {
        let key = PrivateKey::generate();
        let sig = key.sign(b"x").unwrap();
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x30],
            vec![0x30, 0x02, 0x02, 0x00],
            sig[..sig.len() - 1].to_vec(),
            [sig.clone(), vec![0]].concat(),
            vec![0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x01],
            vec![0xff; 80],
        ];
        for c in cases {
            assert!(
                matches!(
                    verify(&key.public_key(), b"x", &c),
                    Err(CryptoError::MalformedSignature(_))
                ),
                "{c:02x?}"
            );
        }
    }

    #[test]
    fn pem_round_trip_and_sec1_keys() {
        let key = PrivateKey::generate();
        let pem_text = key.to_pkcs8_pem().unwrap();
        let back = PrivateKey::from_pem(&pem_text).unwrap();
        assert_eq!(back.public_key(), key.public_key());
        let sec1 = p256::SecretKey::from(key.inner.clone())
            .to_sec1_pem(LineEnding::LF)
            .unwrap();
        assert_eq!(
            PrivateKey::from_pem(&sec1).unwrap().public_key(),
            key.public_key()
        );
        assert!(PrivateKey::from_pem("not a key").is_err());
    }

    #[test]
    fn sha256_known_answer() {
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha256_concat(&[b"a", b"bc"]), sha256(b"abc"));
    }
}
