//! Encryption at rest for the secrets killswitch must read back (TOTP secrets, webhook secrets):
//! AES-256-GCM under `mfa.encryption_key`, each ciphertext bound to what it belongs to (the
//! associated data), so a secret copied onto another analyst's row does not decrypt.
//!
//! Stored form: `v1.<key id>.<base64(nonce ‖ ciphertext)>`. The key id names the key, so keys can
//! be rotated: new secrets use the current key, older ones still open with a previous key.

use std::fmt;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::TryRng;
use secrecy::SecretSlice;
use sha2::{Digest, Sha256};

use crate::audit::signing::KeyOrigin;
use crate::error::{Error, Result};

const VERSION: &str = "v1";

struct Key {
    id: String,
    cipher: Aes256Gcm,
    /// For MACs (signed links), derived so the same bytes never serve two algorithms.
    mac_key: [u8; 32],
}

pub struct SecretCipher {
    current: Key,
    previous: Vec<Key>,
}

impl fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretCipher")
            .field("key_id", &self.current.id)
            .finish_non_exhaustive()
    }
}

fn key(bytes: &[u8]) -> Result<Key> {
    let cipher = Aes256Gcm::new_from_slice(bytes).map_err(|_| {
        Error::Config(vec![
            "mfa.encryption_key: must be exactly 32 bytes".to_owned(),
        ])
    })?;
    let mut hasher = Sha256::new();
    hasher.update(b"killswitch-secret-key:");
    hasher.update(bytes);
    let mut mac = Sha256::new();
    mac.update(b"killswitch-mac-key:");
    mac.update(bytes);
    Ok(Key {
        id: const_hex::encode(&hasher.finalize()[..4]),
        cipher,
        mac_key: mac.finalize().into(),
    })
}

fn mac_with(key: &[u8; 32], purpose: &str, data: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit as _, Mac};
    let Ok(mut mac) = <hmac::Hmac<Sha256>>::new_from_slice(key) else {
        // HMAC takes keys of any length; 32 bytes cannot be refused.
        return [0u8; 32];
    };
    mac.update(purpose.as_bytes());
    mac.update(&[0]);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    Ok(bytes)
}

impl SecretCipher {
    pub fn new(current: &[u8], previous: &[&[u8]]) -> Result<SecretCipher> {
        Ok(SecretCipher {
            current: key(current)?,
            previous: previous.iter().map(|k| key(k)).collect::<Result<_>>()?,
        })
    }

