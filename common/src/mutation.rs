//! Small-scope mutation of bytes for the property tests that feed every decoder of outside input
//! (and the consensus core) with hostile variants of valid messages. Deterministic per seed.

/// xorshift64*: a seeded generator without a dependency, so a failing seed replays exactly.
#[derive(Debug, Clone)]
pub struct MutationRng(u64);

impl MutationRng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % (n.max(1) as u64)) as usize
    }
}

/// Mutates `bytes` one to four times: a bit flip, an extreme byte (0x00, 0xff, 0x7f, 0x80), a
/// truncation, a duplicated tail, or random bytes appended.
pub fn mutate(rng: &mut MutationRng, bytes: &mut Vec<u8>) {
    for _ in 0..=rng.below(3) {
        match rng.below(6) {
            0 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
            1 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] = [0x00, 0xff, 0x7f, 0x80][rng.below(4)];
            }
            2 => {
                let keep = rng.below(bytes.len() + 1);
                bytes.truncate(keep);
            }
            3 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                let tail = bytes[i..].to_vec();
                bytes.extend_from_slice(&tail);
            }
            4 => {
                let n = rng.below(16);
                bytes.extend((0..n).map(|_| rng.next_u64() as u8));
            }
            _ => {}
        }
    }
}

/// How many inputs a property test runs per target: `MEDLEDGER_FUZZ_ITERATIONS`, else `default`.
pub fn iterations(default: usize) -> usize {
    std::env::var("MEDLEDGER_FUZZ_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
