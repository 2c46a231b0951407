//! The Ed25519 key that signs checkpoints, and the checkpoint message customers verify.
//!
//! The private key lives in a PKCS#8 PEM file (the format `openssl genpkey -algorithm ed25519`
//! writes), created with mode 0600 on first start when none is configured.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rand::TryRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::hash::Hash;
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// Domain-separation tag inside every signed checkpoint message.
pub const CHECKPOINT_TYPE: &str = "killswitch-audit-checkpoint-v1";

/// Short, stable name of a public key: the first 16 hex digits of SHA-256 of its 32 raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    pub fn of(key: &VerifyingKey) -> KeyId {
        let digest = Sha256::digest(key.as_bytes());
        KeyId(const_hex::encode(&digest[..8]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A key id as written: exactly 16 lowercase hex digits.
    pub fn parse(text: &str) -> Option<KeyId> {
        let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        (text.len() == 16 && text.bytes().all(hex)).then(|| KeyId(text.to_owned()))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The service's checkpoint signing key.
pub struct AuditKey {
    signing: SigningKey,
    key_id: KeyId,
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// How the key came to be loaded, so start-up can warn about a freshly generated one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    Loaded,
    Generated,
}

impl AuditKey {
    pub fn from_signing_key(signing: SigningKey) -> AuditKey {
        let key_id = KeyId::of(&signing.verifying_key());
        AuditKey { signing, key_id }
    }

    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<AuditKey> {
        let mut seed = [0u8; 32];
        rand::rngs::SysRng
            .try_fill_bytes(&mut seed)
            .map_err(|e| Error::Internal(format!("no randomness for a signing key: {e}")))?;
        Ok(AuditKey::from_signing_key(SigningKey::from_bytes(&seed)))
    }

    /// Loads the key at `path`, or creates it there (mode 0600) when the file does not exist.
    /// An existing file that cannot be read or parsed is an error, never overwritten.
    pub fn load_or_generate(path: &Path) -> Result<(AuditKey, KeyOrigin)> {
        match std::fs::read_to_string(path) {
            Ok(pem) => {
                let signing = SigningKey::from_pkcs8_pem(&pem).map_err(|e| Error::SigningKey {
                    path: path.to_owned(),
                    reason: format!("not a PKCS#8 PEM Ed25519 private key ({e})"),
                })?;
                crate::files::secure_file(path, "audit signing key")?;
                Ok((AuditKey::from_signing_key(signing), KeyOrigin::Loaded))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = AuditKey::generate()?;
                key.write_new(path)?;
                Ok((key, KeyOrigin::Generated))
            }
            Err(e) => Err(Error::SigningKey {
                path: path.to_owned(),
                reason: e.to_string(),
            }),
        }
    }

    /// Loads an existing key without ever creating one (for commands that only read).
    pub fn load(path: &Path) -> Result<AuditKey> {
        let pem = std::fs::read_to_string(path).map_err(|e| Error::SigningKey {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let signing = SigningKey::from_pkcs8_pem(&pem).map_err(|e| Error::SigningKey {
            path: path.to_owned(),
            reason: format!("not a PKCS#8 PEM Ed25519 private key ({e})"),
        })?;
        Ok(AuditKey::from_signing_key(signing))
    }

    fn write_new(&self, path: &Path) -> Result<()> {
        let fail = |reason: String| Error::SigningKey {
            path: PathBuf::from(path),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::files::create_private_dir(dir)
                .map_err(|e| fail(format!("cannot create its folder: {e}")))?;
        }
        let pem = self
            .signing
            .to_pkcs8_pem(Default::default())
            .map_err(|e| fail(format!("cannot encode: {e}")))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(path)
            .map_err(|e| fail(format!("cannot create: {e}")))?;
        file.write_all(pem.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| fail(format!("cannot write: {e}")))
    }

    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey::new(self.verifying_key())
    }

    /// Standard base64 of the Ed25519 signature over `message`.
    pub fn sign_bytes(&self, message: &[u8]) -> String {
        BASE64.encode(self.signing.sign(message).to_bytes())
    }

    /// Signs the checkpoint of `chain` at `seq` whose entry hash is `hash`.
    pub fn sign_checkpoint(
        &self,
        chain: &str,
        seq: u64,
        hash: &Hash,
        time: Timestamp,
    ) -> Result<Checkpoint> {
        let message = checkpoint_message(chain, seq, hash, &time)?;
        let signature = self.signing.sign(&message);
        Ok(Checkpoint {
            chain: chain.to_owned(),
            seq,
            hash: *hash,
            time,
            key_id: self.key_id.clone(),
            signature: signature.to_bytes(),
        })
    }
}

/// A public key with its id and the encodings customers use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub key_id: KeyId,
    pub key: VerifyingKey,
}

impl PublicKey {
    pub fn new(key: VerifyingKey) -> PublicKey {
        PublicKey {
            key_id: KeyId::of(&key),
            key,
        }
    }

    /// Standard base64 of the 32 raw public key bytes (RFC 8032 encoding).
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.key.as_bytes())
    }

    pub fn from_base64(text: &str) -> Result<PublicKey> {
        let bad = || Error::InvalidInput(format!("`{text}` is not a base64 Ed25519 public key"));
        let bytes = BASE64.decode(text.trim()).map_err(|_| bad())?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey::new)
            .map_err(|_| bad())
    }

    /// Reads a key in any form killswitch publishes it: SubjectPublicKeyInfo PEM, the JSON of
    /// `audit public-key --json` (its `public_key`), or bare base64.
    pub fn parse(text: &str) -> Result<PublicKey> {
        let text = text.trim();
        if text.starts_with("-----BEGIN") {
            return VerifyingKey::from_public_key_pem(text)
                .map(PublicKey::new)
                .map_err(|_| {
                    Error::InvalidInput("not an Ed25519 public key in PEM form".to_owned())
                });
        }
        if text.starts_with('{') {
            let value: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| Error::InvalidInput(format!("not a public key JSON document: {e}")))?;
            let key = value["public_key"].as_str().ok_or_else(|| {
                Error::InvalidInput("the JSON document has no `public_key`".to_owned())
            })?;
            return PublicKey::from_base64(key);
        }
        PublicKey::from_base64(text)
    }

    /// SubjectPublicKeyInfo PEM, readable by `openssl pkey -pubin`.
    pub fn to_pem(&self) -> Result<String> {
        self.key
            .to_public_key_pem(Default::default())
            .map_err(|e| Error::Internal(format!("cannot encode public key: {e}")))
    }
}

