//! The stable hash used wherever nodes must agree on a number: digest
//! buckets, record hashes, rendezvous scores.
//!
//! FNV-1a, 64-bit (offset basis `0xcbf29ce484222325`, prime
//! `0x100000001b3`), over the exact bytes given. It is fixed by this file,
//! not by the standard library, so it is the same on every platform and
//! every mob version; changing it is a wire-format change.

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// An incremental FNV-1a 64 hasher.
#[derive(Debug, Clone, Copy)]
pub struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> Self {
        Self(OFFSET)
    }
}

impl StableHasher {
    /// Feeds bytes.
    pub fn write(&mut self, bytes: &[u8]) -> &mut Self {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(PRIME);
        }
        self
    }

    /// Feeds a length-prefixed field, so `("ab", "c")` and `("a", "bc")`
    /// hash differently.
    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.write(&(bytes.len() as u64).to_le_bytes()).write(bytes)
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// MurmurHash3's 64-bit finalizer (`fmix64`): every input bit flips each
/// output bit with probability close to 1/2. FNV-1a alone does not mix its
/// last bytes into the high bits, so names that differ only at the end
/// (`n1`, `n2`, `web-01`) would rank alike.
pub fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// FNV-1a 64 of `bytes`.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    StableHasher::default().write(bytes).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_fnv1a_vectors() {
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn mix_is_the_murmur3_finalizer() {
        assert_eq!(mix(0), 0);
        assert_eq!(mix(1), 0xb456_bcfc_34c2_cb2c);
    }

    #[test]
    fn fields_are_delimited() {
        let a = StableHasher::default().field(b"ab").field(b"c").finish();
        let b = StableHasher::default().field(b"a").field(b"bc").finish();
        assert_ne!(a, b);
    }
}
