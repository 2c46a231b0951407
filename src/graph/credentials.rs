//! The remediation app's credential: a client secret, or (Microsoft's recommendation) a
//! certificate used to sign a client assertion (RFC 7523, as Entra documents it).

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Entra accepts assertions valid for at most ten minutes; five leaves room for clock skew.
const ASSERTION_LIFETIME_SECS: i64 = 300;

#[derive(Clone)]
pub enum ClientCredential {
    Secret(SecretString),
    Certificate(Certificate),
}

impl fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientCredential::Secret(_) => f.write_str("ClientCredential::Secret([REDACTED])"),
            ClientCredential::Certificate(cert) => write!(
                f,
                "ClientCredential::Certificate(x5t#S256={})",
                cert.thumbprint
            ),
        }
    }
}

/// A certificate and its private key, loaded from one PEM file.
#[derive(Clone)]
pub struct Certificate {
    /// base64url(SHA-256(certificate DER)), the `x5t#S256` header Entra matches.
    thumbprint: String,
    key: EncodingKey,
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

/// Why `entra.certificate_file` cannot serve as the app's credential.
#[derive(Debug, thiserror::Error)]
pub enum BadCertificate {
    #[error("not PEM: {0}")]
    NotPem(pem::PemError),
    #[error("no CERTIFICATE block")]
    NoCertificate,
    #[error("no PRIVATE KEY block (the file must hold the certificate and its key)")]
    NoPrivateKey,
    #[error("the private key is not an RSA key: {0}")]
    NotRsa(jsonwebtoken::errors::Error),
}

/// The certificate's key could not sign a client assertion.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign the client assertion: {0}")]
pub struct AssertionError(jsonwebtoken::errors::Error);

impl Certificate {
    /// Reads a PEM file holding the certificate and its RSA private key (PKCS#8 or PKCS#1).
    pub fn load(path: &Path) -> Result<Certificate> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::io(
                format!("cannot read entra.certificate_file {}", path.display()),
                e,
            )
        })?;
        Certificate::from_pem(&text).map_err(|reason| {
            Error::Config(vec![format!(
                "entra.certificate_file: {}: {reason}",
                path.display()
            )])
        })
    }

    pub fn from_pem(text: &str) -> std::result::Result<Certificate, BadCertificate> {
        let blocks = pem::parse_many(text).map_err(BadCertificate::NotPem)?;
        let cert = blocks
            .iter()
            .find(|b| b.tag() == "CERTIFICATE")
            .ok_or(BadCertificate::NoCertificate)?;
        let key = blocks
            .iter()
            .find(|b| b.tag() == "PRIVATE KEY" || b.tag() == "RSA PRIVATE KEY")
            .ok_or(BadCertificate::NoPrivateKey)?;
        let key = EncodingKey::from_rsa_pem(pem::encode(key).as_bytes())
            .map_err(BadCertificate::NotRsa)?;
        Ok(Certificate {
            thumbprint: URL_SAFE_NO_PAD.encode(Sha256::digest(cert.contents())),
            key,
        })
    }

    /// A signed client assertion for `token_url`.
    pub fn assertion(
        &self,
        client_id: &str,
        token_url: &str,
    ) -> std::result::Result<String, AssertionError> {
        let mut header = Header::new(Algorithm::RS256);
        header.x5t_s256 = Some(self.thumbprint.clone());
        let now = chrono::Utc::now().timestamp();
        let claims = AssertionClaims {
            aud: token_url,
            iss: client_id,
            sub: client_id,
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: now,
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(AssertionError)
    }
}

impl ClientCredential {
    /// The form fields that authenticate the app at `token_url`.
    pub fn form_fields(
        &self,
        client_id: &str,
        token_url: &str,
    ) -> std::result::Result<Vec<(&'static str, String)>, AssertionError> {
        Ok(match self {
            ClientCredential::Secret(secret) => {
                vec![("client_secret", secret.expose_secret().to_owned())]
            }
            ClientCredential::Certificate(cert) => vec![
                ("client_assertion_type", ASSERTION_TYPE.to_owned()),
                ("client_assertion", cert.assertion(client_id, token_url)?),
            ],
        })
    }
}
