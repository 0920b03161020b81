//! Measures ECDSA P-256 signature verification per backend (`ring` vs the pure-Rust `p256`), and
//! signing: `PrivateKey::sign` (ring, then low-S) against the pure-Rust `p256` signer.
//!
//! `cargo run --release -p medledger-common --example verify_bench [-- ROUNDS]`
//! Prints the median of several rounds for each and their ratios, and last a JSON line with the
//! fastest verify and sign (`{"verify_us":..,"sign_us":..}`), which `network/bench.sh` reads as
//! the crypto floor of its run.

use std::time::Instant;

use medledger_common::PrivateKey;
use medledger_common::crypto::{VerifyBackend, verify_with};

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let per_round = 2000;
    let key = PrivateKey::generate();
    let pk = key.public_key();
    let msgs: Vec<Vec<u8>> = (0..64)
        .map(|i| format!("proposal {i}").into_bytes())
        .collect();
    let sigs: Vec<Vec<u8>> = msgs.iter().map(|m| key.sign(m).expect("sign")).collect();
    let mut medians = Vec::new();
    for backend in [VerifyBackend::Ring, VerifyBackend::P256] {
        let mut per_op_us: Vec<f64> = (0..rounds)
            .map(|_| {
                let start = Instant::now();
                for i in 0..per_round {
                    let k = i % msgs.len();
                    verify_with(backend, &pk, &msgs[k], &sigs[k]).expect("valid signature");
                }
                start.elapsed().as_secs_f64() * 1e6 / per_round as f64
            })
            .collect();
        per_op_us.sort_by(|a, b| a.total_cmp(b));
        let median = per_op_us[per_op_us.len() / 2];
        println!(
            "{backend:?}: median {median:.1} us/verify ({:.0} verifies/s) over {rounds} rounds of {per_round}",
            1e6 / median
        );
        medians.push(median);
    }
    println!("p256 / ring time ratio: {:.2}x", medians[1] / medians[0]);

    // Signing: ours against p256's own signer on the same key.
    use p256::ecdsa::signature::Signer;
    use p256::pkcs8::DecodePrivateKey;
    let p256_key = p256::ecdsa::SigningKey::from_pkcs8_pem(&key.to_pkcs8_pem().expect("pem"))
        .expect("the same key");
    let median_of = |f: &dyn Fn(&[u8])| {
        let mut per_op_us: Vec<f64> = (0..rounds)
            .map(|_| {
                let start = Instant::now();
                for i in 0..per_round {
                    f(&msgs[i % msgs.len()]);
                }
                start.elapsed().as_secs_f64() * 1e6 / per_round as f64
            })
            .collect();
        per_op_us.sort_by(|a, b| a.total_cmp(b));
        per_op_us[per_op_us.len() / 2]
    };
    let ours = median_of(&|m| {
        key.sign(m).expect("sign");
    });
    let theirs = median_of(&|m| {
        let s: p256::ecdsa::Signature = p256_key.sign(m);
        let _ = s.to_der();
    });
    println!(
        "sign: PrivateKey::sign (ring, low-S) median {ours:.1} us, p256 {theirs:.1} us: {:.2}x",
        theirs / ours
    );
    let verify = medians.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "{{\"verify_us\":{verify:.1},\"sign_us\":{:.1}}}",
        ours.min(theirs)
    );
}