/// A signed statement that entry `seq` of `chain` had hash `hash` at `time`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub chain: String,
    pub seq: u64,
    pub hash: Hash,
    pub time: Timestamp,
    pub key_id: KeyId,
    pub signature: [u8; 64],
}

impl Checkpoint {
    pub fn signature_base64(&self) -> String {
        BASE64.encode(self.signature)
    }
}

#[derive(Serialize)]
struct CheckpointMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    chain: &'a str,
    seq: u64,
    hash: String,
    time: String,
}

/// The exact bytes a checkpoint signature covers: the RFC 8785 canonical JSON of
/// `{"chain","hash","seq","time","type":"killswitch-audit-checkpoint-v1"}`.
pub fn checkpoint_message(chain: &str, seq: u64, hash: &Hash, time: &Timestamp) -> Result<Vec<u8>> {
    serde_jcs::to_vec(&CheckpointMessage {
        kind: CHECKPOINT_TYPE,
        chain,
        seq,
        hash: hash.to_hex(),
        time: time.to_string(),
    })
    .map_err(|e| Error::Internal(format!("cannot canonicalise checkpoint: {e}")))
}

/// Public keys a verifier trusts, by key id.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: HashMap<KeyId, VerifyingKey>,
}

impl KeyRing {
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> KeyRing {
        KeyRing {
            keys: keys.into_iter().map(|k| (k.key_id, k.key)).collect(),
        }
    }

