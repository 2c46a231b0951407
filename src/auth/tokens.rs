//! API tokens: 256 random bits, shown once, stored only as a SHA-256 hash. The hash suffices
//! (no slow hash): a token is not a password a person chose, there is nothing to guess.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::secrets::random_bytes;

/// Every API token starts with this, so a leaked one is recognisable (and secret scanners can
/// be taught the pattern).
pub const PREFIX: &str = "ks_";

/// A new token and the hash to store.
pub fn generate() -> Result<(SecretString, String)> {
    let bytes: [u8; 32] = random_bytes()?;
    let token = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash(&token);
    Ok((SecretString::from(token), hash))
}

pub fn hash(token: &str) -> String {
    const_hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn looks_like_api_token(value: &str) -> bool {
    value.starts_with(PREFIX) && value.len() == PREFIX.len() + 43
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hashed() {
        let (a, hash_a) = generate().unwrap();
        let (b, _) = generate().unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(looks_like_api_token(a.expose_secret()));
        assert_eq!(hash(a.expose_secret()), hash_a);
        assert!(!hash_a.contains(a.expose_secret()));
    }
}