    /// The configured key, or the one in `<data_dir>/mfa-encryption.key`, created there (mode
    /// 0600) on first start; `previous` keys still open what they sealed.
    pub fn load_or_generate(
        configured: Option<&[u8]>,
        previous: &[&[u8]],
        data_dir: &Path,
    ) -> Result<(SecretCipher, KeyOrigin)> {
        if let Some(bytes) = configured {
            return Ok((SecretCipher::new(bytes, previous)?, KeyOrigin::Loaded));
        }
        let path = data_dir.join("mfa-encryption.key");
        let fail = |reason: String| {
            Error::Config(vec![format!(
                "mfa.encryption_key: {}: {reason}",
                path.display()
            )])
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let bytes = BASE64
                    .decode(text.trim())
                    .map_err(|_| fail("not base64".to_owned()))?;
                crate::files::secure_file(&path, "encryption key file")?;
                Ok((SecretCipher::new(&bytes, previous)?, KeyOrigin::Loaded))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes: [u8; 32] = random_bytes()?;
                crate::files::create_private_dir(data_dir)
                    .map_err(|e| fail(format!("cannot create the folder: {e}")))?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                let mut file = options
                    .open(&path)
                    .map_err(|e| fail(format!("cannot create: {e}")))?;
                std::io::Write::write_all(
                    &mut file,
                    format!("{}\n", BASE64.encode(bytes)).as_bytes(),
                )
                .and_then(|()| file.sync_all())
                .map_err(|e| fail(format!("cannot write: {e}")))?;
                Ok((SecretCipher::new(&bytes, previous)?, KeyOrigin::Generated))
            }
            Err(e) => Err(fail(e.to_string())),
        }
    }

    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// Whether `sealed` was sealed with the current key (else `killswitch secrets reseal`
    /// would move it there).
    pub fn sealed_with_current(&self, sealed: &str) -> bool {
        sealed.split('.').nth(1) == Some(self.current.id.as_str())
    }

    /// HMAC-SHA256 of `data` for `purpose` under the current key.
    pub fn mac(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        mac_with(&self.current.mac_key, purpose, data)
    }

    /// Whether `tag` is the MAC of `data` for `purpose` under the current or a previous key,
    /// compared in constant time.
    pub fn verify_mac(&self, purpose: &str, data: &[u8], tag: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        std::iter::once(&self.current)
            .chain(&self.previous)
            .any(|key| bool::from(mac_with(&key.mac_key, purpose, data).ct_eq(tag)))
    }

    /// Encrypts `plaintext` for `context` (for example `totp:<analyst id>`).
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<String> {
        let nonce_bytes: [u8; 12] = random_bytes()?;
        let nonce = Nonce::from(nonce_bytes);
        let ciphertext = self
            .current
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| Error::Internal("encryption failed".to_owned()))?;
        let mut blob = nonce_bytes.to_vec();
        blob.extend_from_slice(&ciphertext);
        Ok(format!(
            "{VERSION}.{}.{}",
            self.current.id,
            BASE64.encode(blob)
        ))
    }

    /// Decrypts a value sealed for `context` with the current or a previous key.
    pub fn open(&self, sealed: &str, context: &str) -> Result<SecretSlice<u8>> {
        let unreadable =
            || Error::Internal(format!("a stored secret for {context} cannot be decrypted"));
        let mut parts = sealed.splitn(3, '.');
        let (Some(VERSION), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(unreadable());
        };
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == key_id)
            .ok_or_else(|| Error::Internal(format!("a stored secret for {context} uses encryption key {key_id}, which is not configured")))?;
        let blob = BASE64.decode(body).map_err(|_| unreadable())?;
        if blob.len() < 12 {
            return Err(unreadable());
        }
        let (nonce, ciphertext) = blob.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| unreadable())?;
        let plaintext = key
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| unreadable())?;
        Ok(SecretSlice::from(plaintext))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn sealed_secrets_open_only_in_their_context_and_with_a_known_key() {
        let cipher = SecretCipher::new(&[7u8; 32], &[]).unwrap();
        let sealed = cipher.seal(b"JBSWY3DPEHPK3PXP", "totp:alice").unwrap();
        assert!(sealed.starts_with(&format!("v1.{}.", cipher.key_id())));
        assert!(!sealed.contains("JBSWY3DPEHPK3PXP"));
        assert_eq!(
            cipher.open(&sealed, "totp:alice").unwrap().expose_secret(),
            b"JBSWY3DPEHPK3PXP"
        );
        assert!(
            cipher.open(&sealed, "totp:bob").is_err(),
            "bound to its owner"
        );
        let other = SecretCipher::new(&[8u8; 32], &[]).unwrap();
        assert!(other.open(&sealed, "totp:alice").is_err());
        let rotated = SecretCipher::new(&[8u8; 32], &[&[7u8; 32]]).unwrap();
        assert_eq!(
            rotated.open(&sealed, "totp:alice").unwrap().expose_secret(),
            b"JBSWY3DPEHPK3PXP"
        );
        assert_ne!(
            rotated.seal(b"x", "c").unwrap().split('.').nth(1),
            Some(cipher.key_id())
        );
    }

    #[test]
    fn macs_are_bound_to_purpose_and_key_and_survive_rotation() {
        let cipher = SecretCipher::new(&[7u8; 32], &[]).unwrap();
        let tag = cipher.mac("consent", b"contoso");
        assert!(cipher.verify_mac("consent", b"contoso", &tag));
        assert!(!cipher.verify_mac("consent", b"fabrikam", &tag));
        assert!(!cipher.verify_mac("webhook", b"contoso", &tag));
        let rotated = SecretCipher::new(&[8u8; 32], &[&[7u8; 32]]).unwrap();
        assert!(rotated.verify_mac("consent", b"contoso", &tag));
        assert!(
            !SecretCipher::new(&[8u8; 32], &[])
                .unwrap()
                .verify_mac("consent", b"contoso", &tag)
        );
    }

    #[test]
    fn a_generated_key_is_kept_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, origin) = SecretCipher::load_or_generate(None, &[], dir.path()).unwrap();
        assert_eq!(origin, KeyOrigin::Generated);
        let (second, origin) = SecretCipher::load_or_generate(None, &[], dir.path()).unwrap();
        assert_eq!(origin, KeyOrigin::Loaded);
        assert_eq!(first.key_id(), second.key_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("mfa-encryption.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