    pub fn add(&mut self, key: PublicKey) {
        self.keys.insert(key.key_id, key.key);
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether the key `key_id` is among these.
    pub fn contains(&self, key_id: &str) -> bool {
        self.keys.keys().any(|id| id.as_str() == key_id)
    }

    /// Checks a base64 Ed25519 signature over `message` by the key `key_id`.
    pub fn verify_bytes(
        &self,
        key_id: &str,
        message: &[u8],
        signature_base64: &str,
    ) -> std::result::Result<(), SignatureRefusal> {
        let key = self
            .keys
            .iter()
            .find(|(id, _)| id.as_str() == key_id)
            .map(|(_, key)| key)
            .ok_or_else(|| SignatureRefusal::KeyNotGiven(key_id.to_owned()))?;
        let signature: [u8; 64] = BASE64
            .decode(signature_base64)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(SignatureRefusal::Malformed)?;
        key.verify(message, &Signature::from_bytes(&signature))
            .map_err(|_| SignatureRefusal::DoesNotVerify(key_id.to_owned()))
    }

    /// Checks a checkpoint's signature; the reason names what failed.
    pub fn verify(&self, checkpoint: &Checkpoint) -> std::result::Result<(), CheckpointRefusal> {
        let key = self
            .keys
            .get(&checkpoint.key_id)
            .ok_or_else(|| CheckpointRefusal::UnknownKey(checkpoint.key_id.clone()))?;
        let message = checkpoint_message(
            &checkpoint.chain,
            checkpoint.seq,
            &checkpoint.hash,
            &checkpoint.time,
        )
        .map_err(CheckpointRefusal::Unsignable)?;
        key.verify(&message, &Signature::from_bytes(&checkpoint.signature))
            .map_err(|_| CheckpointRefusal::DoesNotVerify(checkpoint.key_id.clone()))
    }
}

/// Why a signature over an export's header or seal is refused. The messages read on after
/// "the header's " or "the seal's ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureRefusal {
    #[error("signing key {0} is not among the public keys given")]
    KeyNotGiven(String),
    #[error("signature is not 64 base64-encoded bytes")]
    Malformed,
    #[error("signature does not verify with key {0}: it was changed")]
    DoesNotVerify(String),
}

/// Why a checkpoint's signature is refused.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointRefusal {
    #[error("checkpoint signed by unknown key {0}")]
    UnknownKey(KeyId),
    /// The checkpoint's fields cannot be put into the form its signature covers.
    #[error("{0}")]
    Unsignable(Error),
    #[error("checkpoint signature does not verify with key {0}")]
    DoesNotVerify(KeyId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_written_0600_and_loads_back_identically() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("sub/audit-signing.key");
        let (first, origin) = AuditKey::load_or_generate(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(origin, KeyOrigin::Generated);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .map(|m| m.permissions().mode())
                .unwrap_or(0);
            assert_eq!(mode & 0o777, 0o600);
        }
        let (second, origin) = AuditKey::load_or_generate(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(origin, KeyOrigin::Loaded);
        assert_eq!(first.key_id(), second.key_id());
    }

    #[test]
    fn a_corrupt_key_file_is_an_error_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("audit-signing.key");
        std::fs::write(&path, "not a key").unwrap_or_else(|e| panic!("{e}"));
        assert!(AuditKey::load_or_generate(&path).is_err());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap_or_default(),
            "not a key"
        );
    }

    #[test]
    fn checkpoint_signatures_verify_only_with_the_right_key_and_fields() {
        let key = AuditKey::generate().unwrap_or_else(|e| panic!("{e}"));
        let other = AuditKey::generate().unwrap_or_else(|e| panic!("{e}"));
        let ring = KeyRing::new([key.public_key()]);
        let cp = key
            .sign_checkpoint("contoso", 1000, &Hash::genesis("x"), Timestamp::now())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(ring.verify(&cp).is_ok());

        let mut moved = cp.clone();
        moved.seq = 999;
        assert!(ring.verify(&moved).is_err());
        let mut renamed = cp.clone();
        renamed.chain = "fabrikam".into();
        assert!(ring.verify(&renamed).is_err());

        let forged = other
            .sign_checkpoint("contoso", 1000, &Hash::genesis("x"), cp.time)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            ring.verify(&forged)
                .unwrap_err()
                .to_string()
                .contains("unknown key")
        );
        let mut relabelled = forged;
        relabelled.key_id = key.key_id().clone();
        assert!(
            ring.verify(&relabelled)
                .unwrap_err()
                .to_string()
                .contains("does not verify")
        );
    }

    #[test]
    fn public_key_base64_round_trips() {
        let key = AuditKey::generate().unwrap_or_else(|e| panic!("{e}"));
        let public = key.public_key();
        assert_eq!(
            PublicKey::from_base64(&public.to_base64()).ok(),
            Some(public)
        );
        assert!(PublicKey::from_base64("AAAA").is_err());
    }
}
