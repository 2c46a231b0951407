//! The 32-byte SHA-256 values that link a chain, and the genesis value every chain starts from.

use std::fmt;

use sha2::{Digest, Sha256};

/// Prefix of the genesis pre-image; binding the chain name into the genesis value means the
/// first entry of one customer's chain can never verify as the first entry of another's.
pub const GENESIS_PREFIX: &str = "killswitch-audit-genesis:";

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// `SHA-256("killswitch-audit-genesis:" ‖ chain)`, the `prev_hash` of entry 1.
    pub fn genesis(chain: &str) -> Hash {
        let mut hasher = Sha256::new();
        hasher.update(GENESIS_PREFIX.as_bytes());
        hasher.update(chain.as_bytes());
        Hash(hasher.finalize().into())
    }

    /// The link function: `SHA-256(prev ‖ canonical_entry)`.
    pub fn link(prev: &Hash, canonical_entry: &[u8]) -> Hash {
        let mut hasher = Sha256::new();
        hasher.update(prev.0);
        hasher.update(canonical_entry);
        Hash(hasher.finalize().into())
    }

    pub fn to_hex(&self) -> String {
        const_hex::encode(self.0)
    }

    /// The 64 lowercase hex digits, without allocating (verification compares millions).
    pub fn hex_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        // Cannot fail: the buffer is exactly twice the input length.
        let _ = const_hex::encode_to_slice(self.0, &mut out);
        out
    }

    /// Parses exactly 64 lowercase hex digits; any other spelling is a different value on disk
    /// and therefore a tampering, not something to normalise.
    pub fn from_hex(text: &str) -> Option<Hash> {
        if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        // const-hex: verification decodes two hashes per entry, and `hex` is several times slower.
        const_hex::decode_to_array(text).ok().map(Hash)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_is_sha256_of_prefix_and_chain_name() {
        // Independently computed: printf 'killswitch-audit-genesis:system' | sha256sum
        let expected = Sha256::digest(b"killswitch-audit-genesis:system");
        assert_eq!(Hash::genesis("system").0, <[u8; 32]>::from(expected));
        assert_ne!(Hash::genesis("contoso"), Hash::genesis("fabrikam"));
    }

    #[test]
    fn hex_round_trips_and_rejects_other_spellings() {
        let h = Hash::genesis("contoso");
        assert_eq!(Hash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(Hash::from_hex(&h.to_hex().to_uppercase()), None);
        assert_eq!(Hash::from_hex(&h.to_hex()[1..]), None);
    }
}
