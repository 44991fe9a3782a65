//! A hasher for the pool's block table, whose keys are offsets chosen by the program.
//!
//! std's default (SipHash) resists keys chosen by an attacker, which offsets are not, and
//! costs several times more than one folded multiply. Offsets are granule multiples, so
//! their low bits are all zero: multiplying into 128 bits and folding the halves together
//! spreads every key bit over the low bits (the table's bucket index) and the high bits
//! (its tag byte) alike.

use std::hash::{BuildHasherDefault, Hasher};

/// Folded multiply by an odd constant (the golden ratio, as in Fibonacci hashing).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct OffsetHasher(u64);

const K: u64 = 0x9E37_79B9_7F4A_7C15;

fn fold_mul(x: u64) -> u64 {
    let p = u128::from(x) * u128::from(K);
    (p as u64) ^ ((p >> 64) as u64)
}

impl Hasher for OffsetHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = fold_mul(self.0 ^ x);
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used for `u64` keys; correct for anything else.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            for (w, b) in word.iter_mut().zip(chunk) {
                *w = *b;
            }
            self.write_u64(u64::from_le_bytes(word));
        }
    }
}

/// What the block table is built with.
pub(super) type BuildOffsetHasher = BuildHasherDefault<OffsetHasher>;
